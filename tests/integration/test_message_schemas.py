"""Every message the matcher and the settler emit matches its declaration in common.events.

The real match.lua runs on a real redis-server through a scenario that makes it emit every
kind it has (fills, liquidation fills, partial fills, a done of every status and reason,
cancel, cancel_all, expiry, halt/resume/expire, MARKET orders, self-trade prevention, depth
updates and batches, trades, candles, replies); the settler's step functions run against the
same server (settlement, account notices, ticker, liquidation and expiry commands). Each
stream entry, reply, candle and publication is validated against its declaration, strictly.
The tests fail when a message matches no declaration (an undeclared kind or key) and when a
declaration, or a literal value of a status or reason, is never seen: the declarations stay
complete and exact in both directions.
"""

from __future__ import annotations

import time
import typing
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from support.market_driver import MarketDriver

from common import keys
from common.events import (
    COMMAND_FIELD,
    FILL_FIELD,
    TOPIC_MESSAGES,
    TRADE_FIELD,
    AccountPublication,
    AdminCommand,
    AmendCommand,
    AmendResult,
    CancelAllCommand,
    CancelCommand,
    Candle,
    Command,
    DepthPublication,
    FillRecord,
    OrderChangesPublication,
    OrderCommand,
    OrderPublication,
    PriceTicker,
    Reply,
    SettlementEvent,
    StatusTicker,
    Ticker,
    TickerPublication,
    Trade,
    TradePublication,
    dumps,
    topic_message,
)
from common.events.names import DoneReason, FinalStatusName, MarketStatusName, OrderStatusName
from common.events.schema import members, validate, which
from common.market_reads import INTERVALS, read_ticker_sync
from common.markets import MarketSet, load_markets
from common.settings import DEFAULT_MARKETS_FILE
from services.matcher.consumer import MarketConsumer, write_market_cfg
from services.settler import expiry, liquidation, oracle
from services.settler.accounts import AccountSteps
from services.settler.ledger import Ledger

pytestmark = pytest.mark.integration

SPOT, PERP = "BTC-USDC", "BTC-PERP"
A, B, C, D = ("0x" + ch * 40 for ch in "abcd")
PRICE = 3_000_000
BUDGET = 10**15  # a MARKET buy's budget: far more than it spends

MATCHER_TOPICS = ("depth", "trade", "orderchanges")
SETTLER_TOPICS = ("ticker", "acct")


class Seen:
    """What a test validated: per declaration, and per (declaration, field) every value."""

    def __init__(self) -> None:
        self.kinds: set[Any] = set()
        self.values: dict[tuple[str, str], set[Any]] = defaultdict(set)

    def check(self, declaration: Any, text: str | bytes) -> Any:
        """Validate ``text`` against the one member of ``declaration`` it matches; note it."""
        member = which(declaration, text)
        self.kinds.add(member)
        return validate(member, text)

    def note(self, name: str, field: str, value: Any) -> None:
        self.values[(name, field)].add(value)

    def assert_all_seen(self, *declarations: Any) -> None:
        wanted = {m for d in declarations for m in members(d)}
        missing = sorted(m.__name__ for m in wanted - self.kinds)
        assert not missing, f"declared but never emitted: {missing}"

    def assert_values_seen(self, name: str, field: str, literal: Any) -> None:
        missing = set(typing.get_args(literal)) - self.values[(name, field)]
        assert not missing, f"{name}.{field}: values declared but never emitted: {missing}"


@pytest.fixture
def markets() -> MarketSet:
    return load_markets(DEFAULT_MARKETS_FILE)


class Listener:
    """Every publication on ``dex:ch:*`` from its creation on."""

    def __init__(self, client: redis.Redis) -> None:
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(keys.channel("*"))
        deadline = time.monotonic() + 5
        while client.pubsub_numpat() == 0:  # subscribed before anything is published
            assert time.monotonic() < deadline, "the pattern subscription never took hold"
            self.pubsub.get_message(timeout=0.05)

    def drain(self) -> list[tuple[str, str]]:
        """(channel, payload) of each publication received, once none has come for 0.5 s."""
        messages = []
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 0.5:
            message = self.pubsub.get_message(timeout=0.1)
            if message is not None:
                messages.append((message["channel"], message["data"]))
                quiet_since = time.monotonic()
        return messages


