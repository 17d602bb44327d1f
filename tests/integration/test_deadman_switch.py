"""The dead-man's switch (ScheduleCancel) behind the real gateway, matcher, settler and beat:
at its deadline every open order of the account (in its market, or in all) is cancelled with
the reason DEADMAN and its reservation released to the atomic unit; renewal postpones it,
deadline 0 turns it off, and it still fires after the gateway that should fire it is killed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from support.exchange import Exchange
from support.redis_server import wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader

from common import keys
from common.eip712 import sign
from common.lua import read_script
from services.gateway.transport import LUA_DIR

pytestmark = pytest.mark.integration

SPOT, PERP = "BTC-USDC", "BTC-PERP"
DEPOSIT = 10_000_000_000
FIRE_WITHIN_MS = 1_000


@pytest.fixture
def exchange(redis_url: str) -> Iterator[Exchange]:
    with Exchange(redis_url) as running:
        running.start("gateway", "matcher", "settler", "beat")
        yield running


def now_ms() -> int:
    return int(time.time() * 1000)


def schedule_body(trader: Trader, deadline: int, market: str = "", **over: Any) -> dict[str, Any]:
    message = {"userId": trader.address, "market": market, "deadline": deadline, "ts": now_ms()}
    message |= over
    return {
        **message,
        "sig": sign(trader.key, "ScheduleCancel", message, CHAIN_ID, VERIFYING_CONTRACT),
    }


def schedule(exchange: Exchange, trader: Trader, deadline: int, market: str = "") -> dict[str, Any]:
    with exchange.client() as client:
        response = client.post(
            "/v1/orders/schedule-cancel", json=schedule_body(trader, deadline, market)
        )
    assert response.status_code == 200, response.text
    return response.json()


def rest(exchange: Exchange, trader: Trader, market: str, cid: str) -> None:
    product = "SPOT" if market == SPOT else "PERP"
    price = 1_000 if market == SPOT else 3_000_000
    body = trader.order(market, "BUY", price, 10, cid=cid, product=product)
    with exchange.client() as client:
        response = client.post("/v1/orders?wait=1", json=body)
    assert response.status_code in (200, 202), response.text
    assert wait_for(lambda: order(exchange, trader, cid)["status"] == "NEW", 10)


def order(exchange: Exchange, trader: Trader, cid: str) -> dict[str, Any]:
    return dict(exchange.get(f"/v1/orders/{trader.address}/{cid}"))


def funded(exchange: Exchange) -> Trader:
    trader = Trader()
    exchange.deposit(trader.address, "USDC", DEPOSIT)
    return trader


def cancelled_by_switch(exchange: Exchange, trader: Trader, cid: str) -> bool:
    current = order(exchange, trader, cid)
    return (current["status"], current.get("reason")) == ("CXL", "DEADMAN")


def test_switch_cancels_every_open_order_within_a_second_and_releases_every_unit(
    exchange: Exchange,
) -> None:
    trader = funded(exchange)
    rest(exchange, trader, SPOT, "s1")
    rest(exchange, trader, SPOT, "s2")
    rest(exchange, trader, PERP, "p1")
    assert exchange.balance(trader.address, "USDC")[1] > 0
    deadline = now_ms() + 1_500
    assert schedule(exchange, trader, deadline) == {
        "userId": trader.address.lower(),
        "market": "",
        "deadline": deadline,
    }
    listed = exchange.get(f"/v1/orders/schedule-cancel/{trader.address}")
    assert listed == [{"userId": trader.address.lower(), "market": "", "deadline": deadline}]
    assert order(exchange, trader, "s1")["status"] == "NEW"
    assert wait_for(
        lambda: all(cancelled_by_switch(exchange, trader, c) for c in ("s1", "s2", "p1")), 5
    )
    assert now_ms() - deadline < FIRE_WITHIN_MS
    assert wait_for(lambda: exchange.balance(trader.address, "USDC") == (DEPOSIT, 0), 30)
    assert exchange.get(f"/v1/orders/schedule-cancel/{trader.address}") == []


def test_renewal_postpones_and_zero_turns_the_switch_off(exchange: Exchange) -> None:
    trader = funded(exchange)
    rest(exchange, trader, SPOT, "r1")
    first = now_ms() + 1_000
    schedule(exchange, trader, first)
    schedule(exchange, trader, first + 2_000)
    time.sleep((first + 500 - now_ms()) / 1000)
    assert order(exchange, trader, "r1")["status"] == "NEW"
    schedule(exchange, trader, 0)
    assert exchange.get(f"/v1/orders/schedule-cancel/{trader.address}") == []
    time.sleep((first + 3_000 - now_ms()) / 1000)
    assert order(exchange, trader, "r1")["status"] == "NEW"


def test_a_market_switch_leaves_other_markets_alone(exchange: Exchange) -> None:
    trader = funded(exchange)
    rest(exchange, trader, SPOT, "m1")
    rest(exchange, trader, PERP, "m2")
    schedule(exchange, trader, now_ms() + 800, market=SPOT)
    assert wait_for(lambda: cancelled_by_switch(exchange, trader, "m1"), 5)
    time.sleep(1.0)
    assert order(exchange, trader, "m2")["status"] == "NEW"


def test_switch_fires_after_the_gateway_that_should_fire_it_is_killed(exchange: Exchange) -> None:
    trader = funded(exchange)
    rest(exchange, trader, SPOT, "k1")
    deadline = now_ms() + 1_500
    schedule(exchange, trader, deadline)
    exchange.kill("gateway")
    time.sleep(max(0.0, (deadline - now_ms()) / 1000) + 0.5)
    exchange.start("gateway")
    exchange.wait_ready("gateway")
    assert wait_for(lambda: cancelled_by_switch(exchange, trader, "k1"), 5)
    assert wait_for(lambda: exchange.balance(trader.address, "USDC") == (DEPOSIT, 0), 30)


def test_forged_replayed_foreign_and_malformed_switches_are_refused(exchange: Exchange) -> None:
    victim, attacker = funded(exchange), Trader()
    rest(exchange, victim, SPOT, "v1")
    ahead = now_ms() + 60_000
    forged = schedule_body(attacker, ahead, userId=victim.address)
    genuine = schedule_body(victim, ahead)
    cases = [
        (forged, 401, "INVALID_SIGNATURE"),
        ({**genuine, "deadline": now_ms() + 1_000}, 401, "INVALID_SIGNATURE"),
        (schedule_body(victim, now_ms() - 1_000), 400, "INVALID_REQUEST"),
        (schedule_body(victim, now_ms() + 25 * 3600 * 1000), 400, "INVALID_REQUEST"),
        (schedule_body(victim, 2**255), 400, "INVALID_REQUEST"),
        ({**genuine, "deadline": "soon"}, 400, "INVALID_REQUEST"),
        ({**genuine, "deadline": -1}, 400, "INVALID_REQUEST"),
        (schedule_body(victim, ahead, market="NOPE-USDC"), 400, "UNKNOWN_MARKET"),
    ]
    with exchange.client() as client:
        for body, status, code in cases:
            response = client.post("/v1/orders/schedule-cancel", json=body)
            assert (response.status_code, response.json()["error"]["code"]) == (status, code), body
        assert client.post("/v1/orders/schedule-cancel", json=genuine).status_code == 200
        replay = client.post("/v1/orders/schedule-cancel", json=genuine)
        assert (replay.status_code, replay.json()["error"]["code"]) == (409, "DUPLICATE")
    # the forged, foreign arming never took hold: only the victim's own switch is listed
    assert exchange.get(f"/v1/orders/schedule-cancel/{victim.address}") == [
        {"userId": victim.address.lower(), "market": "", "deadline": ahead}
    ]
    assert exchange.get(f"/v1/orders/schedule-cancel/{attacker.address}") == []


def test_a_fired_switch_is_removed_only_if_no_renewal_came_in_between(redis_url: str) -> None:
    """The firer's second step: a renewal that landed after the cancel_all was sent keeps the
    switch; a firer that died before this step leaves it armed, so the next round fires again."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    clear = client.register_script(read_script(str(LUA_DIR), "deadman_clear"))
    switches, member = keys.deadman_switches(), keys.deadman_member("0xabc", "")
    client.zadd(switches, {member: 2_000})
    assert clear(keys=[switches], args=[member, 1_000]) == 0  # renewed from 1000 to 2000
    assert client.zscore(switches, member) == 2_000
    assert clear(keys=[switches], args=[member, 2_000]) == 1
    assert clear(keys=[switches], args=[member, 2_000]) == 0  # a second firer: nothing to do
    assert client.zcard(switches) == 0


