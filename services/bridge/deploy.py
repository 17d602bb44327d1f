"""Deploy the vault (and, for development, a test token) from ``chain/build``.

``python -m services.bridge.deploy`` with ``DEX_CHAIN_RPC_URL``, ``DEX_DEPLOYER_KEY`` (the
vault's owner) and ``DEX_BRIDGE_SIGNER`` (the address whose permits the vault pays, the
bridge's key) prints ``{"vault": ..., "tokens": {...}}``; ``--test-token SYMBOL:DECIMALS`` also
deploys a mintable test ERC-20. docs/operations.md "Deploying the vault".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from eth_abi import encode as abi_encode
from eth_account import Account

from common.chain import ChainError, Rpc, sign_transaction
from common.settings import REPO_ROOT

BUILD_DIR = REPO_ROOT / "chain" / "build"
DEPLOY_GAS = 3_000_000


def artifact(name: str, build_dir: Path = BUILD_DIR) -> dict[str, Any]:
    """``chain/build/<name>.json`` (``make chain`` writes it)."""
    path = build_dir / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make chain` to compile the contracts")
    return dict(json.loads(path.read_text()))


def send(rpc: Rpc, key: str, to: str | None, data: str, gas: int, value: int = 0) -> dict[str, Any]:
    """Sign and send one transaction from ``key`` and wait for its receipt (status 1)."""
    sender = Account.from_key(key).address
    raw, tx_hash = sign_transaction(
        key,
        rpc.chain_id(),
        rpc.nonce(sender),
        to,
        data,
        gas,
        int(rpc.call("eth_gasPrice"), 16),
        value,
    )
    rpc.send_raw(raw)
    deadline = time.monotonic() + 30
    while (receipt := rpc.receipt(tx_hash)) is None:
        if time.monotonic() > deadline:
            raise ChainError(f"transaction {tx_hash} was not mined within 30 s")
        time.sleep(0.05)
    if int(receipt["status"], 16) != 1:
        raise ChainError(f"transaction {tx_hash} reverted")
    return receipt


def deploy(rpc: Rpc, key: str, name: str, types: list[str], args: list[Any]) -> str:
    """Deploy contract ``name`` with constructor ``args``; its address, lowercase."""
    code = artifact(name)["bytecode"] + abi_encode(types, args).hex()
    receipt = send(rpc, key, None, code, DEPLOY_GAS)
    return str(receipt["contractAddress"]).lower()


def deploy_vault(rpc: Rpc, owner_key: str, signer: str) -> str:
    return deploy(rpc, owner_key, "Vault", ["address"], [signer])


def deploy_test_token(rpc: Rpc, key: str, symbol: str, decimals: int) -> str:
    return deploy(
        rpc, key, "TestToken", ["string", "string", "uint8"], [f"Test {symbol}", symbol, decimals]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-token", action="append", default=[], metavar="SYMBOL:DECIMALS")
    options = parser.parse_args(argv)
    rpc = Rpc(os.environ["DEX_CHAIN_RPC_URL"])
    key = os.environ["DEX_DEPLOYER_KEY"]
    vault = deploy_vault(rpc, key, os.environ["DEX_BRIDGE_SIGNER"])
    tokens = {}
    for spec in options.test_token:
        symbol, _, decimals = spec.partition(":")
        tokens[symbol] = deploy_test_token(rpc, key, symbol, int(decimals))
    json.dump({"chainId": rpc.chain_id(), "vault": vault, "tokens": tokens}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