@pytest.fixture
def listener(client: redis.Redis) -> Iterator[Listener]:
    listening = Listener(client)
    yield listening
    listening.pubsub.close()


def check_publications(seen: Seen, messages: list[tuple[str, str]], kinds: tuple[str, ...]) -> None:
    prefix = keys.channel("")
    for channel, payload in messages:
        topic = channel[len(prefix) :]
        assert topic.partition(":")[0] in kinds, f"unexpected publication on {channel}: {payload}"
        publication = seen.check(topic_message(topic), payload)
        if topic.startswith("orderchanges:"):
            for order in publication["data"]:  # each as the broadcaster hands it to orders:<u>
                seen.check(OrderPublication, dumps({"seq": publication["seq"], "data": order}))
                seen.note("OrderUpdate", "status", order["status"])
                seen.note("OrderUpdate", "reason", order["reason"])
        if topic.startswith("ticker:"):
            seen.check(Ticker | PriceTicker | StatusTicker, dumps(publication["data"]))


# -- the matcher ----------------------------------------------------------------------------
class Matcher:
    """Runs match.lua over commands of one market, as the matcher process does."""

    def __init__(self, client: redis.Redis, markets: MarketSet, symbol: str) -> None:
        write_market_cfg(client, markets.markets[symbol])
        self.client, self.symbol = client, symbol
        self.replies: list[str] = []
        self.consumer = MarketConsumer(client, symbol, f"schema-{symbol}", lambda _m: None)
        self.consumer.ensure_group()
        assert self.consumer.acquire()

    def run(self, *commands: Command, reply: bool = False) -> None:
        for command in commands:
            if reply:
                command["reply"] = keys.market_reply(self.symbol, uuid.uuid4().hex)
                self.replies.append(command["reply"])
            text = dumps(command)
            validate(Command, text)  # what this test sends is declared too
            self.client.xadd(keys.market_in(self.symbol), {COMMAND_FIELD: text})
        handled = 0
        while handled < len(commands):
            handled += self.consumer.poll(block_ms=10)

    def close(self) -> None:
        self.consumer.release()


def now_ms() -> int:
    return int(time.time() * 1000)


def order(
    user: str,
    cid: str,
    side: typing.Literal["BUY", "SELL"],
    price: int,
    qty: int,
    *,
    type: typing.Literal["LIMIT", "MARKET"] = "LIMIT",
    tif: typing.Literal["GTC", "IOC", "FOK", "POST_ONLY"] = "GTC",
    reduce_only: bool = False,
    expires_at: int = 0,
    reserved: int = 0,
) -> OrderCommand:
    ts = now_ms()
    return {
        "op": "order", "user": user, "cid": cid, "side": side, "type": type, "price": price,
        "qty": qty, "tif": tif, "reduceOnly": reduce_only, "expiresAt": expires_at, "ts": ts,
        "reserved": reserved, "acceptedAt": ts,
    }  # fmt: skip


def opening(command: OrderCommand, qty: int) -> OrderCommand:
    """A derivative order that may open ``qty`` (the gateway reserved margin for that)."""
    command["open"] = qty
    command["mp"] = command["price"]
    command["loss"] = 0
    return command


def replacing(command: OrderCommand, old: str) -> OrderCommand:
    """A cancel-replace's new order: placed only if ``old`` is cancelled first."""
    command["replaces"] = old
    return command


def cancel(
    user: str, cid: str, reason: typing.Literal["USER", "LIQUIDATION"] = "USER"
) -> CancelCommand:
    return {"op": "cancel", "user": user, "cid": cid, "ts": now_ms(), "reason": reason}


def cancel_all(
    user: str, reason: typing.Literal["USER", "LIQUIDATION", "DEADMAN", "DISCONNECT"] = "USER"
) -> CancelAllCommand:
    return {"op": "cancel_all", "user": user, "ts": now_ms(), "reason": reason}


def amend(
    user: str,
    cid: str,
    side: typing.Literal["BUY", "SELL"],
    price: int,
    qty: int,
    expected_filled: int = -1,
    opens: int | None = None,
) -> AmendCommand:
    command: AmendCommand = {
        "op": "amend", "user": user, "cid": cid, "side": side, "price": price, "qty": qty,
        "expectedFilled": expected_filled, "reserved": 0, "aid": uuid.uuid4().hex,
        "ts": now_ms(),
    }  # fmt: skip
    if opens is not None:
        command |= {"open": opens, "mp": price, "loss": 0}
    return command


