"""Gateway benchmark: pre-signed orders accepted per second through one uvicorn worker.

Starts a private redis-server and one gateway process (``python -m services.gateway``: one
uvicorn worker, uvloop + httptools), funds many users, pre-signs every order, then sends them
as fast as the gateway answers with ``--concurrency`` requests in flight (closed loop) from
``--senders`` client processes, and reports orders accepted per second. No matcher runs: this
measures admission (parse, verify, reserve, enqueue). It also times one EIP-712 signature
verification (``Verifier.verify``) in this process. Results go to bench/results/gateway.json.

    .venv/bin/python bench/gateway.py                    # 20,000 orders, concurrency 64
    .venv/bin/python bench/gateway.py --orders 60000 --access-log --rate-limits
    .venv/bin/python bench/gateway.py --rate 2000 --orders 40000    # open loop, as bench/e2e.py
    .venv/bin/python bench/gateway.py --rate 2000 --root /tmp/gw-main-build   # another build
    .venv/bin/python bench/gateway.py --rate 1000 --root /tmp/gw-main-build --versus .  # A/B

By default the rate limits are off (one client address would be limited at 1,000/s) and the
per-request access log is at WARNING; the flags put them back to measure their cost.
``--rate`` releases the orders at that rate (open loop, ``--concurrency`` connections) instead
of as fast as the gateway answers: the gateway's CPU per order at a rate it holds, where each
request is answered on its own more often than in a saturated loop. Beside the gateway's CPU
per accepted order the report gives Redis's (the admission's scripts and commands: no matcher
runs) and the Redis commands per accepted order from ``INFO commandstats``. ``--root DIR``
runs the gateway of another checkout (``PYTHONPATH`` pointing there) for a same-session
baseline; the load, the bodies and the figures are this checkout's. ``--versus DIR`` runs a
second build's gateway beside the first, each on its own Redis, and sends both the same orders
at the same moment, each from its own sender processes: on a shared machine CPU per order moves
with the other load from one minute to the next, so a pair measured together is the fair A/B.
Even so, the same build run twice side by side read up to 10 % apart, the second (``--versus``)
lower more often than not (docs/performance.md, the lean protocol path): measure several pairs
in both orders, and take a difference smaller than that for none.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
import redis
from coincurve import PrivateKey
from lib import cli, httpload
from lib.traders import Trader, fund, make_traders, sign_fast, verifier
from support.exchange import ADMIN_TOKEN, Exchange
from support.redis_server import RedisServer

from common.eip712 import Verifier

MARKETS = {"BTC-USDC": "SPOT", "BTC-PERP": "PERP"}
MID = 3_000_000


def plan(users: list[Trader], total: int, rng: random.Random, verifier: Verifier) -> list[bytes]:
    """Limit orders around a mid on a SPOT and a PERP market, OrderV2 every other one."""
    bodies = []
    now = int(time.time() * 1000)
    markets = list(MARKETS)
    for index in range(total):
        key, address = users[index % len(users)]
        market = markets[index % len(markets)]
        side = rng.choice(("BUY", "SELL"))
        message: dict[str, Any] = {
            "clientOrderId": f"b-{index}-{rng.getrandbits(32):08x}",
            "userId": address,
            "market": market,
            "side": side,
            "type": "LIMIT",
            "price": MID + rng.randint(-50, 50),
            "qty": rng.randint(1, 5),
            "product": MARKETS[market],
            "ts": now,
        }
        primary = "Order"
        if index % 2:
            primary = "OrderV2"
            message |= {"timeInForce": "GTC", "reduceOnly": False, "expiresAt": 0}
        message["sig"] = sign_fast(verifier, key, primary, message)
        bodies.append(orjson.dumps(message))
    return bodies


def command_counts(client: redis.Redis) -> dict[str, int]:
    """Calls per command so far (``INFO commandstats``), without the INFO calls themselves."""
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name != "cmdstat_info"
    }


def time_verification(verifier: Verifier, samples: int = 3_000) -> float:
    """Mean µs of ``Verifier.verify`` over distinct pre-signed orders (cold string caches
    for clientOrderId, as on the wire)."""
    rng = random.Random(7)
    key = PrivateKey(rng.randbytes(32))
    from eth_account import Account

    address = Account.from_key(key.secret).address
    messages = []
    for index in range(samples):
        message = {
            "clientOrderId": f"v-{index}", "userId": address, "market": "BTC-USDC",
            "side": "BUY", "type": "LIMIT", "price": MID + index % 100, "qty": 1 + index % 7,
            "product": "SPOT", "ts": 1_764_590_000_000 + index,
        }  # fmt: skip
        messages.append((message, sign_fast(verifier, key, "Order", message)))
    for message, sig in messages[:200]:
        assert verifier.verify("Order", message, sig, address)
    started = time.perf_counter()
    for message, sig in messages:
        if not verifier.verify("Order", message, sig, address):
            raise AssertionError("a bench signature did not verify")
    return (time.perf_counter() - started) / samples * 1e6


@dataclass
class Side:
    """One build's gateway and its own Redis, measured while the other side runs too."""

    build: str
    settings: dict[str, str]
    server: RedisServer | None = None
    exchange: Exchange | None = None
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)

    def start(self, users: list[Trader], appendonly: bool) -> None:
        self.server = RedisServer(extra_args=("--appendonly", "yes" if appendonly else "no"))
        self.server.start()
        self.exchange = Exchange(self.server.url, **self.settings)
        self.exchange.start("gateway")
        fund(self.exchange.http, ADMIN_TOKEN, users, {"USDC": 10**15, "BTC": 10**14})

    def read(self) -> dict[str, Any]:
        """The gateway's and Redis's CPU seconds so far, and Redis's calls per command."""
        assert self.exchange is not None and self.server is not None
        gateway = psutil.Process(self.exchange.processes["gateway"].pid).cpu_times()
        store = psutil.Process(self.server.proc.pid).cpu_times()
        client = redis.Redis.from_url(self.server.url)
        try:
            commands = command_counts(client)
        finally:
            client.close()
        return {
            "gateway": gateway.user + gateway.system,
            "gateway_system": gateway.system,
            "redis": store.user + store.system,
            "commands": commands,
        }

    def stop(self) -> None:
        if self.exchange is not None:
            self.exchange.stop()
            shutil.rmtree(self.exchange.workdir, ignore_errors=True)
        if self.server is not None:
            self.server.stop()

    def figures(self, codes: dict[str, int], seconds: float) -> dict[str, Any]:
        accepted = codes.get("ACCEPTED", 0)
        per_order = max(accepted, 1)
        gateway_cpu = self.after["gateway"] - self.before["gateway"]
        redis_cpu = self.after["redis"] - self.before["redis"]
        calls_before = self.before["commands"]
        commands = {
            name: round((calls - calls_before.get(name, 0)) / per_order, 3)
            for name, calls in sorted(self.after["commands"].items())
            if calls > calls_before.get(name, 0)
        }
        return {
            "build": self.build,
            "accepted": accepted,
            "codes": codes,
            "seconds": round(seconds, 3),
            "accepted_per_s": round(accepted / seconds, 1),
            "gateway_cpu_s": round(gateway_cpu, 2),
            "gateway_cpu_per_order_us": round(gateway_cpu / per_order * 1e6, 1),
            "gateway_system_cpu_per_order_us": round(
                (self.after["gateway_system"] - self.before["gateway_system"]) / per_order * 1e6, 1
            ),
            # What the worker's own CPU time allows if it had a core to itself (derived).
            "accepted_per_gateway_cpu_s": round(accepted / max(gateway_cpu, 1e-9), 1),
            "gateway_core_share": round(gateway_cpu / seconds, 2),
            "redis_cpu_per_order_us": round(redis_cpu / per_order * 1e6, 1),
            "redis_commands_per_order": commands,
        }


