"""The vault contract alone on a real hardhat node: deposits, permits paid once, refusals.

Every refusal is checked for what it did not do: the vault's and the recipient's balances are
unchanged to the wei, and ``paid`` stays false.
"""

from __future__ import annotations

from typing import Any

import pytest
from support.chain import (
    BRIDGE_KEY,
    DEPLOYER_KEY,
    OTHER_KEY,
    STRANGER_KEY,
    WALLET_KEY,
    HardhatNode,
    address,
    chain_node,  # noqa: F401 - the session's node
)

from common.chain import (
    ZERO_ADDRESS,
    ChainError,
    DepositLog,
    calldata,
    paid,
    permit_message,
    selector,
    sign_permit,
    withdraw_calldata,
)
from services.bridge import deploy as deployer

ETHER = 10**18
WALLET = address(WALLET_KEY)
RECIPIENT = address(STRANGER_KEY)


@pytest.fixture(scope="module")
def contracts(chain_node: HardhatNode) -> dict[str, str]:  # noqa: F811
    rpc = chain_node.rpc
    vault = deployer.deploy_vault(rpc, DEPLOYER_KEY, address(BRIDGE_KEY))
    token = deployer.deploy_test_token(rpc, DEPLOYER_KEY, "USDC", 6)
    chain_node.deposit_coin(WALLET_KEY, vault, WALLET, 5 * ETHER)
    chain_node.deposit_token(WALLET_KEY, vault, token, WALLET, 1_000_000_000)
    return {"vault": vault, "token": token}


def _permit(
    node: HardhatNode,
    vault: str,
    wid: str,
    token: str,
    amount: int,
    *,
    key: str = BRIDGE_KEY,
    deadline: int | None = None,
    chain_id: int | None = None,
) -> tuple[dict[str, Any], str]:
    now = int(node.rpc.call("eth_getBlockByNumber", "latest", False)["timestamp"], 16)
    message = permit_message(wid, RECIPIENT, token, amount, deadline or now + 3600)
    return message, sign_permit(key, chain_id or node.rpc.chain_id(), vault, message)


ERRORS = {
    "AlreadyPaid": "AlreadyPaid(bytes32)",
    "BadSignature": "BadSignature()",
    "PermitExpired": "PermitExpired(uint256)",
    "NotOwner": "NotOwner()",
}


def _refused(node: HardhatNode, key: str, vault: str, data: str, reason: str) -> None:
    """The call reverts with the vault's error ``reason``, and a transaction of it fails."""
    with pytest.raises(ChainError, match="0x" + selector(ERRORS[reason]).hex()):
        node.rpc.call("eth_call", {"from": address(key), "to": vault, "data": data}, "latest")
    with pytest.raises(ChainError):
        node.transact(key, vault, data)


def test_deposits_name_the_account_and_the_vault_holds_them(
    chain_node: HardhatNode,  # noqa: F811
    contracts: dict[str, str],
) -> None:
    vault, token = contracts["vault"], contracts["token"]
    logs = chain_node.rpc.deposit_logs(vault, 0, chain_node.head())
    assert [(log.account, log.token, log.amount) for log in logs] == [
        (WALLET, ZERO_ADDRESS, 5 * ETHER),
        (WALLET, token, 1_000_000_000),
    ]
    assert all(isinstance(log, DepositLog) and log.deposit_id.startswith("0x") for log in logs)
    assert chain_node.rpc.holdings(vault, ZERO_ADDRESS) >= 5 * ETHER
    assert chain_node.rpc.holdings(vault, token) >= 1_000_000_000


def test_coin_sent_without_naming_an_account_is_refused(
    chain_node: HardhatNode,  # noqa: F811
    contracts: dict[str, str],
) -> None:
    before = chain_node.rpc.holdings(contracts["vault"], ZERO_ADDRESS)
    with pytest.raises(ChainError):
        chain_node.transact(WALLET_KEY, contracts["vault"], "0x", ETHER)
    assert chain_node.rpc.holdings(contracts["vault"], ZERO_ADDRESS) == before