def admin(op: typing.Literal["halt", "resume", "expire"]) -> AdminCommand:
    return {"op": op, "ts": now_ms()}


def set_status(status: MarketStatusName) -> AdminCommand:
    return {"op": "status", "status": status, "ts": now_ms()}


def spot_scenario(m: Matcher) -> None:
    m.run(order(A, "a1", "SELL", PRICE, 100), reply=True)  # rests: NEW
    m.run(order(B, "b1", "BUY", PRICE, 40), reply=True)  # fills: a1 PARTIAL, b1 FILLED
    m.run(order(B, "b1", "BUY", PRICE, 40), reply=True)  # a cid seen before: its status
    # a MARKET buy within its budget: takes a1's rest, the remainder expires
    m.run(order(B, "b2", "BUY", 0, 100, type="MARKET", tif="IOC", reserved=BUDGET))
    m.run(
        order(A, "a2", "SELL", PRICE + 100, 10),
        order(B, "b3", "BUY", PRICE + 100, 11, tif="FOK"),  # not all: expires
        order(B, "b4", "BUY", PRICE + 100, 1, tif="POST_ONLY"),  # would cross: rejected
        order(A, "a3", "BUY", PRICE + 100, 5),  # meets its own a2: a2 cancelled, a3 rests
        order(B, "b5", "SELL", PRICE, 1, reduce_only=True),  # nothing to reduce on SPOT
        order(B, "b6", "BUY", PRICE - 5, 1, expires_at=1),  # expired on arrival
    )
    m.run(
        cancel(A, "a3"), cancel(A, "a3"), cancel(A, "nope"), reply=True
    )  # CANCELLED, CLOSED, UNKNOWN
    # two orders removed by one cancel_all: two depth seqs in one call (a batch)
    m.run(order(A, "a4", "SELL", PRICE + 10, 1), order(A, "a5", "SELL", PRICE + 20, 1))
    m.run(cancel_all(A), reply=True)
    # a cancel-replace: a8 cancelled (REPLACED) and a9 rests; again, a8 is closed: the new
    # order is refused (REPLACE_FAILED)
    m.run(order(A, "a8", "SELL", PRICE + 50, 1))
    m.run(replacing(order(A, "a9", "SELL", PRICE + 60, 1), "a8"), reply=True)
    m.run(replacing(order(A, "a10", "SELL", PRICE + 60, 1), "a8"), reply=True)
    m.run(order(A, "a7", "SELL", PRICE + 40, 1))
    m.run(cancel_all(A, "DEADMAN"))  # as the gateway's dead-man's switch sends it
    m.run(order(A, "a11", "SELL", PRICE + 50, 1))
    m.run(cancel_all(A, "DISCONNECT"))  # as a cancel-on-disconnect WebSocket session sends it
    m.run(order(A, "a6", "SELL", PRICE + 30, 1, expires_at=now_ms() + 300))
    time.sleep(0.4)
    m.consumer.tick()  # a6 expires on the book
    # amends: in place, moved (re-entering and trading as a taker), and each refusal
    m.run(order(A, "m1", "SELL", PRICE + 50, 10), order(A, "m2", "SELL", PRICE + 60, 10))
    m.run(order(B, "m3", "BUY", PRICE + 50, 2))  # m1 PARTIAL 2
    m.run(
        amend(A, "m1", "SELL", PRICE + 50, 8),  # in place
        amend(A, "m2", "SELL", PRICE + 55, 12),  # moved: rests at the new price
        amend(A, "m1", "SELL", PRICE + 50, 9, expected_filled=0),  # FILLED_CHANGED
        amend(A, "m1", "SELL", PRICE + 50, 2),  # QTY_NOT_ABOVE_FILLED
        amend(A, "nope", "SELL", PRICE, 5),  # UNKNOWN
        amend(B, "m3", "BUY", PRICE + 50, 5),  # CLOSED
        reply=True,
    )
    m.run(order(B, "m4", "BUY", PRICE + 40, 1, tif="POST_ONLY"))
    m.run(amend(B, "m4", "BUY", PRICE + 50, 1), reply=True)  # POST_ONLY_WOULD_CROSS
    m.run(admin("halt"), reply=True)
    m.run(order(B, "b7", "BUY", PRICE, 1))  # halted: rejected
    m.run(amend(A, "m1", "SELL", PRICE + 50, 7), reply=True)  # MARKET_HALTED
    m.run(admin("resume"), reply=True)
    # the market states: each refuses what it must, its status published on ticker:
    m.run(set_status("CANCEL_ONLY"), reply=True)
    m.run(order(B, "b8", "BUY", PRICE, 1))  # MARKET_CANCEL_ONLY
    m.run(amend(A, "m1", "SELL", PRICE + 50, 7), reply=True)  # MARKET_CANCEL_ONLY
    m.run(set_status("POST_ONLY"), reply=True)
    m.run(order(B, "b9", "BUY", PRICE, 1))  # MARKET_POST_ONLY
    m.run(set_status("OPEN"), reply=True)
    # DECREMENT: A's buy of 1 meets A's own sell of 3: the sell goes on with 2, the buy ends
    m.run(order(A, "d1", "SELL", PRICE + 200, 3))
    m.run(order(A, "d2", "BUY", PRICE + 200, 1) | {"stp": "DECREMENT"})
    # trigger orders wait UNTRIGGERED (docs/api.md "Trigger orders"); the oracle's prices command
    stop = order(A, "t1", "BUY", PRICE + 500, 1) | {
        "trigger": "STOP_LIMIT",
        "triggerPrice": PRICE + 400,
        "triggerSource": "LAST",
    }
    trailing = order(A, "t2", "SELL", 0, 1, type="MARKET") | {
        "trigger": "TRAILING_STOP_MARKET", "triggerPrice": 0, "triggerSource": "MARK",
        "trailingDelta": 10, "trailingUnit": "TICKS",
    }  # fmt: skip
    m.run(typing.cast(OrderCommand, stop), typing.cast(OrderCommand, trailing), reply=True)
    m.run({"op": "prices", "ts": now_ms()})
    m.run(cancel_all(A), cancel_all(B))

    # attached TP/SL on SPOT: h1's fill holds the base for its children (its "hold"); a trade
    # at PRICE + 100 fires h1.tp ("take"), h1.sl ends CXL OCO; h2's only child cancelled: its
    # done event releases the pair's hold ("hold")
    def spot_parent(cid: str, tp: int, sl: int) -> OrderCommand:
        fields = {"takeProfitPrice": tp, "stopLossPrice": sl, "triggerSource": "LAST"}
        return typing.cast(OrderCommand, order(B, cid, "BUY", PRICE, 2) | fields)

    m.run(order(A, "h0", "SELL", PRICE, 3))
    m.run(spot_parent("h1", PRICE + 100, PRICE - 100), spot_parent("h2", PRICE + 1000, 0))
    m.run(order(C, "h3", "BUY", PRICE + 50, 2), order(A, "h4", "SELL", PRICE + 100, 1))
    m.run(order(C, "h5", "BUY", PRICE + 100, 1, tif="IOC"), cancel(B, "h2.tp"))
    m.run(cancel_all(A), cancel_all(B), cancel_all(C))
    # a SELL parent s1 (its command's pairHold: the quote its children buy back with) fills 1
    # of 2 and is cancelled (its done event's "hold" and "keep"); a trade at PRICE + 100 fires
    # s1.sl ("take" with "keep"), s1.tp ends CXL OCO
    sell = order(B, "s1", "SELL", PRICE, 2) | {
        "takeProfitPrice": PRICE - 100, "stopLossPrice": PRICE + 100, "triggerSource": "LAST",
        "pairHold": 10**9,
    }  # fmt: skip
    m.run(order(C, "s0", "BUY", PRICE, 1), typing.cast(OrderCommand, sell), cancel(B, "s1"))
    m.run(order(A, "s2", "SELL", PRICE + 100, 2), order(C, "s3", "BUY", PRICE + 100, 1, tif="IOC"))
    m.run(cancel_all(A), cancel_all(B), cancel_all(C))


