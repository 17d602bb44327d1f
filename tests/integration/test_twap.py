"""TWAP orders behind the real gateway, matcher and settler on a real redis-server, with a
short slice interval (DEX_TWAP_INTERVAL_MS): slices to the unit against a resting maker,
randomized slices within their bounds, the slippage bound, a book with no opposite side,
cancel mid-way, every process SIGKILLed between slices and restarted, two gateways firing the
same TWAPs, and refused bodies that leave nothing behind. The auditor's invariants hold after
every test."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from support.exchange import ADMIN_TOKEN, Exchange
from support.gateway import gateway_client
from support.redis_server import RedisServer, wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader
from support.ws import WsClient

from common import keys, money, pubsub
from common.eip712 import sign
from common.events import TwapPublication
from common.events.schema import validate
from common.lua import read_script
from common.markets import load_markets
from common.settings import DEFAULT_MARKETS_FILE
from common.types import Side
from services.gateway import twap
from services.gateway.transport import LUA_DIR

pytestmark = pytest.mark.integration

INTERVAL_MS = 80
SPOT, ETH = "BTC-USDC", "ETH-USDC"
P = 3_000_000
USDC = 10_000_000_000
BTC = 100_000_000
ETH_WEI = 10**18
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MARKETS = load_markets(Path(DEFAULT_MARKETS_FILE))
BTC_USDC = MARKETS.markets[SPOT]


@pytest.fixture(scope="module")
def exchange(redis_server: RedisServer) -> Iterator[Exchange]:
    """One exchange for the module, with a second gateway firing the same TWAPs (so every TWAP
    here meets two firers); each test has its own traders and leaves no order resting."""
    redis_server.flushall()
    env = {"DEX_TWAP_INTERVAL_MS": str(INTERVAL_MS)}
    with Exchange(redis_server.url, **env) as running, Exchange(redis_server.url, **env) as second:
        running.start("gateway", "matcher", "settler", "beat")
        second.start("gateway")
        running.second = second  # type: ignore[attr-defined]
        yield running


@pytest.fixture
def audited(exchange: Exchange) -> Iterator[Exchange]:
    yield exchange
    with exchange.client() as client:
        assert wait_for(lambda: audit(client)["ok"] is True, 10), audit(client)["invariants"]


def audit(client: httpx.Client) -> dict[str, Any]:
    return dict(client.get("/v1/admin/audit", headers=ADMIN).json())


def now_ms() -> int:
    return int(time.time() * 1000)


def twap_body(trader: Trader, cid: str, **over: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "userId": trader.address,
        "market": SPOT,
        "clientOrderId": cid,
        "side": "BUY",
        "qty": 1000,
        "durationMinutes": 5,
        "randomize": False,
        "slippageBps": 50,
        "reduceOnly": False,
        "ts": now_ms(),
    }
    message |= over
    return {**message, "sig": sign(trader.key, "Twap", message, CHAIN_ID, VERIFYING_CONTRACT)}


def signed(trader: Trader, primary: str, **message: Any) -> dict[str, Any]:
    message = {"userId": trader.address, **message, "ts": now_ms()}
    return {**message, "sig": sign(trader.key, primary, message, CHAIN_ID, VERIFYING_CONTRACT)}


def start_twap(exchange: Exchange, trader: Trader, cid: str, **over: Any) -> dict[str, Any]:
    with exchange.client() as client:
        response = client.post("/v1/orders/twap", json=twap_body(trader, cid, **over))
    assert response.status_code == 200, response.text
    return dict(response.json())


def read_twap(exchange: Exchange, trader: Trader, cid: str) -> dict[str, Any]:
    return dict(exchange.get(f"/v1/twaps/{trader.address}/{cid}"))


def ended(exchange: Exchange, trader: Trader, cid: str, timeout: float = 15) -> dict[str, Any]:
    assert wait_for(lambda: read_twap(exchange, trader, cid)["status"] != "ACTIVE", timeout)
    return read_twap(exchange, trader, cid)


def order(exchange: Exchange, trader: Trader, cid: str) -> dict[str, Any] | None:
    return slices(exchange, trader, cid, 0)[0]


def slices(exchange: Exchange, trader: Trader, cid: str, n: int) -> list[dict[str, Any] | None]:
    """Slice k's order (None: never placed) for k < n; with n = 0 the order ``cid`` itself."""
    found = []
    with exchange.client() as client:
        for name in [f"{cid}.{k}" for k in range(n)] if n else [cid]:
            response = client.get(f"/v1/orders/{trader.address}/{name}")
            found.append(None if response.status_code == 404 else dict(response.json()))
    return found


def funded(exchange: Exchange, usdc: int = USDC, btc: int = 0, eth: int = 0) -> Trader:
    trader = Trader()
    exchange.deposit(trader.address, "USDC", usdc)
    for asset, amount in (("BTC", btc), ("ETH", eth)):
        if amount:
            exchange.deposit(trader.address, asset, amount)
    return trader


