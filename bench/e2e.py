"""End-to-end benchmark: the whole exchange driven over HTTP, watched over WebSockets.

Starts the real system (``deploy/run.sh``: a private Redis and the five processes; rate limits
off, the gateway's per-request access log off unless ``--access-log``) unless
``--gateway`` points at a running one, deposits for many users, pre-signs orders for several
markets, sends them at a fixed rate, and reports:

* orders accepted/s, trades/s, fills settled/s;
* p50/p99 latency from the HTTP accept of a taker order to its trade on the WebSocket, and to
  its fill being settled into the balances (sampled), each split into stages: admission,
  matching, delivery; and for the settlement, the trade to ``apply_ops.lua``'s write of the
  fill (its stream id: trigger, task, rounds, apply) and that write to the client seeing it;
* CPU and memory per process, and Redis's own CPU; ``cpu_us_per_order_by_process``, largest
  first.

``--root DIR`` starts the exchange of another checkout (e.g. main's, from ``git archive``, with
this ``.venv`` linked in) for a baseline measured in the same session.

``--batch 50`` sends the same orders as signed batches of 50 actions (``POST
/v1/orders/batch``, each batch one trader's, not atomic, its ``ts`` at its planned send time)
instead of one request each; every figure stays per order, and ``cpu_us_per_order`` sums the
CPU time of every exchange process and Redis (and, beside it, the load generator's).

``--max`` steps the rate up (×1.5 from 500/s, then ``--refine`` bisection steps) and reports the
highest rate held for ``--seconds`` without the matcher's or the settler's backlog growing, and
the highest held with p99 send→trade ≤ 50 ms. Results go to ``bench/results/e2e.json``.

    .venv/bin/python bench/e2e.py --rate 2000 --seconds 60
    .venv/bin/python bench/e2e.py --max --seconds 60
    .venv/bin/python bench/e2e.py --batch 50 --rate 6000 --seconds 30

The launcher, load, watcher, meter and rate search are in ``bench/lib`` (its docstring).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis
from lib import REPO_ROOT, cli, httpload, watch
from lib.meter import ProcessMeter
from lib.ratesearch import find_max, held
from lib.stats import summary
from lib.system import ADMIN_TOKEN, System
from lib.traders import Trader, fund, make_traders, sign_fast, verifier

from common.eip712 import Verifier

MARKETS = {"BTC-USDC": "SPOT", "BTC-PERP": "PERP"}  # market -> product
MID = 3_000_000


@dataclass
class PlannedOrder:
    body: dict[str, Any]
    market: str
    user: str
    cid: str


def plan_orders(
    traders: list[Trader],
    total: int,
    rng: random.Random,
    verifier: Verifier,
    rate: float,
    markets: dict[str, str],
    batch: int = 0,
) -> list[PlannedOrder]:
    """Limit orders around a fixed mid, about half of them crossing, across the markets.
    Each is signed with ``ts`` at its planned send time, as a client signing just before it
    sends would (a run longer than the signature window would otherwise turn STALE_TS).
    With ``batch``, each run of ``batch`` orders is one trader's and left unsigned
    (:func:`plan_batches` signs them together)."""
    planned = []
    now = int(time.time() * 1000)
    names = list(markets)
    for index in range(total):
        trader = traders[(index // batch if batch else index) % len(traders)]
        market = names[index % len(names)]
        side = rng.choice(("BUY", "SELL"))
        offset = rng.randint(-2, 2)
        price = MID + (offset if side == "BUY" else -offset)
        cid = f"e2e-{int(rate)}-{index}-{rng.getrandbits(32):08x}"  # unique per --max step
        message = {
            "clientOrderId": cid,
            "userId": trader.address,
            "market": market,
            "side": side,
            "type": "LIMIT",
            "price": price,
            "qty": rng.randint(1, 5),
            "product": markets[market],
            "ts": now + int(index * 1000 / rate),
        }
        if not batch:
            message["sig"] = sign_fast(verifier, trader.key, "Order", message)
        planned.append(PlannedOrder(message, market, trader.address.lower(), cid))
    return planned


def plan_batches(
    orders: list[PlannedOrder], traders: list[Trader], size: int, verifier: Verifier
) -> list[tuple[list[str], bytes]]:
    """Each run of ``size`` planned orders (one trader's) as one signed, non-atomic Batch of
    PLACE actions, with the first order's ``ts``: (the orders' cids, the encoded body)."""
    keys_by_user = {t.address.lower(): t.key for t in traders}
    batches = []
    for start in range(0, len(orders), size):
        group = orders[start : start + size]
        first = group[0].body
        message: dict[str, Any] = {
            "userId": first["userId"],
            "atomic": False,
            "actions": [
                {
                    "kind": "PLACE",
                    "market": o.body["market"],
                    "clientOrderId": o.cid,
                    "side": o.body["side"],
                    "type": "LIMIT",
                    "price": o.body["price"],
                    "qty": o.body["qty"],
                    "timeInForce": "GTC",
                    "reduceOnly": False,
                    "expiresAt": 0,
                    "expectedFilled": 0,
                }
                for o in group
            ],
            "ts": first["ts"],
        }
        message["sig"] = sign_fast(verifier, keys_by_user[group[0].user], "Batch", message)
        batches.append(([o.cid for o in group], orjson.dumps(message)))
    return batches


def send_orders(
    system: System,
    orders: list[PlannedOrder],
    rate: float,
    run: watch.Run,
    concurrency: int,
    senders: int,
    batches: list[tuple[list[str], bytes]] | None = None,
) -> float:
    """Split the orders (or their ``batches``) over ``senders`` processes that send in step;
    return the elapsed time."""
    if batches is not None:
        per_batch = len(orders) / max(len(batches), 1)
        batch_shares = [
            (
                system.gateway,
                batches[index::senders],
                rate / per_batch / senders,
                concurrency // senders,
            )
            for index in range(senders)
        ]
        outcomes, start_at = httpload.in_processes(httpload.open_loop_batches, batch_shares)
    else:
        shares = [
            (
                system.gateway,
                [(o.cid, orjson.dumps(o.body)) for o in orders[index::senders]],
                rate / senders,
                concurrency // senders,
            )
            for index in range(senders)
        ]
        outcomes, start_at = httpload.in_processes(httpload.open_loop, shares)
    for accepted, rejected, cpu_seconds in outcomes:
        run.load_generator_cpu_s += cpu_seconds
        run.accepted_at.update(accepted)
        for code, count in rejected.items():
            run.rejected[code] = run.rejected.get(code, 0) + count
    return time.time() - start_at


async def run_at(
    system: System,
    markets: dict[str, str],
    rate: float,
    seconds: float,
    users: int,
    seed: int,
    concurrency: int,
    senders: int,
    batch: int = 0,
) -> dict[str, Any]:
    """Fund, pre-sign and send ``rate`` orders/s for ``seconds`` (in signed batches of
    ``batch`` when given); the run's figures."""
    rng = random.Random(seed)
    traders = make_traders(users, rng)
    amounts = {"USDC": 10**15, "BTC": 10**13}
    await asyncio.to_thread(fund, system.gateway, ADMIN_TOKEN, traders, amounts)
    signer = verifier()
    orders = plan_orders(traders, int(rate * seconds), rng, signer, rate, markets, batch)
    batches = plan_batches(orders, traders, batch, signer) if batch else None
    names = list(markets)
    store = redis.Redis.from_url(system.redis_url, decode_responses=True)
    meter = ProcessMeter(store, system.process.pid if system.process else None)
    events0 = watch.events_written(store, names)
    backlog0 = watch.backlog(store, names)
    run = watch.Run()
    stop = asyncio.Event()
    watcher = asyncio.create_task(
        watch.watch_trades(system.ws, system.redis_url, names, run, stop, sample_every=50)
    )
    await asyncio.sleep(0.5)

    async def sample_memory() -> None:
        while not stop.is_set():
            meter.sample_memory()
            await asyncio.sleep(1)

    sampler = asyncio.create_task(sample_memory())
    load_before = os.getloadavg()[0]
    elapsed = await asyncio.to_thread(
        send_orders, system, orders, rate, run, concurrency, senders, batches
    )
    backlog_end_of_send = watch.backlog(store, names)
    load_after = os.getloadavg()[0]
    await asyncio.sleep(2)  # let the tail of trades and settlements arrive
    stop.set()
    await asyncio.gather(watcher, sampler, return_exceptions=True)
    events1 = watch.events_written(store, names)
    processes = meter.report()
    accepted = max(len(run.accepted_at), 1)
    exchange_cpu_s = sum(p.get("cpu_s", 0.0) for p in processes.values())
    return {
        "batch": batch or None,
        "target_rate": rate,
        "seconds": round(elapsed, 2),
        # the machine's 1-minute load average when the sending started and ended: on a shared
        # machine, what the latencies of the run were measured under
        "load_average": [round(load_before, 2), round(load_after, 2)],
        "orders_sent": len(orders),
        "orders_accepted_per_s": round(len(run.accepted_at) / elapsed, 1),
        "rejected": run.rejected,
        "trades_per_s": round(run.trades / elapsed, 1),
        "settlement_events_per_s": round((events1 - events0) / elapsed, 1),
        "accept_to_trade_ms": summary(watch.latencies_ms(run, run.trade_seen_at)),
        "accept_to_trade_stages_ms": watch.stages_ms(run, store, names),
        "accept_to_settled_ms": summary(watch.latencies_ms(run, run.settled_at)),
        "trade_to_settled_stages_ms": watch.settlement_stages_ms(run),
        "backlog_start": backlog0,
        "backlog_end_of_send": backlog_end_of_send,
        "processes": processes,
        "cpu_us_per_order": round(exchange_cpu_s / accepted * 1e6, 1),
        "cpu_us_per_order_by_process": {
            name: round(p.get("cpu_s", 0.0) / accepted * 1e6, 1)
            for name, p in sorted(processes.items(), key=lambda item: -item[1].get("cpu_s", 0.0))
        },
        "cpu_us_per_order_with_load_generator": round(
            (exchange_cpu_s + run.load_generator_cpu_s) / accepted * 1e6, 1
        ),
        "redis_commands": meter.redis_commands(len(run.accepted_at)),
        "load_generator_cpu_percent": round(100 * run.load_generator_cpu_s / elapsed, 1),
    }