def perp_scenario(m: Matcher) -> None:
    m.run(opening(order(A, "p1", "SELL", PRICE, 10), 10))
    m.run(opening(order(B, "p2", "BUY", PRICE, 10), 10))  # B long 10, A short 10
    # C may open nothing: met by D, it is cancelled for want of margin; D rests
    m.run(opening(order(C, "p3", "SELL", PRICE, 5), 0))
    m.run(opening(order(D, "p4", "BUY", PRICE, 5), 5))
    # D may open 1 only: stops after its first lot against C's new offer
    m.run(opening(order(C, "p5", "SELL", PRICE + 1, 5), 5))
    m.run(opening(order(D, "p6", "BUY", PRICE + 1, 5), 1))
    # the liquidation engine closes B's long into D's bid: a liquidation fill, rest expires
    liquidate = order(B, "liq-1-BTC-PERP", "SELL", PRICE - 100_000, 10, type="MARKET", tif="IOC")
    liquidate["reduceOnly"] = True
    liquidate["liquidation"] = True
    m.run(liquidate)
    m.run(
        opening(order(C, "p7", "BUY", PRICE - 50, 1), 1),
        opening(order(C, "p8", "BUY", PRICE - 60, 1), 1),
    )
    m.run(cancel_all(C, "LIQUIDATION"))
    m.run(amend(A, "p1", "SELL", PRICE, 12, opens=2))  # p1 FILLED: CLOSED
    m.run(opening(order(A, "p11", "SELL", PRICE + 500, 2), 2))
    m.run(amend(A, "p11", "SELL", PRICE + 400, 3, opens=3), reply=True)
    m.run(set_status("REDUCE_ONLY"), reply=True)
    m.run(opening(order(C, "p12", "BUY", PRICE - 80, 1), 1))  # MARKET_REDUCE_ONLY
    m.run(amend(A, "p11", "SELL", PRICE + 300, 3, opens=3), reply=True)  # MARKET_REDUCE_ONLY
    m.run(set_status("OPEN"))

    # attached TP/SL: k1 takes p11's offer, its children wait; a trade at PRICE + 500 fires
    # k1.tp and k1.sl ends CXL OCO; k4 cancelled unfilled (its done event's "attached"); a
    # position stop k6 replaces k5 (docs/api.md "Attached TP/SL and position TP/SL")
    def parent(cid: str, price: int, qty: int) -> OrderCommand:
        attached = {"takeProfitPrice": price + 100, "stopLossPrice": price - 100}
        return typing.cast(
            OrderCommand,
            opening(order(C, cid, "BUY", price, qty), qty) | attached | {"triggerSource": "LAST"},
        )

    def position_stop(cid: str) -> OrderCommand:
        fields = {"trigger": "STOP_MARKET", "triggerPrice": PRICE - 5000, "triggerSource": "LAST",
                  "closePosition": True}  # fmt: skip
        return typing.cast(
            OrderCommand, order(C, cid, "SELL", 0, 0, type="MARKET", reduce_only=True) | fields
        )

    m.run(parent("k1", PRICE + 400, 3), reply=True)
    m.run(opening(order(B, "k2", "SELL", PRICE + 500, 1), 1))
    m.run(opening(order(D, "k3", "BUY", PRICE + 500, 1), 1))
    m.run(parent("k4", PRICE - 2000, 1), cancel(C, "k4"))
    m.run(position_stop("k5"), position_stop("k6"), reply=True)
    m.run(opening(order(A, "p9", "BUY", PRICE - 70, 1), 1))
    m.run(admin("expire"), reply=True)  # p9 cancelled: the market expired
    m.run(opening(order(A, "p10", "BUY", PRICE, 1), 1))  # closed: rejected


