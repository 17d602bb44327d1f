"""Instructions and Redis commands per accepted order in the admission's scripts, independent of
the machine's load.

Starts ``redis-server`` under callgrind (collecting only inside ``evalShaCommand``, as
bench/matcher_profile.py does for match.lua), creates the matcher's group on each market
stream (so ``accept_order.lua`` counts the backlog as it does in service), funds the traders,
then admits ``--orders`` pre-signed orders (bench/gateway.py's: limit orders on BTC-USDC and
BTC-PERP, Order and OrderV2 alternately) one after another through the gateway's own
admission path (``writes.place_order``, in this process, over the gateway's own Redis lane), and
reads the instructions retired in the script calls (callgrind_annotate) and the commands run
(INFO commandstats, each script's inner commands included), per accepted order.
``--rate-limits`` keeps the default limits, so the address's and the user's token buckets
(``rate_limit.lua``) are counted too (bench/e2e.py and bench/gateway.py run without them).

``--cpu`` measures the gateway's side instead: Redis runs plain (no callgrind), the orders are
admitted ``--in-flight`` at a time on uvloop (as a loaded gateway has many requests waiting),
and the report gives this process's CPU time (``time.process_time``: user + system, the load
of other processes does not count) per accepted order, the median of ``--rounds`` rounds of
``--orders`` each (a fresh Redis and fresh traders' orders for each). ``--cprofile`` adds the
functions of one more round under cProfile, by their own time.

    .venv/bin/python bench/admission_profile.py                 # 2,000 orders, about a minute
    .venv/bin/python bench/admission_profile.py --no-valgrind   # commands per order only, fast
    .venv/bin/python bench/admission_profile.py --root /tmp/gw-main-build   # another checkout
    .venv/bin/python bench/admission_profile.py --cpu --rounds 5            # gateway CPU µs/order
    .venv/bin/python bench/admission_profile.py --cpu --cprofile            # and where it goes

Results go to bench/results/admission_profile.json (``--cpu``: admission_cpu.json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import uvloop
from lib import callgrind, cli
from lib.traders import make_traders, verifier
from support.redis_server import free_port

MARKETS = ("BTC-USDC", "BTC-PERP")


def main() -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--no-valgrind", action="store_true")
    parser.add_argument("--rate-limits", action="store_true", help="keep the default limits")
    parser.add_argument("--root", default="", help="admit with the gateway of this checkout")
    parser.add_argument("--cpu", action="store_true", help="the gateway's CPU per order")
    parser.add_argument("--rounds", type=int, default=5, help="with --cpu")
    parser.add_argument("--in-flight", type=int, default=32, help="with --cpu")
    parser.add_argument("--cprofile", action="store_true", help="with --cpu")
    args = parser.parse_args()
    if args.root:
        # The admission code of that checkout; the bodies and the figures are this one's.
        sys.path.insert(0, os.path.abspath(args.root))
        for name in [m for m in sys.modules if m.split(".")[0] in ("common", "services")]:
            del sys.modules[name]
    if args.cpu:
        cpu_main(args)
        return
    valgrind = not args.no_valgrind and shutil.which("valgrind") is not None
    workdir = Path(tempfile.mkdtemp(prefix="dex-admission-profile-"))
    rng = random.Random(42)
    before, after, accepted = run_round(args, workdir, valgrind, rng, in_flight=1)
    ran = {
        name: after[name] - before.get(name, 0)
        for name in after
        if after[name] - before.get(name, 0) > 0 and name not in ("info", "script|load")
    }
    per_order = max(accepted, 1)
    result: dict[str, Any] = {
        "build": args.root or "this",
        "orders": args.orders,
        "accepted": accepted,
        "rateLimits": args.rate_limits,
        "scriptCallsPerOrder": round(ran.get("evalsha", 0) / per_order, 3),
        **callgrind.per_order(ran, per_order, workdir, valgrind),
    }
    cli.write_results("admission_profile.json", result)
    print(json.dumps(result, indent=2))


def cpu_main(args: argparse.Namespace) -> None:
    """``--cpu``: this process's CPU µs per accepted order, round by round."""
    rng = random.Random(42)
    rounds: list[float] = []
    for _ in range(args.rounds):
        workdir = Path(tempfile.mkdtemp(prefix="dex-admission-cpu-"))
        spent: list[float] = []
        _, _, accepted = run_round(args, workdir, False, rng, args.in_flight, spent)
        rounds.append(round(spent[0] * 1e6 / max(accepted, 1), 1))
        shutil.rmtree(workdir, ignore_errors=True)
    result: dict[str, Any] = {
        "build": args.root or "this",
        "orders": args.orders,
        "inFlight": args.in_flight,
        "rateLimits": args.rate_limits,
        "loadAverage": [round(x, 2) for x in os.getloadavg()],
        "cpuMicrosPerOrder": rounds,
        "median": statistics.median(rounds),
    }
    cli.write_results("admission_cpu.json", result)
    print(json.dumps(result, indent=2))
    if args.cprofile:
        workdir = Path(tempfile.mkdtemp(prefix="dex-admission-cpu-"))
        profile = cProfile.Profile(time.process_time)
        run_round(args, workdir, False, rng, args.in_flight, profile=profile)
        profile.dump_stats(str(workdir / "admission_cpu.prof"))
        pstats.Stats(profile).sort_stats("tottime").print_stats(45)
        print(f"cProfile's figures: {workdir / 'admission_cpu.prof'}")


