"""A probe of the design that would meet the matcher's throughput goal: the book matched in the
matcher's own memory, each batch's results written by one guarded function call.

Not a matcher: it knows GTC limit orders only (no self-trade rules, triggers, amends or market
states), which is all ``stream-200k`` holds. It measures what such a matcher would cost on this
machine, on the stream the goal is measured on, and checks that it ends where
``../shared/data/README.md`` says every correct engine ends.

Starts a private ``redis-server`` (no persistence, loopback, as bench/matcher.py), XADDs the
stream's commands as the matcher's input, then, one process, one held connection:

* reads a batch with ``XREADGROUP`` (``--batch`` entries);
* decodes each command and matches it against a price-time book held in Python;
* sends the batch's results to bench/matcher_memory_probe.lua (``FCALL``, not waiting for the
  reply): the taker's record, makers' records, book and open-set changes, each trade, one
  events entry with a field per fill and done event, the changed levels' totals, the state's
  last id (the guard: a batch that does not follow the last applied one changes nothing), the
  acknowledgement, and the call's publications (order changes, depth, trades, in ~7 KB chunks);
* reads the next batch while Redis applies this one.

Reports orders/s over the whole stream, Redis's µs per order in the function and in
``XREADGROUP``, the probe's own CPU per order, and the README's end state from what Redis holds
(level totals, trades stream) beside the probe's counts. Results go to
``bench/results/matcher_memory_probe.json``.

    .venv/bin/python bench/matcher_memory_probe.py
    .venv/bin/python bench/matcher_memory_probe.py --batch 500
"""

from __future__ import annotations

import bisect
import os
import platform
import time
from collections import deque
from pathlib import Path
from typing import Any

import hiredis
import orjson
import redis
from lib import callgrind, cli
from lib.stream import command, load_stream
from matcher import EXPECTED, book_figures
from support.redis_server import RedisServer

LIBRARY = Path(__file__).with_name("matcher_memory_probe.lua")
IN, STATE, BIDS, ASKS = (
    "dex:{probe}:in",
    "dex:{probe}:state",
    "dex:{probe}:bids",
    "dex:{probe}:asks",
)
TRADES, EVENTS = "dex:{probe}:trades", "dex:{probe}:events"
LEVELS = {"B": "dex:{probe}:lvl:bids", "S": "dex:{probe}:lvl:asks"}
KEYS = [IN, STATE, BIDS, ASKS, TRADES, EVENTS, LEVELS["B"], LEVELS["S"]]
GROUP = "matcher"
CHUNK = 7000  # bytes per publication, as match.lua's
MARKET = "BENCH-SPOT"
NOW = 1_765_000_000_000  # every text carries a time, as match.lua's do


class Side:
    """One side of the book: price -> FIFO of resting orders, prices kept sorted."""

    def __init__(self, best_is_high: bool) -> None:
        self.levels: dict[int, deque[list[Any]]] = {}
        self.totals: dict[int, int] = {}
        self.prices: list[int] = []  # ascending
        self.best_is_high = best_is_high

    def best(self) -> int | None:
        if not self.prices:
            return None
        return self.prices[-1] if self.best_is_high else self.prices[0]

    def rest(self, price: int, order: list[Any]) -> None:
        level = self.levels.get(price)
        if level is None:
            level = self.levels[price] = deque()
            self.totals[price] = 0
            bisect.insort(self.prices, price)
        level.append(order)
        self.totals[price] += order[3]

    def drop_level(self, price: int) -> None:
        del self.levels[price], self.totals[price]
        self.prices.pop(bisect.bisect_left(self.prices, price))


