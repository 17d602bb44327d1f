"""The bridge through the real processes, a real redis-server and a real hardhat node.

A wallet deposits the chain's coin and a test token into the vault, sees them credited once
after the confirmations, trades, withdraws, and its on-chain balance rises by exactly the
amount (the bridge pays the gas). The bridge SIGKILLed at each step of a withdrawal pays it
exactly once; a deposit reorganised away before its confirmations is never credited; a
withdrawal whose permit cannot pay is FAILED and its amount returned once; the auditor's
chain invariant holds after all of it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from support.chain import (
    BRIDGE_KEY,
    DEPLOYER_KEY,
    NEXT_BRIDGE_KEY,
    OTHER_KEY,
    STRANGER_KEY,
    WALLET_KEY,
    HardhatNode,
    address,
    chain_node,  # noqa: F401 - the session's node
)
from support.exchange import ADMIN_TOKEN, Exchange
from support.redis_server import RedisServer, wait_for

from common import keys
from common.chain import ZERO_ADDRESS, calldata, paid
from common.eip712 import sign
from common.events import dumps
from services.bridge import deploy as deployer
from services.bridge.bridge import CRASH_POINTS

ETHER = 10**18
GWEI = 10**9
USDC = 10**6
CONFIRMATIONS = 2
MARKET = "ETH-USDC"
REPO_ROOT = Path(__file__).resolve().parents[2]
KILLED_AT = CRASH_POINTS if os.environ.get("DEX_FULL_TESTS") == "1" else ("after-send",)


class Chain:
    """The module's vault, token and node, and the exchange in front of them."""

    def __init__(self, node: HardhatNode, vault: str, token: str, exchange: Exchange) -> None:
        self.node, self.vault, self.token, self.exchange = node, vault, token, exchange
        self.chain_id = node.rpc.chain_id()

    def signed(self, key: str, primary: str, **message: Any) -> dict[str, Any]:
        message = {"userId": address(key), **message, "ts": int(time.time() * 1000)}
        return {**message, "sig": sign(key, primary, message, self.chain_id, self.vault)}

    def withdraw(self, key: str, asset: str, amount: int) -> str:
        with self.exchange.client() as http:
            response = http.post(
                "/v1/withdrawals",
                json=self.signed(key, "Withdraw", asset=asset, amount=str(amount)),
            )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "PENDING"
        return str(response.json()["withdrawalId"])

    def withdrawal(self, key: str, withdrawal_id: str) -> dict[str, Any]:
        listed = self.exchange.get(f"/v1/accounts/{address(key)}/withdrawals")
        return next(w for w in listed if w["withdrawalId"] == withdrawal_id)

    def wait_status(self, key: str, withdrawal_id: str, status: str, timeout: float = 20) -> None:
        def reached() -> bool:
            self.node.mine()  # blocks for the confirmations
            return self.withdrawal(key, withdrawal_id)["status"] == status

        assert wait_for(reached, timeout, interval=0.2), (
            self.withdrawal(key, withdrawal_id),
            self.exchange.log("bridge")[-3000:],
        )

    def total(self, key: str, asset: str) -> int:
        return self.exchange.balance(address(key), asset)[0]

    def wait_total(self, key: str, asset: str, amount: int, timeout: float = 20) -> None:
        assert wait_for(lambda: self.total(key, asset) == amount, timeout, interval=0.1), (
            self.total(key, asset),
            self.exchange.log("bridge")[-3000:],
        )

    def audit(self) -> dict[str, Any]:
        with self.exchange.client() as http:
            response = http.get(
                "/v1/admin/audit", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def restart_bridge(self, crash_at: str = "") -> None:
        if "bridge" in self.exchange.processes:
            self.exchange.kill("bridge")
        self.exchange.env["DEX_BRIDGE_CRASH_AT"] = crash_at
        self.exchange.start("bridge")


@pytest.fixture(scope="module")
def chain(
    chain_node: HardhatNode,  # noqa: F811
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Chain]:
    redis_server.flushall()
    rpc = chain_node.rpc
    vault = deployer.deploy_vault(rpc, DEPLOYER_KEY, address(BRIDGE_KEY))
    token = deployer.deploy_test_token(rpc, DEPLOYER_KEY, "USDC", 6)
    document = yaml.safe_load((REPO_ROOT / "deploy" / "markets.yaml").read_text())
    document["assets"]["ETH"]["token"] = ZERO_ADDRESS
    document["assets"]["USDC"]["token"] = token
    markets_file = tmp_path_factory.mktemp("bridge") / "markets.yaml"
    markets_file.write_text(yaml.safe_dump(document))
    exchange = Exchange(
        redis_server.url,
        DEX_MARKETS_FILE=str(markets_file),
        DEX_MATCHER_MARKETS=MARKET,
        DEX_CHAIN_ID=str(rpc.chain_id()),
        DEX_VERIFYING_CONTRACT=vault,
        DEX_CHAIN_RPC_URL=chain_node.url,
        DEX_BRIDGE_KEY=BRIDGE_KEY,
        DEX_BRIDGE_CONFIRMATIONS=str(CONFIRMATIONS),
        DEX_BRIDGE_POLL_S="0.05",
        DEX_BRIDGE_LEASE_S="1",
    )
    with exchange:
        exchange.start("gateway", "matcher", "settler", "bridge")
        yield Chain(chain_node, vault, token, exchange)


def test_a_wallet_deposits_trades_and_withdraws_to_the_wei(chain: Chain) -> None:
    node, vault, token = chain.node, chain.vault, chain.token
    seller, buyer = WALLET_KEY, OTHER_KEY
    # 2 ETH and 5 wei: the 5 wei are below ETH's quantum (1 gwei), left in the vault as dust.
    node.deposit_token(buyer, vault, token, address(buyer), 5_000 * USDC)
    node.deposit_coin(seller, vault, address(seller), 2 * ETHER + 5)  # one block on top
    time.sleep(0.3)  # several bridge polls: nothing is credited before its confirmations
    assert chain.total(seller, "ETH") == 0
    assert chain.total(buyer, "USDC") == 0
    node.mine(CONFIRMATIONS)
    chain.wait_total(seller, "ETH", 2 * ETHER)
    chain.wait_total(buyer, "USDC", 5_000 * USDC)
    node.mine(5)
    time.sleep(0.3)  # more polls over the same logs: still credited once
    assert chain.total(seller, "ETH") == 2 * ETHER
    assert chain.total(buyer, "USDC") == 5_000 * USDC

    # 0.5 ETH at 3,000.00 USDC: notional 1,500 USDC; maker fee 1 bp, taker fee 5 bp.
    order = {"market": MARKET, "type": "LIMIT", "price": 300_000, "qty": 5_000, "product": "SPOT"}
    with chain.exchange.client() as http:
        for key, side, cid in ((seller, "SELL", "ask-1"), (buyer, "BUY", "bid-1")):
            body = chain.signed(key, "Order", clientOrderId=cid, side=side, **order)
            response = http.post("/v1/orders", json=body)
            assert response.status_code in (200, 202), response.text
    chain.wait_total(seller, "USDC", 1_500 * USDC - 150_000)
    chain.wait_total(buyer, "ETH", ETHER // 2)
    assert chain.total(buyer, "USDC") == 3_500 * USDC - 750_000

    # Withdraw what the trade brought: each wallet's balance rises by exactly that.
    before_usdc = node.rpc.holdings(address(seller), token)
    before_eth = node.rpc.holdings(address(buyer), ZERO_ADDRESS)
    vault_eth = node.rpc.holdings(vault, ZERO_ADDRESS)
    usdc_out = chain.withdraw(seller, "USDC", 1_500 * USDC - 150_000)
    eth_out = chain.withdraw(buyer, "ETH", ETHER // 2)
    chain.wait_status(seller, usdc_out, "CONFIRMED")
    chain.wait_status(buyer, eth_out, "CONFIRMED")
    assert node.rpc.holdings(address(seller), token) == before_usdc + 1_500 * USDC - 150_000
    assert node.rpc.holdings(address(buyer), ZERO_ADDRESS) == before_eth + ETHER // 2
    assert node.rpc.holdings(vault, ZERO_ADDRESS) == vault_eth - ETHER // 2
    assert chain.total(seller, "USDC") == 0
    assert chain.total(buyer, "ETH") == 0
    assert chain.withdrawal(buyer, eth_out)["txHash"].startswith("0x")

    # The relayer's stream may carry a record twice (the gateway's sweeper): paid once still.
    client = redis.Redis.from_url(chain.exchange.redis_url, decode_responses=True)
    record = {"withdrawalId": eth_out, "userId": address(buyer), "asset": "ETH",
              "amount": str(ETHER // 2), "status": "PENDING", "ts": 0}  # fmt: skip
    client.xadd(keys.withdrawal_requests(), {"w": dumps(record)})
    assert wait_for(lambda: not _bridge_backlog(client), 10)
    assert node.rpc.holdings(address(buyer), ZERO_ADDRESS) == before_eth + ETHER // 2
    assert chain.total(buyer, "ETH") == 0

    report = chain.audit()
    assert report["ok"], report["invariants"]
    assert report["invariants"]["vaultHoldings"] == {"ok": True}
    assert report["chain"]["ETH"]["dust"] == "5"


def test_the_bridge_killed_at_every_withdrawal_step_in_turn_pays_exactly_once(
    chain: Chain,
) -> None:
    """One withdrawal; the bridge SIGKILLs itself at each step in turn (before signing, after
    signing and recording, after sending, after the payout and before recording it), each
    restart resuming from what the last one recorded, and the vault pays it once. Without
    DEX_FULL_TESTS=1 only after sending, where a second payout would come from (each restart
    costs seconds on a busy machine)."""
    node, vault, wallet = chain.node, chain.vault, STRANGER_KEY
    on_exchange = chain.total(wallet, "ETH")
    node.deposit_coin(wallet, vault, address(wallet), ETHER)
    node.mine(CONFIRMATIONS)
    chain.wait_total(wallet, "ETH", on_exchange + ETHER)
    on_chain = node.rpc.holdings(address(wallet), ZERO_ADDRESS)
    vault_before = node.rpc.holdings(vault, ZERO_ADDRESS)
    amount = 123_456_789 * GWEI
    chain.restart_bridge(crash_at=KILLED_AT[0])
    withdrawal_id = chain.withdraw(wallet, "ETH", amount)
    for crash_at, then in zip(KILLED_AT, [*KILLED_AT[1:], ""], strict=True):
        bridge = chain.exchange.processes["bridge"]

        def died(bridge: Any = bridge) -> bool:
            node.mine()
            return bridge.poll() is not None

        assert wait_for(died, 20, interval=0.2), chain.exchange.log("bridge")[-2000:]
        assert bridge.returncode == -9, crash_at
        assert f"DEX_BRIDGE_CRASH_AT={crash_at}" in chain.exchange.log("bridge")
        chain.exchange.processes.pop("bridge")
        chain.restart_bridge(crash_at=then)
    chain.wait_status(wallet, withdrawal_id, "CONFIRMED")
    assert paid(node.rpc, vault, withdrawal_id)
    assert node.rpc.holdings(address(wallet), ZERO_ADDRESS) == on_chain + amount
    assert node.rpc.holdings(vault, ZERO_ADDRESS) == vault_before - amount
    assert chain.total(wallet, "ETH") == on_exchange + ETHER - amount


def test_a_deposit_reorganised_away_before_its_confirmations_is_never_credited(
    chain: Chain,
) -> None:
    node, vault, wallet = chain.node, chain.vault, STRANGER_KEY
    credited = chain.total(wallet, "USDC")
    node.transact(
        wallet,
        chain.token,
        calldata("mint(address,uint256)", ["address", "uint256"], [address(wallet), 777 * USDC]),
    )
    node.transact(
        wallet,
        chain.token,
        calldata("approve(address,uint256)", ["address", "uint256"], [vault, 777 * USDC]),
    )
    snapshot = node.snapshot()
    deposit = calldata(
        "depositToken(address,address,uint256)",
        ["address", "address", "uint256"],
        [chain.token, address(wallet), 777 * USDC],
    )
    receipt = node.transact(wallet, vault, deposit)
    node.mine(CONFIRMATIONS - 1)  # one block short of its confirmations
    time.sleep(0.3)
    assert chain.total(wallet, "USDC") == credited
    node.revert(snapshot)  # the deposit's blocks are replaced by empty ones
    node.mine(CONFIRMATIONS + 5)
    deposit_block = int(receipt["blockNumber"], 16)
    client = redis.Redis.from_url(chain.exchange.redis_url, decode_responses=True)
    assert wait_for(
        lambda: int(client.hget(keys.bridge_cursor(), "block") or 0) > deposit_block, 10
    )
    assert node.rpc.receipt(receipt["transactionHash"]) is None
    assert chain.total(wallet, "USDC") == credited
    assert not client.hexists(
        keys.account_deposits(address(wallet)), f"{receipt['transactionHash']}:0"
    )


def test_a_reorganisation_deeper_than_the_confirmations_halts_deposits_until_an_operator_acts(
    chain: Chain,
) -> None:
    node, vault, wallet = chain.node, chain.vault, STRANGER_KEY
    client = redis.Redis.from_url(chain.exchange.redis_url, decode_responses=True)
    credited = chain.total(wallet, "ETH")
    cursor = client.hgetall(keys.bridge_cursor())
    # As if the cursor's block had been replaced after its deposits were credited.
    client.hset(keys.bridge_cursor(), "hash", "0x" + "00" * 32)
    assert wait_for(lambda: client.exists(keys.bridge_halt()), 10)
    assert "reorganisation deeper than 2 confirmations" in str(client.get(keys.bridge_halt()))
    node.deposit_coin(wallet, vault, address(wallet), 3 * GWEI)
    node.mine(CONFIRMATIONS + 2)
    time.sleep(0.3)
    assert chain.total(wallet, "ETH") == credited  # halted: nothing credited
    # The operator's fix (docs/operations.md): the cursor at the common ancestor, then resume.
    client.hset(keys.bridge_cursor(), mapping=cursor)
    client.delete(keys.bridge_halt())
    chain.wait_total(wallet, "ETH", credited + 3 * GWEI)


def test_a_withdrawal_the_vault_cannot_pay_fails_and_returns_the_amount_once(
    chain: Chain,
) -> None:
    node, wallet = chain.node, DEPLOYER_KEY
    # An operator's deposit is not in the vault: the vault cannot pay it out.
    chain.exchange.deposit(address(wallet), "USDC", 10**15)
    withdrawal_id = chain.withdraw(wallet, "USDC", 10**15)
    assert chain.total(wallet, "USDC") == 0
    chain.wait_status(wallet, withdrawal_id, "SENT")
    node.increase_time(2 * 3600)  # past the permit's deadline, unpaid
    chain.wait_status(wallet, withdrawal_id, "FAILED")
    chain.wait_total(wallet, "USDC", 10**15)
    node.mine(5)
    time.sleep(0.3)
    assert chain.total(wallet, "USDC") == 10**15
    assert not paid(node.rpc, chain.vault, withdrawal_id)
    # An asset with no token on the chain cannot leave through the vault: FAILED, returned.
    chain.exchange.deposit(address(wallet), "BTC", 5)
    btc_out = chain.withdraw(wallet, "BTC", 5)
    chain.wait_status(wallet, btc_out, "FAILED")
    chain.wait_total(wallet, "BTC", 5)


@pytest.mark.skipif(
    os.environ.get("DEX_FULL_TESTS") != "1", reason="a bridge restart: DEX_FULL_TESTS=1 runs it"
)
def test_after_a_signer_rotation_a_sent_withdrawal_is_paid_once_under_the_new_key(
    chain: Chain,
) -> None:
    node, vault, token, wallet = chain.node, chain.vault, chain.token, WALLET_KEY
    client = redis.Redis.from_url(chain.exchange.redis_url, decode_responses=True)
    # 42 USDC more than the vault holds (an operator's deposit, unbacked): the payout waits,
    # SENT under the old key's permit.
    amount = node.rpc.holdings(vault, token) + 42 * USDC
    chain.exchange.deposit(address(wallet), "USDC", amount)
    withdrawal_id = chain.withdraw(wallet, "USDC", amount)
    chain.wait_status(wallet, withdrawal_id, "SENT")
    old_state = client.hget(keys.withdrawal_states(address(wallet)), withdrawal_id)
    assert old_state is not None and address(BRIDGE_KEY) in old_state
    node.transact(DEPLOYER_KEY, vault, calldata("setSigner(address)", ["address"],
                                                [address(NEXT_BRIDGE_KEY)]))  # fmt: skip
    chain.exchange.env["DEX_BRIDGE_KEY"] = NEXT_BRIDGE_KEY
    chain.restart_bridge()
    before = node.rpc.holdings(address(wallet), token)
    node.deposit_token(OTHER_KEY, vault, token, address(OTHER_KEY), 42 * USDC)  # now it can pay
    chain.wait_status(wallet, withdrawal_id, "CONFIRMED")
    state = client.hget(keys.withdrawal_states(address(wallet)), withdrawal_id)
    assert state is not None and address(NEXT_BRIDGE_KEY) in state
    assert node.rpc.holdings(address(wallet), token) == before + amount
    node.mine(5)
    time.sleep(0.3)
    assert node.rpc.holdings(address(wallet), token) == before + amount
    assert node.rpc.holdings(vault, token) == 0


def test_the_readmes_deposit_from_a_wallet_is_credited_as_it_shows(
    chain: Chain, tmp_path: Path
) -> None:
    """README.md's "A deposit from a wallet" as its reader runs it beside ``make run``:
    var/chain.json in the working directory, this node's and gateway's URLs for 8545's and
    8000's, and blocks mined a few a second while it runs (``make run``'s node mines one a
    second; this one only when asked)."""
    section = (REPO_ROOT / "README.md").read_text().split("## A deposit from a wallet", 1)[1]
    found = re.search(r"```sh\n(.*?)```", section, flags=re.S)
    assert found is not None
    block = found.group(1)
    wallet = OTHER_KEY  # hardhat's development account #3, the README's
    assert f"ME={address(wallet).removeprefix('0x')}\n" in block
    claimed = json.loads(block.rstrip().rsplit("\n# ", 1)[1])  # the answer its comment shows
    assert chain.total(wallet, "ETH") == 0  # withdrawn by the first test: the README's start
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "chain.json").write_text(json.dumps({"vault": chain.vault}))
    script = block.replace("http://127.0.0.1:8545", chain.node.url).replace(
        "http://127.0.0.1:8000", chain.exchange.http
    )
    assert "127.0.0.1:8545" not in script and "127.0.0.1:8000" not in script
    done = threading.Event()

    def mine() -> None:
        while not done.wait(0.3):
            chain.node.mine()

    miner = threading.Thread(target=mine, daemon=True)
    miner.start()
    try:
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        done.set()
        miner.join()
    assert run.returncode == 0, run.stdout + run.stderr
    sent, end = json.JSONDecoder().raw_decode(run.stdout)  # curl -s: the answers on one line
    assert str(sent["result"]).startswith("0x"), sent  # the transaction's hash
    assert (
        {"ETH": json.loads(run.stdout[end:])["ETH"]}
        == claimed
        == {"ETH": {"total": str(ETHER), "available": str(ETHER), "locked": "0"}}
    )
    assert chain.total(wallet, "ETH") == ETHER


def test_the_auditor_chain_invariant_holds_after_all_of_it(chain: Chain) -> None:
    node = chain.node
    client = redis.Redis.from_url(chain.exchange.redis_url, decode_responses=True)

    def quiet() -> bool:
        node.mine()
        return not _bridge_backlog(client)

    assert wait_for(quiet, 20, interval=0.2)
    node.mine(CONFIRMATIONS + 1)
    head = node.head()
    assert wait_for(
        lambda: int(client.hget(keys.bridge_cursor(), "block") or 0) >= head - CONFIRMATIONS, 10
    )
    report = chain.audit()
    assert report["invariants"]["vaultHoldings"] == {"ok": True}, report["chain"]
    assert report["ok"], report["invariants"]
    for asset in ("ETH", "USDC"):
        assert report["chain"][asset]["difference"] == "0"


def _bridge_backlog(client: redis.Redis) -> int:
    """Withdrawal entries the bridge has not finished (read and not acked, or not read)."""
    groups = client.xinfo_groups(keys.withdrawal_requests())
    group = next(g for g in groups if g["name"] == keys.BRIDGE_GROUP)
    return int(group["pending"]) + int(group.get("lag") or 0)