def test_everything_match_lua_emits_matches_its_declaration(
    client: redis.Redis, markets: MarketSet, listener: Listener
) -> None:
    spot, perp = Matcher(client, markets, SPOT), Matcher(client, markets, PERP)
    try:
        spot_scenario(spot)
        perp_scenario(perp)
    finally:
        spot.close()
        perp.close()
    seen = Seen()
    for m in (spot, perp):
        for _, fields in client.xrange(keys.market_events(m.symbol)):
            for text in fields.values():
                event = seen.check(SettlementEvent, text)
                if event["k"] == "amend":
                    seen.note("AmendEvent", "result", event["result"])
                elif event["k"] == "done":
                    seen.note("DoneEvent", "status", event["status"])
                    seen.note("DoneEvent", "reason", event["reason"])
                elif event.get("liquidation"):
                    seen.note("FillEvent", "liquidation", True)
        for _, fields in client.xrange(keys.market_trades(m.symbol)):
            seen.check(Trade, fields[TRADE_FIELD])
        for interval in INTERVALS:
            for text in client.hvals(keys.market_candles(m.symbol, interval)):
                seen.check(Candle, text)
        for reply_key in m.replies:
            for text in client.lrange(reply_key, 0, -1):
                reply = seen.check(Reply, text)
                for field, value in reply.items():
                    seen.note("Reply", field, value)
    check_publications(seen, listener.drain(), (*MATCHER_TOPICS, "ticker"))

    seen.assert_all_seen(
        SettlementEvent,
        Trade,
        Candle,
        Reply,
        StatusTicker,
        *(TOPIC_MESSAGES[k] for k in MATCHER_TOPICS),
        OrderPublication,
    )
    assert ("FillEvent", "liquidation") in seen.values, "no liquidation fill was emitted"
    seen.assert_values_seen("DoneEvent", "status", FinalStatusName)
    seen.assert_values_seen("DoneEvent", "reason", DoneReason)
    seen.assert_values_seen("OrderUpdate", "status", OrderStatusName)
    seen.assert_values_seen("Reply", "result", typing.Literal["CANCELLED", "CLOSED", "UNKNOWN"])
    seen.assert_values_seen("Reply", "status", MarketStatusName)
    seen.assert_values_seen("Reply", "amend", AmendResult)
    seen.assert_values_seen("AmendEvent", "result", AmendResult)
    assert {DepthPublication, TradePublication, OrderChangesPublication} == {
        TOPIC_MESSAGES[k] for k in MATCHER_TOPICS
    }


