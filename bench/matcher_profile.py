"""Instructions and Redis commands per order inside match.lua, independent of the machine's load.

Starts ``redis-server`` under callgrind (collecting only inside ``evalShaCommand`` and
``fcallCommand``: match.lua runs as a function library, common/lua.py), feeds the
first ``--orders`` orders of ``../shared/data/bench/stream-200k.csv`` (the bench's market and
commands, bench/lib/stream.py) through the real consumer (services/matcher/consumer.py, batches of
500) and collects the Lua garbage they left (in one more EVALSHA, so it counts), then reads
the instructions retired in the script calls (callgrind_annotate) and the
commands the scripts ran (INFO commandstats), and divides both by the orders.

    .venv/bin/python bench/matcher_profile.py                 # 2,000 orders, about a minute
    .venv/bin/python bench/matcher_profile.py --no-valgrind   # commands per order only, fast
    .venv/bin/python bench/matcher_profile.py --batch 4       # orders per call at 2,000 orders/s
    .venv/bin/python bench/matcher_profile.py --empty-calls 300   # a call's fixed cost
    .venv/bin/python bench/matcher_profile.py --no-valgrind --batch 4 --orders 20000   # and µs
    .venv/bin/python bench/matcher_profile.py --no-valgrind --orders 20000 --batch 100 --floor

Without valgrind it also reports the microseconds Redis spent in the script calls
(``INFO commandstats``), in the commands they ran (the rest of a call's time is Lua's: the
script's logic, cjson, and each ``redis.call``'s conversion of arguments and reply) and its
CPU, per order: wall-clock figures, so they move with the machine's load; compare builds in
alternation.

With ``--floor`` the same entries go through bench/matcher_floor.lua instead of the matcher:
a function that decodes each command and runs a command mix like match.lua's with no matching
logic, the floor of any Lua that keeps the book in sorted sets and writes what match.lua
writes.

With ``--empty-calls N`` no order is fed: the consumer makes N calls with no command (its tick),
and the figures are per call.

Results go to bench/results/matcher_profile.json.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import redis
from lib import callgrind, cli
from lib.stream import MARKET, MARKETS_YAML, command, load_stream

from common import keys
from common.markets import load_markets
from services.matcher.consumer import MarketConsumer, write_market_cfg

FLOOR_LIBRARY = Path(__file__).with_name("matcher_floor.lua")
GC_LIBRARY = """#!lua name=dex_bench_collect
redis.register_function('dex_bench_collect', function() collectgarbage('collect') return 0 end)
"""


def usec_between(before: dict[str, int], after: dict[str, int], names: Iterable[str]) -> int:
    """Microseconds Redis spent in the commands ``names`` between two ``command_usec`` reads."""
    return sum(after.get(name, 0) - before.get(name, 0) for name in names)


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


SCRIPT_CALLS = ("evalsha", "fcall")


def main() -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=500, help="orders per script call")
    parser.add_argument("--no-valgrind", action="store_true")
    parser.add_argument(
        "--empty-calls",
        type=int,
        default=0,
        help="no orders: this many calls with no command; figures per call",
    )
    parser.add_argument(
        "--outbox-entries",
        action="store_true",
        help="entries without o=1 (the outbox path's): each order's record is looked up",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="bench/matcher_floor.lua instead of the matcher: the command mix, no logic",
    )
    args = parser.parse_args()
    valgrind = not args.no_valgrind and shutil.which("valgrind") is not None
    workdir = Path(tempfile.mkdtemp(prefix="dex-matcher-profile-"))
    markets_file = workdir / "markets.yaml"
    markets_file.write_text(MARKETS_YAML)
    sock = workdir / "redis.sock"
    # No socket timeout: under callgrind a call of 500 orders takes seconds, more than
    # redis-py's default 5 s on a loaded machine, and its retry of the EVALSHA then meets BUSY.
    client = redis.Redis(unix_socket_path=str(sock), decode_responses=True, socket_timeout=None)
    listen = ["--port", "0", "--unixsocket", str(sock)]  # no TCP port another process could hold
    server = callgrind.start_redis(listen, client, workdir, valgrind)
    try:
        market = load_markets(markets_file).markets[MARKET]
        write_market_cfg(client, market)
        orders = [] if args.empty_calls else load_stream(args.orders)
        with client.pipeline(transaction=False) as pipe:
            for order in orders:
                fields = {"c": command(*order)}
                if not args.outbox_entries:
                    fields["o"] = "1"  # as the single-Redis admission XADDs it
                pipe.xadd(keys.market_in(MARKET), fields)
            pipe.execute()
        consumer = MarketConsumer(
            client, MARKET, "profile", lambda _m: None, batch_size=args.batch, lease_ms=600_000
        )
        consumer.ensure_group()
        if not consumer.acquire():
            raise SystemExit("could not take the market lease")
        before = callgrind.command_counts(client)
        usec_before, cpu_before = callgrind.command_usec(client), redis_cpu(client)
        handled = 0
        if args.floor:
            client.function_load(FLOOR_LIBRARY.read_text(), replace=True)
            stream = keys.market_in(MARKET)
            while handled < len(orders):
                handled += client.fcall(
                    "dex_bench_floor", 1, stream, keys.MATCHER_GROUP, "floor", args.batch
                )
        while handled < len(orders):
            handled += consumer.poll(block_ms=10)
        for _ in range(args.empty_calls):
            consumer.tick()
        usec_after, cpu = callgrind.command_usec(client), redis_cpu(client) - cpu_before
        # Lua garbage the calls left behind is collected in a later call: collect it now,
        # inside a call too, so the instructions count it whatever the script's GC policy
        # (in the functions' Lua state, where match.lua's library runs, and the scripts').
        client.evalsha(client.script_load("collectgarbage('collect') return 0"), 0)
        client.function_load(GC_LIBRARY, replace=True)
        client.fcall("dex_bench_collect", 0)
        after = callgrind.command_counts(client)
        consumer.release()
    finally:
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown(nosave=True)
        server.wait(timeout=300)
    script_calls = sum(after.get(n, 0) - before.get(n, 0) for n in SCRIPT_CALLS)
    inside = {
        name: after[name] - before.get(name, 0)
        for name in after
        if after[name] - before.get(name, 0) > 0
    }
    # the consumer's own commands outside the script: lease renewals, reads when idle
    for name in (
        "eval",
        "evalsha",
        "fcall",
        "function|load",
        "xread",
        "xinfo|consumers",
        "info",
        "script|load",
    ):
        inside.pop(name, None)
    n = args.empty_calls or len(orders)
    result: dict = {
        "orders": len(orders),
        "batch": args.batch,
        "floor": args.floor,
        "scriptCalls": script_calls,
        # with --empty-calls, the ...PerOrder figures are per call
        "perCall": bool(args.empty_calls),
        **callgrind.per_order(inside, n, workdir, valgrind),
    }
    if not valgrind:
        # the script calls, their commands included
        scripts = usec_between(usec_before, usec_after, SCRIPT_CALLS)
        result["scriptUsecPerOrder"] = round(scripts / n, 2)
        result["redisCpuUsecPerOrder"] = round(cpu * 1e6 / n, 2)
        # The commands' own execution; the rest of the script time is Lua's: the script's
        # logic, cjson, and each redis.call's conversion of arguments and reply.
        commands = usec_between(usec_before, usec_after, inside)
        result["commandsUsecPerOrder"] = round(commands / n, 2)
    cli.write_results("matcher_profile.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