def test_switch_due_while_the_matcher_is_killed_fires_and_cancels_when_it_returns(
    exchange: Exchange,
) -> None:
    """The firer sends its cancel_all to the market stream whether or not a matcher reads it:
    the switch is gone at its deadline, the command waits, and the restarted matcher applies
    it (reservations released to the unit)."""
    trader = funded(exchange)
    rest(exchange, trader, SPOT, "mk1")
    rest(exchange, trader, SPOT, "mk2")
    deadline = now_ms() + 1_000
    schedule(exchange, trader, deadline, market=SPOT)
    exchange.kill("matcher")
    assert wait_for(lambda: exchange.get(f"/v1/orders/schedule-cancel/{trader.address}") == [], 5)
    assert now_ms() - deadline < FIRE_WITHIN_MS + 500
    client = redis.Redis.from_url(exchange.redis_url, decode_responses=True)
    waiting = [
        fields["c"]
        for _, fields in client.xrange(keys.market_in(SPOT))
        if '"op":"cancel_all"' in fields["c"] and trader.address.lower() in fields["c"]
    ]
    client.close()
    assert len(waiting) == 1 and '"reason":"DEADMAN"' in waiting[0]
    assert order(exchange, trader, "mk1")["status"] == "NEW"  # nobody matched it yet
    exchange.start("matcher")
    assert wait_for(
        lambda: all(cancelled_by_switch(exchange, trader, c) for c in ("mk1", "mk2")), 15
    )
    assert wait_for(lambda: exchange.balance(trader.address, "USDC") == (DEPOSIT, 0), 30)


