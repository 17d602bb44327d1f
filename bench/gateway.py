"""Gateway benchmark: pre-signed orders accepted per second through one uvicorn worker.

Starts a private redis-server and one gateway process (``python -m services.gateway``: one
uvicorn worker, uvloop + httptools), funds many users, pre-signs every order, then sends them
as fast as the gateway answers with ``--concurrency`` requests in flight (closed loop) from
``--senders`` client processes, and reports orders accepted per second. No matcher runs: this
measures admission (parse, verify, reserve, enqueue). It also times one EIP-712 signature
verification (``Verifier.verify``) in this process. Results go to bench/results/gateway.json.

    .venv/bin/python bench/gateway.py                    # 20,000 orders, concurrency 64
    .venv/bin/python bench/gateway.py --orders 60000 --access-log --rate-limits

By default the rate limits are off (one client address would be limited at 1,000/s) and the
per-request access log is at WARNING; the flags put them back to measure their cost.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import time
from typing import Any

import orjson
import psutil
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


def send_all(url: str, bodies: list[bytes], concurrency: int, senders: int) -> dict[str, Any]:
    """Send ``bodies`` closed loop from ``senders`` processes; the seconds from the first
    process's start to the last one's end, and the answers per code."""
    start_at = time.time() + 1.5
    shares = [(url, bodies[i::senders], concurrency // senders, start_at) for i in range(senders)]
    results = httpload.in_processes(httpload.closed_loop, shares)
    began = min(r[0] for r in results)
    ended = max(r[1] for r in results)
    codes: dict[str, int] = {}
    for _, _, part in results:
        for code, count in part.items():
            codes[code] = codes.get(code, 0) + count
    return {"seconds": ended - began, "codes": codes}


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
    appendonly = ("--appendonly", "yes" if args.appendonly else "no")
    with RedisServer(extra_args=appendonly) as server:
        exchange = Exchange(server.url, **settings)
        try:
            exchange.start("gateway")
            fund(exchange.http, ADMIN_TOKEN, users, {"USDC": 10**15, "BTC": 10**14})
            send_all(exchange.http, bodies[: args.warmup], args.concurrency, args.senders)
            process = psutil.Process(exchange.processes["gateway"].pid)
            cpu_before = process.cpu_times()
            result = send_all(exchange.http, bodies[args.warmup :], args.concurrency, args.senders)
            cpu_after = process.cpu_times()
        finally:
            exchange.stop()
            shutil.rmtree(exchange.workdir, ignore_errors=True)

    accepted = result["codes"].get("ACCEPTED", 0)
    seconds = result["seconds"]
    gateway_cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    figures = {
        "orders": args.orders,
        "concurrency": args.concurrency,
        "senders": args.senders,
        "accepted": accepted,
        "codes": result["codes"],
        "seconds": round(seconds, 3),
        "accepted_per_s": round(accepted / seconds, 1),
        "gateway_cpu_s": round(gateway_cpu, 2),
        "gateway_cpu_per_order_us": round(gateway_cpu / max(accepted, 1) * 1e6, 1),
        # What the worker's own CPU time allows if it had a core to itself (derived).
        "accepted_per_gateway_cpu_s": round(accepted / max(gateway_cpu, 1e-9), 1),
        "gateway_core_share": round(gateway_cpu / seconds, 2),
        "verify_us": round(verify_us, 1),
        "access_log": args.access_log,
        "rate_limits": args.rate_limits,
        "appendonly": args.appendonly,
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "python": platform.python_version(),
    }
    print(json.dumps(figures, indent=2))
    cli.write_results("gateway.json", figures)


if __name__ == "__main__":
    main()
