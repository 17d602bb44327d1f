"""Margin that cannot be escaped (API.md §6), through the real gateway, matcher and settler.

BTC-PERP of the shipped markets file: 1 qty unit = 0.0001 BTC, price in cents, so the
notional of qty at price is price × qty USDC atomic units; initial margin 10 %, maintenance
5 %, taker fee 5 bps; the index (and so the mark: no oracle runs here) is 3,000,000.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from support.exchange import Exchange
from support.gateway import error_of
from support.redis_server import wait_for
from support.signing import Trader

from common.markets import load_markets
from common.settings import DEFAULT_MARKETS_FILE
from services.settler.accounts import AccountSteps
from services.settler.ledger import Ledger
from services.settler.liquidation import run_liquidation

pytestmark = pytest.mark.integration

PERP = "BTC-PERP"
MARK = 3_000_000


@pytest.fixture
def exchange(redis_url: str) -> Iterator[Exchange]:
    with Exchange(redis_url) as running:
        running.start("gateway", "matcher", "settler")
        yield running


def fee(notional: int) -> int:
    return -(-notional * 5 // 10_000)


def margin(notional: int) -> int:
    return -(-notional * 1_000 // 10_000)


def post(exchange: Exchange, body: dict[str, Any], wait: bool = True) -> Any:
    with exchange.client() as client:
        return client.post("/v1/orders?wait=1" if wait else "/v1/orders", json=body)


def size(exchange: Exchange, user: str) -> int:
    positions = exchange.get(f"/v1/accounts/{user}/positions")
    return sum(p["size"] for p in positions if p["market"] == PERP)


def order(trader: Trader, side: str, price: int, qty: int, **v2: Any) -> dict[str, Any]:
    return trader.order(PERP, side, price, qty, product="PERP", **v2)


def open_long(exchange: Exchange, trader: Trader, qty: int, counterparty: Trader) -> None:
    """``trader`` buys ``qty`` at the mark from ``counterparty``'s resting sell; settled."""
    assert post(exchange, order(counterparty, "SELL", MARK, qty)).json()["status"] == "NEW"
    assert post(exchange, order(trader, "BUY", MARK, qty)).json()["status"] == "FILLED"
    assert wait_for(lambda: size(exchange, trader.address) == qty, 30)
    assert wait_for(lambda: exchange.balance(trader.address, "USDC")[1] == 0, 30)


def test_fifty_sells_against_a_long_reserve_margin_past_the_position(exchange: Exchange) -> None:
    """Long 1 BTC, the trader posts fifty 0.1 BTC sells: the first ten only close the
    position (the fee alone), every one after them would open a short and reserves margin,
    so with 985 USDC of free collateral three more fit and the other 37 are refused."""
    alice, bob = Trader(), Trader()
    exchange.deposit(alice.address, "USDC", 4_000_000_000)
    exchange.deposit(bob.address, "USDC", 100_000_000_000)
    open_long(exchange, alice, 10_000, bob)
    assert exchange.balance(alice.address, "USDC") == (4_000_000_000 - fee(MARK * 10_000), 0)
    closing_fee = fee(MARK * 1_000)
    opening = margin(MARK * 1_000) + closing_fee
    answers = [post(exchange, order(alice, "SELL", MARK, 1_000), wait=False) for _ in range(50)]
    codes = [a.status_code if a.status_code == 202 else error_of(a) for a in answers]
    assert codes == [202] * 13 + [(422, "INSUFFICIENT_MARGIN")] * 37
    expected_locked = 10 * closing_fee + 3 * opening
    assert wait_for(lambda: exchange.balance(alice.address, "USDC")[1] == expected_locked, 30)
    # Bob takes every sell: Alice ends short 0.3 BTC, with the margin that short needs.
    assert post(exchange, order(bob, "BUY", MARK, 50_000, timeInForce="IOC")).status_code == 200
    assert wait_for(lambda: size(exchange, alice.address) == -3_000, 30)
    assert wait_for(lambda: exchange.balance(alice.address, "USDC")[1] == 0, 30)
    (health,) = exchange.get(f"/v1/accounts/{alice.address}/margin").values()
    assert int(health["freeCollateral"]) >= 0
    assert int(health["initialMargin"]) == margin(MARK * 3_000)


