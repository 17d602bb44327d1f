"""WebSocket order entry against REST: send -> answer latency of one order at a time.

Starts a private redis-server and one gateway process (``python -m services.gateway``), funds
users, pre-signs every order, then in one run sends them alternately in blocks of ``--block``
over one keep-alive HTTP connection (``POST /v1/orders``, ``httpload.OrderConnection``) and
over one ``/v1/ws`` connection (``entryload.EntrySocket``), one request in flight, so both
roads see the same machine and the same load. Then, with ``--in-flight K`` (64), both roads
with K orders outstanding: K keep-alive HTTP connections against one WebSocket connection,
in four alternating phases (orders/s and latency). No matcher runs: this measures admission (parse,
verify, reserve, enqueue) and the road to it. Results go to bench/results/ws_entry.json.

    .venv/bin/python bench/ws_entry.py                   # 5,000 orders per road
    .venv/bin/python bench/ws_entry.py --orders 20000 --block 200
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import shutil
import time
from typing import Any

from gateway import MARKETS, plan
from lib import cli, stats
from lib.entryload import EntrySocket
from lib.httpload import OrderConnection
from lib.traders import fund, make_traders, verifier
from support.exchange import ADMIN_TOKEN, Exchange
from support.redis_server import RedisServer


async def rest_in_flight(
    url: str, bodies: list[bytes], in_flight: int
) -> tuple[list[float], float]:
    """``in_flight`` keep-alive connections, each sending its next order when answered:
    each order's latency (µs) and the seconds the whole took."""
    connections = [await OrderConnection(url).open() for _ in range(in_flight)]
    queue = list(reversed(bodies))
    latencies: list[float] = []

    async def worker(connection: OrderConnection) -> None:
        while queue:
            body = queue.pop()
            started = time.perf_counter_ns()
            await connection.post(body)
            latencies.append((time.perf_counter_ns() - started) / 1000)

    began = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    seconds = time.perf_counter() - began
    for connection in connections:
        connection.close()
    return latencies, seconds


async def ws_in_flight(url: str, bodies: list[bytes], in_flight: int) -> tuple[list[float], float]:
    """One entry connection with up to ``in_flight`` orders unanswered: each order's latency
    (µs, matched by id) and the seconds the whole took."""
    ws = await EntrySocket(url).open()
    sent: dict[int, int] = {}
    latencies: list[float] = []
    began = time.perf_counter()
    pending = list(reversed(bodies))
    while pending and len(sent) < in_flight:
        sent[ws.send_order(pending.pop())] = time.perf_counter_ns()
    while sent:
        request_id, _ = await ws.answer()
        latencies.append((time.perf_counter_ns() - sent.pop(request_id)) / 1000)
        if pending:
            sent[ws.send_order(pending.pop())] = time.perf_counter_ns()
    seconds = time.perf_counter() - began
    ws.close()
    return latencies, seconds


async def measure_in_flight(url: str, bodies: list[bytes], in_flight: int) -> dict[str, Any]:
    """Both roads with ``in_flight`` orders outstanding, in four alternating phases."""
    quarter = len(bodies) // 4
    phases = [bodies[i * quarter : (i + 1) * quarter] for i in range(4)]
    latencies: dict[str, list[float]] = {"rest": [], "ws": []}
    seconds = {"rest": 0.0, "ws": 0.0}
    for index, phase in enumerate(phases):
        road = "rest" if index % 2 == 0 else "ws"
        run = rest_in_flight if road == "rest" else ws_in_flight
        taken, took = await run(url, phase, in_flight)
        latencies[road] += taken
        seconds[road] += took
    return {
        road: {
            **stats.summary(latencies[road]),
            "orders_per_s": round(len(latencies[road]) / seconds[road], 1),
        }
        for road in latencies
    }


async def measure(url: str, bodies: list[bytes], block: int, warmup: int) -> dict[str, Any]:
    """Latency (µs) of each order, by road; orders alternate roads every ``block``."""
    http = await OrderConnection(url).open()
    ws = await EntrySocket(url).open()
    roads = {"rest": http.post, "ws": ws.order}
    latencies: dict[str, list[float]] = {"rest": [], "ws": []}
    codes: dict[str, dict[int, int]] = {"rest": {}, "ws": {}}
    try:
        for index, body in enumerate(bodies):
            road = "rest" if (index // block) % 2 == 0 else "ws"
            started = time.perf_counter_ns()
            status, _ = await roads[road](body)
            elapsed_us = (time.perf_counter_ns() - started) / 1000
            if index >= warmup:
                latencies[road].append(elapsed_us)
                codes[road][status] = codes[road].get(status, 0) + 1
    finally:
        http.close()
        ws.close()
    return {
        road: {**stats.summary(latencies[road]), "codes": codes[road]}
        | {"mean": round(sum(latencies[road]) / max(len(latencies[road]), 1), 1)}
        for road in roads
    }


def main() -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--orders", type=int, default=5_000, help="per road")
    parser.add_argument("--warmup", type=int, default=1_000, help="orders not counted")
    parser.add_argument("--block", type=int, default=100, help="orders per road in a row")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument(
        "--in-flight",
        type=int,
        default=64,
        help="then both roads with this many orders outstanding (0: skip)",
    )
    args = parser.parse_args()

    import uvloop

    rng = random.Random(42)
    users = make_traders(args.users, rng)
    total = args.warmup + 2 * args.orders + (2 * args.orders if args.in_flight else 0)
    print(f"pre-signing {total} orders ...", flush=True)
    bodies = plan(users, total, rng, verifier())
    settings = {
        "DEX_SIGNATURE_MAX_AGE_MS": str(3_600_000),
        "DEX_MAX_BACKLOG": str(10**9),
        "DEX_MAX_OPEN_ORDERS": str(10**9),  # no matcher runs: every order stays open
        "DEX_LOG_LEVEL": "WARNING",
        "DEX_RATE_LIMIT_USER": "0",
        "DEX_RATE_LIMIT_IP": "0",
    }
    with RedisServer(extra_args=("--appendonly", "no")) as server:
        exchange = Exchange(server.url, **settings)
        try:
            exchange.start("gateway")
            fund(exchange.http, ADMIN_TOKEN, users, {"USDC": 10**15, "BTC": 10**14})
            load_before = os.getloadavg()[0]
            began = time.time()
            sequential = bodies[: args.warmup + 2 * args.orders]
            roads = uvloop.run(measure(exchange.http, sequential, args.block, args.warmup))
            seconds = time.time() - began
            concurrent = None
            if args.in_flight:
                rest = bodies[args.warmup + 2 * args.orders :]
                concurrent = uvloop.run(measure_in_flight(exchange.http, rest, args.in_flight))
            load_after = os.getloadavg()[0]
        finally:
            exchange.stop()
            shutil.rmtree(exchange.workdir, ignore_errors=True)
    figures = {
        "orders_per_road": args.orders,
        "warmup": args.warmup,
        "block": args.block,
        "in_flight": 1,
        "markets": list(MARKETS),
        "latency_us": roads,
        "in_flight_many": {"in_flight": args.in_flight, "latency_us": concurrent},
        "seconds": round(seconds, 2),
        "cpus": os.cpu_count(),
        "load_avg_1m_before": round(load_before, 2),
        "load_avg_1m_after": round(load_after, 2),
        "python": platform.python_version(),
    }
    print(json.dumps(figures, indent=2))
    cli.write_results("ws_entry.json", figures)


if __name__ == "__main__":
    main()