class Probe:
    def __init__(self) -> None:
        self.sides = {"B": Side(best_is_high=True), "S": Side(best_is_high=False)}
        self.aseq = self.tseq = self.eseq = 0
        self.traded = self.fills = self.consumed = 0
        self.takers: set[str] = set()

    def batch(self, entries: list[Any], after: bytes, group: str) -> list[Any]:
        """The FCALL's arguments for one batch of stream entries."""
        ops: list[Any] = []
        changes: list[bytes] = []
        trades: list[bytes] = []
        touched: set[tuple[str, int]] = set()
        ids = [entry_id for entry_id, _ in entries]
        for _, fields in entries:
            c = orjson.loads(fields[1])
            self.order(c, ops, changes, trades, touched)
        for side, price in touched:
            ops += ["L", side, price, self.sides[side].totals.get(price, 0)]
        depth = orjson.dumps([[s, p, self.sides[s].totals.get(p, 0)] for s, p in touched])
        for channel, items in (
            ("dex:ch:orderchanges:probe", changes),
            ("dex:ch:trade:probe", trades),
        ):
            chunk: list[bytes] = []
            size = 0
            for item in items:
                chunk.append(item)
                size += len(item)
                if size >= CHUNK:
                    ops += ["P", channel, b"[" + b",".join(chunk) + b"]"]
                    chunk, size = [], 0
            if chunk:
                ops += ["P", channel, b"[" + b",".join(chunk) + b"]"]
        ops += ["P", "dex:ch:depth:probe", depth]
        return [
            "FCALL",
            "dex_bench_memory_probe",
            len(KEYS),
            *KEYS,
            after,
            ids[-1],
            group,
            len(ids),
            *ids,
            *ops,
        ]

    def order(
        self,
        c: dict[str, Any],
        ops: list[Any],
        changes: list[bytes],
        trades: list[bytes],
        touched: set[tuple[str, int]],
    ) -> None:
        """Match one GTC limit order; add what it writes to the batch's operations."""
        side = "B" if c["side"] == "BUY" else "S"
        maker_side = "S" if side == "B" else "B"
        other = self.sides[maker_side]
        price, qty, user, cid = c["price"], c["qty"], c["user"], c["cid"]
        left = qty
        while left:
            best = other.best()
            if best is None or (best > price if side == "B" else best < price):
                break
            level = other.levels[best]
            maker = level[0]  # [member, user, cid, remaining, qty]
            fill = min(left, maker[3])
            left -= fill
            maker[3] -= fill
            other.totals[best] -= fill
            touched.add((maker_side, best))
            self.tseq += 1
            self.fills += 1
            self.traded += fill
            self.takers.add(cid)
            done = maker[3] == 0
            status = "FILLED" if done else "PARTIAL"
            ops += ["U", f"dex:{{probe}}:o:{maker[1]}:{maker[2]}", status, maker[4] - maker[3]]
            trade, event = self.trade(c, maker, best, fill)
            trades.append(trade)
            ops += ["T", trade, "E", event]
            changes.append(
                self.change(
                    maker[1], maker[2], maker_side, best, maker[4], maker[4] - maker[3], status
                )
            )
            if done:
                self.consumed += 1
                level.popleft()
                ops += ["X", maker_side, maker[0], maker[1], maker[2]]
                ops += ["E", self.done(maker[1], maker[2], maker_side, maker[4])]
                if not level:
                    other.drop_level(best)
        status = "FILLED" if left == 0 else ("PARTIAL" if left < qty else "NEW")
        record = f"{user}|{c['side']}|{price}|{qty}|{c['tif']}"
        ops += ["R", f"dex:{{probe}}:o:{user}:{cid}", record, status, qty - left, qty]
        changes.append(self.change(user, cid, side, price, qty, qty - left, status))
        if left:
            self.aseq += 1
            member = f"{self.aseq:016d}|{user}|{cid}"
            self.sides[side].rest(price, [member, user, cid, left, qty])
            touched.add((side, price))
            ops += ["A", side, -price if side == "B" else price, member, user, cid]
        else:
            ops += ["E", self.done(user, cid, side, qty)]

    def trade(
        self, c: dict[str, Any], maker: list[Any], price: int, fill: int
    ) -> tuple[bytes, bytes]:
        """The trade and its fill event, as match.lua writes them (match/trades.lua)."""
        taker_buys = c["side"] == "BUY"
        buyer, seller = (c["user"], maker[1]) if taker_buys else (maker[1], c["user"])
        buy_cid, sell_cid = (c["cid"], maker[2]) if taker_buys else (maker[2], c["cid"])
        trade_id = f"{MARKET}:{self.tseq}"
        deal = {
            "price": price,
            "qty": fill,
            "takerSide": c["side"],
            "buyer": buyer,
            "seller": seller,
        }
        trade = {
            "tradeId": trade_id,
            "market": MARKET,
            **deal,
            "buyOid": buy_cid,
            "sellOid": sell_cid,
        }
        self.eseq += 1
        event = {"eseq": self.eseq, "k": "fill", "tradeId": trade_id, "tseq": self.tseq, **deal}
        event.update(buyCid=buy_cid, sellCid=sell_cid, ts=NOW)
        return orjson.dumps({**trade, "ts": NOW, "seq": self.tseq}), orjson.dumps(event)

    def done(self, user: str, cid: str, side: str, qty: int) -> bytes:
        """A done event, as match.lua writes it (match/orders.lua)."""
        self.eseq += 1
        return orjson.dumps(
            {
                "eseq": self.eseq,
                "k": "done",
                "user": user,
                "cid": cid,
                "side": "BUY" if side == "B" else "SELL",
                "status": "FILLED",
                "reason": None,
                "filled": qty,
                "ts": NOW,
            }
        )

    @staticmethod
    def change(
        user: str, cid: str, side: str, price: int, qty: int, filled: int, status: str
    ) -> bytes:
        """An order change as the orderchanges: publication lists it (match/publication.lua)."""
        return orjson.dumps(
            {
                "clientOrderId": cid,
                "userId": user,
                "market": MARKET,
                "side": "BUY" if side == "B" else "SELL",
                "type": "LIMIT",
                "timeInForce": "GTC",
                "reduceOnly": False,
                "expiresAt": 0,
                "price": price,
                "qty": qty,
                "filled": filled,
                "status": status,
                "reason": None,
                "ts": 1,
                "updatedTs": NOW,
            }
        )


