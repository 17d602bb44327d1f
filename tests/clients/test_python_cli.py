"""The ``dex`` command line against the real processes: key files, balances, positions,
place / amend / cancel, the live watch (with its timeout), and the operator's deposit,
oracle, halt / resume and audit; refusals exit 1 with the contract's code."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from orderbookdex.cli import app
from support.exchange import ADMIN_TOKEN, Exchange
from support.redis_server import RedisServer, wait_for
from typer.testing import CliRunner

pytestmark = pytest.mark.integration

SPOT, PERP = "BTC-USDC", "BTC-PERP"
PRICE, QTY = 3_000_000, 1_000
DEX = str(Path(sys.executable).parent / "dex")


@pytest.fixture(scope="module")
def exchange(redis_server: RedisServer) -> Iterator[Exchange]:
    redis_server.flushall()
    with Exchange(redis_server.url) as running:
        running.start("gateway", "matcher", "settler", "broadcaster")
        yield running


@pytest.fixture
def env(exchange: Exchange, tmp_path: Path) -> dict[str, str]:
    return {
        "DEX_URL": exchange.http,
        "DEX_WS_URL": exchange.ws,
        "DEX_KEY_FILE": str(tmp_path / "dex" / "key.json"),
        "DEX_ADMIN_TOKEN": ADMIN_TOKEN,
    }


def dex(env: dict[str, str], *args: str, input: str | None = None, code: int = 0) -> Any:
    """Run ``dex --json ARGS``; its JSON answer (or its text when it is not JSON)."""
    result = CliRunner().invoke(app, ["--json", *args], env=env, input=input)
    assert result.exit_code == code, (result.output, result.exception)
    output = result.output.strip()
    for text in (output, output.splitlines()[-1] if output else ""):  # after a prompt: last line
        with contextlib.suppress(ValueError):
            return json.loads(text)
    return result.output


def test_keys_orders_and_the_operators_commands(env: dict[str, str], tmp_path: Path) -> None:
    created = dex(env, "key", "create")
    key_file = Path(env["DEX_KEY_FILE"])
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert json.loads(key_file.read_text())["address"] == created["address"]
    assert "exists" in dex(env, "key", "create", code=1)
    maker = created["address"]

    other = dict(env, DEX_KEY_FILE=str(tmp_path / "taker.json"))
    key = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
    imported = dex(other, "key", "import", input=key + "\n")
    assert imported["address"] == "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
    taker = imported["address"]

    assert dex(env, "admin", "deposit", maker, "BTC", "50000000")["total"] == 50_000_000
    assert dex(env, "admin", "deposit", taker, "USDC", "10000000000", "--deposit-id", "d-1")
    assert "DUPLICATE" in dex(
        env, "admin", "deposit", taker, "USDC", "1", "--deposit-id", "d-1", code=1
    )

    rested = dex(env, "order", "place", SPOT, "sell", str(2 * QTY), str(PRICE), "--cid", "m-1")
    assert (rested["status"], rested["qty"]) == ("NEW", 2 * QTY)
    amended = dex(env, "order", "amend", SPOT, "m-1", str(PRICE), str(QTY))
    assert (amended["qty"], amended["status"]) == (QTY, "NEW")
    filled = dex(other, "order", "place", SPOT, "BUY", str(QTY), str(PRICE), "--tif", "IOC")
    assert (filled["status"], filled["filled"]) == ("FILLED", QTY)
    assert wait_for(lambda: dex(other, "balances").get("BTC", {}).get("total") == QTY * 10_000, 30)
    assert dex(other, "balances")["USDC"] == {
        "total": 10_000_000_000 - PRICE * QTY - 1_500_000,
        "available": 10_000_000_000 - PRICE * QTY - 1_500_000,
        "locked": 0,
    }
    # A table, whole units: 0.1 BTC.
    table = CliRunner().invoke(app, ["balances", taker], env=env, terminal_width=200).output
    assert "0.10000000" in table and "BTC" in table

    resting = dex(env, "order", "place", SPOT, "SELL", str(QTY), str(PRICE + 100), "--cid", "m-2")
    assert resting["status"] == "NEW"
    assert [o["client_order_id"] for o in dex(env, "orders", "--open")] == ["m-2"]
    assert dex(env, "book", SPOT)["asks"] == [[PRICE + 100, QTY]]
    assert dex(env, "order", "cancel", SPOT, "m-2")["status"] == "CXL"
    assert "ORDER_CLOSED" in dex(env, "order", "cancel", SPOT, "m-2", code=1)
    assert dex(env, "order", "cancel-all", SPOT) == {"cancelled": 0}
    assert "INSUFFICIENT_BALANCE" in dex(
        other, "order", "place", SPOT, "BUY", str(10**6), str(PRICE), code=1
    )

    # The operator: oracle, halt, resume, audit.
    assert dex(env, "admin", "oracle", PERP, str(PRICE + 500))["indexPrice"] == PRICE + 500
    assert dex(env, "admin", "halt", SPOT) == {"symbol": SPOT, "status": "HALTED"}
    assert "MARKET_HALTED" in dex(env, "order", "place", SPOT, "SELL", "1000", "3000000", code=1)
    assert dex(env, "admin", "resume", SPOT) == {"symbol": SPOT, "status": "OPEN"}
    assert wait_for(lambda: dex(env, "admin", "audit")["ok"], 30)
    assert "FORBIDDEN" in dex(dict(env, DEX_ADMIN_TOKEN="wrong"), "admin", "audit", code=1)
    assert dex(env, "positions") == []

    # A stop, leverage, a TWAP and the operator's health read.
    stop = dex(
        other, "order", "stop", SPOT, "BUY", str(QTY), str(PRICE + 50_000), str(PRICE + 60_000)
    )
    assert (stop["type"], stop["status"], stop["trigger_price"]) == (
        "STOP_LIMIT",
        "UNTRIGGERED",
        PRICE + 50_000,
    )
    assert dex(other, "balances")["USDC"]["locked"] == (PRICE + 60_000) * QTY * 10_005 // 10_000
    assert dex(other, "order", "cancel", SPOT, stop["client_order_id"])["status"] == "CXL"
    chosen = dex(env, "leverage", "set", PERP, "2000")
    assert (chosen["initial_margin_bps"], chosen["leverage"], chosen["chosen"]) == (2000, "5", True)
    assert [
        x["initial_margin_bps"] for x in dex(env, "leverage", "show") if x["market"] == PERP
    ] == [2000]
    assert "INVALID_REQUEST" in dex(env, "leverage", "set", PERP, "10", code=1)
    twap = dex(env, "twap", "place", SPOT, "SELL", str(10 * QTY), "60", "--cid", "t-1")
    assert (twap["status"], twap["slices_total"]) == ("ACTIVE", 120)
    assert [t["client_order_id"] for t in dex(env, "twap", "show")] == ["t-1"]
    assert dex(env, "twap", "show", "t-1")["qty"] == 10 * QTY
    ended = dex(env, "twap", "cancel", SPOT, "t-1")
    assert (ended["status"], ended["reason"]) == ("CXL", "USER")
    health = dex(env, "admin", "health")
    assert {h["market"]: h["status"] for h in health}[SPOT] == "OPEN"


def test_watch_shows_the_live_book_and_trades_and_stops_at_its_timeout(
    env: dict[str, str],
) -> None:
    dex(env, "key", "create")
    maker = dex(env, "key", "show").strip()
    dex(env, "admin", "deposit", maker, "BTC", "50000000")
    dex(env, "admin", "deposit", maker, "USDC", "50000000000")
    dex(env, "order", "place", SPOT, "SELL", "700", str(PRICE + 4_200))
    dex(env, "order", "place", SPOT, "BUY", "300", str(PRICE - 4_200))
    watch = subprocess.run(
        [DEX, "watch", SPOT, "--timeout", "2"],
        env={**os.environ, **env, "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert watch.returncode == 0, watch.stderr
    assert str(PRICE + 4_200) in watch.stdout and str(PRICE - 4_200) in watch.stdout
    assert "trades" in watch.stdout
