"""The README's tour and the SDKs' examples, run as a reader would run them, against the real
processes (the admin token the README uses, ``secret``): the tour's ``curl``, Python and ``dex``
blocks, the market maker (quotes, a fill, a requote, balances to the unit), the stop trader and
the TypeScript SDK's README example (orders and balances to the unit). The README's deposit
from a wallet runs in tests/integration/test_bridge.py, against the chain and the bridge."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from npm_support import compile_if_stale, require_npm_package
from orderbookdex import Balance, Client
from support.exchange import REPO_ROOT, Exchange
from support.redis_server import RedisServer, wait_for

pytestmark = pytest.mark.integration

TOKEN = "secret"  # the README's
EXAMPLES = REPO_ROOT / "clients" / "python" / "examples"
SPOT, PERP, PRICE, QTY = "BTC-USDC", "BTC-PERP", 3_000_000, 1_000


@pytest.fixture(scope="module")
def exchange(redis_server: RedisServer) -> Iterator[Exchange]:
    redis_server.flushall()
    with Exchange(redis_server.url, DEX_ADMIN_TOKEN=TOKEN) as running:
        running.start("gateway", "matcher", "settler", "broadcaster")
        yield running


def env_for(exchange: Exchange, **more: str) -> dict[str, str]:
    return {**os.environ, "DEX_URL": exchange.http, "DEX_WS_URL": exchange.ws, **more}


def funded(exchange: Exchange, **amounts: int) -> tuple[Client, str]:
    """A new account with its deposits, and its private key (0x + 64 hex)."""
    key = "0x" + bytes(Account.create().key).hex()
    client = Client(exchange.http, key=key, admin_token=TOKEN)
    for asset, amount in amounts.items():
        client.deposit(client.address, asset, amount)
    return client, key


def readme_blocks(language: str) -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def readme_shell(exchange: Exchange, block: str) -> str:
    """A README ``sh`` block as a reader runs it, the exchange's ports for ``make run``'s."""
    return block.replace("localhost:8000", exchange.http.removeprefix("http://"))


def test_the_readme_curl_block_sees_a_healthy_empty_exchange(exchange: Exchange) -> None:
    """Run first in the module, on the fresh exchange the README's reader has just started."""
    [block] = [b for b in readme_blocks("sh") if "/v1/health" in b]
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_shell(exchange, block)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr
    claimed = re.findall(r"# (\{.*\})", block)  # each command's answer, as the comment shows it
    assert run.stdout == "".join(claimed), run.stdout


def test_the_readme_tour_runs(exchange: Exchange, tmp_path: Path) -> None:
    python = readme_blocks("python")
    assert python and not any("common." in b or "services." in b for b in python)
    run = subprocess.run(
        [sys.executable, "-c", "\n".join(python)],
        env=env_for(exchange),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "FILLED 1000" in run.stdout
    assert "Balance(total=1998500000, available=1998500000, locked=0)" in run.stdout
    cli = [b for b in readme_blocks("sh") if "dex " in b]
    assert cli
    shell = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join(cli)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env_for(exchange, DEX_KEY_FILE=str(tmp_path / "key.json"), COLUMNS="120"),
    )
    assert shell.returncode == 0, shell.stdout + shell.stderr
    assert "NEW" in shell.stdout and "0.10000000" in shell.stdout


