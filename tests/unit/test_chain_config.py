"""Assets name their token on the vault's chain; the chain's helpers that need no node."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from eth_account import Account

from common import keys
from common.chain import (
    ZERO_ADDRESS,
    DepositLog,
    configured,
    permit_message,
    sign_permit,
    withdrawal_key,
)
from common.eip712 import keccak256, to_checksum_address
from common.markets import MarketsFileError, parse_markets
from common.settings import DEFAULT_MARKETS_FILE

TOKEN = to_checksum_address("0xe7f1725e7734ce288f8367e1bb143e90bb3f0512")


def document(**tokens: Any) -> dict[str, Any]:
    doc = yaml.safe_load(DEFAULT_MARKETS_FILE.read_text())
    for asset, token in tokens.items():
        doc["assets"][asset]["token"] = token
    return dict(doc)


def test_an_asset_names_its_token_lower_case_and_publishes_it() -> None:
    markets = parse_markets(document(ETH=ZERO_ADDRESS, USDC=TOKEN))
    assert markets.assets["USDC"].token == TOKEN.lower()
    assert markets.assets["ETH"].token == ZERO_ADDRESS
    assert markets.assets["BTC"].token is None
    assert markets.assets["USDC"].public() == {"decimals": 6, "quantum": 1, "token": TOKEN.lower()}
    assert markets.assets["BTC"].public() == {"decimals": 8, "quantum": 1}


@pytest.mark.parametrize("token", ["0x123", "E7f1725E7734CE288F8367e1Bb143E90bb3F0512", 5, ""])
def test_a_token_that_is_not_an_address_is_refused(token: Any) -> None:
    with pytest.raises(MarketsFileError, match="USDC"):
        parse_markets(document(USDC=token))


def test_two_assets_cannot_name_one_token() -> None:
    with pytest.raises(MarketsFileError, match="already names another asset"):
        parse_markets(document(USDC=TOKEN, BTC=TOKEN.lower()))


def test_no_chain_configured_means_no_client() -> None:
    assert configured(None) is None
    assert configured("") is None
    assert configured("http://127.0.0.1:8545") is not None


def test_a_deposit_log_decodes_to_its_account_token_amount_and_id() -> None:
    account = "0x" + "ab" * 20
    log = {
        "transactionHash": "0x" + "CD" * 32,
        "logIndex": "0x3",
        "blockNumber": "0x10",
        "blockHash": "0x" + "ef" * 32,
        "topics": ["0x" + "00" * 32, "0x" + "00" * 12 + "ab" * 20, "0x" + "00" * 32],
        "data": "0x" + (10**18 + 5).to_bytes(32, "big").hex() + "00" * 12 + "11" * 20,
    }
    decoded = DepositLog.from_rpc(log)
    assert (decoded.account, decoded.token, decoded.amount) == (account, ZERO_ADDRESS, 10**18 + 5)
    assert decoded.deposit_id == "0x" + "cd" * 32 + ":3"
    assert decoded.block_number == 16


def test_a_permit_is_signed_by_the_bridge_key_for_the_withdrawal_ids_hash() -> None:
    key = Account.create().key.hex()
    message = permit_message("w-" + "0" * 32, "0x" + "ab" * 20, TOKEN, 10**18, 1_900_000_000)
    assert message["withdrawalId"] == withdrawal_key("w-" + "0" * 32)
    assert message["withdrawalId"] == keccak256(("w-" + "0" * 32).encode())
    signature = sign_permit(key, 31337, "0x" + "12" * 20, message)
    assert len(bytes.fromhex(signature[2:])) == 65
    assert sign_permit(key, 31337, "0x" + "12" * 20, message) == signature  # deterministic
    assert sign_permit(key, 1, "0x" + "12" * 20, message) != signature  # domain-bound


def test_the_bridge_keys_live_where_the_auditor_reads_them() -> None:
    user = "0x" + "ab" * 20
    assert keys.withdrawal_states(user).startswith(keys.balances(user).rpartition(":")[0])
    fields = (keys.chain_deposits_field, keys.chain_withdrawals_field, keys.chain_dust_field)
    assert [f("ETH") for f in fields] == ["ETH:cdep", "ETH:cwd", "ETH:cdust"]
