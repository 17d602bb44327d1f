"""The bridge's work, one tick at a time: credit confirmed vault deposits, relay withdrawals.

Deposits. The cursor (``dex:bridge:cursor``: a block and its hash) says up to which block every
``Deposited`` log is credited. A tick reads the logs of the blocks after it up to
``head − confirmations``, credits each through chain_deposit.lua keyed ``<txhash>:<logIndex>``
(a second credit of the same log is refused there), then moves the cursor. A kill between the
two credits nothing twice: the replayed logs are refused as duplicates. A block reorganised
away before its confirmations was never read; one reorganised after (the cursor's block hash
changed) halts the deposits (``dex:bridge:halt``) for an operator (docs/operations.md).

Withdrawals. ``dex:withdrawal-requests`` is read with the consumer group ``bridge`` (own
pending entries first, so a restart resumes where the last process died); an entry is acked
only when its withdrawal is final. Each step is recorded before the next is taken:

1. PENDING -> SENT: sign the permit and the transaction that submits it, record both
   (withdrawal_step.lua), only then send. A kill before the record leaves PENDING and signs
   anew; after it, the recorded transaction is sent again (same nonce, same hash).
2. The vault's ``paid`` mapping is the truth: paid at ``head − confirmations`` -> CONFIRMED.
3. Not paid, and the permit's deadline is behind the confirmed chain time -> FAILED, the amount
   returned once (withdrawal_step.lua refuses a second final step). Otherwise the transaction
   is (re)sent, or signed anew with a fresh nonce when its nonce went to another one or it
   reverted.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

from eth_account import Account

from common import keys
from common.chain import (
    WITHDRAW_GAS,
    ChainError,
    DepositLog,
    Rpc,
    calldata,
    paid,
    permit_message,
    sign_permit,
    sign_transaction,
    withdraw_calldata,
)
from common.events import dumps, loads
from common.lua import ScriptSet
from common.markets import Asset, MarketSet
from common.money import LIMIT
from services.bridge.settings import BridgeSettings

log = logging.getLogger("bridge")

LUA_DIR = Path(__file__).parent / "lua"
MAX_SAFE_INTEGER = LIMIT - 1
RECORD_FIELD = "w"
FINAL = ("CONFIRMED", "FAILED")
READ_COUNT = 100
CRASH_POINTS = ("before-sign", "after-sign", "after-send", "before-confirm")


class Bridge:
    """One bridge's view of the vault, the markets' tokens and Redis."""

    def __init__(self, settings: BridgeSettings, client: Any, rpc: Rpc, markets: MarketSet):
        if settings.bridge_key is None or not settings.bridge_key.get_secret_value():
            raise SystemExit("DEX_BRIDGE_KEY is not set: the bridge signs permits with it")
        self.settings = settings
        self.client = client
        self.rpc = rpc
        self.key = settings.bridge_key.get_secret_value()
        self.address = str(Account.from_key(self.key).address).lower()
        self.vault = settings.verifying_contract.lower()
        self.chain_id = settings.chain_id
        self.confirmations = settings.bridge_confirmations
        self.tokens: dict[str, Asset] = {
            asset.token: asset for asset in markets.assets.values() if asset.token is not None
        }
        self.assets = markets.assets
        self.scripts = ScriptSet(client, LUA_DIR)
        self.group_ready = False

    def check_chain(self) -> None:
        """Refuse to start against another chain or an address without the vault's code."""
        chain_id = self.rpc.chain_id()
        if chain_id != self.chain_id:
            raise SystemExit(
                f"the node at DEX_CHAIN_RPC_URL is chain {chain_id}, "
                f"DEX_CHAIN_ID says {self.chain_id}"
            )
        if self.rpc.call("eth_getCode", self.vault, "latest") in (None, "0x"):
            raise SystemExit(f"no contract at DEX_VERIFYING_CONTRACT {self.vault}")
        signer = self.rpc.eth_call(self.vault, calldata("signer()", [], []))[-20:]
        if "0x" + signer.hex() != self.address:
            log.error(
                "the vault's signer is 0x%s, not this bridge's key %s: its permits will "
                "be refused until the owner rotates it",
                signer.hex(),
                self.address,
            )

    def tick(self) -> None:
        """One round: deposits, then withdrawals."""
        self.follow_deposits()
        self.relay_withdrawals()

    def crash_point(self, point: str) -> None:
        if self.settings.bridge_crash_at == point:
            log.warning("DEX_BRIDGE_CRASH_AT=%s: killing myself", point)
            os.kill(os.getpid(), signal.SIGKILL)

    # -- deposits ------------------------------------------------------------------------
    def follow_deposits(self) -> int:
        """Credit the deposits of the newly confirmed blocks; how many logs were read."""
        if halted := self.client.get(keys.bridge_halt()):
            log.error("deposits halted: %s", halted)
            return 0
        head = self.rpc.block_number()
        cursor = self.client.hgetall(keys.bridge_cursor())
        last = int(cursor["block"]) if cursor else self.settings.bridge_start_block - 1
        if cursor and self.rpc.block_hash(last) != cursor["hash"]:
            reason = (
                f"block {last} was {cursor['hash']} when its deposits were credited and is "
                f"{self.rpc.block_hash(last)} now: a reorganisation deeper than "
                f"{self.confirmations} confirmations"
            )
            self.client.set(keys.bridge_halt(), reason)
            log.error("deposits halted: %s", reason)
            return 0
        upto = min(head - self.confirmations, last + self.settings.bridge_log_blocks)
        if upto <= last:
            return 0
        block_hash = self.rpc.block_hash(upto)
        logs = self.rpc.deposit_logs(self.vault, last + 1, upto)
        if self.rpc.block_hash(upto) != block_hash:
            return 0  # the chain moved under the read: read again next round
        for deposit in logs:
            self.credit(deposit)
        self.client.hset(keys.bridge_cursor(), mapping={"block": upto, "hash": block_hash})
        return len(logs)

    def credit(self, deposit: DepositLog) -> None:
        asset = self.tokens.get(deposit.token)
        if asset is None:
            log.warning(
                "deposit %s of token %s, which no asset names: left in the vault",
                deposit.deposit_id,
                deposit.token,
            )
            return
        quanta, dust = divmod(deposit.amount, asset.quantum)
        if quanta > MAX_SAFE_INTEGER:
            log.error(
                "deposit %s of %d %s reaches 2^53 quanta: not credited",
                deposit.deposit_id,
                deposit.amount,
                asset.symbol,
            )
            return
        self.client.sadd(keys.known_accounts(), deposit.account)
        try:
            self.scripts["chain_deposit"](
                keys=[keys.balances(deposit.account), keys.account_deposits(deposit.account)],
                args=[asset.symbol, quanta, MAX_SAFE_INTEGER, deposit.deposit_id, dust],
            )
        except Exception as exc:
            if str(exc).startswith("DUPLICATE"):
                return
            if "BALANCE_CEILING" in str(exc):
                log.error(
                    "deposit %s would take %s's %s to 2^53 quanta: not credited",
                    deposit.deposit_id,
                    deposit.account,
                    asset.symbol,
                )
                return
            raise
        log.info(
            "credited deposit %s: %d %s to %s (%d below a quantum left in the vault)",
            deposit.deposit_id,
            deposit.amount - dust,
            asset.symbol,
            deposit.account,
            dust,
        )

    # -- withdrawals ---------------------------------------------------------------------
    def relay_withdrawals(self) -> None:
        """Advance every withdrawal this bridge holds, then take new ones."""
        stream = keys.withdrawal_requests()
        if not self.group_ready:
            try:
                self.client.xgroup_create(stream, keys.BRIDGE_GROUP, id="0", mkstream=True)
            except Exception as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self.group_ready = True
        for start in ("0", ">"):
            answer = self.client.xreadgroup(
                keys.BRIDGE_GROUP, "bridge", {stream: start}, count=READ_COUNT
            )
            for _, entries in answer or []:
                for entry_id, fields in entries:
                    if self.advance(loads(fields[RECORD_FIELD])):
                        self.client.xack(stream, keys.BRIDGE_GROUP, entry_id)

    def state(self, record: dict[str, Any]) -> dict[str, Any] | None:
        raw = self.client.hget(keys.withdrawal_states(record["userId"]), record["withdrawalId"])
        return loads(raw) if raw else None

    def step(self, record: dict[str, Any], state: dict[str, Any]) -> str:
        """Record ``state`` (its ``status``) for the withdrawal, atomically; the script's word."""
        asset = self.assets.get(record["asset"])
        quanta = int(record["amount"]) // asset.quantum if asset else 0
        return str(
            self.scripts["withdrawal_step"](
                keys=[keys.withdrawal_states(record["userId"]), keys.balances(record["userId"])],
                args=[
                    record["withdrawalId"],
                    state["status"],
                    dumps(state),
                    record["asset"],
                    quanta,
                ],
            )
        )

    def advance(self, record: dict[str, Any]) -> bool:
        """Take one withdrawal as far as it goes now; True when it is final."""
        state = self.state(record)
        if state is not None and state["status"] in FINAL:
            return True
        asset = self.assets.get(record["asset"])
        if asset is None or asset.token is None:
            self.fail(record, state, f"asset {record['asset']} has no token on the chain")
            return True
        if state is None:
            state = self.sign(record, asset)
        elif state.get("signer") != self.address:
            state = self.sign(record, asset, int(state["deadline"]))  # the signer was rotated
        head = self.rpc.block_number()
        confirmed = max(head - self.confirmations, 0)
        wid = record["withdrawalId"]
        if paid(self.rpc, self.vault, wid, hex(confirmed)):
            self.crash_point("before-confirm")
            self.step(record, {**state, "status": "CONFIRMED"})
            log.info("withdrawal %s CONFIRMED (transaction %s)", wid, state.get("txHash"))
            return True
        if paid(self.rpc, self.vault, wid):
            return False  # paid in a block not yet confirmed
        confirmed_time = int(
            self.rpc.call("eth_getBlockByNumber", hex(confirmed), False)["timestamp"], 16
        )
        if confirmed_time > int(state["deadline"]):
            self.fail(record, state, "its permit expired unpaid")
            return True
        self.submit(record, state)
        return False

    def sign(self, record: dict[str, Any], asset: Asset, deadline: int = 0) -> dict[str, Any]:
        """PENDING -> SENT: the permit and its transaction, recorded before anything is sent.
        Also SENT -> SENT with this key when the permit was signed by a key rotated out (the
        same ``deadline``: both permits name one withdrawal id, which pays once)."""
        self.crash_point("before-sign")
        if not deadline:
            latest = self.rpc.call("eth_getBlockByNumber", "latest", False)
            deadline = int(latest["timestamp"], 16) + self.settings.bridge_permit_ttl_s
        assert asset.token is not None
        message = permit_message(
            record["withdrawalId"], record["userId"], asset.token, int(record["amount"]), deadline
        )
        permit = {
            "status": "SENT",
            "to": record["userId"],
            "token": asset.token,
            "amount": record["amount"],
            "deadline": deadline,
            "permit": sign_permit(self.key, self.chain_id, self.vault, message),
            "signer": self.address,
        }
        state = {**permit, **self.transaction(permit, record["withdrawalId"])}
        if self.step(record, state) != "OK":
            return self.state(record) or state
        self.crash_point("after-sign")
        return state

    @staticmethod
    def payout_data(withdrawal_id: str, permit: dict[str, Any]) -> str:
        """The vault's ``withdraw`` calldata for a recorded permit."""
        message = permit_message(
            withdrawal_id,
            permit["to"],
            permit["token"],
            int(permit["amount"]),
            int(permit["deadline"]),
        )
        return withdraw_calldata(message, permit["permit"])

    def transaction(self, permit: dict[str, Any], withdrawal_id: str) -> dict[str, Any]:
        """A signed transaction submitting the permit, with this key's next nonce."""
        nonce = self.rpc.nonce(self.address)
        raw, tx_hash = sign_transaction(
            self.key,
            self.chain_id,
            nonce,
            self.vault,
            self.payout_data(withdrawal_id, permit),
            WITHDRAW_GAS,
            int(self.rpc.call("eth_gasPrice"), 16),
        )
        return {"txHash": tx_hash, "nonce": nonce, "raw": raw}

    def submit(self, record: dict[str, Any], state: dict[str, Any]) -> None:
        """Send the recorded transaction, or a new one when it can no longer land."""
        wid, tx_hash = record["withdrawalId"], state["txHash"]
        receipt = self.rpc.receipt(tx_hash)
        if receipt is not None and int(receipt["status"], 16) == 1:
            return  # landed; paid shows once it is confirmed
        stale = receipt is not None or (
            self.rpc.nonce(self.address) > int(state["nonce"])
            and (self.rpc.transaction(tx_hash) is None)
        )
        if stale:
            # Reverted, or its nonce went to another transaction: sign again, record, then send.
            log.warning(
                "withdrawal %s: transaction %s %s; signing a new one",
                wid,
                tx_hash,
                "reverted" if receipt else "was replaced",
            )
            state = {**state, **self.transaction(state, wid)}
            if self.step(record, state) != "OK":
                return
        if self.rpc.transaction(state["txHash"]) is not None:
            return  # in the node's pool or mined: wait
        try:  # a payout that would revert (the vault lacks the funds, say) costs no gas
            self.rpc.call(
                "eth_call",
                {"from": self.address, "to": self.vault, "data": self.payout_data(wid, state)},
                "latest",
            )
        except ChainError as exc:
            log.warning("withdrawal %s: the vault would refuse the payout now: %s", wid, exc)
            return
        try:
            self.rpc.send_raw(state["raw"])
        except ChainError as exc:
            if self.rpc.transaction(state["txHash"]) is None:
                log.warning("withdrawal %s: sending %s failed: %s", wid, state["txHash"], exc)
                return
        log.info("withdrawal %s SENT in transaction %s", wid, state["txHash"])
        self.crash_point("after-send")

    def fail(self, record: dict[str, Any], state: dict[str, Any] | None, reason: str) -> None:
        """-> FAILED, the amount returned to the account (once: the script sees FAILED)."""
        verdict = self.step(record, {**(state or {}), "status": "FAILED", "reason": reason})
        if verdict == "OK":
            log.warning(
                "withdrawal %s FAILED (%s): %s %s returned to %s",
                record["withdrawalId"],
                reason,
                record["amount"],
                record["asset"],
                record["userId"],
            )
