"""A real local EVM chain for tests: Hardhat's node from ``chain/node_modules`` on a free port.

``make setup`` installs it (``npm ci`` in ``chain/``) and compiles the contracts; a test that
needs the chain fails loudly when either is missing (never skips). One node serves the whole
session (``chain_node`` fixture); each test module deploys its own vault, so modules do not see
each other's contracts. Hardhat's well-known development keys stand for the deployer, the
bridge and wallets: they hold test coins on a fresh node, and nowhere else.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from common.chain import Rpc, calldata
from services.bridge import deploy as deployer
from support.redis_server import free_port, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAIN_DIR = REPO_ROOT / "chain"
HARDHAT_CLI = CHAIN_DIR / "node_modules" / "hardhat" / "internal" / "cli" / "cli.js"

# Hardhat's default development accounts 0..5 (public keys of its documented mnemonic).
DEV_KEYS = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
]
DEPLOYER_KEY, BRIDGE_KEY, WALLET_KEY, OTHER_KEY, STRANGER_KEY, NEXT_BRIDGE_KEY = DEV_KEYS


def address(key: str) -> str:
    return str(Account.from_key(key).address).lower()


class HardhatNode:
    """``hardhat node`` on 127.0.0.1 and a free port, started and stopped by the test."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = Path(tempfile.mkdtemp(prefix="dex-chain-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.rpc = Rpc(self.url)

    def start(self) -> HardhatNode:
        node = shutil.which("node")
        if node is None or not HARDHAT_CLI.exists():
            raise RuntimeError(
                f"the local chain is not installed (node: {node}, {HARDHAT_CLI} missing): "
                "run `make setup`, which runs `npm ci` in chain/ and compiles the contracts"
            )
        deployer.artifact("Vault")  # fails loudly when the contracts are not compiled
        log = open(self.workdir / "hardhat.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [node, str(HARDHAT_CLI), "--config", "hardhat.config.cjs", "node",
             "--hostname", "127.0.0.1", "--port", str(self.port)],
            cwd=CHAIN_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true"},
        )  # fmt: skip
        if not wait_for(self._answers, 60, interval=0.2):
            self.stop()
            raise RuntimeError(f"hardhat node did not start:\n{self.log()[-3000:]}")
        return self

    def _answers(self) -> bool:
        """The node answers on its port, and its own log says it listens there: the port
        alone can be answered by another test's node given the same free port first."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"hardhat node exited:\n{self.log()[-3000:]}")
        if f"{self.url}/" not in self.log():
            return False
        try:
            self.rpc.chain_id()
        except Exception:
            return False
        return True

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def log(self) -> str:
        path = self.workdir / "hardhat.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- the dev node's extras -----------------------------------------------------------
    def mine(self, blocks: int = 1) -> None:
        self.rpc.call("hardhat_mine", hex(blocks))

    def snapshot(self) -> str:
        return str(self.rpc.call("evm_snapshot"))

    def revert(self, snapshot: str) -> None:
        assert self.rpc.call("evm_revert", snapshot) is True

    def automine(self, on: bool) -> None:
        self.rpc.call("evm_setAutomine", on)

    def increase_time(self, seconds: int) -> None:
        self.rpc.call("evm_increaseTime", seconds)
        self.mine()

    def head(self) -> int:
        return self.rpc.block_number()

    # -- wallets -------------------------------------------------------------------------
    def transact(self, key: str, to: str, data: str = "0x", value: int = 0) -> dict[str, Any]:
        """Send a transaction from ``key`` and wait for its receipt (must succeed)."""
        return deployer.send(self.rpc, key, to, data, 500_000, value)

    def deposit_coin(self, key: str, vault: str, account: str, amount: int) -> dict[str, Any]:
        return self.transact(
            key, vault, calldata("deposit(address)", ["address"], [account]), amount
        )

    def deposit_token(
        self, key: str, vault: str, token: str, account: str, amount: int
    ) -> dict[str, Any]:
        self.transact(key, token, calldata("mint(address,uint256)", ["address", "uint256"],
                                           [address(key), amount]))  # fmt: skip
        self.transact(key, token, calldata("approve(address,uint256)", ["address", "uint256"],
                                           [vault, amount]))  # fmt: skip
        return self.transact(
            key,
            vault,
            calldata(
                "depositToken(address,address,uint256)",
                ["address", "address", "uint256"],
                [token, account, amount],
            ),
        )


@pytest.fixture(scope="session")
def chain_node() -> Iterator[HardhatNode]:
    """One hardhat node for the session (a test module deploys its own contracts)."""
    node = HardhatNode().start()
    try:
        yield node
    finally:
        node.stop()
