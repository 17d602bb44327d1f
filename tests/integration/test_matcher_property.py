"""Random command streams (orders, cancels, amends, cancel-alls, halts and the market states
of docs/api.md "Market states"; the market's and each order's self-trade prevention mode,
docs/api.md "Self-trade prevention") through the real
match.lua on a real redis-server, compared with the plain-Python reference book: every trade,
every order's status, reason and fill, every reply, the positions mirror, the depth seq, and
the final book order by order. The book must never be crossed after a call. DEX_FULL_TESTS=1
runs ten times as many examples."""

from __future__ import annotations

import os
from typing import Any

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.reference_book import ReferenceBook

from common import keys
from common.lua import Library, ScriptSet, read_script
from services.matcher.consumer import LUA_DIR, match_args, match_keys

pytestmark = pytest.mark.integration

MARKET = "PROP-PERP"
USERS = ["0xaa", "0xbb", "0xcc"]
FULL = os.environ.get("DEX_FULL_TESTS") == "1"
EXAMPLES = 1000 if FULL else 100
START = 1_800_000_000_000
STP_MODES = ["EXPIRE_MAKER", "EXPIRE_TAKER", "EXPIRE_BOTH", "DECREMENT"]


@st.composite
def scenarios(draw: Any) -> list[tuple[int, list[dict[str, Any]]]]:
    now = START
    cids: list[tuple[str, str]] = []
    sides: list[str] = []
    batches: list[tuple[int, list[dict[str, Any]]]] = []
    rid = 0
    for _ in range(draw(st.integers(1, 40))):
        now += draw(st.sampled_from([0, 1, 400, 1500]))
        commands: list[dict[str, Any]] = []
        for _ in range(draw(st.integers(1, 8))):
            rid += 1
            reply = keys.market_reply(MARKET, str(rid))
            kind = draw(
                st.sampled_from(
                    ["order"] * 16 + ["cancel"] * 3 + ["amend"] * 4 + ["all"] + ["admin"] * 2
                )
            )
            user = draw(st.sampled_from(USERS))
            if kind == "order":
                cid = f"c{len(cids)}"
                cids.append((user, cid))
                side = draw(st.sampled_from(["BUY", "SELL"]))
                sides.append(side)
                otype = draw(st.sampled_from(["LIMIT"] * 4 + ["MARKET"]))
                if otype == "LIMIT":
                    price = draw(st.integers(98, 102))
                else:
                    price = draw(st.sampled_from([0, 0, 99, 101]))
                budget = draw(st.integers(0, 2_000)) if otype == "MARKET" else 0
                expires = draw(st.sampled_from([0, 0, 0, now + 1, now + 500, now + 3000]))
                # what the order may open (the gateway's margin netting); absent: no bound
                opening = draw(st.sampled_from([None, None, 0, 1, 3, 8]))
                extra = {} if opening is None else {"open": opening}
                # the order's own self-trade prevention mode, mostly none (the market's)
                stp = draw(st.sampled_from([None, None, *STP_MODES, "NOT_A_MODE"]))
                if stp is not None:
                    extra["stp"] = stp
                commands.append({
                    **extra,
                    "op": "order", "user": user, "cid": cid, "side": side, "type": otype,
                    "price": price, "qty": draw(st.integers(1, 8)),
                    "tif": draw(st.sampled_from(["GTC", "GTC", "IOC", "FOK", "POST_ONLY"])),
                    "reduceOnly": draw(st.sampled_from([False] * 6 + [True])),
                    "expiresAt": expires, "ts": now, "reserved": budget, "acceptedAt": now,
                    "reply": reply,
                })  # fmt: skip
            elif kind == "cancel" and cids:
                owner, cid = draw(st.sampled_from(cids))
                commands.append(
                    {"op": "cancel", "user": owner, "cid": cid, "ts": now, "reply": reply}
                )
            elif kind == "amend" and cids:
                # mostly one of the latest orders: those are the likeliest to be still open;
                # else any (while a market state refuses new orders, the latest are closed)
                which = max(0, len(cids) - 1 - draw(st.integers(0, 3)))
                if draw(st.integers(0, 3)) == 0:
                    which = draw(st.integers(0, len(cids) - 1))
                (owner, cid), side = cids[which], sides[which]
                opening = draw(st.sampled_from([None, 0, 2, 8]))
                extra = {} if opening is None else {"open": opening, "mp": 100, "loss": 0}
                commands.append({
                    **extra,
                    "op": "amend", "user": owner, "cid": cid, "side": side,
                    "price": draw(st.integers(98, 102)), "qty": draw(st.integers(1, 10)),
                    "expectedFilled": draw(st.sampled_from([-1, -1, -1, 0, 1, 2])),
                    "reserved": 0, "aid": f"a{rid}", "ts": now, "reply": reply,
                })  # fmt: skip
            elif kind == "all":
                commands.append({"op": "cancel_all", "user": user, "ts": now, "reply": reply})
            elif kind == "admin":
                op = draw(st.sampled_from(["halt", "resume", "resume", "status", "status"]))
                command = {"op": op, "ts": now, "reply": reply}
                if op == "status":
                    # every settable status (REDUCE_ONLY is ignored on SPOT), and one that
                    # is not (changes nothing)
                    command["status"] = draw(st.sampled_from(
                        ["OPEN", "HALTED", "CANCEL_ONLY", "POST_ONLY", "POST_ONLY",
                         "REDUCE_ONLY", "REDUCE_ONLY", "EXPIRED"]
                    ))  # fmt: skip
                commands.append(command)
        batches.append((now, commands))
    if draw(st.integers(0, 9)) == 0:
        now += 1
        batches.append((now, [{"op": "expire", "ts": now, "reply": "r:expire"}]))
    return batches