def _build(root: Path) -> str:
    """The commit of the checkout measured (a ``git archive`` copy: its BUILD file)."""
    stamp = root / "BUILD"
    if stamp.exists():
        return stamp.read_text().strip()
    head = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True)
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def main() -> None:
    parser = cli.parser(__doc__, full=True)
    parser.add_argument("--rate", type=float, default=2000, help="orders per second")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument(
        "--users",
        type=int,
        help="traders (default 64 per 20 s of run: about a fifth of the orders rest, and 64 "
        "traders reach DEX_MAX_OPEN_ORDERS, 200 per market, after ~25 s at 2,000/s)",
    )
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--senders", type=int, default=2, help="client processes sending orders")
    parser.add_argument(
        "--batch", type=int, default=0, help="send signed batches of this many orders (1-50)"
    )
    parser.add_argument("--max", action="store_true", help="find the highest rate held")
    parser.add_argument(
        "--refine", type=int, default=2, help="--max: bisection steps after the first miss"
    )
    parser.add_argument(
        "--markets", default=",".join(MARKETS), help=f"comma list from {', '.join(MARKETS)}"
    )
    parser.add_argument("--access-log", action="store_true", help="log every request (INFO)")
    parser.add_argument(
        "--gateway", help=f"use a running exchange at this URL instead (admin token {ADMIN_TOKEN})"
    )
    parser.add_argument(
        "--root",
        help="start the exchange of another checkout (a baseline build) instead of this one",
    )
    parser.add_argument("--ws", default="ws://127.0.0.1:8001/ws")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    chosen = args.markets.split(",")
    markets = {name: product for name, product in MARKETS.items() if name in chosen}
    if args.gateway:
        system = System(args.gateway, args.ws, args.redis)
    else:
        root = Path(args.root).resolve() if args.root else REPO_ROOT
        system = System.spawn(access_log=args.access_log, root=root)
    runs = []

    def run_once(rate: float) -> dict[str, Any]:
        result = asyncio.run(
            run_at(
                system,
                markets,
                rate,
                args.seconds,
                args.users or 64 * max(1, math.ceil(args.seconds / 20)),
                args.seed,
                args.concurrency,
                args.senders,
                args.batch,
            )
        )
        runs.append(result)
        print(json.dumps(result, indent=2))
        return result

    try:
        if args.max:
            outcome = find_max(run_once, args.refine)
        else:
            outcome = {"held": held(run_once(args.rate))}
    finally:
        system.stop()
    report = {
        "benchmark": "e2e",
        "command": " ".join(sys.argv),
        "build": _build(Path(args.root).resolve() if args.root else REPO_ROOT),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runs": runs,
        **outcome,
    }
    path = cli.write_results("e2e-batch.json" if args.batch else "e2e.json", report)
    print(json.dumps(outcome), f"-> {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
