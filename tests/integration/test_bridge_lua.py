"""The bridge's Lua steps on a real redis-server: each credits or moves a withdrawal once."""

from __future__ import annotations

import json

import pytest
import redis

from common import keys
from common.lua import ScriptSet
from services.bridge.bridge import LUA_DIR, MAX_SAFE_INTEGER

USER = "0x" + "ab" * 20
WID = "w-" + "1" * 32


@pytest.fixture
def scripts(r: redis.Redis) -> ScriptSet:
    return ScriptSet(r, LUA_DIR)


def _step(scripts: ScriptSet, status: str, quanta: int = 7) -> str:
    return str(
        scripts["withdrawal_step"](
            keys=[keys.withdrawal_states(USER), keys.balances(USER)],
            args=[WID, status, json.dumps({"status": status}), "ETH", quanta],
        )
    )


def test_a_vault_deposit_is_credited_once_with_its_dust_counted_once(
    r: redis.Redis, scripts: ScriptSet
) -> None:
    args = ["ETH", 2_000_000_000, MAX_SAFE_INTEGER, "0xabc:0", 5]
    bal_keys = [keys.balances(USER), keys.account_deposits(USER)]
    assert scripts["chain_deposit"](keys=bal_keys, args=args) == [2_000_000_000, "0"]
    with pytest.raises(redis.ResponseError, match="DUPLICATE"):
        scripts["chain_deposit"](keys=bal_keys, args=args)
    assert r.hgetall(keys.balances(USER)) == {
        "ETH:t": "2000000000",
        "ETH:dep": "2000000000",
        "ETH:cdep": "2000000000",
        "ETH:cdust": "5",
    }
    assert r.hgetall(keys.account_deposits(USER)) == {"0xabc:0": "2000000000"}


def test_a_credit_past_the_ceiling_changes_nothing(r: redis.Redis, scripts: ScriptSet) -> None:
    r.hset(keys.balances(USER), "ETH:t", MAX_SAFE_INTEGER - 1)
    with pytest.raises(redis.ResponseError, match="BALANCE_CEILING"):
        scripts["chain_deposit"](
            keys=[keys.balances(USER), keys.account_deposits(USER)],
            args=["ETH", 2, MAX_SAFE_INTEGER, "0xdef:1", 0],
        )
    assert r.hgetall(keys.balances(USER)) == {"ETH:t": str(MAX_SAFE_INTEGER - 1)}
    assert not r.exists(keys.account_deposits(USER))


def test_failed_returns_the_amount_exactly_once_and_is_final(
    r: redis.Redis, scripts: ScriptSet
) -> None:
    r.hset(keys.balances(USER), mapping={"ETH:t": 3, "ETH:wd": 7})  # 7 debited at the request
    assert _step(scripts, "SENT") == "OK"
    assert _step(scripts, "FAILED") == "OK"
    assert _step(scripts, "FAILED") == "FAILED"
    assert _step(scripts, "CONFIRMED") == "FAILED"
    assert _step(scripts, "SENT") == "FAILED"
    assert r.hgetall(keys.balances(USER)) == {"ETH:t": "10", "ETH:wd": "0"}
    assert json.loads(r.hget(keys.withdrawal_states(USER), WID) or "")["status"] == "FAILED"


def test_confirmed_counts_the_payout_once_and_is_final(r: redis.Redis, scripts: ScriptSet) -> None:
    r.hset(keys.balances(USER), mapping={"ETH:t": 3, "ETH:wd": 7})
    assert _step(scripts, "SENT") == "OK"
    assert _step(scripts, "SENT") == "OK"  # a new transaction for the same permit
    assert _step(scripts, "CONFIRMED") == "OK"
    assert _step(scripts, "CONFIRMED") == "CONFIRMED"
    assert _step(scripts, "FAILED") == "CONFIRMED"
    assert r.hgetall(keys.balances(USER)) == {"ETH:t": "3", "ETH:wd": "7", "ETH:cwd": "7"}
