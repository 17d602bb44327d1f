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
from orderbookdex.models import Balance, Leverage, Order, Withdrawal
from support.exchange import ADMIN_TOKEN, Exchange
from support.redis_server import RedisServer, wait_for

pytestmark = pytest.mark.integration

SPOT, PERP = "BTC-USDC", "BTC-PERP"
PRICE, QTY = 3_000_000, 1_000
NOTIONAL = PRICE * QTY  # USDC atomic units (API.md §2: scales 2 + 4, USDC 6 decimals)
TAKER_FEE, MAKER_FEE = 1_500_000, 300_000
TWAP_INTERVAL_MS = 100  # a TWAP's slices 0.1 s apart (the contract's 30 s is a setting)


@pytest.fixture(scope="module")
def exchange(redis_server: RedisServer) -> Iterator[Exchange]:
    redis_server.flushall()
    env = {
        "DEX_RATE_LIMIT_USER": "0",
        "DEX_RATE_LIMIT_IP": "0",
        "DEX_MAX_OPEN_ORDERS": "5000",
        "DEX_TWAP_INTERVAL_MS": str(TWAP_INTERVAL_MS),
    }
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
    assert (withdrawal.status, withdrawal.amount, withdrawal.tx_hash) == ("PENDING", 10_000, None)
    assert buyer.withdrawals() == [
        Withdrawal(
            withdrawal.withdrawal_id, "", "BTC", 10_000, "PENDING", buyer.withdrawals()[0].ts
        )
    ]

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


