"""The gateway in-process on a real Redis, and a stand-in matcher that answers its commands.

``gateway_client(redis_url, **settings)`` yields a Starlette ``TestClient`` running the real
app (lifespan included, so the outbox sweeper runs). ``ReplyingMatcher`` reads the market
streams in a thread and answers ``reply`` keys the way docs/architecture.md fixes them
(order → ``{"status"}``, cancel → ``{"result"}``, cancel_all → ``{"cancelled"}``, halt/resume →
``{"status"}``), writing the order records a real matcher would, so the gateway's side of those
exchanges is tested without depending on the matching engine.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import redis
from fastapi.testclient import TestClient

from common import keys
from common.settings import DexSettings

ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@contextlib.contextmanager
def gateway_client(redis_url: str, **overrides: Any) -> Iterator[TestClient]:
    from services.gateway.app import create_app

    options: dict[str, Any] = {
        "redis_url": redis_url,
        "admin_token": ADMIN_TOKEN,
        "rate_limit_user": 0,
        "rate_limit_ip": 0,
    }
    options.update(overrides)
    app = create_app(DexSettings(**options))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def error_of(response: Any) -> tuple[int, str]:
    """The HTTP status and the contract error code of a refused request."""
    return response.status_code, response.json()["error"]["code"]


def balance(total: int, locked: int = 0) -> dict[str, str]:
    return {"total": str(total), "available": str(total - locked), "locked": str(locked)}


class ReplyingMatcher:
    """Answers commands on the given markets' streams; orders rest as NEW (no matching)."""

    def __init__(self, redis_url: str, markets: list[str], answer: bool = True) -> None:
        self.client = redis.Redis.from_url(redis_url, decode_responses=True)
        self.markets = markets
        self.answer = answer
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.seen: list[dict[str, Any]] = []

    def __enter__(self) -> ReplyingMatcher:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_flag.set()
        self.thread.join(timeout=10)
        self.client.close()

    def _run(self) -> None:
        cursors = {keys.market_in(m): "0" for m in self.markets}
        while not self.stop_flag.is_set():
            response = self.client.xread(cursors, block=200, count=100)
            for stream, entries in response or []:
                market = stream.split("{", 1)[1].split("}", 1)[0]
                for entry_id, fields in entries:
                    cursors[stream] = entry_id
                    command = orjson.loads(fields["c"])
                    self.seen.append(command)
                    self._apply(market, command)

    def _apply(self, market: str, command: dict[str, Any]) -> None:
        c = self.client
        op = command["op"]
        result: dict[str, Any]
        if op == "order":
            key = keys.market_order(market, command["user"], command["cid"])
            if not c.exists(key):
                c.hset(
                    key,
                    mapping={
                        "clientOrderId": command["cid"],
                        "userId": command["user"],
                        "market": market,
                        "side": command["side"],
                        "type": command["type"],
                        "timeInForce": command["tif"],
                        "reduceOnly": "1" if command["reduceOnly"] else "0",
                        "expiresAt": command["expiresAt"],
                        "price": command["price"],
                        "qty": command["qty"],
                        "filled": 0,
                        "status": "NEW",
                        "reason": "",
                        "ts": command["ts"],
                        "updatedTs": command["acceptedAt"],
                    },
                )
                c.sadd(keys.market_user_open(market, command["user"]), command["cid"])
            result = {"status": c.hget(key, "status")}
        elif op == "cancel":
            key = keys.market_order(market, command["user"], command["cid"])
            status = c.hget(key, "status")
            if status is None:
                result = {"result": "UNKNOWN"}
            elif status in ("NEW", "PARTIAL"):
                c.hset(key, mapping={"status": "CXL", "reason": "USER"})
                c.srem(keys.market_user_open(market, command["user"]), command["cid"])
                result = {"result": "CANCELLED"}
            else:
                result = {"result": "CLOSED"}
        elif op == "cancel_all":
            open_key = keys.market_user_open(market, command["user"])
            cids = c.smembers(open_key)
            for cid in cids:
                c.hset(
                    keys.market_order(market, command["user"], cid),
                    mapping={"status": "CXL", "reason": "USER"},
                )
            c.delete(open_key)
            result = {"cancelled": len(cids)}
        elif op == "amend":
            key = keys.market_order(market, command["user"], command["cid"])
            status = c.hget(key, "status")
            if status in ("NEW", "PARTIAL"):
                c.hset(key, mapping={"price": command["price"], "qty": command["qty"]})
                result = {"amend": "AMENDED", "status": status, "filled": 0}
            else:
                result = {"amend": "UNKNOWN" if status is None else "CLOSED"}
        else:
            c.hset(keys.market_state(market), "status", "HALTED" if op == "halt" else "OPEN")
            result = {"status": c.hget(keys.market_state(market), "status")}
        reply = command.get("reply")
        if reply and self.answer:
            c.lpush(reply, orjson.dumps(result))
            c.expire(reply, 60)
