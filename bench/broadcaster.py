"""Broadcaster benchmark: many WebSocket clients on one market's ``trade:`` and ``depth:``.

Starts a private redis-server and ``--broadcasters`` broadcaster processes, connects
``--clients`` clients (spread over ``--client-procs`` processes and over the broadcasters),
each subscribed to ``trade:BTC-USDC`` and ``depth:BTC-USDC``, then PUBLISHes synthetic
matcher publications (``{"seq", "data"}`` exactly as match.lua sends them) at ``--rate``
trades per second: per trade one depth update and one trade update, as a taker that fills
one maker produces. Each publication carries its publish time (``benchNs``, an extra field the
broadcaster forwards untouched), so every client measures publish-to-receive latency.

Every ``--measure-every``-th client parses each frame (latency, seq gaps); the others only
count the bytes they read (so the load generator, sharing the machine, stays cheaper than the
server) and are credited with the measuring clients' messages per byte. Reports messages
delivered per second, p50/p99/max latency, seq gaps (must be 0), clients closed (1013 from the
broadcaster's metrics), broadcaster CPU per message and memory per connection (RSS growth
from the connections and their subscriptions, divided by the clients). Results go to
``bench/results/broadcaster.json``.

    .venv/bin/python bench/broadcaster.py                     # 1,000 clients, 500 trades/s
    .venv/bin/python bench/broadcaster.py --rate 100 --seconds 10
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import time
from typing import Any

import httpx
import orjson
import psutil
import redis
from lib import cli
from lib.stats import histogram_percentile
from lib.wsload import BUCKET_US, BUCKETS, client_process
from support.exchange import Exchange
from support.redis_server import RedisServer

from common import keys

MARKET = "BTC-USDC"
TOPICS = (f"trade:{MARKET}", f"depth:{MARKET}")


def publish(r: redis.Redis, rate: int, seconds: float, counters: dict[str, int]) -> dict[str, Any]:
    """``rate`` trades/s for ``seconds``, in 10 ms ticks, one depth + one trade update each;
    ``counters`` carries the depth and trade seq from one call to the next."""
    depth_channel, trade_channel = (keys.channel(t) for t in (TOPICS[1], TOPICS[0]))
    seq, tseq = counters["seq"], counters["tseq"]
    first_trade = tseq
    tick = 0.01
    per_tick = rate * tick
    owed = 0.0
    published = 0
    begin = time.monotonic()
    next_tick = begin
    while time.monotonic() - begin < seconds:
        owed += per_tick
        pipe = r.pipeline(transaction=False)
        while owed >= 1:
            owed -= 1
            seq += 1
            tseq += 1
            now = time.time_ns()
            price = 3_000_000 + (tseq % 7)
            depth = {"bids": [], "asks": [[price, tseq % 50]], "benchNs": now}
            trade = {
                "tradeId": f"{MARKET}:{tseq}", "market": MARKET, "price": price, "qty": 1,
                "takerSide": "BUY", "buyer": "0xb", "seller": "0xs", "buyOid": f"b{tseq}",
                "sellOid": f"s{tseq}", "ts": now // 1_000_000, "seq": tseq, "benchNs": now,
            }  # fmt: skip
            pipe.publish(depth_channel, orjson.dumps({"seq": seq, "data": depth}))
            pipe.publish(trade_channel, orjson.dumps({"seq": tseq, "data": [trade]}))
            published += 2
        pipe.execute()
        next_tick += tick
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    elapsed = time.monotonic() - begin
    counters.update(seq=seq, tseq=tseq)
    return {"publications": published, "trades": tseq - first_trade, "seconds": elapsed}


def slow_disconnects(ws_url: str) -> float:
    """The broadcaster's own count of clients it closed with 1013."""
    metrics_url = ws_url.replace("ws://", "http://").removesuffix("/ws") + "/metrics"
    text = httpx.get(metrics_url, timeout=10).text
    for line in text.splitlines():
        if line.startswith("dex_broadcaster_slow_client_disconnects_total "):
            return float(line.split()[1])
    return 0.0


