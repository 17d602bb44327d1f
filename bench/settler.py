"""Settler benchmark: fills settled per second by two Celery worker processes.

Starts a private redis-server, writes ``--fills`` fills spread over the markets of
``deploy/markets.yaml`` (each between two fresh orders with their reservations, as the gateway
and the matcher write them: one fill and two done events), then starts
``celery -A services.settler worker -Q settle --concurrency 2`` and sends one ``dex.settle``
per market. Reports fills/s from the first task sent until every market's cursor reached its
last event, checks the auditor, and writes ``bench/results/settler.json``.

    .venv/bin/python bench/settler.py --fills 40000
"""

from __future__ import annotations

import json
import os
import platform
import time

import redis
from celery import Celery
from lib import REPO_ROOT, cli
from support.exchange import Exchange
from support.market_driver import bulk_fills
from support.redis_server import RedisServer

from common import keys
from common.audit import audit
from common.markets import load_markets


def main() -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--fills", type=int, default=40_000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()

    markets = load_markets(REPO_ROOT / "deploy" / "markets.yaml")
    server = RedisServer()
    server.start()
    worker = Exchange(server.url)
    try:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        users = [f"0x{i:040x}" for i in range(1, args.users + 1)]
        per_market = args.fills // len(markets.markets)
        started = time.monotonic()
        expected = {
            symbol: bulk_fills(client, market, users, per_market, 3_000_000, 3)
            for symbol, market in markets.markets.items()
        }
        print(f"wrote {per_market * len(expected)} fills in {time.monotonic() - started:.1f} s")
        worker.start(
            "settler",
            args=["-Q", "settle", "--concurrency", str(args.concurrency), "--without-gossip",
                  "--without-mingle", "--loglevel=WARNING"],
        )  # fmt: skip
        app = Celery("bench", broker=server.url)
        # Wait for the worker to be up (it answers a ping) before the clock starts.
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5) and time.monotonic() < deadline:
            pass
        last_ids = {s: client.xrevrange(keys.market_events(s), count=1)[0][0] for s in expected}
        t0 = time.monotonic()
        for symbol in expected:
            app.send_task("dex.settle", args=[symbol], queue="settle")
        while any(client.get(keys.market_settled(s)) != last_ids[s] for s in expected):
            time.sleep(0.01)
            if time.monotonic() - t0 > 600:
                raise SystemExit("settlement did not finish within 600 s")
        elapsed = time.monotonic() - t0
        fills = per_market * len(expected)
        report = audit(client, markets)
        result = {
            "fills": fills,
            "events": sum(expected.values()),
            "markets": len(expected),
            "users": args.users,
            "worker_processes": args.concurrency,
            "seconds": round(elapsed, 3),
            "fills_per_second": round(fills / elapsed),
            "audit_ok": report["ok"],
            "machine": f"{platform.machine()} {os.cpu_count()} cpus (shared)",
        }
        print(json.dumps(result, indent=2))
        cli.write_results("settler.json", result)
        app.close()
    finally:
        worker.stop()
        server.stop()


if __name__ == "__main__":
    main()