def test_trigger_orders_leverage_twap_and_market_health(exchange: Exchange) -> None:
    """The newer endpoints through the SDK: a stop waits UNTRIGGERED holding exactly its
    reservation until cancelled; a chosen leverage changes the next order's reservation to the
    unit; a TWAP fills slice by slice and one placed over the WebSocket is cancelled; the
    operator's health read lists every market."""
    # A spot BUY STOP_LIMIT above the last price: notional + taker fee (5 bps) at its price.
    buyer = trader(exchange, usdc=40_000_000_000)
    stop_price = PRICE + 60_000
    stop = buyer.place_stop(SPOT, "BUY", QTY, PRICE + 50_000, stop_price, wait=True)
    assert isinstance(stop, Order)
    assert (stop.type, stop.status, stop.trigger_price, stop.trigger_source, stop.triggered) == (
        "STOP_LIMIT",
        "UNTRIGGERED",
        PRICE + 50_000,
        "LAST",
        False,
    )
    assert stop.is_open and buyer.order(stop.client_order_id) == stop
    reserved = stop_price * QTY + stop_price * QTY * 5 // 10_000
    assert buyer.balances()["USDC"].locked == reserved == 3_061_530_000
    cancelled = buyer.cancel(SPOT, stop.client_order_id)
    assert (cancelled.status, cancelled.reason, cancelled.triggered) == ("CXL", "USER", False)
    assert wait_for(lambda: buyer.balances()["USDC"].locked == 0, 10)

    # Leverage: the same PERP buy below the mark reserves 10 % + fee, then 20 % + fee.
    admin = Client(exchange.http, admin_token=ADMIN_TOKEN)
    admin.set_oracle(PERP, PRICE)
    bid = PRICE - 10_000
    notional = bid * QTY
    fee = notional * 5 // 10_000
    perp = trader(exchange, usdc=2_000_000_000)
    assert perp.leverage()[PERP] == Leverage(perp.address.lower(), PERP, 1000, "10", False)
    first = perp.place(PERP, "BUY", QTY, bid, wait=True)
    assert isinstance(first, Order) and first.status == "NEW"
    assert perp.balances()["USDC"].locked == notional // 10 + fee == 300_495_000
    chosen = perp.set_leverage(PERP, 2000)
    assert chosen == Leverage(perp.address.lower(), PERP, 2000, "5", True)
    assert perp.leverage()[PERP] == chosen
    perp.place(PERP, "BUY", QTY, bid, wait=True)
    assert perp.balances()["USDC"].locked == 300_495_000 + notional // 5 + fee == 899_990_000
    with pytest.raises(errors.InvalidRequest):
        perp.set_leverage(PERP, 500)  # below the market's 1000: refused, nothing changed
    with pytest.raises(errors.InvalidRequest):
        perp.set_leverage(SPOT, 2000)
    assert perp.leverage()[PERP] == chosen
    assert perp.cancel_all(PERP) == 2
    assert wait_for(lambda: perp.balances()["USDC"].locked == 0, 10)

    # Attached TP/SL: the parent fills, its reduce-only children wait; a position stop-loss.
    trader(exchange, usdc=2_000_000_000).place(PERP, "SELL", QTY, PRICE, wait=True)
    parent = perp.place(
        PERP, "BUY", QTY, PRICE, take_profit_price=PRICE + 100_000, stop_loss_price=PRICE - 100_000
    )
    assert isinstance(parent, dict)
    cid = parent["clientOrderId"]
    assert wait_for(lambda: perp.order(cid).status == "FILLED", 10)
    assert wait_for(lambda: len(perp.orders(open=True, market=PERP)) == 2, 10)
    tp, sl = perp.order(f"{cid}.tp"), perp.order(f"{cid}.sl")
    assert (tp.type, tp.side, tp.qty, tp.reduce_only, tp.status, tp.trigger_price) == (
        "TAKE_PROFIT_MARKET",
        "SELL",
        QTY,
        True,
        "UNTRIGGERED",
        PRICE + 100_000,
    )
    assert (sl.type, sl.trigger_price, sl.trigger_source) == (
        "STOP_MARKET",
        PRICE - 100_000,
        "MARK",
    )
    closing = perp.place_stop(PERP, "SELL", 0, PRICE - 200_000, close_position=True, wait=True)
    assert isinstance(closing, Order)
    assert (closing.qty, closing.reduce_only, closing.status) == (0, True, "UNTRIGGERED")
    assert perp.cancel_all(PERP) == 3

    # A TWAP of 10 slices against a resting maker: every slice fills at the maker's price.
    maker = trader(exchange, btc=500_000_000)
    maker.place(SPOT, "SELL", 10 * QTY, PRICE, wait=True)
    placed = buyer.place_twap(SPOT, "BUY", 10 * QTY, 5, slippage_bps=50)
    assert (placed.status, placed.slices_total, placed.qty, placed.sent) == (
        "ACTIVE",
        10,
        10 * QTY,
        0,
    )
    assert wait_for(lambda: buyer.twap(placed.client_order_id).status != "ACTIVE", 15)
    done = buyer.twap(placed.client_order_id)
    assert (done.status, done.sent, done.filled, done.slices_done, done.open) == (
        "FILLED",
        10 * QTY,
        10 * QTY,
        10,
        0,
    )
    assert buyer.twaps() == []
    spent = PRICE * 10 * QTY + PRICE * 10 * QTY * 5 // 10_000
    assert wait_for(
        lambda: (
            buyer.balances()["USDC"] == Balance(40_000_000_000 - spent, 40_000_000_000 - spent, 0)
        ),
        10,
    )
    assert buyer.balances()["BTC"] == Balance(10 * QTY * 10_000, 10 * QTY * 10_000, 0)
    with pytest.raises(errors.Duplicate):
        buyer.place_twap(SPOT, "BUY", 10 * QTY, 5, client_order_id=placed.client_order_id)

    # Over the WebSocket: a TWAP (60 min: 120 slices, the book now empty) and the leverage op.
    async def scenario() -> None:
        async with OrderEntry(buyer) as entry:
            answer = await entry.twap(SPOT, "BUY", 10 * QTY, 60, client_order_id="ws-twap")
            assert (answer["status"], answer["slicesTotal"]) == ("ACTIVE", 120)
            changed = await entry.set_leverage(PERP, 2500)
            assert (changed["initialMarginBps"], changed["leverage"]) == (2500, "4")

    asyncio.run(scenario())
    assert [t.client_order_id for t in buyer.twaps()] == ["ws-twap"]
    ended = buyer.cancel_twap(SPOT, "ws-twap")
    assert (ended.status, ended.reason, ended.next_slice_at) == ("CXL", "USER", None)
    assert buyer.twaps() == []

    health = admin.market_health()
    assert [h.market for h in health] == [m.symbol for m in admin.markets()]
    assert all(h.backlog >= 0 and h.settlement_lag_ms >= 0 for h in health)
    assert {h.market: h.status for h in health}[SPOT] == "OPEN"
    with pytest.raises(errors.Forbidden):
        Client(exchange.http, admin_token="wrong").market_health()


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
