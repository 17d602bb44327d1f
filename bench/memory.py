"""Redis memory per finished order, and after a large run, through admission, matcher and settler.

The path measured, per order: ``services/gateway/lua/accept_order.lua`` (the gateway's admission
script, called directly as the gateway calls it on a single Redis: it reserves, records and
XADDs the command to the market stream in one call; no HTTP, no signature check), then the
real matcher process (``python -m services.matcher`` for BTC-USDC: ``match.lua``), then the
settler's ``Ledger.settle_market`` (``apply_ops.lua`` per account), run in this process: the
code a ``dex.settle`` task runs, without Celery. Orders come in pairs on BTC-USDC: a maker SELL
of one lot at a price, then a taker BUY of one lot at that price, so every order ends FILLED
and settled; accounts take turns (``--users``). The run goes in chunks: admit a chunk, wait
for the matcher to apply it, settle it.

Figures: ``used_memory`` (INFO) after funding the accounts and starting the matcher, and after
the run once everything is settled (the Celery broker is another database, emptied first),
the difference per order, and a breakdown by key family (MEMORY USAGE of every key, or of a
sample of each family when it has many keys). Writes ``bench/results/memory.json``.

    .venv/bin/python bench/memory.py --orders 100000
    .venv/bin/python bench/memory.py --orders 1000000 --out memory-1m.json
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from collections import defaultdict
from typing import Any

import redis
from lib import REPO_ROOT, cli, launch
from support.exchange import Exchange
from support.redis_server import RedisServer

from common import keys, money
from common.events import dumps
from common.lua import ScriptSet
from common.markets import load_markets
from services.settler.ledger import Ledger

MARKET = "BTC-USDC"
PRICE = 3_000_000
CHUNK = 20_000  # orders admitted, matched and settled per round
PIPELINE = 1_000
SAMPLE_KEYS = 2_000  # MEMORY USAGE of at most this many keys per family
FAMILY = re.compile(r"^dex:\{([^}]*)\}:([^:]+)(:.*)?$")
INDEXED = hasattr(keys, "account_open_orders")  # this version's indexes (bench runs on older)
ACCEPT_SCRIPT = REPO_ROOT / "services" / "gateway" / "lua" / "accept_order.lua"
APPENDS_RESERVED = "__RESERVED__" not in ACCEPT_SCRIPT.read_text()  # this version's ARGV layout
KEYED_ACCOUNT = "KEYS[10]" in ACCEPT_SCRIPT.read_text()  # every account key in KEYS, stream last


def family(key: str, markets: set[str]) -> str:
    match = FAMILY.match(key)
    if not match:
        return key if ":" not in key else key.rsplit(":", 1)[0] + ":*"
    tag, name, rest = match.groups()
    who = "{m}" if tag in markets else "{u}"
    if rest:
        suffix = ":<m>" if rest[1:] in markets else ":*"
        return f"dex:{who}:{name}{suffix}"
    return f"dex:{who}:{name}"


def breakdown(client: redis.Redis, markets: set[str]) -> dict[str, dict[str, int]]:
    """Keys and bytes (MEMORY USAGE, summed or scaled up from a sample) per key family."""
    members: dict[str, list[str]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    for key in client.scan_iter(count=10_000):
        name = family(key, markets)
        counts[name] += 1
        if len(members[name]) < SAMPLE_KEYS:
            members[name].append(key)
    result = {}
    for name, sample in members.items():
        pipe = client.pipeline(transaction=False)
        for key in sample:
            pipe.memory_usage(key, samples=0)
        sizes = [size or 0 for size in pipe.execute()]
        total = sum(sizes) * counts[name] // len(sizes)
        result[name] = {"keys": counts[name], "bytes": total}
    return dict(sorted(result.items(), key=lambda item: -item[1]["bytes"]))


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def admit(client: redis.Redis, scripts: ScriptSet, market: Any, orders: list[tuple]) -> None:
    """accept_order.lua for each (user, cid, side), as services/gateway/orders.py calls it."""
    for start in range(0, len(orders), PIPELINE):
        pipe = client.pipeline(transaction=False)
        now = int(time.time() * 1000)
        for user, cid, side in orders[start : start + PIPELINE]:
            if side == "BUY":
                asset, amount = market.quote.symbol, money.spot_buy_reservation(market, PRICE, 1)
            else:
                asset, amount = market.base.symbol, money.base_units(market, 1)
            command = {
                "op": "order", "user": user, "cid": cid, "side": side, "type": "LIMIT",
                "price": PRICE, "qty": 1, "tif": "GTC", "reduceOnly": False, "expiresAt": 0,
                "ts": now, "acceptedAt": now,
            }  # fmt: skip
            if APPENDS_RESERVED:
                template = dumps(command)  # the script appends "reserved"
            else:
                template = dumps({**command, "reserved": 0}).replace(
                    '"reserved":0', '"reserved":__RESERVED__', 1
                )
            listing = (
                keys.account_market_orders(user, MARKET) if INDEXED else keys.account_orders(user)
            )
            script_keys = [
                keys.account_cids(user),
                keys.account_order(user, cid),
                listing,
                keys.balances(user),
                keys.reservations(user),
                keys.outbox(user),
            ]
            if KEYED_ACCOUNT:
                script_keys += [
                    keys.account_open_orders(user, MARKET),
                    keys.positions(user),
                    keys.open_quantities(user),
                    keys.open_quantity_shares(user),
                ]
            script_keys.append(keys.market_in(MARKET))
            args: list[Any] = [cid, MARKET, asset, amount, now, template, 0,
                               "INSUFFICIENT_BALANCE", ""]  # fmt: skip
            if APPENDS_RESERVED:
                # backlog bound; headroom, no margin guard (spot), not over the 2^53 limit;
                # the open-order bound and index
                args += [10**9, 0, "", 0, "", 0, 0, "0", 10**9]
                if not KEYED_ACCOUNT:
                    args.append(keys.account_open_orders(user, MARKET))
            elif INDEXED:
                args += ["0", 10**9, keys.account_open_orders(user, MARKET)]
            else:
                args.append("0")
            scripts["accept_order"](keys=script_keys, args=args, client=pipe)
        for verdict in pipe.execute():
            if verdict[0] != "OK":
                raise SystemExit(f"accept_order.lua refused an order: {verdict}")


def wait_matched(client: redis.Redis, matcher: Exchange) -> None:
    last = client.xrevrange(keys.market_in(MARKET), count=1)[0][0]
    while client.hget(keys.market_state(MARKET), "last") != last:
        launch.ensure_running(matcher, "matcher")
        time.sleep(0.01)


def main() -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--out", default="memory.json")
    args = parser.parse_args()

    markets = load_markets(REPO_ROOT / "deploy" / "markets.yaml")
    market = markets.markets[MARKET]
    server = RedisServer()
    server.start()
    matcher: Exchange | None = None
    load_before = os.getloadavg()
    try:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        broker = server.url_for_db(1)
        users = [f"0x{i:040x}" for i in range(1, args.users + 1)]
        pipe = client.pipeline(transaction=False)
        for user in users:
            for asset in (market.quote.symbol, market.base.symbol):
                pipe.hincrby(keys.balances(user), keys.total_field(asset), 10**15)
                pipe.hincrby(keys.balances(user), keys.deposits_field(asset), 10**15)
        pipe.sadd(keys.known_accounts(), *users)
        pipe.execute()
        scripts = ScriptSet(client, REPO_ROOT / "services" / "gateway" / "lua")
        ledger = Ledger(client)
        matcher = launch.matcher(server.url, MARKET, DEX_BROKER_URL=broker)
        while not client.exists(keys.market_cfg(MARKET)):
            time.sleep(0.05)
        baseline = used_memory(client)
        started = time.monotonic()
        pairs = args.orders // 2
        for first in range(0, pairs, CHUNK // 2):
            orders = []
            for i in range(first, min(first + CHUNK // 2, pairs)):
                maker, taker = users[i % len(users)], users[(i + 1) % len(users)]
                orders += [(maker, f"s{i}", "SELL"), (taker, f"b{i}", "BUY")]
            admit(client, scripts, market, orders)
            wait_matched(client, matcher)
            while not ledger.is_settled(MARKET):
                ledger.settle_market(market, max_batches=1_000, max_seconds=60)
            done = min(first + CHUNK // 2, pairs) * 2
            print(
                f"{done} orders admitted, matched and settled, {time.monotonic() - started:.0f} s"
            )
        ledger.settle_market(market)  # an idle round, as a worker's last one
        elapsed = time.monotonic() - started
        matcher.stop()
        matcher = None
        redis.Redis.from_url(broker).flushdb()
        time.sleep(1)
        after = used_memory(client)
        orders_done = pairs * 2
        families = breakdown(client, set(markets.markets))
        state = client.hgetall(keys.market_state(MARKET))
        result = {
            "path": "accept_order.lua (direct) -> python -m services.matcher (match.lua) -> "
            "Ledger.settle_market (apply_ops.lua), BTC-USDC maker/taker pairs of one lot",
            "indexedVersion": INDEXED,
            "orders": orders_done,
            "users": args.users,
            "trades": int(state.get("tseq", 0)),
            "seconds": round(elapsed, 1),
            "usedMemoryBaseline": baseline,
            "usedMemoryAfter": after,
            "bytesPerFinishedOrder": round((after - baseline) / orders_done, 1),
            "keys": client.dbsize(),
            "families": families,
            "loadavgBefore": load_before,
            "loadavgAfter": os.getloadavg(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "redis": client.info("server")["redis_version"],
        }
    finally:
        if matcher is not None:
            matcher.stop()
        server.stop()
    print(json.dumps({k: v for k, v in result.items() if k != "families"}, indent=2))
    for name, figures in list(result["families"].items())[:15]:
        print(f"  {name:32} {figures['keys']:>9} keys {figures['bytes'] / 2**20:>9.1f} MiB")
    print(f"wrote {cli.write_results(args.out, result)}")


if __name__ == "__main__":
    main()
