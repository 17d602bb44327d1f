"""The outbox: a gateway SIGKILLed after reserving but before the XADD loses nothing.

The outbox is the admission path on a cluster (the account and the market stream live in
different slots); ``DEX_ORDER_OUTBOX=1`` selects it on a single Redis, which these tests use.
The market stream's key is made unusable (a string, so XADD fails) while the first gateway
admits an order; that gateway is then killed with SIGKILL. A fresh gateway's sweeper must
deliver the order to the real matcher exactly once, with its reservation locked once.

On a single Redis by default the account script puts the command on the stream itself, first:
a stream that refuses it leaves nothing applied (the last test).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis
from support.exchange import Exchange
from support.redis_server import wait_for
from support.signing import Trader

from common import keys

pytestmark = pytest.mark.integration

SPOT = "BTC-USDC"


def funded_order_facing_a_broken_stream(
    exchange: Exchange, r: redis.Redis
) -> tuple[str, dict[str, Any]]:
    """Start the gateway, fund a new trader with USDC and put a string where the market's
    stream should be, so that an XADD to it fails; the trader's address and a signed buy."""
    trader = Trader()
    user = trader.address.lower()
    exchange.start("gateway")
    exchange.deposit(user, "USDC", 10_000_000_000)
    r.set(keys.market_in(SPOT), "not a stream")
    return user, trader.order(SPOT, "BUY", 3_000_000, 1_000)


def test_order_stranded_by_a_killed_gateway_is_delivered_once_by_the_sweeper(
    redis_url: str, r: redis.Redis
) -> None:
    with Exchange(redis_url, DEX_ORDER_OUTBOX="1") as exchange:
        user, body = funded_order_facing_a_broken_stream(exchange, r)
        with exchange.client() as client:
            response = client.post("/v1/orders", json=body)
        assert response.status_code == 202, response.text
        assert r.zrange(keys.outbox(user), 0, -1) == [body["clientOrderId"]]
        exchange.kill("gateway")

        r.delete(keys.market_in(SPOT))
        exchange.start("matcher", "gateway")
        order_key = keys.market_order(SPOT, user, body["clientOrderId"])
        assert wait_for(lambda: r.hget(order_key, "status") == "NEW", 60), exchange.log("gateway")[
            -3000:
        ]
        assert wait_for(lambda: r.zcard(keys.outbox(user)) == 0, 30)
        commands = [orjson.loads(f["c"]) for _, f in r.xrange(keys.market_in(SPOT))]
        assert [c["cid"] for c in commands] == [body["clientOrderId"]]
        # the sweeper's entry may be a second copy: unmarked, the matcher looks the order up
        assert [f.get("o") for _, f in r.xrange(keys.market_in(SPOT))] == [None]
        assert commands[0]["reserved"] == 3_001_500_000
        with exchange.client() as client:
            balances = client.get(f"/v1/accounts/{user}/balances").json()
            order = client.get(f"/v1/orders/{user}/{body['clientOrderId']}").json()
        assert balances == {
            "USDC": {"total": "10000000000", "available": "6998500000", "locked": "3001500000"}
        }
        assert order["status"] == "NEW"
        assert r.hget(keys.market_state(SPOT), "seq") == "1"


def test_sweeper_leaves_fresh_entries_alone_and_forgets_idle_accounts(
    redis_url: str, r: redis.Redis
) -> None:
    import asyncio

    from common.settings import DexSettings
    from services.gateway import outbox
    from services.gateway.context import Gateway

    gateway = Gateway.build(DexSettings(redis_url=redis_url))

    async def scenario() -> tuple[int, int]:
        try:
            r.sadd(keys.outbox_accounts(), "0xidle", "0xbusy")
            r.hset(keys.account_order("0xbusy", "c1"), mapping={"market": SPOT, "cmd": "{}"})
            r.zadd(keys.outbox("0xbusy"), {"c1": 10**13})  # accepted "in the future": fresh
            record = orjson.dumps({"withdrawalId": "w-1", "ts": 5}).decode()
            r.hset(keys.withdrawals_pending("0xbusy"), "w-1", record)
            fresh = await outbox.sweep_once(gateway)
            r.zadd(keys.outbox("0xbusy"), {"c1": 1})
            stale = await outbox.sweep_once(gateway)
            return fresh, stale
        finally:
            await gateway.close()

    fresh, stale = asyncio.run(scenario())
    assert (fresh, stale) == (1, 1)  # the old withdrawal first, then the order once stale
    assert r.xlen(keys.market_in(SPOT)) == 1
    ((_, fields),) = r.xrange(keys.withdrawal_requests())
    assert orjson.loads(fields["w"])["withdrawalId"] == "w-1"
    assert r.hlen(keys.withdrawals_pending("0xbusy")) == 0 and r.zcard(keys.outbox("0xbusy")) == 0
    assert (
        r.smembers(keys.outbox_accounts()) == {"0xbusy"}
        or r.smembers(keys.outbox_accounts()) == set()
    )
    assert "0xidle" not in r.smembers(keys.outbox_accounts())


async def _sweep(redis_url: str) -> None:
    from common.settings import DexSettings
    from services.gateway import outbox
    from services.gateway.context import Gateway

    gateway = Gateway.build(DexSettings(redis_url=redis_url))
    try:
        await outbox.sweep_once(gateway)
    finally:
        await gateway.close()


def test_direct_admission_refused_by_the_stream_applies_nothing(
    redis_url: str, r: redis.Redis
) -> None:
    with Exchange(redis_url) as exchange:
        user, body = funded_order_facing_a_broken_stream(exchange, r)
        with exchange.client() as client:
            refused = client.post("/v1/orders", json=body)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "UNAVAILABLE"
            assert client.get(f"/v1/orders/{user}/{body['clientOrderId']}").status_code == 404
            r.delete(keys.market_in(SPOT))
            balances = client.get(f"/v1/accounts/{user}/balances").json()
            assert balances == {
                "USDC": {"total": "10000000000", "available": "10000000000", "locked": "0"}
            }
            assert r.hlen(keys.account_cids(user)) == 0 and r.hlen(keys.reservations(user)) == 0
            assert r.zcard(keys.outbox(user)) == 0
            accepted = client.post("/v1/orders", json=body)  # the same order, once the stream works
            assert accepted.status_code == 202, accepted.text
        ((_, fields),) = r.xrange(keys.market_in(SPOT))
        assert orjson.loads(fields["c"])["reserved"] == 3_001_500_000
        assert r.zcard(keys.outbox(user)) == 0
