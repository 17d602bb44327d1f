"""A settlement round's accounts in few apply_ops.lua calls, against a real redis-server.

On a single Redis a round's trader accounts go ``ACCOUNTS_PER_CALL`` to one script call (the
fee account's in a call of its own); a worker SIGKILLed between those calls and the cursor
write leaves a round that the next run replays, applying nothing twice.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from support.market_driver import MarketDriver

from common import keys
from common.audit import audit
from common.markets import Market, MarketSet, load_markets
from services.settler import ledger as ledger_module
from services.settler.ledger import Ledger

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MARKETS_FILE = REPO / "deploy" / "markets.yaml"
PRICE, LOT = 3_000_100, 10_000  # one lot of BTC-USDC at 30,001.00: 3,000,100 USDC units
TAKER_FEE, MAKER_FEE = 1_501, 301  # ceil(3,000,100 × 5 / 10^4), ceil(3,000,100 × 1 / 10^4)
USDC, BTC = 10_000_000, 10**8


@pytest.fixture
def markets() -> MarketSet:
    return load_markets(MARKETS_FILE)


def trade_pairs(client: Any, market: Market, pairs: int) -> tuple[list[str], list[str]]:
    """``pairs`` buyers each taking one lot from their own resting seller: 2 × pairs accounts
    in one round. The buyers and the sellers."""
    drive = MarketDriver(client, market)
    buyers = [f"0x{1_000 + i:040x}" for i in range(pairs)]
    sellers = [f"0x{2_000 + i:040x}" for i in range(pairs)]
    for buyer, seller in zip(buyers, sellers, strict=True):
        drive.deposit(buyer, "USDC", USDC)
        drive.deposit(seller, "BTC", BTC)
        drive.order(seller, "s", "SELL", PRICE, 1)
        drive.order(buyer, "b", "BUY", PRICE, 1)
        drive.fill((buyer, "b"), (seller, "s"), PRICE, 1, taker="BUY")
    return buyers, sellers


def balances(client: Any, user: str) -> dict[str, int]:
    raw = client.hgetall(keys.balances(user))
    return {f: int(raw.get(f, 0)) for f in ("USDC:t", "USDC:l", "BTC:t", "BTC:l")}


def assert_settled_once(client: Any, markets: MarketSet, buyers: list[str], sellers: list[str]):
    for buyer in buyers:
        assert balances(client, buyer) == {
            "USDC:t": USDC - PRICE - TAKER_FEE,
            "USDC:l": 0,
            "BTC:t": LOT,
            "BTC:l": 0,
        }
        assert client.xlen(keys.account_fills(buyer)) == 1
    for seller in sellers:
        assert balances(client, seller) == {
            "USDC:t": PRICE - MAKER_FEE,
            "USDC:l": 0,
            "BTC:t": BTC - LOT,
            "BTC:l": 0,
        }
        assert client.xlen(keys.account_fills(seller)) == 1
    fees = client.hget(keys.balances(keys.FEES_ACCOUNT), "USDC:t")
    assert int(fees) == len(buyers) * (TAKER_FEE + MAKER_FEE)
    report = audit(client, markets)
    assert report["ok"], report


def script_calls(client: Any) -> int:
    stats = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("evalsha", "eval"))


def test_a_round_of_several_accounts_is_one_script_call(client: Any, markets: MarketSet) -> None:
    market = markets.markets["BTC-USDC"]
    buyers, sellers = trade_pairs(client, market, 6)
    ledger = Ledger(client)
    ledger.scripts["apply_ops"].sha = client.script_load(ledger.scripts["apply_ops"].script)
    client.config_resetstat()
    assert ledger.settle_market(market) == 18  # 6 fills, 12 done events
    assert script_calls(client) == 2  # the 12 traders' call, then the fee account's
    assert_settled_once(client, markets, buyers, sellers)


def test_a_round_larger_than_a_call_takes_calls_of_the_bounded_size(
    client: Any, markets: MarketSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    market = markets.markets["BTC-USDC"]
    buyers, sellers = trade_pairs(client, market, 6)
    monkeypatch.setattr(ledger_module, "ACCOUNTS_PER_CALL", 5)
    ledger = Ledger(client)
    ledger.scripts["apply_ops"].sha = client.script_load(ledger.scripts["apply_ops"].script)
    client.config_resetstat()
    ledger.settle_market(market)
    assert script_calls(client) == 3 + 1  # 12 traders by 5, then the fee account
    assert_settled_once(client, markets, buyers, sellers)


KILLED_AFTER_THE_CALL = textwrap.dedent(
    """
    import os, signal, sys
    import redis
    from common.markets import load_markets
    from services.settler.ledger import Ledger

    real_apply_all = Ledger._apply_all

    def apply_then_die(self, symbol, accounts):
        replies = real_apply_all(self, symbol, accounts)
        os.kill(os.getpid(), signal.SIGKILL)  # after the traders' call, before the cursor
        return replies

    Ledger._apply_all = apply_then_die
    client = redis.Redis.from_url(sys.argv[1], decode_responses=True)
    market = load_markets(sys.argv[2]).markets["BTC-USDC"]
    Ledger(client).settle_market(market)
    """
)


def test_a_worker_killed_between_the_call_and_the_cursor_applies_nothing_twice(
    client: Any, markets: MarketSet, redis_url: str
) -> None:
    market = markets.markets["BTC-USDC"]
    buyers, sellers = trade_pairs(client, market, 6)
    command = [sys.executable, "-c", KILLED_AFTER_THE_CALL, redis_url, str(MARKETS_FILE)]
    died = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert died.returncode == -9, died.stderr
    assert client.get(keys.market_settled("BTC-USDC")) is None  # the cursor never moved
    for buyer in buyers:  # every trader applied by the one call
        assert balances(client, buyer)["BTC:t"] == LOT
        assert client.hget(keys.watermarks(buyer), "BTC-USDC") is not None
    assert client.hget(keys.balances(keys.FEES_ACCOUNT), "USDC:t") is None
    lock = keys.market_settle_queued("BTC-USDC") + ":lock"
    assert client.pttl(lock) > 0
    client.delete(lock)  # the dead worker's lock, as its lapse (LOCK_TTL_MS) would take it
    client.config_resetstat()
    assert Ledger(client).settle_market(market) == 18  # the round again, from the old cursor
    assert script_calls(client) == 2  # replayed in one call too
    assert_settled_once(client, markets, buyers, sellers)
    fills = [orjson.loads(f["f"]) for _, f in client.xrange(keys.account_fills(buyers[0]))]
    assert [fill["fee"] for fill in fills] == [str(TAKER_FEE)]


def test_a_malformed_call_is_refused_and_changes_nothing(client: Any, markets: MarketSet) -> None:
    market = markets.markets["BTC-USDC"]
    buyers, _ = trade_pairs(client, market, 1)
    ledger = Ledger(client)
    script = ledger.scripts["apply_ops"]
    templates = ledger_module._account_keys(ledger_module.ACCOUNT_MARK, "BTC-USDC")
    ops = ledger_module._operations([(1, [["credit", "USDC", "5"]])])
    before = balances(client, buyers[0])
    with pytest.raises(redis.ResponseError, match="an account and its operations per pair"):
        script(keys=[], args=["BTC-USDC", *templates, buyers[0], ops, buyers[0]])
    with pytest.raises(redis.ResponseError, match="10 keys per account argument"):
        account_keys = ledger_module._account_keys(buyers[0], "BTC-USDC")
        script(keys=account_keys[:9], args=["BTC-USDC", ops])
    assert balances(client, buyers[0]) == before
    assert client.hget(keys.watermarks(buyers[0]), "BTC-USDC") is None
