"""The settler for real: a Celery worker and beat against a real redis-server, no eager mode.

Fills and done events are written as the matcher writes them (``MarketDriver``); the worker
settles them, and funding, expiry and liquidation run as the tasks beat sends. Every test
checks balances and positions to the atomic unit and ends with a clean audit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from celery import Celery
from support.exchange import Exchange
from support.market_driver import MarketDriver
from support.redis_server import wait_for

from common import keys
from common.audit import audit
from common.events import loads
from common.markets import MarketSet, load_markets

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
A, B, C = ("0x" + ch * 40 for ch in "abc")
PAST = 1_600_000_000_000


@pytest.fixture
def markets_file(tmp_path: Path) -> Path:
    """The shipped markets plus a future and an option that expired long ago."""
    document = yaml.safe_load((REPO / "deploy" / "markets.yaml").read_text())
    base = document["markets"]
    document["markets"]["BTC-FUT-OLD"] = {**base["BTC-FUT-20270326"], "expiryTs": PAST}
    document["markets"]["BTC-C-OLD"] = {**base["BTC-C-40000-20270326"], "expiryTs": PAST}
    path = tmp_path / "markets.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def markets(markets_file: Path) -> MarketSet:
    return load_markets(markets_file)


def start(redis_url: str, markets_file: Path, *names: str, **env: str) -> Exchange:
    exchange = Exchange(redis_url, DEX_MARKETS_FILE=str(markets_file), **env)
    return exchange.start(*names)


def send(redis_url: str, name: str, *args: Any) -> None:
    app = Celery("test-client", broker=redis_url)
    queue = "settle" if name == "dex.settle" else "periodic"
    app.send_task(name, args=list(args), queue=queue)
    app.close()


def bal(client: Any, user: str, asset: str = "USDC") -> tuple[int, int]:
    raw = client.hgetall(keys.balances(user))
    return int(raw.get(f"{asset}:t", 0)), int(raw.get(f"{asset}:l", 0))


def pos(client: Any, user: str, market: str) -> tuple[int, int]:
    raw = client.hgetall(keys.positions(user))
    return int(raw.get(f"{market}:size", 0)), int(raw.get(f"{market}:entry", 0))


def settled(client: Any, market: str) -> bool:
    last = client.xrevrange(keys.market_events(market), count=1)
    return not last or client.get(keys.market_settled(market)) == last[0][0]


def assert_clean_audit(client: Any, markets: MarketSet) -> dict[str, Any]:
    report = audit(client, markets)
    assert report["ok"], report
    return report


def test_spot_fill_settles_with_fees(
    redis_url: str, client: Any, markets_file: Path, markets: MarketSet
) -> None:
    drive = MarketDriver(client, markets.markets["BTC-USDC"])
    drive.deposit(A, "USDC", 5_000_000_000)
    drive.deposit(B, "BTC", 10_000_000)
    drive.order(B, "s1", "SELL", 3_000_000, 1_000)
    drive.order(A, "b1", "BUY", 3_000_100, 1_000)  # crosses at the maker's 3,000,000
    drive.fill((A, "b1"), (B, "s1"), 3_000_000, 1_000, taker="BUY")
    with start(redis_url, markets_file, "settler", "beat") as exchange:
        assert wait_for(lambda: settled(client, "BTC-USDC"), 30), exchange.log("settler")[-3000:]
    notional, taker_fee, maker_fee = 3_000_000_000, 1_500_000, 300_000
    assert bal(client, A) == (5_000_000_000 - notional - taker_fee, 0)
    assert bal(client, A, "BTC") == (10_000_000, 0)
    assert bal(client, B) == (notional - maker_fee, 0)
    assert bal(client, B, "BTC") == (0, 0)
    assert bal(client, keys.FEES_ACCOUNT) == (taker_fee + maker_fee, 0)
    fills = [loads(f["f"]) for _, f in client.xrange(keys.account_fills(A))]
    assert [(f["tradeId"], f["fee"], f["liquidity"]) for f in fills] == [
        ("BTC-USDC:1", str(taker_fee), "TAKER")
    ]
    assert_clean_audit(client, markets)


def test_perp_round_trip_realizes_pnl(
    redis_url: str, client: Any, markets_file: Path, markets: MarketSet
) -> None:
    drive = MarketDriver(client, markets.markets["BTC-PERP"])
    for user in (A, B):
        drive.deposit(user, "USDC", 10_000_000_000)
    drive.order(B, "s1", "SELL", 3_000_000, 1_000)
    drive.order(A, "b1", "BUY", 3_000_000, 1_000)
    drive.fill((A, "b1"), (B, "s1"), 3_000_000, 1_000, taker="BUY")
    drive.order(A, "s2", "SELL", 3_150_000, 1_000)
    drive.order(B, "b2", "BUY", 3_150_000, 1_000)
    drive.fill((B, "b2"), (A, "s2"), 3_150_000, 1_000, taker="BUY")
    with start(redis_url, markets_file, "settler") as exchange:
        send(redis_url, "dex.settle", "BTC-PERP")
        assert wait_for(lambda: settled(client, "BTC-PERP"), 30), exchange.log("settler")[-3000:]
    pnl = 150_000_000  # 0.1 BTC × 1,500 USDC
    fees_a = 1_500_000 + 315_000  # taker at 3,000 notional, maker at 3,150
    fees_b = 300_000 + 1_575_000
    assert bal(client, A) == (10_000_000_000 + pnl - fees_a, 0)
    assert bal(client, B) == (10_000_000_000 - pnl - fees_b, 0)
    assert pos(client, A, "BTC-PERP") == (0, 0)
    assert client.hget(keys.positions(A), "BTC-PERP:rpnl") == str(pnl)
    assert bal(client, keys.FEES_ACCOUNT) == (fees_a + fees_b, 0)
    assert_clean_audit(client, markets)


def test_funding_three_users_zero_sum_with_residue_paid_once(
    redis_url: str, client: Any, markets_file: Path, markets: MarketSet
) -> None:
    perp = "BTC-PERP"
    drive = MarketDriver(client, markets.markets[perp])
    for user in (A, B, C):
        drive.deposit(user, "USDC", 10_000_000_000)
    drive.order(B, "s1", "SELL", 3_000_000, 667)
    drive.order(C, "s2", "SELL", 3_000_000, 334)
    drive.order(A, "b1", "BUY", 3_000_000, 1_001)
    drive.fill((A, "b1"), (B, "s1"), 3_000_000, 667, taker="BUY")
    drive.fill((A, "b1"), (C, "s2"), 3_000_000, 334, taker="BUY")
    # An index off the round number makes every payment fractional before rounding.
    client.hset(keys.market_prices(perp), mapping={"static": 3_000_001, "index": 3_000_001})
    with start(redis_url, markets_file, "settler", DEX_FUNDING_INTERVAL_S="3") as exchange:
        send(redis_url, "dex.settle", perp)
        assert wait_for(lambda: settled(client, perp), 30), exchange.log("settler")[-3000:]
        after_fills = {u: bal(client, u)[0] for u in (A, B, C)}
        send(redis_url, "dex.funding")  # marks where funding starts
        assert wait_for(lambda: client.hget(keys.market_funding(perp), "paid"), 30)
        start_period = int(client.hget(keys.market_funding(perp), "paid"))

        def paid_one() -> bool:
            send(redis_url, "dex.funding")
            send(redis_url, "dex.funding")  # run twice: the period is paid once
            return wait_for(
                lambda: int(client.hget(keys.market_funding(perp), "paid")) > start_period, 2
            )

        assert wait_for(paid_one, 40), exchange.log("settler")[-3000:]
        wait_for(lambda: False, 2)  # let any duplicate run finish
    history = [loads(f["f"]) for _, f in client.xrange(keys.market_funding_history(perp))]
    periods = [h["period"] for h in history]
    assert periods == sorted(set(periods)) and len(periods) >= 1
    n = len(periods)
    assert all(h["rate"] == 100 for h in history)  # no book: premium 0, interest 1 bp
    # 3,000,001 × size × 100 / 10^6: A pays ceil(300300.1001), B and C get floor(...).
    assert bal(client, A)[0] == after_fills[A] - n * 300_301
    assert bal(client, B)[0] == after_fills[B] + n * 200_100
    assert bal(client, C)[0] == after_fills[C] + n * 100_200
    assert bal(client, keys.INSURANCE_ACCOUNT)[0] == n * 1
    assert client.hget(keys.positions(A), f"{perp}:funding") == str(-n * 300_301)
    assert client.xlen(keys.account_funding(B)) == n
    assert int(client.hget(keys.market_prices(perp), "fundingRate")) == 100
    assert_clean_audit(client, markets)


def test_future_and_option_expiry_cash_settle_at_the_index(
    redis_url: str, client: Any, markets_file: Path, markets: MarketSet
) -> None:
    fut, opt = "BTC-FUT-OLD", "BTC-C-OLD"
    futures, options = (MarketDriver(client, markets.markets[s]) for s in (fut, opt))
    for user in (A, B):
        futures.deposit(user, "USDC", 10_000_000_000)
    futures.order(B, "fs", "SELL", 3_000_000, 1_000)
    futures.order(A, "fb", "BUY", 3_000_000, 1_000)
    futures.fill((A, "fb"), (B, "fs"), 3_000_000, 1_000)
    options.order(B, "ow", "SELL", 100_000, 1_000)  # B writes a 40,000 call for 1,000 USDC/BTC
    options.order(A, "oh", "BUY", 100_000, 1_000)
    options.fill((A, "oh"), (B, "ow"), 100_000, 1_000)
    options.order(B, "rest", "SELL", 120_000, 500)  # a resting order the expiry cancels
    for symbol in (fut, opt):
        client.hset(keys.market_prices(symbol), mapping={"static": 4_200_000})
    with start(redis_url, markets_file, "settler") as exchange:
        for symbol in (fut, opt):
            send(redis_url, "dex.settle", symbol)
            assert wait_for(lambda s=symbol: settled(client, s), 30)
        before = {u: bal(client, u)[0] for u in (A, B)}
        send(redis_url, "dex.oracle")
        send(redis_url, "dex.expiry")
        # Stand in for the matcher: it takes the expire command, marks the market EXPIRED
        # and cancels the resting order (a done event that releases its reservation).
        for symbol in (fut, opt):
            assert wait_for(lambda s=symbol: client.xlen(keys.market_in(s)) > 0, 30)
            client.hset(keys.market_state(symbol), "status", "EXPIRED")
        options.finish(B, "rest", "CXL", "MARKET_EXPIRED")

        def expired() -> bool:
            send(redis_url, "dex.expiry")
            return wait_for(
                lambda: all(client.hget(keys.market_expiry(s), "settled") for s in (fut, opt)), 5
            )

        assert wait_for(expired, 60), exchange.log("settler")[-3000:]
    future_pnl = 1_200_000_000  # (42,000 − 30,000) × 0.1 BTC
    option_value = 200_000_000  # intrinsic 2,000 USDC/BTC × 0.1
    assert bal(client, A) == (before[A] + future_pnl + option_value, 0)
    assert bal(client, B) == (before[B] - future_pnl - option_value, 0)
    for user in (A, B):
        assert pos(client, user, fut) == (0, 0)
        assert pos(client, user, opt) == (0, 0)
    assert client.exists(keys.market_positions(fut)) == 0
    assert_clean_audit(client, markets)


def test_liquidation_uses_the_insurance_fund(
    redis_url: str, client: Any, markets_file: Path, markets: MarketSet
) -> None:
    perp = "BTC-PERP"
    drive = MarketDriver(client, markets.markets[perp])
    drive.deposit(A, "USDC", 400_000_000)
    drive.deposit(B, "USDC", 10_000_000_000)
    drive.deposit(keys.INSURANCE_ACCOUNT, "USDC", 1_000_000_000)
    drive.order(B, "s1", "SELL", 3_000_000, 1_000)
    drive.order(A, "b1", "BUY", 3_000_000, 1_000)
    drive.fill((A, "b1"), (B, "s1"), 3_000_000, 1_000, taker="BUY")
    with start(redis_url, markets_file, "settler", DEX_LIQUIDATION_GRACE_S="0") as exchange:
        send(redis_url, "dex.settle", perp)
        assert wait_for(lambda: settled(client, perp), 30)
        assert bal(client, A) == (398_500_000, 0)
        # The index falls to 25,000: A's long loses 500 USDC, more than its collateral.
        client.hset(keys.market_prices(perp), mapping={"static": 2_500_000})
        send(redis_url, "dex.oracle")
        assert wait_for(lambda: client.hget(keys.market_prices(perp), "mark") == "2500000", 30)
        send(redis_url, "dex.liquidation")
        assert wait_for(lambda: client.hget(keys.account_liquidation(A), "last") == "1", 60), (
            exchange.log("settler")[-3000:]
        )
    # The reduce-only MARKET sell went to the matcher, protected at the bankruptcy price.
    ((_, fields),) = client.xrange(keys.market_in(perp))
    command = loads(fields["c"])
    assert command["liquidation"] is True and command["reduceOnly"] is True
    assert (command["side"], command["type"], command["qty"]) == ("SELL", "MARKET", 1_000)
    assert command["price"] == 2_601_500  # 3,000 USDC entry − 398.5 collateral over 0.1 BTC
    # Nothing filled (no matcher here): the fund took the long over at the mark, and paid
    # the 101.5 USDC A's collateral fell short by.
    assert bal(client, A) == (0, 0)
    assert pos(client, A, perp) == (0, 0)
    assert bal(client, keys.INSURANCE_ACCOUNT)[0] == 1_000_000_000 - 101_500_000
    assert pos(client, keys.INSURANCE_ACCOUNT, perp) == (1_000, 2_500_000_000)
    assert client.hgetall(keys.market_positions(perp)) == {A: "0", keys.INSURANCE_ACCOUNT: "1000"}
    report = assert_clean_audit(client, markets)
    assert report["assets"]["USDC"]["entryNotional"] == str(2_500_000_000 - 3_000_000_000)
