"""The Python SDK against the real processes on a real redis-server: sign and place, cancel,
amend, batch, cancel-replace, agents, the dead-man's switch and every read, typed errors,
WebSocket order entry, and a local book kept in sync while 1,000 random orders flow, across a
broadcaster killed (SIGKILL) and restarted, ending equal to REST depth."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Iterator

import pytest
from eth_account import Account
from orderbookdex import BatchAction, Client, MarketStream, OrderEntry, errors
from orderbookdex.models import Balance, Order
from support.exchange import ADMIN_TOKEN, Exchange
from support.redis_server import RedisServer, wait_for

pytestmark = pytest.mark.integration

SPOT, PERP = "BTC-USDC", "BTC-PERP"
PRICE, QTY = 3_000_000, 1_000
NOTIONAL = PRICE * QTY  # USDC atomic units (API.md §2: scales 2 + 4, USDC 6 decimals)
TAKER_FEE, MAKER_FEE = 1_500_000, 300_000


@pytest.fixture(scope="module")
def exchange(redis_server: RedisServer) -> Iterator[Exchange]:
    redis_server.flushall()
    env = {"DEX_RATE_LIMIT_USER": "0", "DEX_RATE_LIMIT_IP": "0", "DEX_MAX_OPEN_ORDERS": "5000"}
    with Exchange(redis_server.url, **env) as running:
        running.start("gateway", "matcher", "settler", "broadcaster")
        yield running


def trader(exchange: Exchange, usdc: int = 0, btc: int = 0) -> Client:
    """A new key with its deposits, made through the SDK's admin calls."""
    client = Client(exchange.http, key=Account.create().key, admin_token=ADMIN_TOKEN)
    if usdc:
        client.deposit(client.address, "USDC", usdc)
    if btc:
        client.deposit(client.address, "BTC", btc)
    return client