def test_a_resting_close_whose_position_closed_meanwhile_is_cancelled_not_filled(
    exchange: Exchange,
) -> None:
    """A sell that only closed a long (fee reserved) rests; another fill closes the long
    first. When a buyer reaches the resting sell it may open nothing: CXL INSUFFICIENT_MARGIN,
    no trade, and the seller stays flat with nothing locked."""
    alice, bob, erin, frank = Trader(), Trader(), Trader(), Trader()
    exchange.deposit(alice.address, "USDC", 4_000_000_000)
    for trader in (bob, erin, frank):
        exchange.deposit(trader.address, "USDC", 100_000_000_000)
    open_long(exchange, alice, 10_000, bob)
    close = order(alice, "SELL", 3_100_000, 10_000, cid="close-later")
    assert post(exchange, close).json()["status"] == "NEW"
    closing_fee = fee(3_100_000 * 10_000)
    assert wait_for(lambda: exchange.balance(alice.address, "USDC")[1] == closing_fee, 30)
    assert post(exchange, order(erin, "BUY", MARK, 10_000)).json()["status"] == "NEW"
    now = order(alice, "SELL", MARK, 10_000, timeInForce="IOC", reduceOnly=True)
    assert post(exchange, now).json()["status"] == "FILLED"
    assert post(exchange, order(frank, "BUY", 3_100_000, 10_000)).json()["status"] == "NEW"
    stale = exchange.get(f"/v1/orders/{alice.address}/close-later")
    assert (stale["status"], stale["reason"], stale["filled"]) == (
        "CXL",
        "INSUFFICIENT_MARGIN",
        0,
    )
    assert exchange.get(f"/v1/markets/{PERP}/trades")[0]["price"] == MARK
    assert wait_for(lambda: exchange.balance(alice.address, "USDC")[1] == 0, 30)
    assert size(exchange, alice.address) == 0


def test_two_accounts_trading_far_from_the_mark_cannot_reach_the_insurance_fund(
    exchange: Exchange, redis_url: str
) -> None:
    """Carol sells to Dave at 42,000 with the mark at 30,000. Dave's order must reserve its
    open loss (12,000 USDC per BTC) besides margin and fee, so after the trade his equity
    still covers his margin: the liquidation job finds nothing to do and the insurance fund
    is untouched. Closing back far below the mark needs the loss covered the same way, and a
    price outside the band is refused outright."""
    carol, dave = Trader(), Trader()
    price, qty = 4_200_000, 10_000
    needed = margin(price * qty) + fee(price * qty) + (price - MARK) * qty
    exchange.deposit(carol.address, "USDC", 100_000_000_000)
    exchange.deposit(dave.address, "USDC", needed - 1)
    exchange.deposit("insurance", "USDC", 1_000_000_000)
    assert post(exchange, order(carol, "SELL", price, qty)).json()["status"] == "NEW"
    refused = post(exchange, order(dave, "BUY", price, qty))
    assert error_of(refused) == (422, "INSUFFICIENT_MARGIN")
    assert exchange.balance(dave.address, "USDC") == (needed - 1, 0)
    outside = post(exchange, order(dave, "BUY", 4_500_001, qty))
    assert error_of(outside) == (400, "INVALID_PRICE")
    exchange.deposit(dave.address, "USDC", 1)
    assert post(exchange, order(dave, "BUY", price, qty)).json()["status"] == "FILLED"
    assert wait_for(lambda: size(exchange, dave.address) == qty, 30)
    settled = (needed - fee(price * qty), 0)
    assert wait_for(lambda: exchange.balance(dave.address, "USDC") == settled, 30)
    (health,) = exchange.get(f"/v1/accounts/{dave.address}/margin").values()
    assert int(health["equity"]) == margin(price * qty)  # above maintenance at the mark
    assert int(health["equity"]) > int(health["maintenanceMargin"])
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    markets = load_markets(DEFAULT_MARKETS_FILE)
    taken = run_liquidation(client, markets, Ledger(client), AccountSteps(client), 0, 0)
    assert taken == []
    assert size(exchange, dave.address) == qty
    system = exchange.get("/v1/system/accounts")
    assert system["insurance"]["USDC"] == "1000000000"
    assert system["insurancePositions"] == []
    # Selling it back to Carol at the band's low edge would realize 1.5 BTC-worth of loss
    # against the mark: more than Dave's free collateral, so refused, and nothing changed.
    before = exchange.balance(dave.address, "USDC")
    assert post(exchange, order(carol, "BUY", 1_500_000, qty)).json()["status"] == "NEW"
    dump = post(exchange, order(dave, "SELL", 1_500_000, qty))
    assert error_of(dump) == (422, "INSUFFICIENT_MARGIN")
    assert exchange.balance(dave.address, "USDC") == before


def test_a_market_close_without_a_price_is_accepted_for_a_thin_account(exchange: Exchange) -> None:
    """Long 1 BTC with 85 USDC of free collateral left: a MARKET sell without a price that
    only closes reserves the fee at the band's far edge (15,000), judged on cash alone, and
    closes the long against the book."""
    alice, bob = Trader(), Trader()
    exchange.deposit(alice.address, "USDC", 3_100_000_000)
    exchange.deposit(bob.address, "USDC", 100_000_000_000)
    open_long(exchange, alice, 10_000, bob)
    (health,) = exchange.get(f"/v1/accounts/{alice.address}/margin").values()
    assert int(health["freeCollateral"]) == 3_100_000_000 - fee(MARK * 10_000) - margin(
        MARK * 10_000
    )
    assert post(exchange, order(bob, "BUY", MARK, 10_000)).json()["status"] == "NEW"
    close = alice.order(PERP, "SELL", 0, 10_000, product="PERP", type="MARKET", cid="close-now")
    answer = post(exchange, close)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "FILLED"
    assert wait_for(lambda: size(exchange, alice.address) == 0, 30)
    expected = 3_100_000_000 - 2 * fee(MARK * 10_000)
    assert wait_for(lambda: exchange.balance(alice.address, "USDC") == (expected, 0), 30)