def test_the_market_maker_quotes_both_sides_and_requotes_on_a_fill(exchange: Exchange) -> None:
    maker, maker_key = funded(exchange, BTC=100_000_000, USDC=10_000_000_000)
    taker, _ = funded(exchange, USDC=10_000_000_000)
    process = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLES / "market_maker.py"),
            "--url",
            exchange.http,
            "--ws-url",
            exchange.ws,
            "--key",
            maker_key,
            "--market",
            SPOT,
            "--mid",
            str(PRICE),
            "--spread",
            "100",
            "--qty",
            str(QTY),
            "--fills",
            "1",
            "--seconds",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        quoted = lambda: sorted((o.side, o.price) for o in maker.orders(open=True, market=SPOT))  # noqa: E731
        assert wait_for(lambda: quoted() == [("BUY", PRICE - 100), ("SELL", PRICE + 100)], 30)
        taken = taker.place(SPOT, "BUY", QTY, PRICE + 100, time_in_force="IOC", wait=True)
        assert taken.filled == QTY  # type: ignore[union-attr]
        out, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, out
    assert f"filled SELL {QTY} @ {PRICE + 100}; requoting" in out
    assert f"quote SELL {QTY} @ {PRICE + 200}" in out  # around the last trade
    assert "done: 1 requotes, 2 cancelled" in out
    notional = (PRICE + 100) * QTY
    maker_fee = -(-notional // 10_000)  # 1 bps, rounded up
    assert wait_for(lambda: maker.balances()["USDC"].locked == 0, 30)
    assert maker.balances() == {
        "BTC": Balance(100_000_000 - QTY * 10_000, 100_000_000 - QTY * 10_000, 0),
        "USDC": Balance(
            10_000_000_000 + notional - maker_fee, 10_000_000_000 + notional - maker_fee, 0
        ),
    }


def test_the_stop_trader_opens_a_position_with_a_stop(exchange: Exchange) -> None:
    trader, key = funded(exchange, USDC=2_000_000_000)
    if "OrderV4" not in trader.published_types():
        pytest.skip("GET /v1/info does not publish OrderV4 (trigger orders): no stop to place")
    seller, _ = funded(exchange, USDC=2_000_000_000)
    seller.place(PERP, "SELL", QTY, PRICE, wait=True)
    run = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "stop_trader.py"),
            "--url",
            exchange.http,
            "--key",
            key,
            "--market",
            PERP,
            "--qty",
            str(QTY),
            "--price",
            str(PRICE),
            "--stop",
            str(PRICE - 50_000),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"filled {QTY}" in run.stdout and "stop " in run.stdout
    assert wait_for(lambda: [p.size for p in trader.positions()] == [QTY], 30)
    stops = [o for o in trader.orders(market=PERP) if o.type == "STOP_MARKET"]
    assert [(s.side, s.qty, s.reduce_only) for s in stops] == [("SELL", QTY, True)]


def test_the_typescript_readme_example_places_cancels_and_rests(
    exchange: Exchange, tmp_path: Path
) -> None:
    """clients/ts/README.md's example as node runs it: the SDK as the package it imports, the
    exchange's URLs for ``make run``'s, a known key for ``Wallet.createRandom()`` so that its
    orders and balances can be read here."""
    package = require_npm_package("ts")
    compile_if_stale(package)
    [block] = re.findall(r"```ts\n(.*?)```", (package / "README.md").read_text(), flags=re.S)
    key = "0x" + bytes(Account.create().key).hex()
    gateway_ws = exchange.ws.split("://", 1)[0] + "://" + exchange.http.split("://", 1)[1]
    script = (
        block.replace("Wallet.createRandom()", f'new Wallet("{key}")')
        .replace("http://127.0.0.1:8000", exchange.http)
        .replace("ws://127.0.0.1:8001/ws", exchange.ws)
        .replace("ws://127.0.0.1:8000", gateway_ws)
    )
    assert script.count(key) == 1 and "127.0.0.1:800" not in script
    modules = tmp_path / "node_modules"
    (modules / "@orderbookdex").mkdir(parents=True)
    (modules / "@orderbookdex" / "sdk").symlink_to(package)
    (modules / "ethers").symlink_to(package / "node_modules" / "ethers")
    (tmp_path / "readme.mjs").write_text(script)
    run = subprocess.run(
        ["node", "--experimental-websocket", "readme.mjs"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.findall(r"^[A-Z]+$", run.stdout, flags=re.M) == ["NEW", "CXL", "NEW"]
    trader = Client(exchange.http, key=key)
    orders = sorted((o.side, o.price, o.qty, o.filled, o.status) for o in trader.orders())
    assert orders == [
        ("BUY", 2_999_000, 1_000, 0, "CXL"),
        ("SELL", 3_001_000, 1_000, 0, "NEW"),
    ]
    assert trader.balances() == {
        "BTC": Balance(10_000_000, 0, 10_000_000),  # 1000 lots of 0.0001 BTC, all locked
        "USDC": Balance(5_000_000_000, 5_000_000_000, 0),  # the cancelled bid's lock returned
    }