@pytest.fixture
def maker(audited: Exchange) -> Iterator[Callable[[int, int], Trader]]:
    """Rest SELL qty at price for a fresh maker; every maker's rest is cancelled at the end."""
    made: list[Trader] = []

    def rest(qty: int, price: int = P) -> Trader:
        trader = funded(audited, btc=BTC)
        made.append(trader)
        body = trader.order(SPOT, "SELL", price, qty, timeInForce="GTC")
        with audited.client() as client:
            response = client.post("/v1/orders?wait=1", json=body)
        assert response.status_code == 200 and response.json()["status"] == "NEW", response.text
        return trader

    yield rest
    with audited.client() as client:
        for trader in made:
            response = client.post("/v1/orders/cancel-all", json=signed(trader, "CancelAll",
                                                                       market=""))  # fmt: skip
            assert response.status_code == 200, response.text
    for trader in made:
        assert wait_for(lambda t=trader: audited.balance(t.address, "BTC")[1] == 0, 10)


def taker_balances(fills: list[tuple[int, int]]) -> tuple[int, int]:
    """(USDC total, BTC total) of a taker funded with USDC only after ``fills`` (price, qty)."""
    spent = 0
    for price, qty in fills:
        value = money.notional(BTC_USDC, price, qty)
        spent += value + money.fee(value, BTC_USDC.spec.takerFeeBps)
    bought = sum(money.base_units(BTC_USDC, qty) for _, qty in fills)
    return USDC - spent, bought


def test_even_and_randomized_slices_fill_to_the_unit(
    audited: Exchange, maker: Callable[..., Trader]
) -> None:
    maker(5_000)
    taker, rand = funded(audited), funded(audited)
    first = start_twap(audited, taker, "tw-even")
    start_twap(audited, rand, "tw-rand", qty=997, randomize=True)
    assert first["status"] == "ACTIVE" and first["slicesTotal"] == 10 and first["qty"] == 1000
    done = ended(audited, taker, "tw-even")
    assert done | {"updatedTs": 0} == {
        **first, "sent": 1000, "filled": 1000, "slicesDone": 10, "slicesSkipped": 0,
        "status": "FILLED", "nextSliceAt": None, "updatedTs": 0,
    }  # fmt: skip
    limit = twap.slice_price(Side.BUY, P, 50, 1)
    assert limit == P * 10_050 // 10_000
    for child in slices(audited, taker, "tw-even", 10):
        assert child is not None
        assert (child["qty"], child["filled"], child["price"]) == (100, 100, limit)
        assert (child["timeInForce"], child["status"]) == ("IOC", "FILLED")
    assert order(audited, taker, "tw-even.10") is None
    expected = taker_balances([(P, 100)] * 10)
    assert wait_for(lambda: audited.balance(taker.address, "USDC") == (expected[0], 0), 10)
    assert audited.balance(taker.address, "BTC") == (expected[1], 0)
    assert audited.get(f"/v1/twaps/{taker.address}") == []
    # a slice takes its own clientOrderId and nothing else: no id "k" beside it, and once every
    # slice is settled nothing is left counted open (each stray id was an open order for ever)
    with redis.Redis.from_url(audited.redis_url, decode_responses=True) as r:
        user = taker.address.lower()
        assert not {str(k) for k in range(10)} & set(r.hkeys(keys.account_cids(user)))
        assert wait_for(lambda: r.zcard(keys.account_open_orders(user, "BTC-USDC")) == 0, 10)
    # randomized: each slice 80..120 % of its even share, drawn from (parent, k); sum = qty
    done = ended(audited, rand, "tw-rand")
    assert (done["status"], done["filled"], done["sent"]) == ("FILLED", 997, 997)
    sizes = [c["qty"] for c in slices(audited, rand, "tw-rand", 10) if c is not None]
    assert sum(sizes) == 997 and len(sizes) == 10
    remaining, user = 997, rand.address.lower()
    for k, size in enumerate(sizes):
        share = remaining // (10 - k)
        if k < 9:
            assert share * 80 // 100 <= size <= share * 120 // 100
            assert size == twap.slice_qty(remaining, k, 10, 1, 1, twap.draw_pct(user, "tw-rand", k))
        remaining -= size
    assert len(set(sizes[:-1])) > 1  # not all the even share
    expected = taker_balances([(P, size) for size in sizes])
    assert wait_for(lambda: audited.balance(rand.address, "USDC") == (expected[0], 0), 10)
    assert audited.balance(rand.address, "BTC") == (expected[1], 0)


