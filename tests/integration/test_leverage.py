"""Leverage (docs/api.md "Leverage") through the real gateway, matcher and settler on a real
Redis: a signed SetLeverage sets the initial margin an account uses in one derivative market;
the reservation of an order, a price-0 MARKET order's budget and the margin read follow it to
the unit; the liquidation price and the liquidation job do not (maintenance is the market's);
every refusal changes nothing; the auditor's invariants hold after every test.

Markets: the shipped file plus three copies of BTC-PERP (LEV-A, LEV-B, LEV-C: initial margin
10 %, maintenance 5 %, taker fee 5 bps, index 3,000,000, notional = price × qty USDC atomic
units), one per test that trades, so no test's book or mark reaches another's.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from support.exchange import ADMIN_TOKEN, Exchange
from support.gateway import error_of
from support.redis_server import RedisServer, wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader
from support.ws import WsClient

from common import keys
from common.audit import audit
from common.eip712 import Verifier, sign
from common.markets import load_markets
from common.settings import DEFAULT_MARKETS_FILE
from services.settler.accounts import AccountSteps
from services.settler.ledger import Ledger
from services.settler.liquidation import run_liquidation

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PERP = "BTC-PERP"
MARK = 3_000_000
BTC = 10_000  # qty of 1 BTC


@pytest.fixture(scope="module")
def markets_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    document = yaml.safe_load(DEFAULT_MARKETS_FILE.read_text())
    for name in ("LEV-A", "LEV-B", "LEV-C"):
        document["markets"][name] = dict(document["markets"][PERP])
    path = tmp_path_factory.mktemp("leverage") / "markets.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture(scope="module")
def exchange(redis_server: RedisServer, markets_file: Path) -> Iterator[Exchange]:
    """One exchange for the module: each test has its own traders (and market)."""
    redis_server.flushall()
    with Exchange(redis_server.url, DEX_MARKETS_FILE=str(markets_file)) as running:
        running.start("gateway", "matcher", "settler")
        yield running


@pytest.fixture(scope="module")
def r(exchange: Exchange) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(exchange.redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def audited(exchange: Exchange, r: redis.Redis) -> Iterator[None]:
    """The auditor's invariants after each test (run here: the last test kills the gateway)."""
    yield
    report = audit(r, load_markets(Path(exchange.env["DEX_MARKETS_FILE"])))
    assert report["ok"] is True, report["invariants"]


def signed(signer: Trader, primary: str, owner: Trader | None = None, **message: Any) -> dict:
    """A ``primary`` body for ``owner``'s account (the signer's own by default)."""
    message = {"userId": (owner or signer).address, **message}
    message.setdefault("ts", int(time.time() * 1000))
    return {**message, "sig": sign(signer.key, primary, message, CHAIN_ID, VERIFYING_CONTRACT)}


def set_leverage(trader: Trader, market: str, bps: int | str, **extra: Any) -> dict:
    return signed(trader, "SetLeverage", market=market, initialMarginBps=bps, **extra)


def post(exchange: Exchange, path: str, body: dict[str, Any]) -> Any:
    with exchange.client() as client:
        return client.post(path, json=body)


def choose(exchange: Exchange, trader: Trader, market: str, bps: int) -> dict[str, Any]:
    answer = post(exchange, "/v1/accounts/leverage", set_leverage(trader, market, bps))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def place(exchange: Exchange, body: dict[str, Any]) -> Any:
    with exchange.client() as client:
        return client.post("/v1/orders?wait=1", json=body)


