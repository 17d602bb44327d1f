"""Self-trade prevention (docs/api.md "Self-trade prevention") through the real gateway,
matcher and settler on a real Redis, one market per mode (its markets-file default): the
taker meets another user's maker, then its own; each mode ends what it must, with reason
SELF_TRADE, as the reference book says; balances settle to the unit (every ended order's
reservation released, the one trade paid with its fees); a FOK that would reach its own maker
under EXPIRE_TAKER / EXPIRE_BOTH / DECREMENT changes nothing; DECREMENT's cases (the taker
larger, smaller, equal; SPOT and PERP; the market's mode against an OrderV3's) to the unit,
with their depth: and orders: publications; the auditor's invariants hold after each test.
One exchange serves the module: each test has fresh traders and cancels what they left."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import yaml
from support.exchange import ADMIN_TOKEN, Exchange
from support.order_changes import order_changes_channel, orders_of
from support.redis_server import RedisServer, wait_for
from support.reference_book import ReferenceBook
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader
from support.ws import WsClient

from common import keys, money
from common.eip712 import sign
from common.events import events_of
from common.markets import load_markets
from common.reservations import derivative_need
from common.settings import DEFAULT_MARKETS_FILE
from services.settler.ledger import Ledger

pytestmark = pytest.mark.integration

P = 3_000_000
QTY = 1_000
USDC = 10**12
BTC = 10**10
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MODES = ["EXPIRE_MAKER", "EXPIRE_TAKER", "EXPIRE_BOTH"]


DECR_SPOT, DECR_PERP = "STP-DECREMENT", "STP-DECREMENT-PERP"
# every trader a test funded, with the markets it placed orders in: cancelled after the test
TOUCHED: dict[str, tuple[Trader, set[str]]] = {}


@pytest.fixture(scope="module")
def running_exchange(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Exchange]:
    """One exchange for the module (each test has its own fresh traders): the shipped markets
    plus a SPOT market per mode (named after it, BTC-USDC's terms) and a PERP market whose
    default is DECREMENT (BTC-PERP's terms)."""
    document = yaml.safe_load(DEFAULT_MARKETS_FILE.read_text())
    for name, like, mode in [
        *((f"STP-{mode}", "BTC-USDC", mode) for mode in MODES),
        (DECR_SPOT, "BTC-USDC", "DECREMENT"),
        (DECR_PERP, "BTC-PERP", "DECREMENT"),
    ]:
        document["markets"][name] = {**document["markets"][like], "selfTradePrevention": mode}
    path = tmp_path_factory.mktemp("stp") / "markets.yaml"
    path.write_text(yaml.safe_dump(document))
    redis_server.flushall()
    with Exchange(redis_server.url, DEX_MARKETS_FILE=str(path)) as running:
        running.start("gateway", "matcher", "settler")
        yield running


@pytest.fixture
def exchange(running_exchange: Exchange) -> Iterator[Exchange]:
    """The module's exchange; afterwards what the test's traders left resting is cancelled,
    and once nothing of theirs is locked the auditor's invariants must hold."""
    TOUCHED.clear()
    yield running_exchange
    with running_exchange.client() as client:
        for trader, markets in TOUCHED.values():
            for market in sorted(markets):
                message = {
                    "userId": trader.address,
                    "market": market,
                    "ts": time.time_ns() // 10**6,
                }
                sig = sign(trader.key, "CancelAll", message, CHAIN_ID, VERIFYING_CONTRACT)
                response = client.post("/v1/orders/cancel-all", json={**message, "sig": sig})
                assert response.status_code == 200, response.text
    for trader, _ in TOUCHED.values():
        for asset in ("USDC", "BTC"):
            assert wait_for(
                lambda t=trader, a=asset: running_exchange.balance(t.address, a)[1] == 0, 30
            ), (trader.address, asset)
    with running_exchange.client() as client:
        audit = client.get("/v1/admin/audit", headers=ADMIN).json()
    assert audit["ok"] is True, audit["invariants"]


def touch(trader: Trader, market: str) -> None:
    """The trader may leave orders resting in market: the test's cleanup cancels them."""
    TOUCHED[trader.address][1].add(market)


def funded(exchange: Exchange) -> Trader:
    trader = Trader()
    exchange.deposit(trader.address, "USDC", USDC)
    exchange.deposit(trader.address, "BTC", BTC)
    TOUCHED[trader.address] = (trader, set())
    return trader


def place(
    exchange: Exchange, trader: Trader, market: str, side: str, qty: int, cid: str, tif: str
) -> dict[str, Any]:
    body = trader.order(market, side, P, qty, cid=cid, product="SPOT", timeInForce=tif)
    touch(trader, market)
    with exchange.client() as client:
        response: httpx.Response = client.post("/v1/orders?wait=1", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def order(exchange: Exchange, trader: Trader, cid: str) -> tuple[str, str | None, int]:
    record = exchange.get(f"/v1/orders/{trader.address}/{cid}")
    return record["status"], record.get("reason") or None, int(record["filled"])


def new_trades(exchange: Exchange, market: str, before: list[Any]) -> list[tuple[int, int]]:
    """(price, qty) of the market's trades not in ``before`` (an earlier read)."""
    seen = {t["tradeId"] for t in before}
    trades = exchange.get(f"/v1/markets/{market}/trades")
    return [(int(t["price"]), int(t["qty"])) for t in trades if t["tradeId"] not in seen]


def settles_to(exchange: Exchange, trader: Trader, asset: str, expected: tuple[int, int]) -> bool:
    return wait_for(lambda: exchange.balance(trader.address, asset) == expected, 30)


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_against_the_reference_book(exchange: Exchange, mode: str) -> None:
    market_name = f"STP-{mode}"
    market = load_markets(Path(exchange.env["DEX_MARKETS_FILE"])).markets[market_name]
    listed = {m["symbol"]: m for m in exchange.get("/v1/markets")}
    assert listed[market_name]["selfTradePrevention"] == mode
    assert listed["BTC-USDC"]["selfTradePrevention"] == "EXPIRE_MAKER"

    trades_before = exchange.get(f"/v1/markets/{market_name}/trades")
    other, me = funded(exchange), funded(exchange)
    # another user's ask first in time, then mine at the same price; I buy both
    steps = [(other, "o-ask", "SELL", QTY, "GTC"), (me, "m-ask", "SELL", QTY, "GTC"),
             (me, "m-bid", "BUY", 2 * QTY, "GTC")]  # fmt: skip
    reference = ReferenceBook(stp=mode)
    for step, (trader, cid, side, qty, tif) in enumerate(steps, 1):
        place(exchange, trader, market_name, side, qty, cid, tif)
        reference.batch(step, [{"op": "order", "user": trader.address, "cid": cid,
                                "side": side, "type": "LIMIT", "tif": tif,
                                "reduceOnly": False, "expiresAt": 0, "price": P,
                                "qty": qty}])  # fmt: skip
    for trader, cid, *_ in steps:
        want = reference.orders[(trader.address, cid)]
        assert order(exchange, trader, cid) == (want.status, want.reason, want.filled), cid
    expected = {
        "EXPIRE_MAKER": {"m-ask": ("CXL", "SELF_TRADE", 0), "m-bid": ("PARTIAL", None, QTY)},
        "EXPIRE_TAKER": {"m-ask": ("NEW", None, 0), "m-bid": ("CXL", "SELF_TRADE", QTY)},
        "EXPIRE_BOTH": {"m-ask": ("CXL", "SELF_TRADE", 0), "m-bid": ("CXL", "SELF_TRADE", QTY)},
    }[mode]
    assert order(exchange, other, "o-ask") == ("FILLED", None, QTY)
    for cid, want_tuple in expected.items():
        assert order(exchange, me, cid) == want_tuple, cid
    assert new_trades(exchange, market_name, trades_before) == [(P, QTY)]

    # to the unit: the one trade and its fees; what still rests is locked, nothing else
    notional = money.notional(market, P, QTY)
    delivered = money.base_units(market, QTY)
    taker_fee = money.fee(notional, market.spec.takerFeeBps)
    maker_fee = money.fee(notional, market.spec.makerFeeBps)
    bid_rests = expected["m-bid"][0] == "PARTIAL"
    ask_rests = expected["m-ask"][0] == "NEW"
    my_quote_locked = money.spot_buy_reservation(market, P, QTY) if bid_rests else 0
    my_base_locked = delivered if ask_rests else 0
    assert settles_to(exchange, me, "USDC", (USDC - notional - taker_fee, my_quote_locked))
    assert settles_to(exchange, me, "BTC", (BTC + delivered, my_base_locked))
    assert settles_to(exchange, other, "USDC", (USDC + notional - maker_fee, 0))
    assert settles_to(exchange, other, "BTC", (BTC - delivered, 0))


@pytest.mark.parametrize("mode", ["EXPIRE_TAKER", "EXPIRE_BOTH"])
def test_a_fok_that_would_reach_its_own_maker_changes_nothing(
    exchange: Exchange, mode: str
) -> None:
    """Under EXPIRE_TAKER / EXPIRE_BOTH the taker would end at its own maker: only the
    liquidity before it counts, so a FOK needing more expires whole, the book untouched."""
    market_name = f"STP-{mode}"
    market = load_markets(Path(exchange.env["DEX_MARKETS_FILE"])).markets[market_name]
    other, me = funded(exchange), funded(exchange)
    place(exchange, other, market_name, "SELL", QTY, "o-ask", "GTC")
    place(exchange, me, market_name, "SELL", QTY, "m-ask", "GTC")
    place(exchange, other, market_name, "SELL", QTY, "o-ask2", "GTC")
    trades_before = exchange.get(f"/v1/markets/{market_name}/trades")
    reply = place(exchange, me, market_name, "BUY", 2 * QTY, "m-fok", "FOK")
    assert (reply["status"], reply.get("reason")) == ("EXP", "TIME_IN_FORCE")
    assert order(exchange, other, "o-ask") == ("NEW", None, 0)
    assert order(exchange, me, "m-ask") == ("NEW", None, 0)
    assert new_trades(exchange, market_name, trades_before) == []
    delivered = money.base_units(market, QTY)
    assert settles_to(exchange, me, "USDC", (USDC, 0))
    assert settles_to(exchange, me, "BTC", (BTC, delivered))
    # a FOK the other user's first ask fills whole trades, my maker untouched
    reply = place(exchange, me, market_name, "BUY", QTY, "m-fok2", "FOK")
    assert reply["status"] == "FILLED"
    assert order(exchange, me, "m-ask") == ("NEW", None, 0)
    notional = money.notional(market, P, QTY)
    taker_fee = money.fee(notional, market.spec.takerFeeBps)
    assert settles_to(exchange, me, "USDC", (USDC - notional - taker_fee, 0))
    assert settles_to(exchange, me, "BTC", (BTC + delivered, delivered))
    assert settles_to(exchange, other, "BTC", (BTC - delivered, delivered))


def order_v3(
    trader: Trader, market: str, side: str, qty: int, cid: str, stp: str,
    product: str = "SPOT", tif: str = "GTC",
) -> Any:  # fmt: skip
    message = {
        "clientOrderId": cid, "userId": trader.address, "market": market, "side": side,
        "type": "LIMIT", "price": P, "qty": qty, "product": product,
        "ts": int(time.time() * 1000), "timeInForce": tif, "reduceOnly": False,
        "expiresAt": 0, "selfTradePrevention": stp,
    }  # fmt: skip
    return {**message, "sig": sign(trader.key, "OrderV3", message, CHAIN_ID, VERIFYING_CONTRACT)}


@pytest.mark.parametrize(
    ("stp", "ask", "bid"),
    [
        ("EXPIRE_TAKER", ("NEW", None, 0), ("CXL", "SELF_TRADE", QTY)),
        ("EXPIRE_BOTH", ("CXL", "SELF_TRADE", 0), ("CXL", "SELF_TRADE", QTY)),
        ("", ("CXL", "SELF_TRADE", 0), ("PARTIAL", None, QTY)),  # the market's EXPIRE_MAKER
    ],
)
def test_an_order_v3_brings_its_own_mode(
    exchange: Exchange, stp: str, ask: tuple[Any, ...], bid: tuple[Any, ...]
) -> None:
    """On BTC-USDC (EXPIRE_MAKER) a signed OrderV3's selfTradePrevention rules its matching."""
    market = load_markets(Path(exchange.env["DEX_MARKETS_FILE"])).markets["BTC-USDC"]
    other, me = funded(exchange), funded(exchange)
    place(exchange, other, "BTC-USDC", "SELL", QTY, "o-ask", "GTC")
    place(exchange, me, "BTC-USDC", "SELL", QTY, "m-ask", "GTC")
    with exchange.client() as client:
        response = client.post(
            "/v1/orders?wait=1", json=order_v3(me, "BTC-USDC", "BUY", 2 * QTY, "m-bid", stp)
        )
    assert response.status_code == 200, response.text
    assert order(exchange, other, "o-ask") == ("FILLED", None, QTY)
    assert order(exchange, me, "m-ask") == ask
    assert order(exchange, me, "m-bid") == bid
    notional = money.notional(market, P, QTY)
    taker_fee = money.fee(notional, market.spec.takerFeeBps)
    delivered = money.base_units(market, QTY)
    quote_locked = money.spot_buy_reservation(market, P, QTY) if bid[0] == "PARTIAL" else 0
    base_locked = delivered if ask[0] == "NEW" else 0
    assert settles_to(exchange, me, "USDC", (USDC - notional - taker_fee, quote_locked))
    assert settles_to(exchange, me, "BTC", (BTC + delivered, base_locked))
    assert settles_to(exchange, other, "BTC", (BTC - delivered, 0))


@pytest.mark.parametrize("stp", ["decrement", "expire_taker", " EXPIRE_TAKER", "X" * 10_000])
def test_an_order_v3_with_an_unknown_mode_is_refused_and_changes_nothing(
    exchange: Exchange, stp: str
) -> None:
    me = funded(exchange)
    with exchange.client() as client:
        response = client.post("/v1/orders", json=order_v3(me, "BTC-USDC", "BUY", QTY, "x", stp))
    assert response.status_code in (400, 413), response.text
    if response.status_code == 400:
        assert response.json()["error"]["code"] == "INVALID_ORDER"
    assert exchange.balance(me.address, "USDC") == (USDC, 0)
    with exchange.client() as client:
        assert client.get(f"/v1/orders/{me.address}/x").status_code == 404


def test_an_order_v3_over_the_websocket(exchange: Exchange) -> None:
    """A WebSocket order reads an OrderV3 as POST /v1/orders does."""
    other, me = funded(exchange), funded(exchange)
    place(exchange, other, "BTC-USDC", "SELL", QTY, "o-ask", "GTC")
    place(exchange, me, "BTC-USDC", "SELL", QTY, "m-ask", "GTC")

    async def ask(body: dict[str, Any]) -> tuple[int, Any]:
        async with await WsClient.connect(f"ws://127.0.0.1:{exchange.gateway_port}/v1/ws") as ws:
            await ws.send({"id": 1, "op": "order", "body": body, "wait": True})
            answer = await ws.next(lambda m: m.get("id") == 1, 15)
            return answer["status"], answer["body"]

    status, _ = asyncio.run(ask(order_v3(me, "BTC-USDC", "BUY", 2 * QTY, "m-bid", "EXPIRE_BOTH")))
    assert status in (200, 202)
    assert wait_for(lambda: order(exchange, me, "m-bid")[0] == "CXL", 15)
    assert order(exchange, me, "m-bid") == ("CXL", "SELF_TRADE", QTY)
    assert order(exchange, me, "m-ask") == ("CXL", "SELF_TRADE", 0)
    assert order(exchange, other, "o-ask") == ("FILLED", None, QTY)
    market = load_markets(Path(exchange.env["DEX_MARKETS_FILE"])).markets["BTC-USDC"]
    notional = money.notional(market, P, QTY)
    taker_fee = money.fee(notional, market.spec.takerFeeBps)
    maker_fee = money.fee(notional, market.spec.makerFeeBps)
    delivered = money.base_units(market, QTY)
    assert settles_to(exchange, me, "USDC", (USDC - notional - taker_fee, 0))
    assert settles_to(exchange, me, "BTC", (BTC + delivered, 0))
    assert settles_to(exchange, other, "USDC", (USDC + notional - maker_fee, 0))
    assert settles_to(exchange, other, "BTC", (BTC - delivered, 0))


# -- DECREMENT ------------------------------------------------------------------------


class Decrement:
    """A test's view of the exchange for DECREMENT: fresh traders, orders, records."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.markets = load_markets(Path(exchange.env["DEX_MARKETS_FILE"])).markets

    def trader(self) -> Trader:
        return funded(self.exchange)

    def place(self, trader: Trader, market: str, side: str, qty: int, cid: str,
              tif: str = "GTC", stp: str | None = None) -> dict[str, Any]:  # fmt: skip
        product = self.markets[market].product.value
        touch(trader, market)
        if stp is None:
            body = trader.order(market, side, P, qty, cid=cid, product=product, timeInForce=tif)
        else:
            body = order_v3(trader, market, side, qty, cid, stp, product, tif)
        with self.exchange.client() as client:
            response = client.post("/v1/orders?wait=1", json=body)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def record(self, trader: Trader, cid: str) -> tuple[str, str | None, int, int]:
        """An order's status, reason, filled and qty."""
        found = self.exchange.get(f"/v1/orders/{trader.address}/{cid}")
        return found["status"], found.get("reason") or None, int(found["filled"]), found["qty"]


@pytest.fixture
def dec(exchange: Exchange) -> Decrement:
    return Decrement(exchange)


class Published:
    """The matcher's depth: and orders: publications on the raw pub/sub channels."""

    def __init__(self, exchange: Exchange, market: str, trader: Trader) -> None:
        self.pubsub = redis.Redis.from_url(exchange.redis_url, decode_responses=True).pubsub()
        self.depth_channel = keys.channel(keys.depth_topic(market))
        self.pubsub.subscribe(self.depth_channel, order_changes_channel(market))
        self.trader = trader
        self.seen: list[tuple[str, Any]] = []
        self.messages: list[dict[str, Any]] = []

    def drain(self, want: Any) -> list[tuple[str, Any]]:
        """Messages until ``want(seen)`` holds (10 s at most), then close."""
        deadline = time.monotonic() + 10
        while not want(self.seen) and time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=0.2)
            if message and message["type"] == "message":
                self.seen.append((message["channel"], orjson.loads(message["data"])))
                self.messages.append(message)
        self.pubsub.close()
        return self.seen

    def depth(self) -> list[Any]:
        return [m for channel, m in self.seen if channel == self.depth_channel]

    def orders(self) -> list[Any]:
        return [u for m in self.messages for u in orders_of(self.trader.address, m)]


def test_decrement_a_taker_larger_than_its_own_maker_goes_on_and_rests(dec: Decrement) -> None:
    """Another user's ask, my ask of 400, another user's ask; my GTC buy of 3000 takes the
    first (a trade), meets mine (both lose 400: my ask ends CXL SELF_TRADE, my buy goes on
    with qty 2600), takes the third (a trade) and rests 600."""
    market = dec.markets[DECR_SPOT]
    other, me = dec.trader(), dec.trader()
    dec.place(other, DECR_SPOT, "SELL", QTY, "o-ask")
    dec.place(me, DECR_SPOT, "SELL", 400, "m-ask")
    dec.place(other, DECR_SPOT, "SELL", QTY, "o-ask2")
    trades_before = dec.exchange.get(f"/v1/markets/{DECR_SPOT}/trades")
    published = Published(dec.exchange, DECR_SPOT, me)
    reply = dec.place(me, DECR_SPOT, "BUY", 3 * QTY, "m-bid")
    assert (reply["status"], reply["filled"], reply["qty"]) == ("PARTIAL", 2 * QTY, 2600)
    assert dec.record(me, "m-ask") == ("CXL", "SELF_TRADE", 0, 400)
    assert dec.record(me, "m-bid") == ("PARTIAL", None, 2 * QTY, 2600)
    assert dec.record(other, "o-ask") == ("FILLED", None, QTY, QTY)
    assert dec.record(other, "o-ask2") == ("FILLED", None, QTY, QTY)
    reference = ReferenceBook(stp="DECREMENT")
    for step, (trader, cid, side, qty) in enumerate(
        [(other, "o-ask", "SELL", QTY), (me, "m-ask", "SELL", 400),
         (other, "o-ask2", "SELL", QTY), (me, "m-bid", "BUY", 3 * QTY)], 1
    ):  # fmt: skip
        reference.batch(step, [{"op": "order", "user": trader.address, "cid": cid,
                                "side": side, "type": "LIMIT", "tif": "GTC",
                                "reduceOnly": False, "expiresAt": 0, "price": P,
                                "qty": qty}])  # fmt: skip
    for (user, cid), want in reference.orders.items():
        trader = me if user == me.address else other
        assert dec.record(trader, cid) == (want.status, want.reason, want.filled, want.qty)
    assert new_trades(dec.exchange, DECR_SPOT, trades_before) == [(P, QTY), (P, QTY)]
    depth = dec.exchange.get(f"/v1/markets/{DECR_SPOT}/depth")
    assert (depth["bids"], depth["asks"]) == ([[P, 600]], [])
    # one depth seq for the command; my two orders as they ended up
    seen = published.drain(lambda s: len(s) >= 3)
    assert [m["data"] for m in published.depth()] == [{"bids": [[P, 600]], "asks": [[P, 0]]}]
    updates = {u["clientOrderId"]: (u["status"], u["qty"], u["filled"]) for u in published.orders()}
    assert updates == {"m-ask": ("CXL", 400, 0), "m-bid": ("PARTIAL", 2600, 2 * QTY)}, seen
    # to the unit: two trades with my taker fees; the rest of 600 locked, my ask released
    notional = money.notional(market, P, QTY)
    taker_fee, maker_fee = (money.fee(notional, market.spec.takerFeeBps),
                            money.fee(notional, market.spec.makerFeeBps))  # fmt: skip
    delivered = money.base_units(market, QTY)
    rest = money.spot_buy_reservation(market, P, 600)
    assert settles_to(dec.exchange, me, "USDC", (USDC - 2 * (notional + taker_fee), rest))
    assert settles_to(dec.exchange, me, "BTC", (BTC + 2 * delivered, 0))
    assert settles_to(dec.exchange, other, "USDC", (USDC + 2 * (notional - maker_fee), 0))
    assert settles_to(dec.exchange, other, "BTC", (BTC - 2 * delivered, 0))


def test_decrement_a_taker_smaller_than_its_own_maker_ends_the_maker_keeps_its_place(
    dec: Decrement,
) -> None:
    """My ask of 1000, then another user's ask of 500; my buy of 400 meets mine first: the buy
    ends CXL SELF_TRADE (qty kept, nothing filled), my ask goes on with 600 at the head of
    its level and its base lock comes down to 600; the next buyer fills it first."""
    market = dec.markets[DECR_SPOT]
    other, me, buyer = dec.trader(), dec.trader(), dec.trader()
    dec.place(me, DECR_SPOT, "SELL", QTY, "m-ask")
    dec.place(other, DECR_SPOT, "SELL", 500, "o-ask")
    trades_before = dec.exchange.get(f"/v1/markets/{DECR_SPOT}/trades")
    published = Published(dec.exchange, DECR_SPOT, me)
    reply = dec.place(me, DECR_SPOT, "BUY", 400, "m-bid")
    assert (reply["status"], reply.get("reason"), reply["filled"]) == ("CXL", "SELF_TRADE", 0)
    assert dec.record(me, "m-bid") == ("CXL", "SELF_TRADE", 0, 400)
    assert dec.record(me, "m-ask") == ("NEW", None, 0, 600)
    assert new_trades(dec.exchange, DECR_SPOT, trades_before) == []
    assert dec.exchange.get(f"/v1/markets/{DECR_SPOT}/depth")["asks"] == [[P, 1100]]
    published.drain(lambda s: len(s) >= 3)
    assert [m["data"] for m in published.depth()] == [{"bids": [], "asks": [[P, 1100]]}]
    updates = {u["clientOrderId"]: (u["status"], u["qty"], u["filled"]) for u in published.orders()}
    assert updates == {"m-ask": ("NEW", 600, 0), "m-bid": ("CXL", 400, 0)}
    assert settles_to(dec.exchange, me, "BTC", (BTC, money.base_units(market, 600)))
    assert settles_to(dec.exchange, me, "USDC", (USDC, 0))
    # the maker kept its place: a buyer of 600 fills it before the other user's ask
    dec.place(buyer, DECR_SPOT, "BUY", 600, "b-bid")
    assert dec.record(me, "m-ask") == ("FILLED", None, 600, 600)
    assert dec.record(other, "o-ask") == ("NEW", None, 0, 500)
    notional = money.notional(market, P, 600)
    maker_fee = money.fee(notional, market.spec.makerFeeBps)
    assert settles_to(dec.exchange, me, "USDC", (USDC + notional - maker_fee, 0))
    assert settles_to(dec.exchange, me, "BTC", (BTC - money.base_units(market, 600), 0))


def test_decrement_equal_quantities_end_both(dec: Decrement) -> None:
    me = dec.trader()
    dec.place(me, DECR_SPOT, "SELL", 500, "m-ask")
    reply = dec.place(me, DECR_SPOT, "BUY", 500, "m-bid", tif="IOC")
    assert (reply["status"], reply.get("reason")) == ("CXL", "SELF_TRADE")
    assert dec.record(me, "m-ask") == ("CXL", "SELF_TRADE", 0, 500)
    assert dec.record(me, "m-bid") == ("CXL", "SELF_TRADE", 0, 500)
    assert dec.exchange.get(f"/v1/markets/{DECR_SPOT}/depth")["asks"] == []
    assert settles_to(dec.exchange, me, "USDC", (USDC, 0))
    assert settles_to(dec.exchange, me, "BTC", (BTC, 0))


def test_decrement_a_fok_counts_only_what_comes_before_its_own_maker(dec: Decrement) -> None:
    """A FOK never decrements: needing more than the liquidity before its own maker it
    expires, nothing changed; one the first ask fills whole trades, my maker untouched."""
    market = dec.markets[DECR_SPOT]
    other, me = dec.trader(), dec.trader()
    dec.place(other, DECR_SPOT, "SELL", QTY, "o-ask")
    dec.place(me, DECR_SPOT, "SELL", QTY, "m-ask")
    dec.place(other, DECR_SPOT, "SELL", QTY, "o-ask2")
    trades_before = dec.exchange.get(f"/v1/markets/{DECR_SPOT}/trades")
    reply = dec.place(me, DECR_SPOT, "BUY", 2 * QTY, "m-fok", tif="FOK")
    assert (reply["status"], reply.get("reason")) == ("EXP", "TIME_IN_FORCE")
    assert dec.record(me, "m-ask") == ("NEW", None, 0, QTY)
    assert new_trades(dec.exchange, DECR_SPOT, trades_before) == []
    reply = dec.place(me, DECR_SPOT, "BUY", QTY, "m-fok2", tif="FOK")
    assert reply["status"] == "FILLED"
    assert dec.record(me, "m-ask") == ("NEW", None, 0, QTY)
    notional = money.notional(market, P, QTY)
    taker_fee = money.fee(notional, market.spec.takerFeeBps)
    delivered = money.base_units(market, QTY)
    assert settles_to(dec.exchange, me, "USDC", (USDC - notional - taker_fee, 0))
    assert settles_to(dec.exchange, me, "BTC", (BTC + delivered, delivered))


@pytest.mark.parametrize(
    ("market_name", "stp", "ask", "bid"),
    [
        # BTC-USDC's EXPIRE_MAKER overridden: my ask goes on with 600, my buy ends
        ("BTC-USDC", "DECREMENT", ("NEW", None, 0, 600), ("CXL", "SELF_TRADE", 0, 400)),
        # the market's DECREMENT overridden by EXPIRE_MAKER: my ask ends, my buy rests
        (DECR_SPOT, "EXPIRE_MAKER", ("CXL", "SELF_TRADE", 0, QTY), ("NEW", None, 0, 400)),
        (DECR_SPOT, "", ("NEW", None, 0, 600), ("CXL", "SELF_TRADE", 0, 400)),  # the market's
    ],
)
def test_decrement_an_order_v3_mode_overrides_the_markets(
    dec: Decrement, market_name: str, stp: str, ask: tuple[Any, ...], bid: tuple[Any, ...]
) -> None:
    market = dec.markets[market_name]
    me = dec.trader()
    dec.place(me, market_name, "SELL", QTY, "m-ask")
    dec.place(me, market_name, "BUY", 400, "m-bid", stp=stp)
    assert dec.record(me, "m-ask") == ask
    assert dec.record(me, "m-bid") == bid
    base_locked = money.base_units(market, ask[3]) if ask[0] == "NEW" else 0
    quote_locked = money.spot_buy_reservation(market, P, 400) if bid[0] == "NEW" else 0
    assert settles_to(dec.exchange, me, "BTC", (BTC, base_locked))
    assert settles_to(dec.exchange, me, "USDC", (USDC, quote_locked))


def test_decrement_on_a_perp_trims_the_margin_to_the_unit(dec: Decrement) -> None:
    """PERP: my sell of 1000 rests; my buy of 400 meets it: the buy ends, the sell goes on
    with 600 and holds exactly the margin and fee of 600; then another user's buy of 1000
    takes my 600 (I am short 600, nothing locked) and rests 400 of its own."""
    market = dec.markets[DECR_PERP]
    me, other = dec.trader(), dec.trader()
    dec.place(me, DECR_PERP, "SELL", QTY, "m-ask")
    assert exchange_locked(dec, me) == derivative_need(market, P, QTY, QTY, P, 0)
    reply = dec.place(me, DECR_PERP, "BUY", 400, "m-bid")
    assert (reply["status"], reply.get("reason")) == ("CXL", "SELF_TRADE")
    assert dec.record(me, "m-ask") == ("NEW", None, 0, 600)
    need_600 = derivative_need(market, P, 600, 600, P, 0)
    assert settles_to(dec.exchange, me, "USDC", (USDC, need_600))
    dec.place(other, DECR_PERP, "BUY", QTY, "o-bid")
    assert dec.record(me, "m-ask") == ("FILLED", None, 600, 600)
    assert dec.record(other, "o-bid") == ("PARTIAL", None, 600, QTY)
    notional = money.notional(market, P, 600)
    maker_fee = money.fee(notional, market.spec.makerFeeBps)
    assert settles_to(dec.exchange, me, "USDC", (USDC - maker_fee, 0))
    position = dec.exchange.get(f"/v1/accounts/{me.address}/positions")
    assert [(p["market"], int(p["size"])) for p in position] == [(DECR_PERP, -600)]
    # replaying the market's events from the start (the decrement's among them) changes
    # nothing: every account applied each event once, by its eseq
    client = redis.Redis.from_url(dec.exchange.redis_url, decode_responses=True)
    events = [e for _, f in client.xrange(keys.market_events(DECR_PERP)) for e in events_of(f)]
    assert [e["cid"] for e in events if e["k"] == "decrement"] == ["m-ask"]
    accounts = (me.address.lower(), other.address.lower())
    state = [
        (client.hgetall(keys.balances(a)), client.hgetall(keys.reservations(a))) for a in accounts
    ]
    client.delete(keys.market_settled(DECR_PERP))
    Ledger(client).settle_market(market)
    assert [
        (client.hgetall(keys.balances(a)), client.hgetall(keys.reservations(a))) for a in accounts
    ] == state
    client.close()


def exchange_locked(dec: Decrement, trader: Trader) -> int:
    """What the trader has locked in USDC once the gateway's reservation is in."""
    return dec.exchange.balance(trader.address, "USDC")[1]