class _Tag:
    """A sender's result queue that tags what it puts with the sender's index."""

    def __init__(self, queue: Any, index: int) -> None:
        self.queue, self.index = queue, index

    def put(self, value: Any) -> None:
        self.queue.put((self.index, value))


def _tagged(index: int, target: Any, *share_gate_queue: Any) -> None:
    """Run a sender (``httpload.open_loop``/``closed_loop``) whose result is tagged ``index``."""
    *share, gate, queue = share_gate_queue
    target(*share, gate, _Tag(queue, index))


def build_of(root: str) -> str:
    marker = Path(root) / "BUILD"
    return marker.read_text().strip() if marker.exists() else root


def main() -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--senders", type=int, default=1, help="client processes")
    parser.add_argument("--access-log", action="store_true", help="log every request (INFO)")
    parser.add_argument("--rate-limits", action="store_true", help="keep the default limits")
    parser.add_argument("--appendonly", action="store_true", help="Redis with AOF (everysec)")
    parser.add_argument("--rate", type=float, default=0, help="orders/s, open loop (0: closed)")
    parser.add_argument("--root", default="", help="run the gateway of this checkout")
    parser.add_argument(
        "--versus", default="", help="also run this checkout's gateway, side by side, same load"
    )
    args = parser.parse_args()

    signer = verifier()
    verify_us = time_verification(signer)
    print(f"signature verification: {verify_us:.1f} µs per order (Verifier.verify)")

    rng = random.Random(42)
    users = make_traders(args.users, rng)
    print(f"pre-signing {args.warmup + args.orders} orders ...", flush=True)
    bodies = plan(users, args.warmup + args.orders, rng, signer)

    settings = {
        "DEX_SIGNATURE_MAX_AGE_MS": str(3_600_000),
        "DEX_MAX_BACKLOG": str(10**9),
        "DEX_MAX_OPEN_ORDERS": str(10**9),  # no matcher runs: every order stays open
        "DEX_LOG_LEVEL": "INFO" if args.access_log else "WARNING",
    }
    if not args.rate_limits:
        settings |= {"DEX_RATE_LIMIT_USER": "0", "DEX_RATE_LIMIT_IP": "0"}
    sides = [Side("this", settings)]
    if args.root:
        root = os.path.abspath(args.root)
        sides = [Side(build_of(root), settings | {"PYTHONPATH": root})]
    if args.versus:
        root = os.path.abspath(args.versus)
        sides.append(Side(build_of(root), settings | {"PYTHONPATH": root}))

    def send(part: list[bytes]) -> list[dict[str, Any]]:
        """The same orders to every side at once, each from its own sender processes."""
        shares: list[tuple[Any, ...]] = []
        for side in sides:
            assert side.exchange is not None
            url = side.exchange.http
            for k in range(args.senders):
                mine = part[k :: args.senders]
                width = max(1, args.concurrency // args.senders)
                if args.rate:
                    keyed = [(str(i), body) for i, body in enumerate(mine)]
                    shares.append((url, keyed, args.rate / args.senders, width))
                else:
                    shares.append((url, mine, width))
        target = httpload.open_loop if args.rate else httpload.closed_loop
        tagged, _ = httpload.in_processes(
            _tagged, [(i, target, *share) for i, share in enumerate(shares)]
        )
        outcomes: list[Any] = [pair[1] for pair in sorted(tagged, key=lambda pair: pair[0])]
        results = []
        for index in range(len(sides)):
            answers = outcomes[index * args.senders : (index + 1) * args.senders]
            codes: dict[str, int] = {}
            if args.rate:
                seconds = len(part) / args.rate
                for outcome in answers:
                    codes["ACCEPTED"] = codes.get("ACCEPTED", 0) + len(outcome[0])
                    for code, count in outcome[1].items():
                        codes[code] = codes.get(code, 0) + count
            else:
                seconds = max(r[1] for r in answers) - min(r[0] for r in answers)
                for outcome in answers:
                    for code, count in outcome[2].items():
                        codes[code] = codes.get(code, 0) + count
            results.append({"codes": codes, "seconds": seconds})
        return results

    try:
        for side in sides:
            side.start(users, args.appendonly)
        send(bodies[: args.warmup])
        for side in sides:
            side.before = side.read()
        results = send(bodies[args.warmup :])
        for side in sides:
            side.after = side.read()
    finally:
        for side in sides:
            side.stop()

    common = {
        "rate": args.rate or None,
        "orders": args.orders,
        "concurrency": args.concurrency,
        "senders": args.senders,
        "verify_us": round(verify_us, 1),
        "access_log": args.access_log,
        "rate_limits": args.rate_limits,
        "appendonly": args.appendonly,
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "python": platform.python_version(),
    }
    measured = [
        side.figures(result["codes"], result["seconds"])
        for side, result in zip(sides, results, strict=True)
    ]
    figures = measured[0] | common if len(measured) == 1 else {"builds": measured} | common
    print(json.dumps(figures, indent=2))
    cli.write_results("gateway.json", figures)


if __name__ == "__main__":
    main()
