"""The user topics inside the whole running exchange (all five processes): ``orders:`` follows
maker and taker through their fills and its snapshot equals REST open orders; ``pnl:``
follows the settler's account notices and the oracle's mark changes and always equals REST
positions and margin; ``ticker:`` follows trades and oracle runs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support.exchange import ADMIN_TOKEN, Exchange
from support.signing import Trader
from support.ws import Message, WsClient

pytestmark = pytest.mark.integration

PERP = "BTC-PERP"
PRICE = 3_000_000  # 30,000.00
QTY = 1_000  # 0.1 BTC
NEW_INDEX = 3_100_000  # 31,000.00: the long gains 0.1 × 1,000 = 100 USDC


@pytest.fixture
def exchange(redis_url: str) -> Iterator[Exchange]:
    with Exchange(redis_url) as running:
        running.start()
        yield running


async def rest(client: httpx.AsyncClient, path: str) -> Any:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    return response.json()


def test_orders_pnl_and_ticker_follow_a_perp_fill_and_a_mark_change(exchange: Exchange) -> None:
    maker, taker = Trader(), Trader()
    for trader in (maker, taker):
        exchange.deposit(trader.address, "USDC", 10_000_000_000)
    resting = maker.order(PERP, "BUY", PRICE - 100, QTY, product="PERP")
    sell = maker.order(PERP, "SELL", PRICE, QTY, product="PERP")
    buy = taker.order(PERP, "BUY", PRICE, QTY, product="PERP")
    orders_maker, orders_taker = f"orders:{maker.address}", f"orders:{taker.address.lower()}"
    pnl, ticker = f"pnl:{taker.address}", f"ticker:{PERP}"

    async def scenario() -> dict[str, Any]:
        async with (
            await WsClient.connect(exchange.ws) as ws,
            httpx.AsyncClient(base_url=exchange.http, timeout=30) as client,
        ):
            for body in (resting, sell):
                assert (await client.post("/v1/orders?wait=1", json=body)).status_code == 200
            snapshot = await ws.subscribe(orders_maker)
            open_orders = await rest(client, f"/v1/accounts/{maker.address}/orders?open=1")
            assert snapshot["data"] == open_orders and len(open_orders) == 2
            assert (await ws.subscribe(orders_taker))["data"] == []
            first_pnl = await ws.subscribe(pnl)
            assert first_pnl["data"]["positions"] == []
            first_ticker = await ws.subscribe(ticker)
            assert first_ticker["data"] == await rest(client, f"/v1/markets/{PERP}/ticker")

            assert (await client.post("/v1/orders", json=buy)).status_code == 202
            maker_fill = await ws.seen(
                lambda m: (
                    m.get("topic") == orders_maker
                    and m["type"] == "update"
                    and m["data"]["status"] == "FILLED"
                )
            )
            assert maker_fill["data"]["clientOrderId"] == sell["clientOrderId"]
            taker_fill = await ws.seen(
                lambda m: (
                    m.get("topic") == orders_taker
                    and m["type"] == "update"
                    and m["data"]["status"] == "FILLED"
                )
            )
            assert taker_fill["data"] == await rest(
                client, f"/v1/orders/{taker.address}/{buy['clientOrderId']}"
            )
            # The settler applies the fill and sends its notice: pnl shows the long.
            filled = await ws.seen(
                lambda m: (
                    m.get("topic") == pnl and any(p["size"] == QTY for p in m["data"]["positions"])
                ),
                60,
            )
            positions = await rest(client, f"/v1/accounts/{taker.address}/positions")
            margin = await rest(client, f"/v1/accounts/{taker.address}/margin")
            assert filled["data"] == {"positions": positions, "margin": margin}
            traded = await ws.seen(
                lambda m: m.get("topic") == ticker and m["data"]["last"] == PRICE
            )
            assert traded["data"]["volume24h"] == QTY

            # The index moves; the next oracle run publishes the ticker; pnl re-reads.
            response = await client.post(
                "/v1/admin/oracle",
                json={"market": PERP, "indexPrice": NEW_INDEX},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            assert response.status_code == 200, response.text
            marked = await ws.seen(
                lambda m: (
                    m.get("topic") == pnl
                    and any(p["markPrice"] == NEW_INDEX for p in m["data"]["positions"])
                ),
                60,
            )
            (position,) = marked["data"]["positions"]
            assert position["unrealizedPnl"] == str((NEW_INDEX - PRICE) * QTY)
            assert marked["data"] == {
                "positions": await rest(client, f"/v1/accounts/{taker.address}/positions"),
                "margin": await rest(client, f"/v1/accounts/{taker.address}/margin"),
            }
            await ws.seen(
                lambda m: m.get("topic") == ticker and m["data"]["markPrice"] == NEW_INDEX
            )
            await ws.drain(0.5)
            return {"inbox": ws.inbox}

    inbox: list[Message] = asyncio.run(scenario())["inbox"]
    for topic in (orders_maker, orders_taker, pnl, ticker):
        seqs = [m["seq"] for m in inbox if m.get("topic") == topic]
        assert seqs == list(range(1, len(seqs) + 1)), (topic, seqs)
    maker_updates = [m["data"] for m in inbox if m.get("topic") == orders_maker][1:]
    assert [o["status"] for o in maker_updates if o["clientOrderId"] == sell["clientOrderId"]][
        -1
    ] == "FILLED"
    assert not any(o["clientOrderId"] == resting["clientOrderId"] for o in maker_updates)
