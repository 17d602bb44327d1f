"""Settle a market's event stream into accounts, exactly once, resumably.

Order of writes for one run of events: every trader account's operations (each call
idempotent by its watermark), then the fee account's credits less the fees those calls had
to cut (each call reports its cuts, also those of events it had applied before), then the
market's cursor. A crash anywhere only means the next run re-reads
events whose account effects are already applied, and skips them. The events before the
cursor read at the start of a batch (stored by an earlier one) are trimmed with that batch's
cursor write: the stream holds what is not yet settled and about one batch more.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError

from common import keys, pubsub
from common.direct import DirectConnection, direct_connection, round_trip
from common.events import AccountPublication, SettlementEvent, dumps, events_of, loads
from common.lua import ScriptSet
from common.markets import Market
from common.reservations import NO_TERMS, OrderTerms, with_matched_qty
from services.settler import settlement

log = logging.getLogger(__name__)

LUA_DIR = Path(__file__).parent / "lua"
BATCH = 5000  # events per run (whole entries): more legs per account call, fewer round trips
FIRST_READ_ENTRIES = 16  # entries read first, to learn how many events an entry holds
READ_ENTRIES = 1000  # at most this many entries per read
LOCK_TTL_MS = 15_000  # renewed after every batch; lapses soon after a killed worker
TERMS_CACHE = 200_000
HOLD_S = 0.5
"""Longest one task keeps settling a market while its rounds find events: then it returns, so
a worker process is not held by one busy market while others wait (the next request starts a
new task)."""
ROUND_GAP_S = 0.01
"""Least time from the start of one round to the start of the next: a round has a fixed cost
(cursor, reads, pipelines) that a few events each would multiply, so rounds are spaced; the
settled balance waits at most this plus a round (``DEX_SETTLE_ROUND_GAP_MS``)."""
IDLE_S = 0.05
"""How long the holder waits for the next event after a round before it stops."""
ACCOUNTS_PER_CALL = 64
"""Most accounts one apply_ops.lua call applies (on a single Redis): one call instead of one
per account saves Redis a script call's fixed cost and the settler a command's packing per
account, and this bound keeps any call from holding Redis long."""
ACCOUNT_MARK = "<account>"
"""Where the account goes in the key templates an apply_ops.lua call for many accounts takes
on a single Redis (apply_ops.lua's ACCOUNT_MARK)."""
QUEUED_TTL_MS = 2000
"""The settle-queued flag's lifetime, as match.lua sets it (match/events.lua)."""


class Ledger:
    def __init__(self, client: Any, batch: int = BATCH, round_gap_s: float = ROUND_GAP_S) -> None:
        self.client = client
        self.batch = batch
        self.round_gap_s = round_gap_s
        self.cluster = isinstance(client, RedisCluster)
        self.scripts = ScriptSet(client, LUA_DIR)
        self._terms: dict[str, OrderedDict[tuple[str, str], OrderTerms]] = {}
        self._settled_to: dict[str, str] = {}  # market -> where this ledger's last batch ended
        self._local = threading.local()  # each thread's held connection (common/direct.py)

    @property
    def direct(self) -> DirectConnection | None:
        """The calling thread's held connection for a round's commands (None on a cluster):
        one per settle-loop thread or task process, for as long as it runs."""
        direct = getattr(self._local, "direct", None)
        if direct is None and not self.cluster:
            direct = self._local.direct = direct_connection(self.client)
        return direct

    def release_direct(self) -> None:
        """Give the calling thread's held connection back (a settle-loop thread ending)."""
        direct = getattr(self._local, "direct", None)
        if direct is not None:
            direct.close()
            self._local.direct = None

    def settle_market(
        self,
        market: Market,
        max_batches: int = 100,
        max_seconds: float = HOLD_S,
        requeue: Callable[[], None] | None = None,
    ) -> int:
        """Apply every unsettled event of ``market``; return how many events were settled.

        One worker settles a market at a time (a lock). The matcher queues a task only when it
        sets the market's "queued" flag (SET NX), so the flag stands for "a task is on its way
        or at work". The holder leaves it standing while it goes round
        (round after round while events come, for at most ``max_seconds``): the matcher's
        triggers meanwhile queue no task that would only meet the lock. Between rounds it
        blocks on the event stream (``XREAD BLOCK`` after the last entry it settled), so a
        round starts as soon as an event is written, but no sooner than ``round_gap_s`` after
        the previous round started; a wait of ``IDLE_S`` with no event ends the rounds (the
        lock is held from the first round to the last, not taken again for each). When
        it stops, it deletes the flag, settles once more what was written before that, and
        goes round again if a request came after it (that request's task may have met the
        lock).

        With ``requeue`` (the settle task's: queue this market's task again), a holder whose
        time is up while events still come hands over at once: it sets the flag again (the
        task it queues is on its way) and queues its successor, which waits behind the other
        markets' tasks rather than for the matcher's next trigger.
        """
        symbol = market.symbol
        queued_key = keys.market_settle_queued(symbol)
        lock_key = queued_key + ":lock"
        deadline = time.monotonic() + max_seconds
        settled = 0
        while True:
            token = uuid.uuid4().hex
            if not self.client.set(lock_key, token, nx=True, px=LOCK_TTL_MS):
                return settled  # the holder will see the queued flag
            handing_over = False
            try:
                # rounds under one lock (a hold lasts far less than LOCK_TTL_MS)
                while True:
                    started = time.monotonic()
                    found = self.drain(market, max_batches, lock_key)
                    settled += found
                    if found == 0 or time.monotonic() > deadline:
                        break
                    self._await_events(symbol, started + self.round_gap_s)
                if found and requeue is not None:
                    self.client.set(queued_key, "1", px=QUEUED_TTL_MS)
                    handing_over = True
                else:
                    self.client.delete(queued_key)
                    settled += self.drain(market, max_batches, lock_key)
            finally:
                if self.client.get(lock_key) == token:
                    self.client.delete(lock_key)
            if handing_over and requeue is not None:
                try:
                    requeue()
                except Exception:
                    self.client.delete(queued_key)  # the matcher's next trigger queues one
                    raise
                return settled
            if not self.client.exists(queued_key):
                return settled
            if time.monotonic() > deadline:
                # let the matcher's next trigger send a fresh task (the sweep covers a lull)
                self.client.delete(queued_key)
                return settled

    def settled_to(self, symbol: str) -> str | None:
        """The entry id this ledger's last batch of ``symbol`` ended at (None: none yet)."""
        return self._settled_to.get(symbol)

    def _await_events(self, symbol: str, not_before: float) -> None:
        """Return at ``not_before`` if an event came after the last entry this ledger
        settled, else as soon as one comes, or after ``IDLE_S`` without one."""
        pause = not_before - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        after = self._settled_to.get(symbol)
        if after is None:
            return
        self.client.xread(
            {keys.market_events(symbol): after}, count=1, block=max(1, int(IDLE_S * 1000))
        )

    def drain(
        self,
        market: Market,
        max_batches: int,
        lock_key: str,
        lock_ms: int = LOCK_TTL_MS,
        prefetched: list[Any] | None = None,
    ) -> int:
        """Batches until one comes short (the stream's end), renewing the lock (to
        ``lock_ms``) between them; ``prefetched``: the first entries after where this ledger's
        last batch ended, read already (the holder's XREAD)."""
        settled = 0
        for _ in range(max_batches):
            done = self._settle_batch(market, prefetched)
            prefetched = None
            settled += done
            if done < self.batch:
                break
            self.client.pexpire(lock_key, lock_ms)
        return settled

    def _settle_batch(self, market: Market, prefetched: list[Any] | None = None) -> int:
        symbol = market.symbol
        known = self._settled_to.get(symbol)
        events: list[SettlementEvent] = []
        last_id: str | None = None
        terms: dict[tuple[str, str], OrderTerms] = {}
        if prefetched and known is not None:
            # The entries after where this ledger's last batch ended, read by the holder's
            # wait: the cursor is checked in the round trip that looks up the order terms.
            events, last_id = self._read_events(symbol, known, prefetched)
            terms, stored = self._order_terms(market, events, read_cursor=True)
            cursor = stored or "0-0"
            if cursor != known:
                events = []  # another worker moved the cursor: read afresh below
        if not events:
            first: list[Any] | None = None
            if known is None:
                cursor = self.client.get(keys.market_settled(symbol)) or "0-0"
            else:
                # Most often the cursor is where this ledger's last batch ended: read it and
                # the entries after that in one round trip, and use them if it is.
                pipe = self.client.pipeline(transaction=False)
                pipe.get(keys.market_settled(symbol))
                pipe.xrange(
                    keys.market_events(symbol),
                    min=f"({known}",
                    count=min(self.batch, FIRST_READ_ENTRIES),
                )
                stored, entries = pipe.execute()
                cursor = stored or "0-0"
                if cursor == known:
                    first = entries
            events, last_id = self._read_events(symbol, cursor, first)
            if not events or last_id is None:
                if last_id is not None:  # only empty entries: step over them
                    self.client.set(keys.market_settled(symbol), last_id)
                    if self._settled_to.get(symbol) == cursor:
                        self._settled_to[symbol] = last_id
                elif cursor != "0-0":
                    self._trim_events(symbol, cursor)
                return 0
            if self._settled_to.get(symbol) != cursor:
                # Another worker settled events in between: an amend among them may have
                # changed an order's terms, so this market's cached terms are read afresh.
                self._terms.pop(symbol, None)
            terms, _ = self._order_terms(market, events)
        assert last_id is not None
        per_account = settlement.plan(market, events, terms)
        fee_groups = per_account.get(keys.FEES_ACCOUNT)
        traders = [(a, g) for a, g in per_account.items() if a != keys.FEES_ACCOUNT]
        replies = self._apply_all(symbol, traders)
        if fee_groups:
            cuts: dict[int, int] = {}
            for reply in replies:
                waived = reply[1:]
                for eseq, amount in zip(waived[::2], waived[1::2], strict=True):
                    cuts[int(eseq)] = cuts.get(int(eseq), 0) + int(amount)
            self._apply_all(symbol, [(keys.FEES_ACCOUNT, less_cuts(fee_groups, cuts))])
        accounts = sorted(per_account)
        after: list[tuple[str, ...]] = [("SADD", keys.known_accounts(), *accounts)]
        if market.product.is_derivative:
            holders = [a for a, groups in per_account.items() if _moves_position(groups)]
            if holders:
                after.append(("SADD", keys.market_holders(symbol), *holders))
        after.append(("SET", keys.market_settled(symbol), last_id))
        if cursor != "0-0":
            after.append(_trim_command(symbol, cursor))
        notices: list[tuple[str, AccountPublication]] = [
            (account, {"seq": per_account[account][-1][0], "data": {"markets": [symbol]}})
            for account in accounts
            if account not in keys.SYSTEM_ACCOUNTS
        ]
        messages = [(keys.channel(keys.account_topic(a)), dumps(n)) for a, n in notices]
        if not self.cluster:
            # the account notices go out after the cursor, in the same round trip
            after += [("PUBLISH", channel, payload) for channel, payload in messages]
        round_trip(self.direct, self.client, after)
        # Settled: the amends the book took (and the decrements) are the terms of their
        # orders from now on.
        cache = self._terms.setdefault(symbol, OrderedDict())
        for event in events:
            if event["k"] == "amend" and event["accepted"]:
                cache[(event["user"], event["cid"])] = settlement.amended_terms(market, event)
            elif event["k"] == "decrement" and (event["user"], event["cid"]) in cache:
                key = (event["user"], event["cid"])
                cache[key] = settlement.decremented_terms(cache[key], event)
        self._settled_to[symbol] = last_id
        if self.cluster:
            publish_all(self.client, messages)
        return len(events)

    def _trim_events(self, symbol: str, cursor: str) -> None:
        self.client.execute_command(*_trim_command(symbol, cursor))

    def _read_events(
        self, symbol: str, cursor: str, first: list[Any] | None = None
    ) -> tuple[list[SettlementEvent], str | None]:
        """Whole entries after ``cursor`` until about ``self.batch`` events (or the stream's
        end): the events and the last entry's id. An entry holds every event of one matcher
        call (common.events.events_of), so the batch limit counts events, not entries, and
        the cursor only ever stops between entries. Reads a few entries first to learn their
        size, so a stream of large entries is never read far past the batch; ``first``: those
        first entries, when the caller read them already."""
        stream = keys.market_events(symbol)
        events: list[SettlementEvent] = []
        last_id: str | None = None
        entries_read = 0
        while len(events) < self.batch:
            wanted = self.batch - len(events)
            if entries_read:
                per_entry = max(1, len(events) // entries_read)
                count = min(wanted // per_entry + 1, READ_ENTRIES)
            else:
                count = min(wanted, FIRST_READ_ENTRIES)
            if first is not None and not entries_read:
                entries = first  # the first FIRST_READ_ENTRIES after the cursor, read already
            else:
                start = f"({last_id or cursor}"
                entries = self.client.xrange(stream, min=start, count=count)
            for entry_id, fields in entries:
                events.extend(events_of(fields))
                last_id = entry_id
                entries_read += 1
                if len(events) >= self.batch:
                    break
            if len(entries) < count:
                break
        return events, last_id

    def _apply_all(
        self, symbol: str, accounts: list[tuple[str, list[tuple[int, list[settlement.Operation]]]]]
    ) -> list[Any]:
        """Apply each account's operations; each account's reply, in order. On a single Redis
        the accounts go ``ACCOUNTS_PER_CALL`` to an apply_ops.lua call, the calls in one
        pipeline; on a cluster, whose accounts live in different slots, one call per account
        (redis-py's cluster pipeline refuses EVALSHA)."""
        if self.cluster:
            return [self.apply(account, symbol, groups) for account, groups in accounts]
        script = self.scripts["apply_ops"]
        calls: list[tuple[list[str], list[str]]] = []
        templates = _account_keys(ACCOUNT_MARK, symbol)
        for start in range(0, len(accounts), ACCOUNTS_PER_CALL):
            args = [symbol, *templates]
            for account, groups in accounts[start : start + ACCOUNTS_PER_CALL]:
                args += (account, _operations(groups))
            calls.append(([], args))
        for attempt in (1, 2):
            # EVALSHA itself, not the script object: redis-py's pipeline would first ask
            # SCRIPT EXISTS, a round trip per pipeline. Re-running the whole pipeline after a
            # NOSCRIPT (a Redis restarted or flushed) is harmless: each account applies once.
            evals = [("EVALSHA", script.sha, len(ks), *ks, *args) for ks, args in calls]
            try:
                return [
                    reply
                    for replies in round_trip(self.direct, self.client, evals)
                    for reply in replies
                ]
            except NoScriptError:
                if attempt == 2:
                    raise
                script.sha = self.client.script_load(script.script)
        raise AssertionError("unreachable")

    def apply(
        self,
        account: str,
        market: str,
        groups: list[tuple[int, list[settlement.Operation]]],
    ) -> Any:
        """Run apply_ops.lua for one account; its reply."""
        replies = self.scripts["apply_ops"](
            keys=_account_keys(account, market), args=[market, _operations(groups)]
        )
        return replies[0]

    def _order_terms(
        self, market: Market, events: list[SettlementEvent], read_cursor: bool = False
    ) -> tuple[dict[tuple[str, str], OrderTerms], str | None]:
        """The reservation terms of every order filled, amended or decremented in ``events``,
        as they stand at the batch's start (cached per market: only an amend or a decrement
        changes them, and those this ledger settles update the cache; see _settle_batch for
        those it did not); with ``read_cursor``, also the market's settlement cursor, read in
        the same round trip."""
        cache = self._terms.setdefault(market.symbol, OrderedDict())
        wanted: dict[tuple[str, str], str] = {}
        needed: set[tuple[str, str]] = set()
        finishing = settlement.finishing_orders(events)
        for event in events:
            if event["k"] == "fill":
                sides = [
                    (event["buyer"], event["buyCid"], "BUY"),
                    (event["seller"], event["sellCid"], "SELL"),
                ]
            elif event["k"] in ("amend", "decrement"):
                sides = [(event["user"], event["cid"], event["side"])]
            else:
                continue
            for user, cid, side in sides:
                if (user, cid) in finishing:
                    continue
                needed.add((user, cid))
                if (user, cid) not in cache:
                    wanted[(user, cid)] = side
        cursor: str | None = None
        if wanted or read_cursor:
            reads: list[tuple[str, ...]] = []
            for user, cid in wanted:
                reads.append(("HMGET", keys.account_order(user, cid), "reserved", "cmd"))
                reads.append(("HGET", keys.market_order(market.symbol, user, cid), "qty"))
            if read_cursor:
                reads.append(("GET", keys.market_settled(market.symbol)))
            replies = round_trip(self.direct, self.client, reads)
            if read_cursor:
                cursor = replies.pop()
            for i, (user, cid) in enumerate(wanted):
                (reserved, command), matched_qty = replies[2 * i], replies[2 * i + 1]
                if reserved is None or command is None:
                    found = NO_TERMS  # e.g. a liquidation order: nothing was reserved
                else:
                    found = with_matched_qty(
                        settlement.order_terms(
                            market, wanted[(user, cid)], loads(command), int(reserved)
                        ),
                        int(matched_qty) if matched_qty else None,
                    )
                cache[(user, cid)] = found
        result = {pair: cache[pair] for pair in needed}
        while len(cache) > TERMS_CACHE:
            cache.popitem(last=False)
        return result, cursor

    def unsettled_markets(self, markets: list[Market]) -> list[Market]:
        """Markets whose event stream runs past their settlement cursor."""
        behind = []
        for market in markets:
            last = self.client.xrevrange(keys.market_events(market.symbol), count=1)
            if not last:
                continue
            cursor = self.client.get(keys.market_settled(market.symbol)) or "0-0"
            if _id_key(last[0][0]) > _id_key(cursor):
                behind.append(market)
        return behind

    def is_settled(self, symbol: str) -> bool:
        """True when every event of the market has been settled."""
        last = self.client.xrevrange(keys.market_events(symbol), count=1)
        if not last:
            return True
        cursor = self.client.get(keys.market_settled(symbol)) or "0-0"
        return _id_key(cursor) >= _id_key(last[0][0])


def _account_keys(account: str, market: str) -> list[str]:
    """apply_ops.lua's keys of one account (its KEYS[1..10]) for its operations in ``market``."""
    return [
        keys.balances(account),
        keys.watermarks(account),
        keys.reservations(account),
        keys.account_fills(account),
        keys.positions(account),
        keys.reservation_fills(account),
        keys.fee_waivers(account),
        keys.account_open_orders(account, market),
        keys.open_quantities(account),
        keys.open_quantity_shares(account),
    ]


def _operations(groups: list[tuple[int, list[settlement.Operation]]]) -> str:
    """apply_ops.lua's argument of one account: its operations, per event."""
    return dumps([[eseq, ops] for eseq, ops in groups])


def less_cuts(
    groups: list[tuple[int, list[settlement.Operation]]], cuts: dict[int, int]
) -> list[tuple[int, list[settlement.Operation]]]:
    """The fee account's credits less what the paying sides could not pay, per event."""
    if not cuts:
        return groups
    adjusted = []
    for eseq, ops in groups:
        cut = cuts.get(eseq, 0)
        if cut:
            ops = [[op[0], op[1], str(int(op[2]) - cut)] if op[0] == "credit" else op for op in ops]
        adjusted.append((eseq, ops))
    return adjusted


def _trim_command(symbol: str, cursor: str) -> tuple[str, ...]:
    """Drop the market's events before ``cursor``, a cursor already stored (read at the
    start of this batch), so nothing not yet applied is ever trimmed, whatever fails after.
    Whole stream nodes only (``~``): the entries since the node that holds the cursor stay,
    and so does the last entry (the auditor and the sweep read it)."""
    return ("XTRIM", keys.market_events(symbol), "MINID", "~", cursor)


def _moves_position(groups: list[tuple[int, list[settlement.Operation]]]) -> bool:
    return any(op[0] == "position" for _, ops in groups for op in ops)


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def publish_all(client: Any, messages: list[tuple[str, str]]) -> None:
    """PUBLISH each (channel, payload): pipelined, or one by one on a cluster (whose
    pipeline refuses PUBLISH), there SPUBLISHed on the topic's shard channel when the
    cluster has sharded pub/sub (common/pubsub.py)."""
    if isinstance(client, RedisCluster):
        shard = pubsub.sharded(client)
        prefix = keys.channel("")
        for channel, payload in messages:
            if shard and channel.startswith(prefix):
                # Sharded pub/sub: the topic's tagged shard channel (keys.shard_channel).
                pubsub.spublish(client, keys.shard_publish_channel(channel[len(prefix) :]), payload)
            else:
                client.publish(channel, payload)
        return
    pipe = client.pipeline(transaction=False)
    for channel, payload in messages:
        pipe.publish(channel, payload)
    pipe.execute()
