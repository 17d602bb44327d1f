"""The vault contract on an EVM chain, over plain JSON-RPC (docs/operations.md "The chain").

What the bridge and the auditor need of the chain and nothing more: blocks, the vault's
``Deposited`` logs, its ``paid`` mapping, its holdings of an asset, and sending a signed
transaction. ABI words are encoded with eth-abi (eth-account's own dependency) and
transactions signed with eth-account, so no web3 library is needed. The chain's coin is
named by the zero address, as the vault names it.

The withdrawal permit is an EIP-712 struct under the exchange's own domain (the vault is its
``verifyingContract``), signed by the bridge's key, which the vault knows as ``signer``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Final

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data

from common.eip712 import DOMAIN_NAME, DOMAIN_VERSION, keccak256, to_checksum_address

ZERO_ADDRESS: Final = "0x0000000000000000000000000000000000000000"
DEPOSITED_TOPIC: Final = "0x" + keccak256(b"Deposited(address,address,uint256,address)").hex()
PERMIT_FIELDS: Final = [
    {"name": "withdrawalId", "type": "bytes32"},
    {"name": "to", "type": "address"},
    {"name": "token", "type": "address"},
    {"name": "amount", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]
WITHDRAW_GAS: Final = 200_000
"""Gas limit of a vault withdrawal: a coin payout or one ERC-20 transfer uses under 80,000."""


class ChainError(RuntimeError):
    """The node answered with an error, or did not answer."""


def selector(signature: str) -> bytes:
    """The 4-byte function selector of ``signature`` (``"paid(bytes32)"``)."""
    return keccak256(signature.encode())[:4]


def calldata(signature: str, types: list[str], values: list[Any]) -> str:
    """Hex calldata for a call of ``signature`` with ``values`` of ABI ``types``."""
    return "0x" + (selector(signature) + abi_encode(types, values)).hex()


class Rpc:
    """A JSON-RPC client of one node (``DEX_CHAIN_RPC_URL``)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout
        self._id = 0

    def call(self, method: str, *params: Any) -> Any:
        """The ``result`` of ``method``; :class:`ChainError` for an error or no answer."""
        self._id += 1
        body = json.dumps({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params})
        request = urllib.request.Request(
            self.url, data=body.encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except (OSError, urllib.error.URLError, ValueError) as exc:
            raise ChainError(f"{method} to {self.url}: no answer ({exc})") from exc
        if answer.get("error"):
            error = answer["error"]
            raise ChainError(f"{method}: {error.get('message', error)}")
        return answer.get("result")

    # -- reads ---------------------------------------------------------------------------
    def block_number(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def block_hash(self, number: int) -> str | None:
        block = self.call("eth_getBlockByNumber", hex(number), False)
        return None if block is None else str(block["hash"])

    def chain_id(self) -> int:
        return int(self.call("eth_chainId"), 16)

    def eth_call(self, to: str, data: str, block: str = "latest") -> bytes:
        return bytes.fromhex(self.call("eth_call", {"to": to, "data": data}, block)[2:])

    def coin_balance(self, address: str, block: str = "latest") -> int:
        return int(self.call("eth_getBalance", address, block), 16)

    def token_balance(self, token: str, holder: str, block: str = "latest") -> int:
        data = calldata("balanceOf(address)", ["address"], [holder])
        return int(abi_decode(["uint256"], self.eth_call(token, data, block))[0])

    def holdings(self, holder: str, token: str, block: str = "latest") -> int:
        """What ``holder`` holds of ``token`` (the zero address: the chain's coin), atomic,
        as of ``block`` (a number in hex, or a tag)."""
        if int(token, 16) == 0:
            return self.coin_balance(holder, block)
        return self.token_balance(token, holder, block)

    def nonce(self, address: str) -> int:
        return int(self.call("eth_getTransactionCount", address, "pending"), 16)

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        answer = self.call("eth_getTransactionReceipt", tx_hash)
        return answer if answer else None

    def transaction(self, tx_hash: str) -> dict[str, Any] | None:
        answer = self.call("eth_getTransactionByHash", tx_hash)
        return answer if answer else None

    def send_raw(self, raw: str) -> str:
        return str(self.call("eth_sendRawTransaction", raw))

    def deposit_logs(self, vault: str, first: int, last: int) -> list[DepositLog]:
        """The vault's ``Deposited`` logs in blocks ``first..last``, in chain order."""
        logs = self.call(
            "eth_getLogs",
            {
                "address": vault,
                "fromBlock": hex(first),
                "toBlock": hex(last),
                "topics": [DEPOSITED_TOPIC],
            },
        )
        return [DepositLog.from_rpc(log) for log in logs if not log.get("removed")]


@dataclass(frozen=True, slots=True)
class DepositLog:
    """One ``Deposited(account, token, amount, from)`` event of the vault."""

    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    account: str
    token: str
    amount: int

    @property
    def deposit_id(self) -> str:
        """The business id the credit is keyed by: ``<txhash>:<logIndex>``."""
        return f"{self.tx_hash}:{self.log_index}"

    @classmethod
    def from_rpc(cls, log: dict[str, Any]) -> DepositLog:
        topics = log["topics"]
        amount, _sender = abi_decode(["uint256", "address"], bytes.fromhex(log["data"][2:]))
        return cls(
            tx_hash=str(log["transactionHash"]).lower(),
            log_index=int(log["logIndex"], 16),
            block_number=int(log["blockNumber"], 16),
            block_hash=str(log["blockHash"]).lower(),
            account="0x" + topics[1][-40:].lower(),
            token="0x" + topics[2][-40:].lower(),
            amount=int(amount),
        )


def configured(rpc_url: str | None) -> Rpc | None:
    """A client of ``DEX_CHAIN_RPC_URL``, or None when no chain is configured."""
    return Rpc(rpc_url) if rpc_url else None


# -- the vault's writes and its permit -----------------------------------------------------
def withdrawal_key(withdrawal_id: str) -> bytes:
    """The vault's bytes32 for an exchange withdrawal id (``w-<32 hex>``): its keccak-256."""
    return keccak256(withdrawal_id.encode())


def permit_message(
    withdrawal_id: str, to: str, token: str, amount: int, deadline: int
) -> dict[str, Any]:
    return {
        "withdrawalId": withdrawal_key(withdrawal_id),
        "to": to_checksum_address(to),
        "token": to_checksum_address(token),
        "amount": amount,
        "deadline": deadline,
    }


def sign_permit(key: str, chain_id: int, vault: str, message: dict[str, Any]) -> str:
    """The signer's 65-byte EIP-712 signature (hex) of a ``WithdrawalPermit``."""
    signable = encode_typed_data(
        full_message={
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "WithdrawalPermit": PERMIT_FIELDS,
            },
            "primaryType": "WithdrawalPermit",
            "domain": {
                "name": DOMAIN_NAME,
                "version": DOMAIN_VERSION,
                "chainId": chain_id,
                "verifyingContract": to_checksum_address(vault),
            },
            "message": message,
        }
    )
    return "0x" + bytes(Account.sign_message(signable, key).signature).hex()


def withdraw_calldata(message: dict[str, Any], signature: str) -> str:
    return calldata(
        "withdraw(bytes32,address,address,uint256,uint256,bytes)",
        ["bytes32", "address", "address", "uint256", "uint256", "bytes"],
        [
            message["withdrawalId"],
            message["to"],
            message["token"],
            message["amount"],
            message["deadline"],
            bytes.fromhex(signature[2:]),
        ],
    )


def paid(rpc: Rpc, vault: str, withdrawal_id: str, block: str = "latest") -> bool:
    """The vault's word on whether ``withdrawal_id`` was paid (as of ``block``, a number in hex
    or a tag): the truth a relayer trusts."""
    answer = rpc.eth_call(
        vault, calldata("paid(bytes32)", ["bytes32"], [withdrawal_key(withdrawal_id)]), block
    )
    return bool(abi_decode(["bool"], answer)[0])


def sign_transaction(
    key: str,
    chain_id: int,
    nonce: int,
    to: str | None,
    data: str,
    gas: int,
    gas_price: int,
    value: int = 0,
) -> tuple[str, str]:
    """A signed legacy (EIP-155) transaction: ``(raw hex, tx hash)``."""
    tx: dict[str, Any] = {
        "chainId": chain_id,
        "nonce": nonce,
        "gas": gas,
        "gasPrice": gas_price,
        "value": value,
        "data": data,
    }
    if to is not None:
        tx["to"] = to_checksum_address(to)
    signed = Account.sign_transaction(tx, key)
    return "0x" + bytes(signed.raw_transaction).hex(), "0x" + bytes(signed.hash).hex()