def test_switch_due_while_the_settler_is_killed_is_released_to_the_unit_after_it_restarts(
    exchange: Exchange,
) -> None:
    trader = funded(exchange)
    rest(exchange, trader, SPOT, "st1")
    rest(exchange, trader, PERP, "st2")
    assert wait_for(lambda: exchange.balance(trader.address, "USDC")[1] > 0, 10)
    exchange.kill("settler")
    locked = exchange.balance(trader.address, "USDC")
    schedule(exchange, trader, now_ms() + 800)
    assert wait_for(
        lambda: all(cancelled_by_switch(exchange, trader, c) for c in ("st1", "st2")), 5
    )
    time.sleep(0.5)
    assert exchange.balance(trader.address, "USDC") == locked  # no settler: still locked
    exchange.start("settler")
    assert wait_for(lambda: exchange.balance(trader.address, "USDC") == (DEPOSIT, 0), 30)


def test_switch_fires_from_another_gateway_when_the_one_it_was_armed_on_is_killed(
    exchange: Exchange,
) -> None:
    trader = funded(exchange)
    rest(exchange, trader, SPOT, "g1")
    with Exchange(exchange.redis_url) as other:
        other.start("gateway")
        deadline = now_ms() + 1_200
        schedule(exchange, trader, deadline)
        exchange.kill("gateway")
        assert wait_for(lambda: cancelled_by_switch(other, trader, "g1"), 5)
        assert now_ms() - deadline < FIRE_WITHIN_MS + 500
        assert wait_for(lambda: other.balance(trader.address, "USDC") == (DEPOSIT, 0), 30)
        assert other.get(f"/v1/orders/schedule-cancel/{trader.address}") == []