def test_sign_place_cancel_amend_and_read_every_endpoint(exchange: Exchange) -> None:
    seller = trader(exchange, btc=50_000_000)
    buyer = trader(exchange, usdc=10_000_000_000)
    assert seller.health() == {"status": "ok"}
    assert {"Order", "OrderV2", "OrderV3", "Batch"} <= set(seller.published_types())

    rested = seller.place(SPOT, "SELL", QTY, PRICE, wait=True)
    assert isinstance(rested, Order) and (rested.status, rested.filled) == ("NEW", 0)
    taken = buyer.place(SPOT, "BUY", QTY, PRICE, time_in_force="IOC", wait=True)
    assert isinstance(taken, Order) and (taken.status, taken.filled) == ("FILLED", QTY)
    assert taken.time_in_force == "IOC"

    assert wait_for(lambda: len(buyer.fills()) == 1, 30)
    (fill,) = buyer.fills(market=SPOT)
    assert (fill.price, fill.qty, fill.fee, fill.liquidity) == (PRICE, QTY, TAKER_FEE, "TAKER")
    assert wait_for(
        lambda: seller.balances()["USDC"] == Balance(NOTIONAL - MAKER_FEE, NOTIONAL - MAKER_FEE, 0),
        30,
    )
    assert buyer.balances() == {
        "USDC": Balance(
            10_000_000_000 - NOTIONAL - TAKER_FEE, 10_000_000_000 - NOTIONAL - TAKER_FEE, 0
        ),
        "BTC": Balance(QTY * 10_000, QTY * 10_000, 0),
    }

    # A resting order: read, amend in place, cancel-replace, cancel; typed refusals.
    first = seller.place(SPOT, "SELL", 2 * QTY, PRICE + 100, wait=True)
    assert isinstance(first, Order)
    assert seller.order(first.client_order_id) == first
    amended = seller.amend(SPOT, first.client_order_id, PRICE + 100, QTY)
    assert (amended.qty, amended.status) == (QTY, "NEW")
    replaced = seller.cancel_replace(first.client_order_id, SPOT, "SELL", QTY, PRICE + 200)
    assert replaced["cancelled"] is not None and replaced["cancelled"].reason == "REPLACED"
    new = replaced["order"]
    assert new is not None and (new.price, new.status) == (PRICE + 200, "NEW")
    assert [o.client_order_id for o in seller.orders(open=True, market=SPOT)] == [
        new.client_order_id
    ]
    depth = seller.depth(SPOT)
    assert (depth.bids, depth.asks) == ([], [(PRICE + 200, QTY)])
    cancelled = seller.cancel(SPOT, new.client_order_id)
    assert (cancelled.status, cancelled.reason) == ("CXL", "USER")
    with pytest.raises(errors.OrderClosed) as closed:
        seller.cancel(SPOT, new.client_order_id)
    assert (closed.value.status, closed.value.code) == (409, "ORDER_CLOSED")
    with pytest.raises(errors.NotFound):
        seller.order("no-such-order")
    with pytest.raises(errors.InsufficientBalance) as poor:
        buyer.place(SPOT, "BUY", 10_000 * QTY, PRICE)
    assert poor.value.status == 422
    with pytest.raises(errors.Duplicate):
        seller.place(SPOT, "SELL", QTY, PRICE + 300, client_order_id=first.client_order_id)
    with pytest.raises(errors.UnknownMarket):
        seller.depth("NO-SUCH")
    assert wait_for(lambda: seller.balances()["BTC"].locked == 0, 10)

    # A batch: two places and a cancel of an order placed before, one signature.
    before = seller.place(SPOT, "SELL", QTY, PRICE + 400, wait=True)
    assert isinstance(before, Order)
    a, b = (
        BatchAction.place(SPOT, "SELL", QTY, PRICE + 500),
        BatchAction.place(SPOT, "SELL", QTY, PRICE + 600),
    )
    answer = seller.batch([a, b, BatchAction.cancel(SPOT, before.client_order_id)])
    assert [r["status"] for r in answer["results"]] == [202, 202, 202]
    assert wait_for(lambda: seller.order(before.client_order_id).status == "CXL", 10)
    assert wait_for(lambda: seller.order(b.client_order_id).status == "NEW", 10)
    assert seller.cancel_all(SPOT) == 2
    assert wait_for(lambda: seller.balances()["BTC"].locked == 0, 10)

    # Agent keys and the dead-man's switch.
    agent_key = Account.create().key
    agent = Client(exchange.http, key=agent_key)
    approved = seller.approve_agent(agent.address, name="bot", markets=[SPOT])
    assert (approved["agent"], approved["scope"]) == (agent.address.lower(), "TRADE")
    as_agent = Client(exchange.http, key=agent_key, account=seller.address)
    by_agent = as_agent.place(SPOT, "SELL", QTY, PRICE + 700, wait=True)
    assert isinstance(by_agent, Order) and by_agent.agent == agent.address.lower()
    assert by_agent.user_id == seller.address.lower()
    with pytest.raises(errors.Forbidden):
        as_agent.place(PERP, "SELL", QTY, PRICE)
    assert [x["agent"] for x in seller.agents()] == [agent.address.lower()]
    assert seller.revoke_agent(agent.address)["revoked"] is True
    with pytest.raises(errors.InvalidSignature):
        as_agent.cancel(SPOT, by_agent.client_order_id)
    deadline = int(time.time() * 1000) + 60_000
    assert seller.schedule_cancel(deadline, SPOT)["deadline"] == deadline
    assert [s["deadline"] for s in seller.schedule_cancels()] == [deadline]
    assert seller.schedule_cancel(0, SPOT)["deadline"] == 0
    assert seller.schedule_cancels() == []
    seller.cancel(SPOT, by_agent.client_order_id)

    # Withdrawals.
    withdrawal = buyer.withdraw("BTC", 10_000)
    assert (withdrawal["status"], withdrawal["amount"]) == ("PENDING", 10_000)
    assert [w["amount"] for w in buyer.withdrawals()] == [10_000]

    # Market reads.
    markets = {m.symbol: m for m in seller.markets()}
    assert markets[SPOT].product == "SPOT" and seller.market(PERP).product == "PERP"
    (trade,) = seller.trades(SPOT)
    assert (trade.price, trade.qty, trade.taker_side, trade.seq) == (PRICE, QTY, "BUY", 1)
    ticker = seller.ticker(SPOT)
    assert (ticker.last, ticker.volume_24h, ticker.status) == (PRICE, QTY, "OPEN")
    (candle,) = seller.candles(SPOT, "1m")
    assert (candle.o, candle.c, candle.v) == (PRICE, PRICE, QTY)
    system = seller.system_accounts()
    assert wait_for(
        lambda: seller.system_accounts()["fees"].get("USDC") == TAKER_FEE + MAKER_FEE, 10
    ), system
    assert "dex_gateway_requests_total" in seller.metrics()

    # A perpetual position, its margin; the operator's oracle, halt, resume and audit.
    long = trader(exchange, usdc=2_000_000_000)
    short = trader(exchange, usdc=2_000_000_000)
    short.place(PERP, "SELL", QTY, PRICE, wait=True)
    long.place(PERP, "BUY", QTY, PRICE, wait=True)
    assert wait_for(lambda: [p.size for p in long.positions()] == [QTY], 30)
    (position,) = long.positions()
    assert (position.market, position.entry_notional) == (PERP, NOTIONAL)
    assert long.margin()["USDC"].initial_margin == NOTIONAL // 10
    admin = Client(exchange.http, admin_token=ADMIN_TOKEN)
    assert admin.set_oracle(PERP, PRICE + 1_000)["indexPrice"] == PRICE + 1_000
    assert admin.halt(SPOT).status == "HALTED"
    with pytest.raises(errors.MarketHalted):
        seller.place(SPOT, "SELL", QTY, PRICE)
    assert admin.resume(SPOT).status == "OPEN"
    assert admin.set_market_status(SPOT, "CANCEL_ONLY").status == "CANCEL_ONLY"
    with pytest.raises(errors.MarketCancelOnly):
        seller.place(SPOT, "SELL", QTY, PRICE)
    assert admin.set_market_status(SPOT, "OPEN").status == "OPEN"
    with pytest.raises(errors.Forbidden):
        Client(exchange.http, admin_token="wrong").audit()
    assert wait_for(lambda: admin.audit()["ok"], 30), admin.audit()
    assert all(int(row["difference"]) == 0 for row in admin.audit()["assets"].values())