def test_a_slice_never_trades_past_its_slippage_bound(
    audited: Exchange, maker: Callable[..., Trader]
) -> None:
    maker(50, P)
    far = P + P * 2 // 100  # 2 % above: beyond a 1 % bound from P
    maker(5_000, far)
    taker = funded(audited)
    start_twap(audited, taker, "tw-slip", slippageBps=100, qty=200)
    done = ended(audited, taker, "tw-slip")
    children = slices(audited, taker, "tw-slip", 10)
    assert all(c is not None and c["qty"] == 20 for c in children)
    # slices 0-2 met the 50 at P; slice 2 filled 10 there and stopped short of the 2 % level,
    # past its bound P x 1.01 (its IOC rest expired); later slices priced off that level
    assert [(c["price"], c["filled"]) for c in children[:3]] == [(P * 10_100 // 10_000, 20)] * 2 + [
        (P * 10_100 // 10_000, 10)
    ]
    assert all(c["price"] == far * 10_100 // 10_000 for c in children[3:])
    assert (done["status"], done["sent"], done["filled"]) == ("EXP", 200, 190)
    expected = taker_balances([(P, 20), (P, 20), (P, 10)] + [(far, 20)] * 7)
    assert wait_for(lambda: audited.balance(taker.address, "USDC") == (expected[0], 0), 15)
    assert audited.balance(taker.address, "BTC") == (expected[1], 0)
    fills = audited.get(f"/v1/accounts/{taker.address}/fills?limit=100")
    limits = {c["clientOrderId"]: c["price"] for c in children if c is not None}
    assert all(fill["price"] <= limits[fill["clientOrderId"]] for fill in fills)
    assert sum(f["qty"] for f in fills if f["price"] == P) == 50


def test_a_slice_the_account_cannot_afford_is_skipped_and_the_twap_goes_on(
    audited: Exchange, maker: Callable[..., Trader]
) -> None:
    maker(5_000)
    poor = funded(audited, usdc=money.notional(BTC_USDC, P * 2, 150))  # about 3 slices' worth
    start_twap(audited, poor, "tw-poor", qty=1000)
    done = ended(audited, poor, "tw-poor")
    assert done["status"] == "EXP" and done["lastSkip"] == "INSUFFICIENT_BALANCE"
    assert done["slicesDone"] == 10 and 0 < done["slicesSkipped"] < 10
    placed = [c for c in slices(audited, poor, "tw-poor", 10) if c is not None]
    assert done["filled"] == sum(c["filled"] for c in placed) == done["sent"]
    assert wait_for(lambda: audited.balance(poor.address, "USDC")[1] == 0, 10)


def test_cancel_ends_the_twap_and_no_slice_follows(
    audited: Exchange, maker: Callable[..., Trader]
) -> None:
    maker(5_000)
    taker = funded(audited)
    start_twap(audited, taker, "tw-cxl", durationMinutes=60)
    assert wait_for(lambda: read_twap(audited, taker, "tw-cxl")["slicesDone"] >= 3, 10)
    cancel = signed(taker, "Cancel", market=SPOT, clientOrderId="tw-cxl")
    with audited.client() as client:
        response = client.post("/v1/orders/cancel", json=cancel)
        assert response.status_code == 200, response.text
        assert (response.json()["status"], response.json()["reason"]) == ("CXL", "USER")
        replay = client.post("/v1/orders/cancel", json=cancel)
        assert (replay.status_code, replay.json()["error"]["code"]) == (409, "DUPLICATE")
        again = client.post(
            "/v1/orders/cancel", json=signed(taker, "Cancel", market=SPOT, clientOrderId="tw-cxl")
        )
        assert (again.status_code, again.json()["error"]["code"]) == (409, "ORDER_CLOSED")
    done = response.json()["slicesDone"]
    time.sleep(4 * INTERVAL_MS / 1000)
    after = read_twap(audited, taker, "tw-cxl")
    assert (after["status"], after["slicesDone"]) == ("CXL", done)
    assert order(audited, taker, f"tw-cxl.{done}") is None
    placed = slices(audited, taker, "tw-cxl", done)
    assert after["filled"] == after["sent"] == sum(c["qty"] for c in placed if c is not None)
    assert audited.get(f"/v1/twaps/{taker.address}") == []


def test_cancel_all_and_the_bound_on_active_twaps(audited: Exchange) -> None:
    seller = funded(audited, eth=ETH_WEI)
    for i in range(twap.MAX_ACTIVE):
        start_twap(audited, seller, f"tw-many-{i}", market=ETH, side="SELL", durationMinutes=1440)
    with audited.client() as client:
        one_more = client.post(
            "/v1/orders/twap",
            json=twap_body(seller, "tw-many-x", market=ETH, side="SELL", durationMinutes=1440),
        )
        assert (one_more.status_code, one_more.json()["error"]["code"]) == (422, "TOO_MANY_ORDERS")
        assert len(audited.get(f"/v1/twaps/{seller.address}")) == twap.MAX_ACTIVE
        response = client.post(
            "/v1/orders/cancel-all", json=signed(seller, "CancelAll", market=ETH)
        )
        assert response.status_code == 200, response.text
    assert audited.get(f"/v1/twaps/{seller.address}") == []
    assert read_twap(audited, seller, "tw-many-0")["status"] == "CXL"
    assert order(audited, seller, "tw-many-x") is None


def test_forged_replayed_and_malformed_twaps_leave_nothing_and_no_book_skips_every_slice(
    audited: Exchange, redis_server: RedisServer
) -> None:
    victim, attacker = funded(audited), Trader()
    genuine = twap_body(victim, "tw-ok")
    cases = [
        (twap_body(attacker, "tw-f", userId=victim.address), 401, "INVALID_SIGNATURE"),
        ({**genuine, "qty": 2000}, 401, "INVALID_SIGNATURE"),
        (twap_body(victim, "tw-a", durationMinutes=4), 400, "INVALID_ORDER"),
        (twap_body(victim, "tw-b", durationMinutes=25 * 60), 400, "INVALID_ORDER"),
        (twap_body(victim, "tw-c", qty=0), 400, "INVALID_QTY"),
        (twap_body(victim, "tw-d", slippageBps=0), 400, "INVALID_ORDER"),
        (twap_body(victim, "tw-e", slippageBps=5001), 400, "INVALID_ORDER"),
        (twap_body(victim, "tw-g", side="HOLD"), 400, "INVALID_ORDER"),
        (twap_body(victim, "x" * 60), 400, "INVALID_ORDER"),
        (twap_body(victim, "tw-h", market="NOPE-USDC"), 400, "UNKNOWN_MARKET"),
        (twap_body(victim, "tw-i", ts=now_ms() - 3_600_000), 400, "STALE_TS"),
        # an account that could not pay for the first slice now places no TWAP
        (twap_body(attacker, "tw-j"), 422, "INSUFFICIENT_BALANCE"),
        (twap_body(victim, "tw-k", side="SELL"), 422, "INSUFFICIENT_BALANCE"),  # holds no BTC
        ({**genuine, "durationMinutes": 1.5}, 400, "INVALID_REQUEST"),
        ({**genuine, "randomize": "yes"}, 400, "INVALID_REQUEST"),
        ({**genuine, "extra": 1}, 400, "INVALID_REQUEST"),
    ]
    with audited.client() as client:
        for body, status, code in cases:
            response = client.post("/v1/orders/twap", json=body)
            assert (response.status_code, response.json()["error"]["code"]) == (status, code), body
        assert client.post("/v1/orders/twap", json=genuine).status_code == 200
        replay = client.post("/v1/orders/twap", json=genuine)
        assert (replay.status_code, replay.json()["error"]["code"]) == (409, "DUPLICATE")
        assert client.get(f"/v1/twaps/{victim.address}/tw-f").status_code == 404
    store = redis.Redis.from_url(redis_server.url, decode_responses=True)
    user = victim.address.lower()
    assert list(store.hgetall(keys.account_cids(user))) == ["tw-ok"]
    assert store.keys(f"dex:{{{user}}}:twap:*") == [f"dex:{{{user}}}:twap:tw-ok"]
    assert store.hlen(keys.account_cids(attacker.address.lower())) == 0
    # the one TWAP kept meets no ask: every slice skipped, nothing sent, nothing spent
    done = ended(audited, victim, "tw-ok")
    assert (done["status"], done["sent"], done["filled"]) == ("EXP", 0, 0)
    assert (done["slicesDone"], done["slicesSkipped"], done["lastSkip"]) == (10, 10, "NO_BOOK")
    assert slices(audited, victim, "tw-ok", 10) == [None] * 10
    assert audited.balance(victim.address, "USDC") == (USDC, 0)


def test_a_slice_is_sent_once_however_often_its_step_is_run(redis_server: RedisServer) -> None:
    """accept_slice.lua's own guard: slice k twice (a second firer, or one restarted after it
    sent k but before it moved the due zset) is STALE the second time and changes nothing; a
    slice of a cancelled parent is ENDED. Each step that moved the TWAP published one message,
    the end's last; ending it again publishes nothing."""
    store = redis.Redis.from_url(redis_server.url, decode_responses=True)
    accept = store.register_script(read_script(str(LUA_DIR), "accept_slice"))
    end = store.register_script(read_script(str(LUA_DIR), "twap_end"))
    user, cid = "0x" + "ab" * 20, "tw-guard"
    channel = keys.channel(keys.orders_topic(user))
    listener = store.pubsub()
    listener.subscribe(channel)
    parent = keys.twap_parent(user, cid)
    store.hset(parent, mapping=PARENT | {"k": 0, "n": 2})
    account = [*twap.slice_keys(user, f"{cid}.0", SPOT), parent, keys.account_agents(user)]
    tail = [user, cid, channel, 0, 0, "", SPOT]
    args = [*[""] * 18, 0, 100, "NO_BOOK", 1, *tail]
    skipped = accept(keys=account, args=args)
    assert skipped[:2] == ["SKIPPED", "NO_BOOK"]
    assert accept(keys=account, args=args) == ["STALE", "1"]
    assert store.hmget(parent, "k", "skipped") == ["1", "1"]
    twaps = keys.account_twaps(user)
    end_args = [cid, "CXL", "CXL", "USER", 2, user, channel, 0, 0]
    assert end(keys=[parent, twaps], args=[cid, "FINISH", "EXP", "", *end_args[4:]]) == [
        "NOT_DONE",
        "1",
    ]
    ending = end(keys=[parent, twaps], args=end_args)
    assert ending[:2] == ["OK", "1"]
    assert end(keys=[parent, twaps], args=end_args) == ["CLOSED", "CXL"]
    assert accept(keys=account, args=[*args[:18], 1, 100, "NO_BOOK", 3, *tail]) == [
        "ENDED",
        "CXL",
    ]
    assert store.hget(parent, "k") == "1"
    published = published_messages(listener, 2)
    assert published == [skipped[2], ending[2]]
    first, last = (validate(TwapPublication, m)["data"] for m in published)
    assert (first["slicesDone"], first["lastSkip"], first["status"], first["nextSliceAt"]) == (
        1, "NO_BOOK", "ACTIVE", PARENT["start"] + PARENT["interval"],
    )  # fmt: skip
    assert (last["status"], last["reason"], last["nextSliceAt"], last["qty"]) == (
        "CXL", "USER", None, PARENT["qty"],
    )  # fmt: skip
    listener.close()


PARENT: dict[str, Any] = {
    "market": SPOT, "side": "BUY", "qty": 2**53 - 1, "durationMinutes": 5, "randomize": "0",
    "slippageBps": 50, "reduceOnly": "0", "sent": 0, "skipped": 0, "start": 1_800_000_000_000,
    "interval": INTERVAL_MS, "status": "ACTIVE", "ts": 1_800_000_000_000,
    "updatedTs": 1_800_000_000_000,
}  # fmt: skip
"""A parent as twap_create.lua writes it (a qty of 16 digits: the messages print it whole)."""


def published_messages(listener: Any, count: int, timeout: float = 5) -> list[str]:
    """The messages on ``listener``, waiting ``timeout`` for ``count`` and 0.3 s more for any
    that should not be there."""
    found: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(found) < count:
        message = listener.get_message(timeout=0.2)
        if message and message["type"] == "message":
            found.append(message["data"])
    quiet = time.monotonic() + 0.3
    while time.monotonic() < quiet:
        message = listener.get_message(timeout=0.1)
        if message and message["type"] == "message":
            found.append(message["data"])
    return found


def test_every_process_killed_between_slices_and_restarted_sends_no_slice_twice(
    audited: Exchange, maker: Callable[..., Trader]
) -> None:
    """Both gateways fire this TWAP (each slice once, the cursor decides); every process is
    SIGKILLed mid-way and restarted: no slice twice, none lost, balances to the unit (the
    beat's sweep settles what the killed worker left)."""
    maker(5_000)
    taker = funded(audited)
    second: Exchange = audited.second  # type: ignore[attr-defined]
    start_twap(second, taker, "tw-kill")
    assert wait_for(lambda: read_twap(audited, taker, "tw-kill")["slicesDone"] >= 3, 10)
    second.kill("gateway")
    for name in ("gateway", "matcher", "settler", "beat"):
        audited.kill(name)
    time.sleep(3 * INTERVAL_MS / 1000)  # slices come due while nothing runs
    audited.start("gateway", "matcher", "settler", "beat")
    second.start("gateway")
    done = ended(audited, taker, "tw-kill")
    assert (done["status"], done["sent"], done["filled"]) == ("FILLED", 1000, 1000)
    assert (done["slicesDone"], done["slicesSkipped"]) == (10, 0)  # a resend: DUPLICATE, skipped
    expected = taker_balances([(P, 100)] * 10)
    assert wait_for(lambda: audited.balance(taker.address, "USDC") == (expected[0], 0), 15)
    assert audited.balance(taker.address, "BTC") == (expected[1], 0)
    fills = audited.get(f"/v1/accounts/{taker.address}/fills?limit=100")
    assert sorted(f["clientOrderId"] for f in fills) == sorted(f"tw-kill.{k}" for k in range(10))
    assert {f["qty"] for f in fills} == {100}


def test_websocket_entry_twap_agent_keys_and_progress_on_the_orders_topic(
    audited: Exchange, redis_server: RedisServer
) -> None:
    """The WebSocket op ``twap`` runs the REST route's coroutine; an approved TRADE agent may
    sign a Twap for its owner (a CANCEL_ONLY one may not); each slice publishes the TWAP's
    progress on ``orders:<userId>``, up to its end."""
    owner, agent, watcher = funded(audited, eth=ETH_WEI), Trader(), Trader()
    user = owner.address.lower()
    with audited.client() as client:
        for scope, who in (("TRADE", agent), ("CANCEL_ONLY", watcher)):
            approve = signed(owner, "ApproveAgent", agent=who.address, name=scope.lower(),
                             scope=scope, markets="", expiresAt=0)  # fmt: skip
            assert client.post("/v1/accounts/agents", json=approve).status_code == 200
        refused = client.post(
            "/v1/orders/twap", json=twap_body(watcher, "tw-watch", userId=owner.address)
        )
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "FORBIDDEN")
    listener = redis.Redis.from_url(redis_server.url, decode_responses=True).pubsub()
    listener.subscribe(keys.channel(keys.orders_topic(user)))

    async def over_websocket() -> Any:
        url = f"ws://127.0.0.1:{audited.gateway_port}/v1/ws"
        async with await WsClient.connect(url) as ws:
            body = twap_body(agent, "tw-ws", userId=owner.address, market=ETH, side="SELL")
            await ws.send({"id": 1, "op": "twap", "body": body})
            return await ws.next(lambda m: m.get("id") == 1, 15)

    answer = asyncio.run(over_websocket())
    assert answer["status"] == 200, answer
    assert (answer["body"]["agent"], answer["body"]["userId"]) == (agent.address.lower(), user)
    done = ended(audited, owner, "tw-ws")
    assert (done["status"], done["slicesSkipped"]) == ("EXP", 10)
    # the end was published by the step that ended it: every message is there already
    progress = [validate(TwapPublication, m)["data"] for m in published_messages(listener, 12)]
    listener.close()
    assert {p["type"] for p in progress} == {"TWAP"}
    # the creation's message, every slice's, then the end's, once, in the order of the steps
    assert [p["slicesDone"] for p in progress] == [*range(11), 10]
    assert [p["status"] for p in progress] == ["ACTIVE"] * 11 + ["EXP"]
    assert progress[-1] == done


def test_reduce_only_slices_never_take_the_position_past_zero(audited: Exchange) -> None:
    """A reduce-only SELL TWAP of 1000 against a long of 300: the slices sell the 300 and no
    more (a slice that would open is refused or cut by the reduce-only rule); the TWAP ends EXP
    with 300 filled and the position flat."""
    perp, bid = "BTC-PERP", funded(audited)
    long, seller = funded(audited), funded(audited)

    def size() -> int:
        held = audited.get(f"/v1/accounts/{long.address}/positions")
        return int({p["market"]: p["size"] for p in held}.get(perp, 0))

    with audited.client() as client:
        ask = seller.order(perp, "SELL", P, 300, product="PERP", timeInForce="GTC", cid="ro-ask")
        assert client.post("/v1/orders?wait=1", json=ask).json()["status"] == "NEW"
        buy = long.order(perp, "BUY", P, 300, product="PERP", timeInForce="IOC", cid="ro-buy")
        assert client.post("/v1/orders?wait=1", json=buy).json()["filled"] == 300
        rest = bid.order(perp, "BUY", P, 5_000, product="PERP", timeInForce="GTC")
        assert client.post("/v1/orders?wait=1", json=rest).json()["status"] == "NEW"
    assert wait_for(lambda: size() == 300, 10)
    start_twap(audited, long, "tw-ro", market=perp, side="SELL", reduceOnly=True)
    done = ended(audited, long, "tw-ro")
    assert (done["status"], done["filled"], done["reduceOnly"]) == ("EXP", 300, True)
    placed = [c for c in slices(audited, long, "tw-ro", 10) if c is not None]
    assert all(c["reduceOnly"] for c in placed) and sum(c["filled"] for c in placed) == 300
    assert wait_for(lambda: size() == 0, 10)
    with audited.client() as client:
        for trader in (bid, seller):
            response = client.post(
                "/v1/orders/cancel-all", json=signed(trader, "CancelAll", market="")
            )
            assert response.status_code == 200
    assert wait_for(lambda: audited.balance(bid.address, "USDC")[1] == 0, 10)


def test_a_cancel_on_disconnect_session_ends_the_twaps_it_placed(audited: Exchange) -> None:
    seller = funded(audited, eth=ETH_WEI)

    async def place_and_leave() -> None:
        url = f"ws://127.0.0.1:{audited.gateway_port}/v1/ws"
        async with await WsClient.connect(url) as ws:
            await ws.send({"id": "s", "op": "session", "body": None, "cancelOnDisconnect": True})
            assert (await ws.next(lambda m: m.get("id") == "s", 15))["status"] == 200
            body = twap_body(seller, "tw-cod", market=ETH, side="SELL", durationMinutes=1440)
            await ws.send({"id": 1, "op": "twap", "body": body})
            assert (await ws.next(lambda m: m.get("id") == 1, 15))["status"] == 200

    asyncio.run(place_and_leave())
    done = ended(audited, seller, "tw-cod", 5)
    assert (done["status"], done["reason"]) == ("CXL", "DISCONNECT")
    assert audited.get(f"/v1/twaps/{seller.address}") == []


def test_the_dead_mans_switch_ends_the_accounts_twaps(audited: Exchange) -> None:
    seller = funded(audited, eth=ETH_WEI)
    start_twap(audited, seller, "tw-dms", market=ETH, side="SELL", durationMinutes=1440)
    arm = signed(seller, "ScheduleCancel", market=ETH, deadline=now_ms() + 300)
    with audited.client() as client:
        assert client.post("/v1/orders/schedule-cancel", json=arm).status_code == 200
    done = ended(audited, seller, "tw-dms", 5)
    assert (done["status"], done["reason"]) == ("CXL", "DEADMAN")
    assert audited.get(f"/v1/twaps/{seller.address}") == []


def test_two_gateways_racing_to_end_a_twap_publish_one_end_message(
    audited: Exchange, redis_server: RedisServer
) -> None:
    """A CancelAll through each gateway at once, and a Cancel of the TWAP's id: one ends it,
    and the end's message is published once, by the step that ended it."""
    seller = funded(audited, eth=ETH_WEI)
    second: Exchange = audited.second  # type: ignore[attr-defined]
    cid = "tw-race"
    start_twap(audited, seller, cid, market=ETH, side="SELL", durationMinutes=1440)
    listener = redis.Redis.from_url(redis_server.url, decode_responses=True).pubsub()
    listener.subscribe(keys.channel(keys.orders_topic(seller.address.lower())))
    bodies = [
        (audited, "/v1/orders/cancel-all", signed(seller, "CancelAll", market=ETH)),
        (second, "/v1/orders/cancel-all", signed(seller, "CancelAll", market="")),
        (second, "/v1/orders/cancel", signed(seller, "Cancel", market=ETH, clientOrderId=cid)),
    ]
    go = threading.Barrier(len(bodies))

    def send(exchange: Exchange, path: str, body: dict[str, Any]) -> int:
        with exchange.client() as client:
            go.wait()
            return client.post(path, json=body).status_code

    with ThreadPoolExecutor(len(bodies)) as pool:
        statuses = list(pool.map(lambda b: send(*b), bodies))
    # the Cancel is 200 when it ended the TWAP, else 409 ORDER_CLOSED; the CancelAlls are 200
    assert statuses[:2] == [200, 200] and statuses[2] in (200, 409)
    done = ended(audited, seller, cid, 5)
    assert (done["status"], done["reason"]) == ("CXL", "USER")
    messages = [validate(TwapPublication, m)["data"] for m in published_messages(listener, 1)]
    listener.close()
    ends = [m for m in messages if m["status"] != "ACTIVE"]
    assert ends == [done]
    assert messages[-1] == done


def test_a_slice_is_never_sent_for_an_agent_no_longer_approved(redis_server: RedisServer) -> None:
    """accept_slice.lua reads the TWAP's agent in the step that would send its slice: revoked,
    expired, CANCEL_ONLY or limited to other markets, it answers AGENT and changes nothing; an
    approval that still covers the TWAP lets the slice through (here skipped: no book)."""
    store = redis.Redis.from_url(redis_server.url, decode_responses=True)
    accept = store.register_script(read_script(str(LUA_DIR), "accept_slice"))
    user, cid, agent = "0x" + "cd" * 20, "tw-agent", "0x" + "ef" * 20
    parent, agents = keys.twap_parent(user, cid), keys.account_agents(user)
    store.hset(parent, mapping=PARENT | {"k": 0, "n": 2, "agent": agent})
    account = [*twap.slice_keys(user, f"{cid}.0", SPOT), parent, agents]
    now = 1_800_000_000_000
    args = [*[""] * 18, 0, 100, "NO_BOOK", now, user, cid, "", 0, 0, agent, SPOT]

    def approval(**over: Any) -> str:
        record = {"name": "bot", "scope": "TRADE", "markets": "", "expiresAt": 0,
                  "approvedAt": 1} | over  # fmt: skip
        return json.dumps(record)

    cases = [
        (None, "AGENT_REVOKED"),
        (approval(expiresAt=now), "AGENT_EXPIRED"),
        (approval(scope="CANCEL_ONLY"), "AGENT_REVOKED"),
        (approval(markets="ETH-USDC,BTC-PERP"), "AGENT_REVOKED"),
    ]
    for record, reason in cases:
        store.delete(agents)
        if record is not None:
            store.hset(agents, agent, record)
        assert accept(keys=account, args=args) == ["AGENT", reason], record
        assert store.hmget(parent, "k", "skipped", "status") == ["0", "0", "ACTIVE"]
    store.hset(agents, agent, approval(markets=f"ETH-USDC,{SPOT}", expiresAt=now + 1))
    assert accept(keys=account, args=args)[:2] == ["SKIPPED", "NO_BOOK"]


def test_revoking_an_agent_ends_the_twaps_it_signed_and_no_slice_follows(
    audited: Exchange, maker: Callable[..., Trader], redis_server: RedisServer
) -> None:
    """The owner revokes the agent that signed a running TWAP: the TWAP ends at once (CXL,
    AGENT_REVOKED, one end message), no slice follows, the owner's own TWAP runs on, and the
    balances are those of the slices that filled, to the unit, nothing left locked. A TWAP
    whose agent was revoked by a gateway that died before ending it (its record removed
    directly here) is ended by the firer at its next slice, which is not sent."""
    maker(5_000)
    owner, agent, other = funded(audited), Trader(), Trader()
    user = owner.address.lower()
    with audited.client() as client:
        for who in (agent, other):
            approve = signed(owner, "ApproveAgent", agent=who.address, name="bot",
                             scope="TRADE", markets="", expiresAt=0)  # fmt: skip
            assert client.post("/v1/accounts/agents", json=approve).status_code == 200
    listener = redis.Redis.from_url(redis_server.url, decode_responses=True).pubsub()
    listener.subscribe(keys.channel(keys.orders_topic(user)))
    for cid, signer in (("tw-bot", agent), ("tw-own", owner), ("tw-other", other)):
        body = twap_body(signer, cid, userId=owner.address, durationMinutes=60, qty=1200)
        with audited.client() as client:
            assert client.post("/v1/orders/twap", json=body).status_code == 200
    assert wait_for(lambda: read_twap(audited, owner, "tw-bot")["slicesDone"] >= 2, 10)
    with audited.client() as client:
        revoke = signed(owner, "RevokeAgent", agent=agent.address)
        response = client.post("/v1/accounts/agents/revoke", json=revoke)
        assert response.status_code == 200, response.text
    done = read_twap(audited, owner, "tw-bot")
    assert (done["status"], done["reason"], done["agent"]) == ("CXL", "AGENT_REVOKED",
                                                               agent.address.lower())  # fmt: skip
    # the firer path: the other agent's record goes without its TWAPs being ended
    store = redis.Redis.from_url(redis_server.url, decode_responses=True)
    assert store.hdel(keys.account_agents(user), other.address.lower()) == 1
    gone = ended(audited, owner, "tw-other", 10)
    assert (gone["status"], gone["reason"]) == ("CXL", "AGENT_REVOKED")
    time.sleep(4 * INTERVAL_MS / 1000)
    for cid, final in (("tw-bot", done), ("tw-other", gone)):
        after = read_twap(audited, owner, cid)
        assert (after["status"], after["slicesDone"]) == ("CXL", final["slicesDone"])
        assert order(audited, owner, f"{cid}.{final['slicesDone']}") is None
    # the owner's own TWAP runs on past the revoked one
    assert wait_for(
        lambda: read_twap(audited, owner, "tw-own")["slicesDone"] > done["slicesDone"], 10
    )
    assert read_twap(audited, owner, "tw-own")["status"] == "ACTIVE"
    with audited.client() as client:
        cancel = signed(owner, "Cancel", market=SPOT, clientOrderId="tw-own")
        assert client.post("/v1/orders/cancel", json=cancel).status_code == 200
    raw = published_messages(listener, 1)  # the slices' orders are published there too
    raw = [m for m in raw if json.loads(m)["data"].get("type") == "TWAP"]
    twaps = [validate(TwapPublication, m)["data"] for m in raw]
    listener.close()
    ends = [m for m in twaps if m["clientOrderId"] == "tw-bot" and m["status"] != "ACTIVE"]
    assert [(m["status"], m["reason"]) for m in ends] == [("CXL", "AGENT_REVOKED")]
    # every slice placed filled at P (IOC against the maker): the owner paid for those only
    placed = [
        c
        for cid in ("tw-bot", "tw-own", "tw-other")
        for c in slices(audited, owner, cid, read_twap(audited, owner, cid)["slicesDone"])
        if c is not None
    ]
    assert wait_for(lambda: all(c["status"] == "FILLED" for c in placed), 10)
    expected = taker_balances([(P, c["qty"]) for c in placed])
    assert wait_for(lambda: audited.balance(owner.address, "USDC") == (expected[0], 0), 15)
    assert audited.balance(owner.address, "BTC") == (expected[1], 0)


def test_a_twap_whose_agent_approval_expires_ends_at_its_next_slice(
    audited: Exchange, maker: Callable[..., Trader]
) -> None:
    """An agent key approved until a moment: its TWAP's slices go out until then, and the first
    slice due after it is not sent; the TWAP ends CXL, AGENT_EXPIRED, nothing left locked."""
    maker(5_000)
    owner, agent = funded(audited), Trader()
    expires_at = now_ms() + 1_500
    with audited.client() as client:
        approve = signed(owner, "ApproveAgent", agent=agent.address, name="bot", scope="TRADE",
                         markets=SPOT, expiresAt=expires_at)  # fmt: skip
        assert client.post("/v1/accounts/agents", json=approve).status_code == 200
        body = twap_body(agent, "tw-exp", userId=owner.address, durationMinutes=60, qty=1200)
        assert client.post("/v1/orders/twap", json=body).status_code == 200
    done = ended(audited, owner, "tw-exp", 15)
    assert (done["status"], done["reason"]) == ("CXL", "AGENT_EXPIRED")
    assert done["updatedTs"] >= expires_at
    placed = [c for c in slices(audited, owner, "tw-exp", done["slicesDone"]) if c is not None]
    assert placed and all(c["ts"] < expires_at for c in placed)
    assert order(audited, owner, f"tw-exp.{done['slicesDone']}") is None
    assert wait_for(lambda: audited.balance(owner.address, "USDC")[1] == 0, 10)


def test_on_sharded_pub_sub_an_end_message_its_gateway_lost_is_published_by_the_firer(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a Redis Cluster with sharded pub/sub the script cannot reach the market's shard
    channel: it keeps a copy of the end message in the TWAP's record, and its gateway
    SPUBLISHes it, then drops the copy. A gateway that fails between the two (here its
    SPUBLISH of the end raises once) leaves the copy, and the firer's next step publishes it:
    the end comes once, the copy goes. (The gateway in process, told it runs on sharded
    pub/sub, on a database of its own: SPUBLISH works on a single Redis too.)"""
    url = redis_server.url_for_db(5)
    store = redis.Redis.from_url(url, decode_responses=True)
    store.flushdb()
    seller = Trader()
    user = seller.address.lower()
    listener = redis.Redis.from_url(url, decode_responses=True).pubsub()
    listener.ssubscribe(keys.shard_channel(ETH, keys.orders_topic(user)))
    sent_once = twap.announce
    failures = [ConnectionError("the gateway lost Redis right after ending the TWAP")]

    async def sharded(_: Any) -> bool:
        return True

    async def announce(gateway: Any, parent: twap.Parent, message: str) -> None:
        if failures and '"status":"CXL"' in message:
            raise failures.pop()
        await sent_once(gateway, parent, message)

    monkeypatch.setattr(pubsub, "sharded_async", sharded)
    monkeypatch.setattr(twap, "announce", announce)
    with gateway_client(url, twap_interval_ms=INTERVAL_MS) as client:
        deposit = {"userId": seller.address, "asset": "ETH", "amount": str(ETH_WEI)}
        assert client.post("/v1/admin/deposits", json=deposit, headers=ADMIN).status_code == 200
        body = twap_body(seller, "tw-shard", market=ETH, side="SELL", durationMinutes=1440)
        assert client.post("/v1/orders/twap", json=body).status_code == 200
        cancel = signed(seller, "Cancel", market=ETH, clientOrderId="tw-shard")
        assert client.post("/v1/orders/cancel", json=cancel).status_code == 503
        parent = keys.twap_parent(user, "tw-shard")
        assert store.hget(parent, "status") == "CXL"
        assert wait_for(lambda: store.hget(parent, "endMessage") is None, 10)
        assert wait_for(lambda: store.zscore(keys.twap_due(), f"{user}|tw-shard") is None, 10)
    found = []
    while (message := listener.get_message(timeout=0.3)) is not None:
        if message["type"] == "smessage":
            found.append(validate(TwapPublication, message["data"])["data"])
    listener.close()
    assert [m["status"] for m in found if m["status"] != "ACTIVE"] == ["CXL"]
    assert found[-1]["reason"] == "USER" and not failures