def _reply_value(client: redis.Redis, command: dict[str, Any]) -> Any:
    raw = client.lpop(command["reply"])
    assert raw is not None, f"no reply for {command}"
    value = orjson.loads(raw)
    return next(iter(value.values()))


def run_and_compare(
    client: redis.Redis, product: str, batches: list[Any], stp: str = "EXPIRE_MAKER"
) -> int:
    client.flushall()
    client.hset(
        keys.market_cfg(MARKET),
        mapping={"product": product, "mult": "1", "takerFeeBps": "5",
                 "initialMarginBps": "1000", "lotSize": "1", "indexPrice": "100",
                 "priceBandBps": "150", "selfTradePrevention": stp},
    )  # fmt: skip
    scripts = ScriptSet(client, LUA_DIR)
    reference = ReferenceBook(
        product=product,
        taker_fee_bps=5,
        initial_margin_bps=1000,
        mark=100,
        index=100,
        band_bps=150,
        stp=stp,
    )
    stream_seq = 0
    applied_total = 0
    for now, commands in batches:
        args = match_args(MARKET, now, "")
        for command in commands:
            stream_seq += 1
            args.extend((f"1-{stream_seq}", orjson.dumps(command).decode()))
        applied, *_ = scripts["match"](keys=match_keys(MARKET), args=args)
        assert applied == len(commands)
        applied_total += applied
        before = len(reference.replies)
        reference.batch(now, commands)
        for command, expected in zip(commands, reference.replies[before:], strict=True):
            assert _reply_value(client, command) == expected, command
        best_bid = client.zrange(keys.book_bids(MARKET), 0, 0, withscores=True)
        best_ask = client.zrange(keys.book_asks(MARKET), 0, 0, withscores=True)
        if best_bid and best_ask:
            assert -best_bid[0][1] < best_ask[0][1], "book crossed"
    # trades, in order
    trades = [orjson.loads(f["t"]) for _, f in client.xrange(keys.market_trades(MARKET))]
    got = [
        (t["price"], t["qty"], t["takerSide"], t["buyer"], t["seller"], t["buyOid"], t["sellOid"])
        for t in trades
    ]
    want = [
        (t.price, t.qty, t.taker_side, t.buyer, t.seller, t.buy_cid, t.sell_cid)
        for t in reference.trades
    ]
    assert got == want
    assert [t["seq"] for t in trades] == list(range(1, len(trades) + 1))
    # every order
    for (user, cid), order in reference.orders.items():
        record = client.hgetall(keys.market_order(MARKET, user, cid))
        assert (record["status"], record["reason"] or None, int(record["filled"])) == (
            order.status,
            order.reason,
            order.filled,
        ), (user, cid, record)
        assert int(record["qty"]) == order.qty
    # the book, order by order, and its levels
    for side, zkey, lkey in (
        ("BUY", keys.book_bids(MARKET), keys.levels_bids(MARKET)),
        ("SELL", keys.book_asks(MARKET), keys.levels_asks(MARKET)),
    ):
        members = client.zrange(zkey, 0, -1)
        expected = [o for o in reference._side_list(side)]
        assert [m.split("|", 1)[1] for m in members] == [f"{o.user}|{o.cid}" for o in expected]
        levels = {int(p): int(q) for p, q in client.hgetall(lkey).items()}
        assert levels == reference.levels(side)
    positions = {u: int(v) for u, v in client.hgetall(keys.market_positions(MARKET)).items()}
    assert {u: v for u, v in positions.items() if v} == {
        u: v for u, v in reference.positions.items() if v
    }
    state = client.hgetall(keys.market_state(MARKET))
    assert int(state.get("seq", 0)) == reference.seq
    assert state["status"] == reference.status
    open_sets = {u: client.smembers(keys.market_user_open(MARKET, u)) for u in USERS}
    for user in USERS:
        assert open_sets[user] == {o.cid for o in reference.bids + reference.asks if o.user == user}
    return applied_total


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=scenarios(), stp=st.sampled_from(STP_MODES))
def test_perp_matches_the_reference_book(client: redis.Redis, batches: Any, stp: str) -> None:
    run_and_compare(client, "PERP", batches, stp)