def test_websocket_order_entry_places_amends_and_cancels(exchange: Exchange) -> None:
    maker = trader(exchange, btc=50_000_000)

    async def scenario() -> None:
        async with OrderEntry(maker) as entry, MarketStream(exchange.ws) as stream:
            orders, pnl = stream.orders(maker.address), stream.pnl(maker.address)
            assert (await orders.__anext__())["type"] == "snapshot"
            assert set((await pnl.__anext__())["data"]) == {"positions", "margin"}
            assert await entry.ping() == {"id": 1, "op": "pong"}
            placed = await entry.place(SPOT, "SELL", QTY, PRICE + 1_000, wait=True)
            assert placed["status"] == "NEW"
            cid = placed["clientOrderId"]
            while (update := await asyncio.wait_for(orders.__anext__(), 10))["data"][
                "status"
            ] != "NEW":
                pass
            assert (update["data"]["clientOrderId"], update["data"]["qty"]) == (cid, QTY)
            amended = await entry.amend(SPOT, cid, PRICE + 1_100, QTY)
            assert (amended["price"], amended["status"]) == (PRICE + 1_100, "NEW")
            with pytest.raises(errors.InvalidPrice):
                await entry.place(SPOT, "SELL", QTY, 0)
            done = await entry.cancel(SPOT, cid)
            assert (done["status"], done["reason"]) == ("CXL", "USER")
            with pytest.raises(errors.OrderClosed):
                await entry.cancel(SPOT, cid)

    asyncio.run(scenario())
    assert wait_for(lambda: maker.balances()["BTC"].locked == 0, 10)


def test_a_book_stays_equal_to_rest_depth_through_1000_orders_and_a_broadcaster_kill(
    exchange: Exchange,
) -> None:
    rng = random.Random(18)
    traders = [trader(exchange, usdc=10**13, btc=10**12) for _ in range(4)]
    rest = traders[0]

    async def scenario() -> None:
        async with MarketStream(exchange.ws, backoff_initial=0.05) as stream:
            book = stream.book(SPOT)
            await book.wait_synced()
            entries = [OrderEntry(t) for t in traders]
            for entry in entries:
                await entry.connect()
            resting: list[tuple[int, str]] = []
            placed: list[str] = []

            async def one(i: int) -> None:
                n = rng.randrange(len(entries))
                if resting and rng.random() < 0.2:
                    who, cid = resting.pop(rng.randrange(len(resting)))
                    with _refusal_ok():
                        await entries[who].cancel(SPOT, cid)
                    return
                side = rng.choice(("BUY", "SELL"))
                price = PRICE + rng.randrange(-40, 41) * 100
                tif = rng.choice(("GTC", "GTC", "GTC", "IOC"))
                with _refusal_ok():
                    answer = await entries[n].place(
                        SPOT, side, rng.randrange(1, 30) * 10, price, time_in_force=tif
                    )
                    resting.append((n, answer["clientOrderId"]))
                    placed.append(answer["clientOrderId"])

            for start in range(0, 1000, 50):
                await asyncio.gather(*(one(i) for i in range(start, start + 50)))
                if start == 500:
                    exchange.kill("broadcaster", signal.SIGKILL)
                    exchange.start("broadcaster")
            for entry in entries:
                await entry.close()

            # A gap (as if an update were lost) re-subscribes by itself.
            seq = book.seq
            stream._dispatch(
                stream._ws,
                {
                    "topic": book.topic,
                    "type": "update",
                    "seq": seq + 5,
                    "data": {"bids": [], "asks": []},
                },
            )
            assert (book.synced, book.resyncs) == (False, 1)

            def equal_to_rest() -> bool:
                depth = rest.depth(SPOT, limit=1000)
                return book.synced and (book.seq, book.bids, book.asks) == (
                    depth.seq,
                    depth.bids,
                    depth.asks,
                )

            deadline = time.monotonic() + 30
            while not equal_to_rest():
                assert time.monotonic() < deadline, (book.seq, rest.depth(SPOT).seq)
                await asyncio.sleep(0.1)
            assert stream.connects >= 2  # it reconnected after the kill
            assert len(placed) > 700, len(placed)
            assert book.seq > 500 and book.bids and book.asks
            assert book.bids[0][0] < book.asks[0][0]

    asyncio.run(scenario())


class _refusal_ok:
    """A random order may be refused (a cancel of a filled order, say); that is not a failure."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, tb: object) -> bool:
        return isinstance(exc, errors.DexError) and exc.status in (404, 409, 422)