def fee(notional: int) -> int:
    return -(-notional * 5 // 10_000)


def margin(notional: int, bps: int) -> int:
    return -(-notional * bps // 10_000)


def settles_to(exchange: Exchange, trader: Trader, expected: tuple[int, int]) -> bool:
    return wait_for(lambda: exchange.balance(trader.address, "USDC") == expected, 30)


def chosen_values(r: Any, trader: Trader) -> dict[str, str]:
    return dict(r.hgetall(keys.account_leverage(trader.address.lower())))


def test_set_list_clear_over_rest_websocket_and_an_agent(exchange: Exchange, r: Any) -> None:
    """POST sets 2000 bps (5×) and answers it; the list shows every derivative market, the
    others at the market's value; the WebSocket op sets 2500; a TRADE agent sets 1500; 0
    clears the choice (the market's 1000 again)."""
    me, bot = Trader(), Trader()
    user = me.address.lower()
    assert choose(exchange, me, PERP, 2000) == {
        "userId": user,
        "market": PERP,
        "initialMarginBps": 2000,
        "leverage": "5",
        "chosen": True,
    }
    listed = {e["market"]: e for e in exchange.get(f"/v1/accounts/{user}/leverage")}
    markets = load_markets(Path(exchange.env["DEX_MARKETS_FILE"]))
    assert set(listed) == {s for s, m in markets.markets.items() if m.product.is_derivative}
    assert listed[PERP]["initialMarginBps"] == 2000
    assert listed["ETH-PERP"] == {
        "userId": user,
        "market": "ETH-PERP",
        "initialMarginBps": 1000,
        "leverage": "10",
        "chosen": False,
    }
    assert listed["BTC-C-40000-20270326"]["initialMarginBps"] == 2000  # the option's own
    assert listed["BTC-C-40000-20270326"]["chosen"] is False

    async def over_websocket(body: dict[str, Any]) -> tuple[int, Any]:
        async with await WsClient.connect(f"ws://127.0.0.1:{exchange.gateway_port}/v1/ws") as ws:
            await ws.send({"id": 7, "op": "set_leverage", "body": body})
            answer = await ws.next(lambda m: m.get("id") == 7, 15)
            return answer["status"], answer["body"]

    status, body = asyncio.run(over_websocket(set_leverage(me, PERP, 2500)))
    assert (status, body["initialMarginBps"], body["leverage"]) == (200, 2500, "4")
    approval = signed(
        me, "ApproveAgent", agent=bot.address, name="bot", scope="TRADE", markets="",
        expiresAt=0,
    )  # fmt: skip
    assert post(exchange, "/v1/accounts/agents", approval).status_code == 200
    by_agent = post(exchange, "/v1/accounts/leverage", set_leverage(bot, PERP, 1500, userId=user))
    assert by_agent.status_code == 200, by_agent.text
    assert by_agent.json()["leverage"] == "6.66"
    assert chosen_values(r, me) == {PERP: "1500"}
    assert choose(exchange, me, PERP, 0) == {
        "userId": user,
        "market": PERP,
        "initialMarginBps": 1000,
        "leverage": "10",
        "chosen": False,
    }
    assert chosen_values(r, me) == {}


def test_refusals_change_nothing(exchange: Exchange, r: Any) -> None:
    """Below the market's initial margin, above 10000, huge, a spot or unknown market, a stale
    ts, a forged signature, another user's name, a CANCEL_ONLY agent, a replay: each refused
    with its code, the account's choice and its used signatures as they were."""
    me, other, watcher = Trader(), Trader(), Trader()
    choose(exchange, me, PERP, 2000)
    pattern = f"{keys.used_signature(me.address.lower(), '')}*"
    used_before = set(r.scan_iter(pattern))
    assert len(used_before) == 1
    approval = signed(
        me, "ApproveAgent", agent=watcher.address, name="w", scope="CANCEL_ONLY", markets="",
        expiresAt=0,
    )  # fmt: skip
    assert post(exchange, "/v1/accounts/agents", approval).status_code == 200
    used_before = set(r.scan_iter(pattern))
    stale = int(time.time() * 1000) - 3_600_000
    forged = set_leverage(me, PERP, 3000)
    forged["sig"] = set_leverage(other, PERP, 3000)["sig"]
    invalid = (400, "INVALID_REQUEST")

    def altered(**changes: Any) -> dict[str, Any]:
        return {**set_leverage(me, PERP, 3000), **changes}

    cases = [
        (set_leverage(me, PERP, 999), invalid),
        (set_leverage(me, PERP, 10_001), invalid),
        (set_leverage(me, PERP, 2**256 - 1), invalid),
        (altered(initialMarginBps=str(2**256)), invalid),
        (altered(initialMarginBps=-1), invalid),
        (altered(initialMarginBps=2500.0), invalid),
        (set_leverage(me, "BTC-USDC", 2000), invalid),
        (set_leverage(me, "NOPE-PERP", 2000), (400, "UNKNOWN_MARKET")),
        (altered(extra=1), invalid),
        (set_leverage(me, PERP, 3000, ts=stale), (400, "STALE_TS")),
        (forged, (401, "INVALID_SIGNATURE")),
        (set_leverage(other, PERP, 3000, userId=me.address), (401, "INVALID_SIGNATURE")),
        (set_leverage(watcher, PERP, 3000, userId=me.address), (403, "FORBIDDEN")),
    ]
    for body, expected in cases:
        answer = post(exchange, "/v1/accounts/leverage", body)
        assert error_of(answer) == expected, (body, answer.text)
        assert chosen_values(r, me) == {PERP: "2000"}
        assert set(r.scan_iter(pattern)) == used_before
    once = set_leverage(me, PERP, 3000)
    assert post(exchange, "/v1/accounts/leverage", once).status_code == 200
    assert error_of(post(exchange, "/v1/accounts/leverage", once)) == (409, "DUPLICATE")
    choose(exchange, me, PERP, 2000)
    assert error_of(post(exchange, "/v1/accounts/leverage", once)) == (409, "DUPLICATE")
    assert chosen_values(r, me) == {PERP: "2000"}
    assert exchange.get(f"/v1/accounts/{other.address}/leverage")[0]["chosen"] is False


def test_the_reservation_follows_the_accounts_initial_margin(exchange: Exchange, r: Any) -> None:
    """The same 1 BTC buy at the mark reserves 3,015 USDC at the market's 10 % and 6,015 at
    a chosen 20 %; the order keeps that when the account lowers its choice to 15 %, an amend
    to 0.5 BTC reserves at 15 %: 2,257.5 USDC, and so does a signed batch's PLACE (4,515). An
    account with 3,015 USDC is refused at 20 % (nothing locked) and accepted at the market's."""
    market = "LEV-A"
    base, chosen, thin = Trader(), Trader(), Trader()
    deposit = 10_000_000_000
    for trader in (base, chosen):
        exchange.deposit(trader.address, "USDC", deposit)
    notional = MARK * BTC
    at_10, at_20 = margin(notional, 1000) + fee(notional), margin(notional, 2000) + fee(notional)
    assert (at_10, at_20) == (3_015_000_000, 6_015_000_000)
    choose(exchange, chosen, market, 2000)
    for trader, cid, locked in ((base, "b-1", at_10), (chosen, "c-1", at_20)):
        body = trader.order(market, "BUY", MARK, BTC, product="PERP", cid=cid)
        assert place(exchange, body).json()["status"] == "NEW"
        assert exchange.balance(trader.address, "USDC") == (deposit, locked)
    command = r.hget(keys.account_order(chosen.address.lower(), "c-1"), "cmd")
    assert '"im":2000' in command
    assert '"im"' not in r.hget(keys.account_order(base.address.lower(), "b-1"), "cmd")
    choose(exchange, chosen, market, 1500)
    assert exchange.balance(chosen.address, "USDC") == (deposit, at_20)
    amend = signed(
        chosen, "Amend", market=market, clientOrderId="c-1", price=MARK, qty=BTC // 2,
        expectedFilled=-1,
    )  # fmt: skip
    assert post(exchange, "/v1/orders/amend", amend).status_code in (200, 202)
    half = MARK * BTC // 2
    assert settles_to(exchange, chosen, (deposit, margin(half, 1500) + fee(half)))
    assert margin(half, 1500) + fee(half) == 2_257_500_000
    action = {
        "kind": "PLACE", "market": market, "clientOrderId": "c-2", "side": "BUY",
        "type": "LIMIT", "price": MARK, "qty": BTC, "timeInForce": "GTC", "reduceOnly": False,
        "expiresAt": 0, "expectedFilled": 0,
    }  # fmt: skip
    batch = signed(chosen, "Batch", atomic=True, actions=[action])
    answer = post(exchange, "/v1/orders/batch", batch)
    assert [a["status"] for a in answer.json()["results"]] == [202], answer.text
    at_15 = margin(notional, 1500) + fee(notional)
    assert exchange.balance(chosen.address, "USDC") == (deposit, 2_257_500_000 + at_15)
    for trader, cid in ((base, "b-1"), (chosen, "c-1"), (chosen, "c-2")):
        cancel = signed(trader, "Cancel", market=market, clientOrderId=cid)
        assert post(exchange, "/v1/orders/cancel", cancel).status_code == 200
    for trader in (base, chosen):
        assert settles_to(exchange, trader, (deposit, 0))

    exchange.deposit(thin.address, "USDC", at_10)
    choose(exchange, thin, market, 2000)
    refused = place(exchange, thin.order(market, "BUY", MARK, BTC, product="PERP", cid="t-1"))
    assert error_of(refused) == (422, "INSUFFICIENT_MARGIN")
    assert str(at_20) in refused.json()["error"]["message"]
    assert exchange.balance(thin.address, "USDC") == (at_10, 0)
    choose(exchange, thin, market, 0)
    body = thin.order(market, "BUY", MARK, BTC, product="PERP", cid="t-2")
    assert place(exchange, body).json()["status"] == "NEW"
    assert exchange.balance(thin.address, "USDC") == (at_10, at_10)
    cancel = signed(thin, "Cancel", market=market, clientOrderId="t-2")
    assert post(exchange, "/v1/orders/cancel", cancel).status_code == 200
    assert settles_to(exchange, thin, (at_10, 0))


def test_a_price_0_market_buy_spends_its_budget_at_the_chosen_margin(exchange: Exchange) -> None:
    """1,000 USDC at 50 % (2×): each unit bought at 30,000 costs 150 cents of fee and
    1,500,000 of margin, so the budget buys 666 units (999,999,000), not the 3,316 it would at
    the market's 10 %; after settlement only the fee has left the account."""
    market = "LEV-B"
    maker, taker = Trader(), Trader()
    exchange.deposit(maker.address, "USDC", 100_000_000_000)
    budget = 1_000_000_000
    exchange.deposit(taker.address, "USDC", budget)
    choose(exchange, taker, market, 5000)
    ask = maker.order(market, "SELL", MARK, BTC, product="PERP", cid="ask")
    assert place(exchange, ask).json()["status"] == "NEW"
    buy = taker.order(market, "BUY", 0, BTC, product="PERP", type="MARKET", cid="all-in")
    assert place(exchange, buy).status_code == 200
    bought = 666
    assert margin(MARK * bought, 5000) + fee(MARK * bought) <= budget
    assert margin(MARK * (bought + 1), 5000) + fee(MARK * (bought + 1)) > budget
    record = exchange.get(f"/v1/orders/{taker.address}/all-in")
    assert int(record["filled"]) == bought
    assert settles_to(exchange, taker, (budget - fee(MARK * bought), 0))
    positions = exchange.get(f"/v1/accounts/{taker.address}/positions")
    assert [(p["market"], p["size"]) for p in positions] == [(market, bought)]
    cancel = signed(maker, "Cancel", market=market, clientOrderId="ask")
    assert post(exchange, "/v1/orders/cancel", cancel).status_code == 200
    assert wait_for(lambda: exchange.balance(maker.address, "USDC")[1] == 0, 30)


def test_margin_read_liquidation_price_and_the_liquidation_job(exchange: Exchange, r: Any) -> None:
    """The worked example of docs/api.md "Leverage": 6,265 USDC at 5× buys 1 BTC at 30,000.
    Initial margin and free collateral follow the choice (6,000 / 250 at 5×, 3,000 / 3,250 at
    10×, 7,500 / −1,250 at 4×); maintenance (1,500) and the liquidation price (25,000) do not.
    The job leaves the account alone at 4× with its free collateral below zero, and at a mark
    of 25,000.00; it liquidates it at 24,999.99."""
    market = "LEV-C"
    alice, bob = Trader(), Trader()
    exchange.deposit(bob.address, "USDC", 100_000_000_000)
    deposit = 6_265_000_000
    exchange.deposit(alice.address, "USDC", deposit)
    choose(exchange, alice, market, 2000)
    ask = bob.order(market, "SELL", MARK, BTC, product="PERP", cid="ask")
    assert place(exchange, ask).json()["status"] == "NEW"
    buy = alice.order(market, "BUY", MARK, BTC, product="PERP", cid="long")
    assert place(exchange, buy).json()["status"] == "FILLED"
    total = deposit - fee(MARK * BTC)
    assert total == 6_250_000_000
    assert settles_to(exchange, alice, (total, 0))

    def health() -> tuple[dict[str, str], int]:
        (read,) = exchange.get(f"/v1/accounts/{alice.address}/margin").values()
        (position,) = exchange.get(f"/v1/accounts/{alice.address}/positions")
        return read, position["liquidationPrice"]

    expected = {
        2000: ("6000000000", "250000000"),
        0: ("3000000000", "3250000000"),
        2500: ("7500000000", "-1250000000"),
    }
    for bps, (initial, free) in expected.items():
        if bps != 2000:
            choose(exchange, alice, market, bps)
        read, liquidation_price = health()
        assert read == {
            "equity": "6250000000",
            "initialMargin": initial,
            "maintenanceMargin": "1500000000",
            "freeCollateral": free,
            "unrealizedPnl": "0",
        }, bps
        assert liquidation_price == 2_500_000, bps
    withdraw = signed(alice, "Withdraw", asset="USDC", amount="1")
    assert error_of(post(exchange, "/v1/withdrawals", withdraw))[0] == 422
    client = r
    markets = load_markets(Path(exchange.env["DEX_MARKETS_FILE"]))

    def liquidate() -> list[str]:
        now = int(time.time() * 1000)
        return run_liquidation(client, markets, Ledger(client), AccountSteps(client), now, 0)

    assert liquidate() == []
    oracle = {"market": market, "indexPrice": 2_500_000}
    with exchange.client() as http:
        assert http.post("/v1/admin/oracle", json=oracle, headers=ADMIN).status_code == 200
    read, liquidation_price = health()
    assert (read["equity"], read["maintenanceMargin"]) == ("1250000000", "1250000000")
    assert liquidation_price == 2_500_000
    assert liquidate() == []
    oracle["indexPrice"] = 2_499_999
    with exchange.client() as http:
        assert http.post("/v1/admin/oracle", json=oracle, headers=ADMIN).status_code == 200
    assert liquidate() == [alice.address.lower()]
    assert exchange.get(f"/v1/accounts/{alice.address}/positions") == []
    # the fund took 1 BTC over at 24,999.99: 5,000.01 USDC realized of the 6,250
    assert settles_to(exchange, alice, (total - (MARK - 2_499_999) * BTC, 0))
    assert chosen_values(r, alice) == {market: "2500"}


def test_a_gateway_killed_amid_changes_leaves_each_whole_or_undone(
    exchange: Exchange, r: Any
) -> None:
    """SetLeverage after SetLeverage (1001, 1002, … bps) while the gateway is SIGKILLed: the
    signatures claimed are a prefix of those sent, every one answered 200 among them, and the
    account's value is the last claimed one's: claim and change landed together or not at
    all. (The module's last test: its gateway stays down.)"""
    me = Trader()
    bodies = [set_leverage(me, PERP, 1001 + i) for i in range(200)]
    answered: list[int] = []

    def send() -> None:
        with exchange.client() as client:
            for body in bodies:
                try:
                    if client.post("/v1/accounts/leverage", json=body).status_code == 200:
                        answered.append(body["initialMarginBps"])
                except Exception:
                    return

    sender = threading.Thread(target=send)
    sender.start()
    assert wait_for(lambda: len(answered) >= 20, 30)
    exchange.kill("gateway")
    sender.join(30)
    verifier = Verifier(CHAIN_ID, VERIFYING_CONTRACT)
    user = me.address.lower()
    claimed = [
        bool(r.exists(keys.used_signature(user, verifier.digest("SetLeverage", {
            k: v for k, v in body.items() if k != "sig"
        }).hex())))
        for body in bodies
    ]  # fmt: skip
    applied = claimed.index(False) if False in claimed else len(claimed)
    assert claimed == [True] * applied + [False] * (len(bodies) - applied)
    assert answered == [1001 + i for i in range(len(answered))] and len(answered) <= applied
    assert chosen_values(r, me) == {PERP: str(1000 + applied)}