@settings(
    max_examples=EXAMPLES // 4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=scenarios(), stp=st.sampled_from(STP_MODES))
def test_spot_matches_the_reference_book(client: redis.Redis, batches: Any, stp: str) -> None:
    run_and_compare(client, "SPOT", batches, stp)


SECOND = "PROP-SPOT"


@st.composite
def with_triggers(draw: Any) -> list[tuple[int, list[dict[str, Any]]]]:
    """A scenario with trigger orders, attached TP/SL and the oracle's price commands mixed in:
    the parts of match.lua whose state the plain scenario does not reach."""
    batches = draw(scenarios())
    for n, (now, commands) in enumerate(batches):
        for _ in range(draw(st.integers(0, 3))):
            kind = draw(st.sampled_from(["trigger", "attached", "prices"]))
            user, side = draw(st.sampled_from(USERS)), draw(st.sampled_from(["BUY", "SELL"]))
            cid = f"x{n}-{len(commands)}"
            reply = keys.market_reply(MARKET, cid)
            base = {"op": "order", "user": user, "cid": cid, "side": side, "qty": 1,
                    "tif": "GTC", "reduceOnly": False, "expiresAt": 0, "ts": now,
                    "reserved": 0, "acceptedAt": now, "reply": reply}  # fmt: skip
            if kind == "trigger":
                trigger = draw(st.sampled_from(["STOP_MARKET", "TAKE_PROFIT_MARKET"]))
                source = draw(st.sampled_from(["LAST", "MARK", "INDEX"]))
                command = base | {"type": "MARKET", "price": 0, "trigger": trigger,
                                  "triggerPrice": draw(st.integers(97, 103)),
                                  "triggerSource": source}  # fmt: skip
            elif kind == "attached":
                price = draw(st.integers(98, 102))
                tp, sl = (price + 2, price - 2) if side == "BUY" else (price - 2, price + 2)
                command = base | {"type": "LIMIT", "price": price, "takeProfitPrice": tp,
                                  "stopLossPrice": sl, "triggerSource": "LAST"}  # fmt: skip
            else:
                command = {"op": "prices", "ts": now, "reply": reply}
            commands.insert(draw(st.integers(0, len(commands))), command)
    return batches


def _everything(client: redis.Redis) -> dict[str, Any]:
    """Every key of the client's database and its content (stream entries without their ids,
    which XADD * takes from the clock)."""
    read = {
        "hash": client.hgetall,
        "zset": lambda key: client.zrange(key, 0, -1, withscores=True),
        "set": lambda key: sorted(client.smembers(key)),
        "list": lambda key: client.lrange(key, 0, -1),
        "stream": lambda key: [fields for _, fields in client.xrange(key)],
        "string": client.get,
    }
    return {key: read[client.type(key)](key) for key in sorted(client.scan_iter())}


def _run_two_markets(
    client: redis.Redis, run: Any, batches: list[Any], stp: str
) -> tuple[list[Any], list[Any], dict[str, Any]]:
    """The scenario on a PERP market and (renamed) on a SPOT one, their calls alternating:
    the replies, the publications and the database after."""
    client.flushdb()
    markets = ((MARKET, "PERP", "5", "99", "101"), (SECOND, "SPOT", "7", "101", "99"))
    for market, product, fee, index, mark in markets:
        client.hset(
            keys.market_cfg(market),
            mapping={"product": product, "mult": "1", "takerFeeBps": fee,
                     "initialMarginBps": "1000", "lotSize": "1", "indexPrice": "100",
                     "priceBandBps": "150", "selfTradePrevention": stp},
        )  # fmt: skip
        client.hset(keys.market_prices(market), mapping={"index": index, "mark": mark})
    listener = client.pubsub(ignore_subscribe_messages=True)
    listener.psubscribe(keys.channel("*"))
    replies, stream_seq = [], 0
    for now, commands in batches:
        for market in (MARKET, SECOND):
            args = match_args(market, now, "")
            for command in commands:
                stream_seq += 1
                text = orjson.dumps(command).decode().replace(MARKET, market)
                args.extend((f"1-{stream_seq}", text))
            replies.append(run(keys=match_keys(market), args=args))
    client.publish(keys.channel("end"), "end")
    published = []
    while (message := listener.get_message(timeout=10)) and message["data"] != "end":
        published.append((message["channel"], message["data"]))
    listener.close()
    return replies, published, _everything(client)


@settings(
    max_examples=EXAMPLES // 4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=with_triggers(), stp=st.sampled_from(STP_MODES))
def test_the_library_leaves_what_the_plain_script_leaves(
    client: redis.Redis, batches: Any, stp: str
) -> None:
    """match.lua as a function library keeps its modules between calls and starts each call
    from the state per_call sets up; run as a plain script, every call builds everything
    afresh. Two markets of different products, their calls alternating: the replies, every
    publication and every key are the same either way (what one call leaves in the library
    never reaches the next), trigger orders, attached TP/SL and price commands included."""
    library = ScriptSet(client, LUA_DIR)["match"]
    assert isinstance(library, Library)
    plain = client.register_script(read_script(str(LUA_DIR), "match"))
    client.config_resetstat()
    as_library = _run_two_markets(client, library, batches, stp)
    ran = client.info("commandstats")
    assert library.functions and "cmdstat_evalsha" not in ran  # by FCALL alone
    assert ran["cmdstat_fcall"]["calls"] >= 2 * len(batches)
    assert _run_two_markets(client, plain, batches, stp) == as_library


def test_replaying_a_batch_changes_nothing(client: redis.Redis) -> None:
    """The same stream ids applied twice: the second call is skipped whole."""
    client.hset(keys.market_cfg(MARKET), mapping={"product": "SPOT", "mult": "1"})
    scripts = ScriptSet(client, LUA_DIR)
    orders = [
        {"op": "order", "user": u, "cid": c, "side": s, "type": "LIMIT", "price": 100, "qty": 5,
         "tif": "GTC", "reduceOnly": False, "expiresAt": 0, "ts": 1, "reserved": 0,
         "acceptedAt": 1}
        for u, c, s in (("0xaa", "a1", "SELL"), ("0xbb", "b1", "BUY"), ("0xbb", "b2", "BUY"))
    ]  # fmt: skip
    args = match_args(MARKET, START, "")
    for i, order in enumerate(orders, 1):
        args.extend((f"5-{i}", orjson.dumps(order).decode()))
    assert scripts["match"](keys=match_keys(MARKET), args=args)[:2] == [3, 3]
    snapshot = {k: client.dump(k) for k in client.keys("*")}
    assert scripts["match"](keys=match_keys(MARKET), args=args)[:2] == [0, 0]
    # the same order re-sent under a new stream id (outbox re-send) is ignored too
    again = [*match_args(MARKET, START, ""), "6-1", orjson.dumps(orders[1]).decode()]
    assert scripts["match"](keys=match_keys(MARKET), args=again)[:2] == [1, 0]
    after = {k: client.dump(k) for k in client.keys("*") if k != keys.market_state(MARKET)}
    assert after == {k: v for k, v in snapshot.items() if k != keys.market_state(MARKET)}
    assert client.hget(keys.market_state(MARKET), "last") == "6-1"


def test_replaying_a_status_change_changes_nothing(client: redis.Redis) -> None:
    """A status command and the order it refuses, applied twice: the second call is skipped
    whole (no second ticker publication, tickerSeq unmoved); the same status sent again under
    a new stream id finds the market in it and changes nothing."""
    client.hset(keys.market_cfg(MARKET), mapping={"product": "PERP", "mult": "1"})
    scripts = ScriptSet(client, LUA_DIR)
    status = {"op": "status", "status": "REDUCE_ONLY", "ts": 1}
    order = {
        "op": "order", "user": "0xaa", "cid": "a1", "side": "SELL", "type": "LIMIT",
        "price": 100, "qty": 5, "tif": "GTC", "reduceOnly": False, "expiresAt": 0, "ts": 1,
        "reserved": 0, "open": 5,
    }  # fmt: skip
    args = match_args(MARKET, START, "")
    args.extend(("5-1", orjson.dumps(status).decode(), "5-2", orjson.dumps(order).decode()))
    assert scripts["match"](keys=match_keys(MARKET), args=args)[:2] == [2, 1]
    assert client.hget(keys.market_state(MARKET), "status") == "REDUCE_ONLY"
    record = client.hgetall(keys.market_order(MARKET, "0xaa", "a1"))
    assert (record["status"], record["reason"]) == ("REJECTED", "MARKET_REDUCE_ONLY")
    assert client.hget(keys.market_prices(MARKET), "tickerSeq") == "1"
    snapshot = {k: client.dump(k) for k in client.keys("*")}
    assert scripts["match"](keys=match_keys(MARKET), args=args)[:2] == [0, 0]
    again = [*match_args(MARKET, START, ""), "6-1", orjson.dumps(status).decode()]
    assert scripts["match"](keys=match_keys(MARKET), args=again)[:2] == [1, 0]
    after = {k: client.dump(k) for k in client.keys("*") if k != keys.market_state(MARKET)}
    assert after == {k: v for k, v in snapshot.items() if k != keys.market_state(MARKET)}
    assert client.hget(keys.market_state(MARKET), "status") == "REDUCE_ONLY"


def test_an_amend_in_the_call_that_placed_the_order_meets_its_own_makers_by_the_markets_mode(
    client: redis.Redis,
) -> None:
    """An order placed with its own mode (DECREMENT) and amended across its own ask in the
    same call: the amend meets the ask by the market's mode (EXPIRE_MAKER), as the reference
    book says: the ask is cancelled and the bid rests whole."""

    def order(cid: str, side: str, price: int, qty: int, **extra: Any) -> dict[str, Any]:
        return {**extra, "op": "order", "user": "0xaa", "cid": cid, "side": side,
                "type": "LIMIT", "price": price, "qty": qty, "tif": "GTC", "reduceOnly": False,
                "expiresAt": 0, "ts": START, "reserved": 0, "acceptedAt": START,
                "reply": keys.market_reply(MARKET, cid)}  # fmt: skip

    amend = {"op": "amend", "user": "0xaa", "cid": "b1", "side": "BUY", "price": 100, "qty": 3,
             "expectedFilled": -1, "reserved": 0, "aid": "a1", "ts": START,
             "reply": keys.market_reply(MARKET, "a1")}  # fmt: skip
    batches = [
        (START, [order("s1", "SELL", 100, 2)]),
        (START, [order("b1", "BUY", 99, 3, stp="DECREMENT"), amend]),
    ]
    run_and_compare(client, "SPOT", batches, "EXPIRE_MAKER")
    assert client.hget(keys.market_order(MARKET, "0xaa", "s1"), "reason") == "SELF_TRADE"
    assert client.hmget(keys.market_order(MARKET, "0xaa", "b1"), "qty", "status") == ["3", "NEW"]