def applied_by(reply: Any) -> int:
    if isinstance(reply, redis.ResponseError):
        raise reply
    return int(reply)


def run(client: redis.Redis, orders: list[Any], batch: int) -> dict[str, Any]:
    probe = Probe()
    connection = client.connection_pool.get_connection()
    read = hiredis.pack_command(
        ("XREADGROUP", "GROUP", GROUP, "probe", "COUNT", batch, "STREAMS", IN, ">")
    )
    client.config_resetstat()
    cpu, started = time.process_time(), time.perf_counter()
    # Replies come in the order sent: the read of batch k+1 goes out before batch k's FCALL,
    # so the probe matches batch k+1 while Redis applies batch k.
    after, applied, fcalls_due = b"", 0, 0
    connection.send_packed_command([read])
    while True:
        response = connection.read_response()  # a read: the next batch
        entries = response[0][1] if response else []
        if not entries:
            break
        connection.send_packed_command([read])
        args = probe.batch(entries, after, GROUP)
        after = entries[-1][0]
        connection.send_packed_command([hiredis.pack_command(tuple(args))])
        fcalls_due += 1
        while fcalls_due > 1:  # the FCALL sent before the read now answered
            applied += applied_by(connection.read_response())
            fcalls_due -= 1
    while fcalls_due:
        applied += applied_by(connection.read_response())
        fcalls_due -= 1
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    client.connection_pool.release(connection)
    n = len(orders)
    usec = callgrind.command_usec(client)
    return {
        "orders": n,
        "applied": applied,
        "batch": batch,
        "seconds": round(seconds, 3),
        "ordersPerSecond": round(n / seconds),
        "probeCpuUsecPerOrder": round(cpu * 1e6 / n, 2),
        "redisFcallUsecPerOrder": round(usec.get("fcall", 0) / n, 2),
        "redisReadUsecPerOrder": round(usec.get("xreadgroup", 0) / n, 2),
        "counts": {
            "tradedQty": probe.traded,
            "crossingOrders": len(probe.takers),
            "makerFills": probe.fills,
            "makersConsumed": probe.consumed,
        },
    }


def main() -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    server = RedisServer().start()
    client = redis.Redis.from_url(server.url, protocol=2)
    try:
        client.function_load(LIBRARY.read_text(), replace=True)
        orders = load_stream(args.orders)
        for start in range(0, len(orders), 2000):
            with client.pipeline(transaction=False) as pipe:
                for order in orders[start : start + 2000]:
                    pipe.xadd(IN, {"c": command(*order)})
                pipe.execute()
        client.xgroup_create(IN, GROUP, id="0")
        result = run(client, orders, args.batch)
        state = {**result.pop("counts"), **book_figures(client, LEVELS["B"], LEVELS["S"])}
        result["endState"] = state
        result["tradesInRedis"] = client.xlen(TRADES)
        if len(orders) == 200_000:
            result["endStateMatchesReadme"] = state == EXPECTED
        result["machine"] = {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg": os.getloadavg(),
        }
    finally:
        server.stop()
    cli.write_results("matcher_memory_probe.json", result)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
