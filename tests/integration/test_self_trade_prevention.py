"""Self-trade prevention (docs/api.md "Self-trade prevention") through the real gateway,
matcher and settler on a real Redis, one market per mode (its markets-file default): the
taker meets another user's maker, then its own; each mode ends what it must, with reason
SELF_TRADE, as the reference book says; balances settle to the unit (every ended order's
reservation released, the one trade paid with its fees); a FOK that would reach its own maker
under EXPIRE_TAKER / EXPIRE_BOTH changes nothing; the auditor's invariants hold after each
test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from support.exchange import ADMIN_TOKEN, Exchange
from support.redis_server import wait_for
from support.reference_book import ReferenceBook
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader
from support.ws import WsClient

from common import money
from common.eip712 import sign
from common.markets import load_markets
from common.settings import DEFAULT_MARKETS_FILE

pytestmark = pytest.mark.integration

P = 3_000_000
QTY = 1_000
USDC = 10**12
BTC = 10**10
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MODES = ["EXPIRE_MAKER", "EXPIRE_TAKER", "EXPIRE_BOTH"]


@pytest.fixture
def markets_file(tmp_path: Path) -> Path:
    """The shipped file plus one SPOT market per mode (named after it), BTC-USDC's terms."""
    document = yaml.safe_load(DEFAULT_MARKETS_FILE.read_text())
    for mode in MODES:
        document["markets"][f"STP-{mode}"] = {
            **document["markets"]["BTC-USDC"],
            "selfTradePrevention": mode,
        }
    path = tmp_path / "markets.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def exchange(redis_url: str, markets_file: Path) -> Iterator[Exchange]:
    with Exchange(redis_url, DEX_MARKETS_FILE=str(markets_file)) as running:
        running.start("gateway", "matcher", "settler")
        yield running
        with running.client() as client:
            audit = client.get("/v1/admin/audit", headers=ADMIN).json()
        assert audit["ok"] is True, audit["invariants"]


def funded(exchange: Exchange) -> Trader:
    trader = Trader()
    exchange.deposit(trader.address, "USDC", USDC)
    exchange.deposit(trader.address, "BTC", BTC)
    return trader


def place(
    exchange: Exchange, trader: Trader, market: str, side: str, qty: int, cid: str, tif: str
) -> dict[str, Any]:
    body = trader.order(market, side, P, qty, cid=cid, product="SPOT", timeInForce=tif)
    with exchange.client() as client:
        response: httpx.Response = client.post("/v1/orders?wait=1", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def order(exchange: Exchange, trader: Trader, cid: str) -> tuple[str, str | None, int]:
    record = exchange.get(f"/v1/orders/{trader.address}/{cid}")
    return record["status"], record.get("reason") or None, int(record["filled"])


def settles_to(exchange: Exchange, trader: Trader, asset: str, expected: tuple[int, int]) -> bool:
    return wait_for(lambda: exchange.balance(trader.address, asset) == expected, 30)


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_against_the_reference_book(exchange: Exchange, mode: str) -> None:
    market_name = f"STP-{mode}"
    market = load_markets(Path(exchange.env["DEX_MARKETS_FILE"])).markets[market_name]
    listed = {m["symbol"]: m for m in exchange.get("/v1/markets")}
    assert listed[market_name]["selfTradePrevention"] == mode
    assert listed["BTC-USDC"]["selfTradePrevention"] == "EXPIRE_MAKER"

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
    trades = exchange.get(f"/v1/markets/{market_name}/trades")
    assert [(int(t["price"]), int(t["qty"])) for t in trades] == [(P, QTY)]

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
    reply = place(exchange, me, market_name, "BUY", 2 * QTY, "m-fok", "FOK")
    assert (reply["status"], reply.get("reason")) == ("EXP", "TIME_IN_FORCE")
    assert order(exchange, other, "o-ask") == ("NEW", None, 0)
    assert order(exchange, me, "m-ask") == ("NEW", None, 0)
    assert exchange.get(f"/v1/markets/{market_name}/trades") == []
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


def order_v3(trader: Trader, market: str, side: str, qty: int, cid: str, stp: str) -> Any:
    message = {
        "clientOrderId": cid, "userId": trader.address, "market": market, "side": side,
        "type": "LIMIT", "price": P, "qty": qty, "product": "SPOT",
        "ts": int(time.time() * 1000), "timeInForce": "GTC", "reduceOnly": False,
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


@pytest.mark.parametrize("stp", ["DECREMENT", "expire_taker", " EXPIRE_TAKER", "X" * 10_000])
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
