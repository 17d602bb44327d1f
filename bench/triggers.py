"""Trigger orders: from the oracle's write of a crossing mark to the order in the book.

Starts a private redis-server and the gateway, matcher and settler (``support.exchange``), and
on BTC-PERP, round after round: one trader places a STOP_LIMIT BUY on MARK (trigger = mark +
50, price = mark + 100, below the asks, so once fired it rests), then the clock starts and the
oracle's step runs as ``dex.oracle`` does it (the new index and mark written to
``dex:{m}:px``, then ``services.settler.oracle.wake_triggers``: the ``prices`` command on the
market stream); the clock stops when the order's record reads NEW (polled every 0.2 ms).
``--waiting N`` first places N more untriggered orders far from the price (100 per account),
so the sets are not empty. Also timed: ``wake_triggers`` on a market with no trigger orders
(what the oracle pays per market and run when there is nothing to fire). Results go to
bench/results/triggers.json.

    .venv/bin/python bench/triggers.py                  # 200 rounds
    .venv/bin/python bench/triggers.py --rounds 500 --waiting 1000
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import httpx
import redis
from lib import cli, stats
from support.exchange import ADMIN_TOKEN, Exchange
from support.redis_server import RedisServer
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader

from common import keys
from common.eip712 import sign
from services.settler.oracle import wake_triggers

MARKET = "BTC-PERP"
P = 3_000_000
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def stop_body(trader: Trader, cid: str, price: int, trigger: int) -> dict[str, Any]:
    message: dict[str, Any] = {
        "clientOrderId": cid, "userId": trader.address, "market": MARKET, "side": "BUY",
        "type": "STOP_LIMIT", "price": price, "qty": 1, "product": "PERP",
        "ts": int(time.time() * 1000), "timeInForce": "GTC", "reduceOnly": False,
        "expiresAt": 0, "selfTradePrevention": "", "triggerPrice": trigger,
        "triggerSource": "MARK", "trailingDelta": 0, "trailingUnit": "", "closePosition": False,
        "takeProfitPrice": 0, "stopLossPrice": 0,
    }  # fmt: skip
    message["sig"] = sign(trader.key, "OrderV4", message, CHAIN_ID, VERIFYING_CONTRACT)
    return message


def deposit(client: httpx.Client, trader: Trader) -> None:
    response = client.post(
        "/v1/admin/deposits",
        json={"userId": trader.address, "asset": "USDC", "amount": str(10**13)},
        headers=ADMIN,
    )
    response.raise_for_status()


def place(client: httpx.Client, body: dict[str, Any], want: str) -> None:
    response = client.post("/v1/orders?wait=1", json=body)
    if response.status_code != 200 or response.json()["status"] != want:
        raise RuntimeError(f"{body['clientOrderId']}: {response.status_code} {response.text}")


def set_prices(r: redis.Redis, price: int) -> None:
    """The oracle's write (services/settler/oracle.py run_oracle), index and mark."""
    r.hset(keys.market_prices(MARKET), mapping={"index": price, "mark": price})


def main() -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--waiting", type=int, default=0)
    args = parser.parse_args()
    server = RedisServer()
    server.start()
    try:
        with Exchange(server.url) as exchange:
            exchange.start("gateway", "matcher", "settler")
            result = run(exchange, args.rounds, args.waiting)
    finally:
        server.stop()
    result |= {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_after": os.getloadavg()},
        "args": vars(args),
    }  # fmt: skip
    path = cli.write_results("triggers.json", result)
    print(f"wrote {path}")
    print(result["fire_ms"], result["wake_without_triggers_us"])


def run(exchange: Exchange, rounds: int, waiting: int) -> dict[str, Any]:
    r = redis.Redis.from_url(exchange.redis_url, decode_responses=True)
    client = httpx.Client(base_url=exchange.http, timeout=30)
    idle = [0.0] * 1000
    for i in range(len(idle)):
        started = time.perf_counter_ns()
        wake_triggers(r, MARKET, i)
        idle[i] = (time.perf_counter_ns() - started) / 1000
    maker, trader = Trader(), Trader()
    for who in (maker, trader):
        deposit(client, who)
    set_prices(r, P)
    place(client, maker.order(MARKET, "SELL", P + 1_000_000, 10**6, product="PERP",
                              timeInForce="GTC"), "NEW")  # fmt: skip
    parked = None
    for n in range(waiting):
        if n % 100 == 0:
            parked = Trader()
            deposit(client, parked)
        assert parked is not None
        place(client, stop_body(parked, f"w{n}", P + 400_000, P + 500_000 + n), "UNTRIGGERED")
    load_before = os.getloadavg()
    latencies = []
    mark = P
    for k in range(rounds):
        if k and k % 100 == 0:  # the fired orders rest: a fresh account below the open limit
            trader = Trader()
            deposit(client, trader)
        cid = f"r{k}"
        place(client, stop_body(trader, cid, mark + 100, mark + 50), "UNTRIGGERED")
        okey = keys.market_order(MARKET, trader.address.lower(), cid)
        mark += 60
        started = time.perf_counter_ns()
        set_prices(r, mark)
        wake_triggers(r, MARKET, int(time.time() * 1000))
        while r.hget(okey, "status") != "NEW":
            time.sleep(0.0002)
        latencies.append((time.perf_counter_ns() - started) / 1e6)
    client.close()
    r.close()
    return {
        "fire_ms": stats.summary(latencies) | {"max": round(max(latencies), 2)},
        "wake_without_triggers_us": stats.summary(idle),
        "waiting": waiting,
        "loadavg_before": load_before,
    }


if __name__ == "__main__":
    main()