def main() -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=500, help="trades per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--broadcasters", type=int, default=1)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--send-queue", type=int, default=1000)
    parser.add_argument(
        "--measure-every", type=int, default=25, help="every Nth client parses and times frames"
    )
    args = parser.parse_args()

    settings = {
        "DEX_BROADCASTER_SEND_QUEUE": str(args.send_queue),
        # The byte-counting clients do not parse frames, so they cannot answer pings.
        "DEX_BROADCASTER_PING_INTERVAL_S": "3600",
        # Every bench client connects from 127.0.0.1.
        "DEX_BROADCASTER_MAX_CONNECTIONS_PER_IP": "0",
    }
    redis_server = RedisServer().start()
    broadcasters = [Exchange(redis_server.url, **settings) for _ in range(args.broadcasters)]
    try:
        for broadcaster in broadcasters:
            broadcaster.start("broadcaster")
        urls = [broadcaster.ws for broadcaster in broadcasters]
        procs = [psutil.Process(b.processes["broadcaster"].pid) for b in broadcasters]
        rss_before = sum(p.memory_info().rss for p in procs)

        context = multiprocessing.get_context("spawn")
        ready = [context.Event() for _ in range(args.client_procs)]
        start, stop = context.Event(), context.Event()
        results = context.Queue()
        share = [args.clients // args.client_procs] * args.client_procs
        share[0] += args.clients - sum(share)
        workers = [
            context.Process(
                target=client_process,
                args=(urls, TOPICS, n, args.measure_every, ready[i], start, stop, results),
                daemon=True,
            )
            for i, n in enumerate(share)
        ]
        for worker in workers:
            worker.start()
        for event in ready:
            if not event.wait(120):
                raise SystemExit("the clients did not connect within 120 s")
        rss_connected = sum(p.memory_info().rss for p in procs)

        r = redis.Redis.from_url(redis_server.url)
        counters = {"seq": 0, "tseq": 0}
        publish(r, args.rate, 2.0, counters)  # warm-up, not measured
        time.sleep(0.5)
        client_procs = [psutil.Process(w.pid) for w in workers if w.pid is not None]
        assert redis_server.proc is not None
        redis_proc = psutil.Process(redis_server.proc.pid)
        for p in [*procs, *client_procs, redis_proc]:
            p.cpu_percent(None)
        start.set()
        published = publish(r, args.rate, args.seconds, counters)
        cpu = [p.cpu_percent(None) for p in procs]
        client_cpu = [p.cpu_percent(None) for p in client_procs]
        redis_cpu = redis_proc.cpu_percent(None)
        rss_loaded = sum(p.memory_info().rss for p in procs)
        time.sleep(1.0)  # the last publications arrive
        stop.set()
        outcomes = [results.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join(timeout=30)
        slow = sum(slow_disconnects(url) for url in urls)
    finally:
        for broadcaster in broadcasters:
            broadcaster.stop()
        redis_server.stop()

    histogram = [sum(o["histogram"][i] for o in outcomes) for i in range(BUCKETS)]
    measured = sum(o["messages"] for o in outcomes)
    measured_clients = sum(o["measured_clients"] for o in outcomes)
    drained_clients = sum(o["drained_clients"] for o in outcomes)
    measured_bytes = sum(o["measured_bytes"] for o in outcomes)
    drained_bytes = sum(o["drained_bytes"] for o in outcomes)
    # Byte-counting clients are credited with the measured clients' messages per byte.
    drained_ratio = (
        (drained_bytes / drained_clients) / (measured_bytes / measured_clients)
        if drained_clients and measured_bytes
        else 1.0
    )
    delivered = round(
        measured / max(measured_clients, 1) * (measured_clients + drained_clients * drained_ratio)
    )
    closed: dict[str, int] = {}
    for outcome in outcomes:
        for code, count in outcome["closed"].items():
            closed[code] = closed.get(code, 0) + count
    expected = published["publications"] * args.clients
    report = {
        "clients": args.clients,
        "broadcasters": args.broadcasters,
        "trades_per_s": round(published["trades"] / published["seconds"], 1),
        "publications_per_s": round(published["publications"] / published["seconds"], 1),
        "measuring_clients": measured_clients,
        "messages_delivered_to_measuring_clients": measured,
        "byte_counting_clients_share_of_bytes": round(drained_ratio, 4),
        "messages_delivered": delivered,
        "messages_expected": expected,
        "delivered_per_s": round(delivered / published["seconds"]),
        "latency_ms": {  # measuring clients, publish to receive
            "p50": histogram_percentile(histogram, 0.50, BUCKET_US),
            "p99": histogram_percentile(histogram, 0.99, BUCKET_US),
            "max": histogram_percentile(histogram, 1.0, BUCKET_US),
        },
        "seq_gaps": sum(o["gaps"] for o in outcomes),
        "client_close_codes": closed,
        "slow_client_disconnects": slow,
        "broadcaster_cpu_percent": cpu,
        # CPU time the broadcasters spent per message delivered (less sensitive than latency
        # to other processes competing for the same cores).
        "broadcaster_cpu_us_per_message": round(
            sum(cpu) / 100 * published["seconds"] / max(delivered, 1) * 1e6, 2
        ),
        "client_procs_cpu_percent": client_cpu,
        "redis_cpu_percent": redis_cpu,
        "memory_per_connection_kib": round((rss_connected - rss_before) / args.clients / 1024, 1),
        "broadcaster_rss_mib": {
            "idle": round(rss_before / 2**20, 1),
            "connected": round(rss_connected / 2**20, 1),
            "under_load": round(rss_loaded / 2**20, 1),
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_1m": os.getloadavg()[0]},
        "seconds": round(published["seconds"], 1),
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    cli.write_results("broadcaster.json", report)


if __name__ == "__main__":
    main()