# -- the settler ----------------------------------------------------------------------------
def test_everything_the_settler_emits_matches_its_declaration(
    client: redis.Redis,
    markets: MarketSet,
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spot, perp = markets.markets[SPOT], markets.markets[PERP]
    ledger, steps = Ledger(client), AccountSteps(client)
    for market in (spot, perp):
        write_market_cfg(client, market)
        drive = MarketDriver(client, market)
        for user in (A, B):
            for asset in {market.quote.symbol, market.base.symbol}:
                drive.deposit(user, asset, 10**13)
        drive.order(A, f"{market.symbol}-s", "SELL", PRICE, 1_000)
        drive.order(B, f"{market.symbol}-b", "BUY", PRICE, 1_000)
        drive.fill((B, f"{market.symbol}-b"), (A, f"{market.symbol}-s"), PRICE, 1_000)
        assert ledger.settle_market(market) > 0  # fills records, acct: notices
    steps.notify([A], [SPOT])  # an acct: notice outside the event stream
    oracle.publish_ticker(client, spot, read_ticker_sync)  # the full ticker
    oracle.publish_ticker(client, perp)  # the prices alone
    # the liquidation engine's commands: cancel_all where B has open orders, a reduce-only
    # MARKET order per position
    client.sadd(keys.market_user_open(PERP, B), "open-order")
    liquidation.start(client, markets, B, 1, now_ms())
    # the expiry's expire command (not waiting for a matcher to apply it)
    monkeypatch.setattr(expiry, "WAIT_FOR_STATUS_S", 0.0)
    assert not expiry._wait_expired(client, PERP, now_ms())

    seen = Seen()
    for user in (A, B):
        for _, fields in client.xrange(keys.account_fills(user)):
            seen.check(FillRecord, fields[FILL_FIELD])
    for market in (spot, perp):
        for _, fields in client.xrange(keys.market_in(market.symbol)):
            seen.check(Command, fields[COMMAND_FIELD])
    check_publications(seen, listener.drain(), SETTLER_TOPICS)

    seen.assert_all_seen(
        FillRecord, CancelAllCommand, OrderCommand, AdminCommand, Ticker, PriceTicker,
        *(TOPIC_MESSAGES[k] for k in SETTLER_TOPICS),
    )  # fmt: skip
    assert {TickerPublication, AccountPublication} == {TOPIC_MESSAGES[k] for k in SETTLER_TOPICS}


def test_every_topic_kind_is_emitted_by_the_matcher_or_the_settler() -> None:
    # orders:<u> is the broadcaster's split of orderchanges: (and the gateway's TWAP progress)
    assert set(TOPIC_MESSAGES) == set(MATCHER_TOPICS) | set(SETTLER_TOPICS) | {"orders"}