@pytest.mark.parametrize("asset", ["coin", "token"])
def test_a_permit_pays_exactly_once(
    chain_node: HardhatNode,  # noqa: F811
    contracts: dict[str, str],
    asset: str,
) -> None:
    vault = contracts["vault"]
    token = ZERO_ADDRESS if asset == "coin" else contracts["token"]
    amount = ETHER // 3 if asset == "coin" else 123_456
    wid = f"w-once-{asset}"
    message, signature = _permit(chain_node, vault, wid, token, amount)
    data = withdraw_calldata(message, signature)
    vault_before = chain_node.rpc.holdings(vault, token)
    recipient_before = chain_node.rpc.holdings(RECIPIENT, token)
    assert not paid(chain_node.rpc, vault, wid)
    # Anyone may submit the permit (here the wallet pays the gas); only `to` receives.
    chain_node.transact(OTHER_KEY, vault, data)
    assert paid(chain_node.rpc, vault, wid)
    assert chain_node.rpc.holdings(RECIPIENT, token) == recipient_before + amount
    assert chain_node.rpc.holdings(vault, token) == vault_before - amount
    _refused(chain_node, OTHER_KEY, vault, data, "AlreadyPaid")
    assert chain_node.rpc.holdings(RECIPIENT, token) == recipient_before + amount
    assert chain_node.rpc.holdings(vault, token) == vault_before - amount


def test_forged_altered_expired_and_foreign_permits_are_refused(
    chain_node: HardhatNode,  # noqa: F811
    contracts: dict[str, str],
) -> None:
    vault, rpc = contracts["vault"], chain_node.rpc
    vault_before = rpc.holdings(vault, ZERO_ADDRESS)
    wid = "w-refused"
    # signed by a key that is not the vault's signer
    message, forged = _permit(chain_node, vault, wid, ZERO_ADDRESS, ETHER, key=STRANGER_KEY)
    _refused(chain_node, OTHER_KEY, vault, withdraw_calldata(message, forged), "BadSignature")
    # the signer's permit, with a larger amount
    message, signature = _permit(chain_node, vault, wid, ZERO_ADDRESS, ETHER)
    altered = {**message, "amount": 2 * ETHER}
    _refused(chain_node, OTHER_KEY, vault, withdraw_calldata(altered, signature), "BadSignature")
    # the malleable twin of a valid signature (s -> n - s, v flipped)
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    raw = bytes.fromhex(signature[2:])
    twin = raw[:32] + (n - int.from_bytes(raw[32:64], "big")).to_bytes(32, "big")
    twin += bytes([55 - raw[64]])
    _refused(chain_node, OTHER_KEY, vault, withdraw_calldata(message, "0x" + twin.hex()),
             "BadSignature")  # fmt: skip
    # signed for another chain, and for another vault
    message, other_chain = _permit(chain_node, vault, wid, ZERO_ADDRESS, ETHER, chain_id=1)
    _refused(chain_node, OTHER_KEY, vault, withdraw_calldata(message, other_chain),
             "BadSignature")  # fmt: skip
    other_vault_sig = sign_permit(BRIDGE_KEY, rpc.chain_id(), contracts["token"], message)
    _refused(chain_node, OTHER_KEY, vault, withdraw_calldata(message, other_vault_sig),
             "BadSignature")  # fmt: skip
    # past its deadline
    now = int(rpc.call("eth_getBlockByNumber", "latest", False)["timestamp"], 16)
    message, expired = _permit(chain_node, vault, wid, ZERO_ADDRESS, ETHER, deadline=now - 1)
    _refused(chain_node, OTHER_KEY, vault, withdraw_calldata(message, expired), "PermitExpired")
    assert not paid(rpc, vault, wid)
    assert rpc.holdings(vault, ZERO_ADDRESS) == vault_before


def test_the_owner_rotates_the_signer_and_only_the_owner(
    chain_node: HardhatNode,  # noqa: F811
    contracts: dict[str, str],
) -> None:
    rpc = chain_node.rpc
    vault = deployer.deploy_vault(rpc, DEPLOYER_KEY, address(BRIDGE_KEY))
    chain_node.deposit_coin(WALLET_KEY, vault, WALLET, ETHER)
    rotate = calldata("setSigner(address)", ["address"], [address(OTHER_KEY)])
    _refused(chain_node, STRANGER_KEY, vault, rotate, "NotOwner")
    chain_node.transact(DEPLOYER_KEY, vault, rotate)
    message, old = _permit(chain_node, vault, "w-rotated", ZERO_ADDRESS, ETHER // 2)
    _refused(chain_node, OTHER_KEY, vault, withdraw_calldata(message, old), "BadSignature")
    new = sign_permit(OTHER_KEY, rpc.chain_id(), vault, message)
    before = rpc.holdings(RECIPIENT, ZERO_ADDRESS)
    chain_node.transact(WALLET_KEY, vault, withdraw_calldata(message, new))
    assert rpc.holdings(RECIPIENT, ZERO_ADDRESS) == before + ETHER // 2