def run_round(
    args: argparse.Namespace,
    workdir: Path,
    valgrind: bool,
    rng: random.Random,
    in_flight: int,
    spent: list[float] | None = None,
    profile: cProfile.Profile | None = None,
) -> tuple[dict[str, int], dict[str, int], int]:
    """One private Redis, funded traders, ``--orders`` admitted ``in_flight`` at a time: the
    command counts before and after, and the orders accepted (``spent`` gets the CPU seconds
    of the admissions; ``profile`` runs them)."""
    # Imported only now, from the checkout measured.
    from gateway import plan  # bench/gateway.py

    from common import keys
    from common.settings import DexSettings
    from services.gateway import admin, writes
    from services.gateway.context import Gateway

    port = free_port()
    client = redis.Redis(port=port, decode_responses=True)
    # on 127.0.0.1: the gateway's lean lane speaks TCP only
    server = callgrind.start_redis(
        ["--port", str(port), "--bind", "127.0.0.1"], client, workdir, valgrind
    )
    limits = {} if args.rate_limits else {"rate_limit_ip": 0, "rate_limit_user": 0}
    settings = DexSettings(
        redis_url=f"redis://127.0.0.1:{port}/0",
        signature_max_age_ms=3_600_000,
        max_backlog=10**9,
        max_open_orders=10**9,
        **limits,  # type: ignore[arg-type]
    )
    signer = verifier()
    users = make_traders(args.users, rng)
    bodies = plan(users, args.orders, rng, signer)
    for market in MARKETS:
        client.xgroup_create(keys.market_in(market), keys.MATCHER_GROUP, id="$", mkstream=True)

    async def admit(body: bytes) -> bool:
        status, _ = await writes.place_order(gateway, body, "127.0.0.1", None)
        return status == 202

    async def admit_all() -> tuple[dict[str, int], dict[str, int], int]:
        for trader in users:
            user = trader.address.lower()
            for asset, amount in {"USDC": 10**15, "BTC": 10**14}.items():
                await admin.deposit(gateway, user, asset, amount)
        before = callgrind.command_counts(client)
        accepted = 0
        started = time.process_time()
        if profile is not None:
            profile.enable()
        for first in range(0, len(bodies), in_flight):
            chunk = bodies[first : first + in_flight]
            accepted += sum(await asyncio.gather(*(admit(body) for body in chunk)))
        if profile is not None:
            profile.disable()
        if spent is not None:
            spent.append(time.process_time() - started)
        # Lua garbage the calls left is collected in a later call: collect it now, inside
        # an EVALSHA too, so the instructions count it whatever the script's GC policy.
        client.evalsha(client.script_load("collectgarbage('collect') return 0"), 0)
        return before, callgrind.command_counts(client), accepted

    async def run() -> tuple[dict[str, int], dict[str, int], int]:
        nonlocal gateway
        gateway = Gateway.build(settings)
        try:
            return await admit_all()
        finally:
            await gateway.close()

    gateway: Any = None
    try:
        return uvloop.run(run())  # the gateway's own loop (services/gateway/__main__.py)
    finally:
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown(nosave=True)
        server.wait(timeout=300)


if __name__ == "__main__":
    main()
