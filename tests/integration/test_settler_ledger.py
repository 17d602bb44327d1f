"""Settlement maths against a real redis-server, driven directly through the ledger.

Fills and done events are written as the matcher writes them; each test checks balances,
positions and reservations to the atomic unit and runs the auditor at the end.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from support.market_driver import MarketDriver

from common import keys
from common.audit import audit
from common.events import dumps, events_of, loads
from common.markets import MarketSet, load_markets
from services.settler.ledger import Ledger

pytestmark = pytest.mark.integration

MARKETS_FILE = Path(__file__).resolve().parents[2] / "deploy" / "markets.yaml"
A, B = "0x" + "a" * 40, "0x" + "b" * 40


@pytest.fixture
def markets() -> MarketSet:
    return load_markets(MARKETS_FILE)


def bal(client: Any, user: str, asset: str = "USDC") -> tuple[int, int]:
    raw = client.hgetall(keys.balances(user))
    return int(raw.get(f"{asset}:t", 0)), int(raw.get(f"{asset}:l", 0))


def pos(client: Any, user: str, market: str) -> dict[str, int]:
    raw = client.hgetall(keys.positions(user))
    return {f: int(raw.get(f"{market}:{f}", 0)) for f in ("size", "entry", "rpnl")}


def assert_audit_ok(client: Any, markets: MarketSet) -> dict[str, Any]:
    report = audit(client, markets)
    assert report["ok"], report
    return report


def test_perp_round_trip_realizes_pnl_and_releases_margin(client: Any, markets: MarketSet) -> None:
    market = markets.markets["BTC-PERP"]
    drive, ledger = MarketDriver(client, market), Ledger(client)
    drive.deposit(A, "USDC", 10_000_000_000)
    drive.deposit(B, "USDC", 10_000_000_000)
    # A buys 0.1 BTC at 30,000 from B (B rests, A takes): notional 3,000 USDC.
    reserved_b = drive.order(B, "s1", "SELL", 3_000_000, 1_000)
    assert reserved_b == 300_000_000 + 1_500_000
    drive.order(A, "b1", "BUY", 3_000_000, 1_000)
    drive.fill((A, "b1"), (B, "s1"), 3_000_000, 1_000, taker="BUY")
    assert ledger.settle_market(market) == 3
    taker_fee, maker_fee = 1_500_000, 300_000
    assert bal(client, A) == (10_000_000_000 - taker_fee, 0)
    assert bal(client, B) == (10_000_000_000 - maker_fee, 0)
    assert pos(client, A, "BTC-PERP") == {"size": 1_000, "entry": 3_000_000_000, "rpnl": 0}
    assert pos(client, B, "BTC-PERP") == {"size": -1_000, "entry": -3_000_000_000, "rpnl": 0}
    # A sells 0.04 at 31,000 (A resting, B takes), then 0.06 at 29,000 (B rests, A takes).
    drive.order(A, "s2", "SELL", 3_100_000, 400)
    drive.order(B, "b2", "BUY", 3_100_000, 400)
    drive.fill((B, "b2"), (A, "s2"), 3_100_000, 400, taker="BUY")
    drive.order(B, "b3", "BUY", 2_900_000, 600)
    drive.order(A, "s3", "SELL", 2_900_000, 600)
    drive.fill((B, "b3"), (A, "s3"), 2_900_000, 600, taker="SELL")
    ledger.settle_market(market)
    n2, n3 = 3_100_000 * 400, 2_900_000 * 600
    fee = lambda n, bps: -(-n * bps // 10_000)  # noqa: E731
    pnl_a = (n2 - 1_200_000_000) + (n3 - 1_800_000_000)
    assert pos(client, A, "BTC-PERP") == {"size": 0, "entry": 0, "rpnl": pnl_a}
    assert pos(client, B, "BTC-PERP") == {"size": 0, "entry": 0, "rpnl": -pnl_a}
    assert bal(client, A) == (10_000_000_000 - taker_fee + pnl_a - fee(n2, 1) - fee(n3, 5), 0)
    assert bal(client, B) == (10_000_000_000 - maker_fee - pnl_a - fee(n2, 5) - fee(n3, 1), 0)
    report = assert_audit_ok(client, markets)
    assert report["assets"]["USDC"]["fees"] == str(
        taker_fee + maker_fee + fee(n2, 1) + fee(n2, 5) + fee(n3, 5) + fee(n3, 1)
    )


def test_partial_fill_keeps_exactly_what_the_rest_needs(client: Any, markets: MarketSet) -> None:
    market = markets.markets["BTC-PERP"]
    drive, ledger = MarketDriver(client, market), Ledger(client)
    drive.deposit(A, "USDC", 10_000_000_000)
    drive.deposit(B, "USDC", 10_000_000_000)
    drive.order(A, "b1", "BUY", 3_000_001, 777)
    drive.order(B, "s1", "SELL", 3_000_001, 333)
    drive.fill((A, "b1"), (B, "s1"), 3_000_001, 333, taker="SELL")
    ledger.settle_market(market)
    rest_need = -(-3_000_001 * 444 * 1000 // 10_000) + -(-3_000_001 * 444 * 5 // 10_000)
    assert client.hget(keys.reservations(A), "b1") == str(rest_need)
    assert bal(client, A)[1] == rest_need
    assert_audit_ok(client, markets)
    drive.finish(A, "b1", "CXL", "USER")
    ledger.settle_market(market)
    assert bal(client, A)[1] == 0
    assert_audit_ok(client, markets)


def test_flip_and_replay_settle_once(client: Any, markets: MarketSet) -> None:
    market = markets.markets["BTC-PERP"]
    drive, ledger = MarketDriver(client, market), Ledger(client)
    for user in (A, B):
        drive.deposit(user, "USDC", 10_000_000_000)
    drive.order(B, "s1", "SELL", 3_000_000, 300)
    drive.order(A, "b1", "BUY", 3_000_000, 300)
    drive.fill((A, "b1"), (B, "s1"), 3_000_000, 300)
    drive.order(B, "b2", "BUY", 3_000_300, 700)
    drive.order(A, "s2", "SELL", 3_000_300, 700)
    drive.fill((B, "b2"), (A, "s2"), 3_000_300, 700, taker="SELL")
    ledger.settle_market(market)
    before = {u: client.hgetall(keys.balances(u)) for u in (A, B, "fees")}
    # Replaying every event from the start changes nothing.
    client.delete(keys.market_settled("BTC-PERP"))
    ledger.settle_market(market)
    assert {u: client.hgetall(keys.balances(u)) for u in (A, B, "fees")} == before
    assert pos(client, A, "BTC-PERP") == {
        "size": -400,
        "entry": -3_000_300 * 400,
        "rpnl": 300 * 300,
    }
    assert_audit_ok(client, markets)


def test_option_premium_moves_as_cash(client: Any, markets: MarketSet) -> None:
    market = markets.markets["BTC-C-40000-20270326"]
    drive, ledger = MarketDriver(client, market), Ledger(client)
    for user in (A, B):
        drive.deposit(user, "USDC", 10_000_000_000)
    drive.order(B, "w1", "SELL", 150_000, 1_000)  # writer: 1,500 USDC premium per BTC
    drive.order(A, "h1", "BUY", 150_000, 1_000)
    drive.fill((A, "h1"), (B, "w1"), 150_000, 1_000, taker="BUY")
    ledger.settle_market(market)
    premium = 150_000 * 1_000
    assert bal(client, A) == (10_000_000_000 - premium - premium * 5 // 10_000, 0)
    assert bal(client, B) == (10_000_000_000 + premium - premium // 10_000, 0)
    assert pos(client, A, market.symbol)["size"] == 1_000
    assert pos(client, B, market.symbol)["size"] == -1_000
    assert_audit_ok(client, markets)


def _reference(size: int, entry: int, delta: int, price: int) -> tuple[int, int, int]:
    """Position rule of apply_ops.lua in plain Python: (size, entry, realized pnl)."""
    pnl = 0
    if size and (size > 0) != (delta > 0):
        closed = min(abs(delta), abs(size))
        removed = abs(entry) * closed // abs(size) * (1 if entry >= 0 else -1)
        pnl = (1 if size > 0 else -1) * price * closed - removed
        entry -= removed
        size += closed if delta > 0 else -closed
        delta += -closed if delta > 0 else closed
    if delta:
        size += delta
        entry += price * delta
    return size, entry, pnl


def trade_randomly(
    drive: MarketDriver,
    rng: random.Random,
    users: list[str],
    count: int,
    every_40: Any = None,
    any_taker: bool = False,
) -> dict[str, tuple[int, int, int]]:
    """``count`` random fills between funded ``users`` on the driver's PERP market; returns
    the reference model's (size, entry, realized PnL) per user. ``every_40`` runs after every
    40th fill (e.g. a settlement run)."""
    for user in users:
        drive.deposit(user, "USDC", 10**13)
    model = {u: (0, 0, 0) for u in users}
    for i in range(count):
        buyer, seller = rng.sample(users, 2)
        price, qty = rng.randint(2_500_000, 3_500_000), rng.randint(1, 3_000)
        drive.order(seller, f"s{i}", "SELL", price, qty)
        drive.order(buyer, f"b{i}", "BUY", price, qty)
        taker = rng.choice(["BUY", "SELL"]) if any_taker else "BUY"
        drive.fill((buyer, f"b{i}"), (seller, f"s{i}"), price, qty, taker=taker)
        for user, delta in ((buyer, qty), (seller, -qty)):
            size, entry, rpnl = model[user]
            size, entry, pnl = _reference(size, entry, delta, price)
            model[user] = (size, entry, rpnl + pnl)
        if every_40 is not None and i % 40 == 39:
            every_40()
    return model


def test_random_fills_match_the_reference_and_conserve(client: Any, markets: MarketSet) -> None:
    rng = random.Random(20261201)
    market = markets.markets["BTC-PERP"]
    drive, ledger = MarketDriver(client, market), Ledger(client)
    users = [A, B, "0x" + "c" * 40]
    model = trade_randomly(
        drive, rng, users, 150, every_40=lambda: ledger.settle_market(market), any_taker=True
    )
    ledger.settle_market(market)
    for user in users:
        assert tuple(pos(client, user, "BTC-PERP").values()) == model[user]
    assert sum(model[u][0] for u in users) == 0
    assert_audit_ok(client, markets)


def test_audit_command_exits_non_zero_when_money_appears(
    client: Any, markets: MarketSet, redis_url: str
) -> None:
    drive = MarketDriver(client, markets.markets["BTC-USDC"])
    drive.deposit(A, "USDC", 1_000)
    env = {"DEX_REDIS_URL": redis_url, "DEX_MARKETS_FILE": str(MARKETS_FILE), "PATH": ""}
    command = [sys.executable, "-m", "services.settler.audit"]
    repo = MARKETS_FILE.parents[1]
    clean = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    assert '"difference": "0"' in clean.stdout
    client.hincrby(keys.balances(A), "USDC:t", 1)  # a unit from nowhere
    broken = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    assert broken.returncode == 1
    assert "conservation" in broken.stderr


def test_partial_fill_whose_fee_rounds_up_keeps_what_the_rest_needs(
    client: Any, markets: MarketSet
) -> None:
    """Fees round up per fill, so a fill can use more than its share of the reservation:
    a buy of 7 at 30,001.00 reserves 21,000,700 + 10,501; filling 1 as taker uses
    3,000,100 + 1,501, leaving 18,009,600, while the rest (6) needs 18,000,600 + 9,001."""
    market = markets.markets["BTC-USDC"]
    drive, ledger = MarketDriver(client, market), Ledger(client)
    drive.deposit(A, "USDC", 100_000_000)
    drive.deposit(B, "BTC", 10**8)
    assert drive.order(A, "b1", "BUY", 3_000_100, 7) == 21_000_700 + 10_501
    drive.order(B, "s1", "SELL", 3_000_100, 1)
    drive.fill((A, "b1"), (B, "s1"), 3_000_100, 1, taker="BUY")
    ledger.settle_market(market)
    rest_need = 18_000_600 + 9_001
    assert client.hget(keys.reservations(A), "b1") == str(rest_need)
    assert bal(client, A) == (100_000_000 - 3_000_100 - 1_501, rest_need)
    assert bal(client, A, "BTC") == (10_000, 0)
    assert_audit_ok(client, markets)
    drive.order(B, "s2", "SELL", 3_000_100, 6)
    drive.fill((A, "b1"), (B, "s2"), 3_000_100, 6, taker="SELL")
    ledger.settle_market(market)
    assert bal(client, A) == (100_000_000 - 3_000_100 - 1_501 - 18_000_600 - 1_801, 0)
    assert_audit_ok(client, markets)


def test_rounding_shortfall_is_locked_only_as_far_as_the_balance_goes(
    client: Any, markets: MarketSet
) -> None:
    """With nothing available the rest stays 1 short rather than lock more than the total."""
    market = markets.markets["BTC-USDC"]
    drive, ledger = MarketDriver(client, market), Ledger(client)
    drive.deposit(A, "USDC", 21_011_201)
    drive.deposit(B, "BTC", 10**8)
    assert drive.order(A, "b1", "BUY", 3_000_100, 7) == 21_011_201
    drive.order(B, "s1", "SELL", 3_000_100, 1)
    drive.fill((A, "b1"), (B, "s1"), 3_000_100, 1, taker="BUY")
    ledger.settle_market(market)
    assert bal(client, A) == (18_009_600, 18_009_600)
    assert client.hget(keys.reservations(A), "b1") == "18009600"


def _regroup_events(client: Any, symbol: str, rng: random.Random) -> list[int]:
    """Rewrite the market's event stream as the matcher writes it (every event of one call in
    one entry, a field per event) mixed with single-event entries (field ``e``) and arrays
    (field ``b``); return the number of events of each entry."""
    stream = keys.market_events(symbol)
    events = [loads(fields["e"]) for _, fields in client.xrange(stream)]
    client.delete(stream)
    sizes: list[int] = []
    i = 0
    while i < len(events):
        size = rng.choice([1, 1, 2, 5, 9, 17])
        chunk = events[i : i + size]
        shape = rng.random()
        if len(chunk) == 1 and shape < 0.3:
            client.xadd(stream, {"e": dumps(chunk[0])})
        elif shape < 0.6:
            client.xadd(stream, {"b": dumps(chunk)})
        else:  # as the matcher writes them: one field per event, named by its eseq
            client.xadd(stream, {str(e["eseq"]): dumps(e) for e in chunk})
        sizes.append(len(chunk))
        i += size
    return sizes


def test_batched_and_single_event_entries_settle_once_with_batches_counted_in_events(
    client: Any, markets: MarketSet
) -> None:
    rng = random.Random(4)
    market = markets.markets["BTC-PERP"]
    drive = MarketDriver(client, market)
    users = [A, B, "0x" + "c" * 40]
    model = trade_randomly(drive, rng, users, 60)
    sizes = _regroup_events(client, "BTC-PERP", rng)
    assert max(sizes) > 1 and min(sizes) == 1
    total = sum(sizes)
    ledger = Ledger(client, batch=7)
    cursor_ids = [entry_id for entry_id, _ in client.xrange(keys.market_events("BTC-PERP"))]
    settled, runs = 0, 0
    while settled < total:
        done = ledger._settle_batch(market)
        assert done > 0
        # whole entries only: the cursor is always an entry's id, and a batch holds at least
        # its limit in events unless the stream ended
        assert client.get(keys.market_settled("BTC-PERP")) in cursor_ids
        settled += done
        runs += 1
        assert done >= 7 or settled == total
    assert settled == total and runs < len(sizes)
    assert ledger.settle_market(market) == 0
    for user in users:
        assert tuple(pos(client, user, "BTC-PERP").values()) == model[user]
    assert_audit_ok(client, markets)
    # replaying what the stream still holds (settled entries are trimmed in whole nodes),
    # batched entries included, changes nothing
    before = {u: client.hgetall(keys.balances(u)) for u in [*users, "fees"]}
    kept = sum(len(events_of(f)) for _, f in client.xrange(keys.market_events("BTC-PERP")))
    client.delete(keys.market_settled("BTC-PERP"))
    assert Ledger(client).settle_market(market) == kept
    assert {u: client.hgetall(keys.balances(u)) for u in [*users, "fees"]} == before


def test_fees_rounded_up_per_fill_are_cut_rather_than_take_the_balance_below_zero(
    client: Any, markets: MarketSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A buy of 7 at 30,001.00 holding exactly its reservation (21,000,700 + 10,501) takes
    seven makers of 1 as taker: each fill charges ceil(3,000,100 × 5 / 10^4) = 1,501, 10,507
    in all, 6 more than reserved. The last fill's fee is cut by those 6: the buyer ends at
    exactly 0, the fee account is credited what was paid, and nothing is counted twice when
    the fee account's step is lost to a crash and the batch runs again."""
    market = markets.markets["BTC-USDC"]
    drive, ledger = MarketDriver(client, market), Ledger(client)
    drive.deposit(A, "USDC", 21_011_201)
    sellers = [f"0x{i:040x}" for i in range(1, 8)]
    for index, seller in enumerate(sellers):
        drive.deposit(seller, "BTC", 10**8)
        drive.order(seller, f"s{index}", "SELL", 3_000_100, 1)
    assert drive.order(A, "b1", "BUY", 3_000_100, 7) == 21_011_201
    for index, seller in enumerate(sellers):
        drive.fill((A, "b1"), (seller, f"s{index}"), 3_000_100, 1, taker="BUY")

    real_apply_all = Ledger._apply_all
    calls = []

    def crash_on_the_fee_account(self: Ledger, symbol: str, accounts: Any) -> list[Any]:
        calls.append([account for account, _ in accounts])
        if accounts and accounts[0][0] == keys.FEES_ACCOUNT and len(calls) == 2:
            raise redis.ConnectionError("the worker died here")
        return real_apply_all(self, symbol, accounts)

    monkeypatch.setattr(Ledger, "_apply_all", crash_on_the_fee_account)
    with pytest.raises(redis.ConnectionError):
        ledger.settle_market(market)
    assert bal(client, A) == (0, 0)  # the traders' step landed
    assert bal(client, keys.FEES_ACCOUNT) == (0, 0)
    ledger.settle_market(market)  # the batch again: traders skipped, their cut still known
    assert bal(client, A) == (0, 0)
    assert bal(client, A, "BTC") == (70_000, 0)
    maker_fee = 301  # ceil(3,000,100 × 1 / 10^4) per maker
    assert bal(client, keys.FEES_ACCOUNT) == (7 * 1_501 - 6 + 7 * maker_fee, 0)
    fees = [orjson.loads(f["f"])["fee"] for _, f in client.xrange(keys.account_fills(A))]
    assert fees == ["1501"] * 6 + ["1495"]
    assert client.hgetall(keys.fee_waivers(A)) == {f"BTC-USDC:{drive_last_eseq(client)}": "6"}
    ledger.settle_market(market)  # nothing left: nothing changes
    assert bal(client, keys.FEES_ACCOUNT) == (7 * 1_501 - 6 + 7 * maker_fee, 0)
    assert_audit_ok(client, markets)


def open_seller(drive: MarketDriver, lots: int) -> None:
    """A funded with 100 USDC, B with 1 BTC resting "s1", a SELL of ``lots`` at 30,000.00."""
    drive.deposit(A, "USDC", 100_000_000)
    drive.deposit(B, "BTC", 10**8)
    drive.order(B, "s1", "SELL", 3_000_000, lots)


def buy_lot(drive: MarketDriver, cid: str) -> None:
    """A buys one lot of B's "s1" as the taker, with order ``cid``."""
    drive.order(A, cid, "BUY", 3_000_000, 1)
    drive.fill((A, cid), (B, "s1"), 3_000_000, 1, taker="BUY")


def drive_last_eseq(client: Any) -> int:
    """The eseq of the last fill event of BTC-USDC (the one whose fee was cut)."""
    for _, fields in reversed(client.xrange(keys.market_events("BTC-USDC"))):
        event = orjson.loads(fields["e"])
        if event["k"] == "fill":
            return int(event["eseq"])
    raise AssertionError("no fill event")


def settle_while_a_second_fill_arrives(
    client: Any, market: Any, monkeypatch: pytest.MonkeyPatch, meanwhile: Callable[[], None]
) -> tuple[Ledger, int]:
    """A holder settles A's first fill; right after its first batch a second fill is written
    and ``meanwhile`` runs (what the matcher and the other worker do then). The holder and
    the number of events it settled."""
    drive, holder = MarketDriver(client, market), Ledger(client)
    open_seller(drive, 2)
    buy_lot(drive, "b1")
    real_batch = Ledger._settle_batch
    arrived = []

    def batch_then_more_arrive(self: Ledger, spec: Any, prefetched: Any = None) -> int:
        done = real_batch(self, spec, prefetched)
        if self is holder and not arrived:
            arrived.append(True)
            buy_lot(drive, "b2")
            meanwhile()
        return done

    monkeypatch.setattr(Ledger, "_settle_batch", batch_then_more_arrive)
    return holder, holder.settle_market(market)


def test_a_settle_request_that_finds_the_market_busy_is_served_by_the_holder(
    client: Any, markets: MarketSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events written while one worker settles, whose settle request meets that worker's lock,
    are settled by the holder before it returns (not left for the sweep)."""
    market = markets.markets["BTC-USDC"]
    queued = keys.market_settle_queued(market.symbol)
    busy_answers = []

    def request_meets_the_lock() -> None:
        client.set(queued, "1")  # the matcher's trigger
        busy_answers.append(Ledger(client).settle_market(market))  # its task meets the lock

    holder, settled = settle_while_a_second_fill_arrives(
        client, market, monkeypatch, request_meets_the_lock
    )
    assert busy_answers == [0]
    assert settled == drive_event_count(client) and holder.is_settled(market.symbol)
    assert bal(client, A, "BTC") == (20_000, 0)
    assert client.exists(queued) == 0
    assert_audit_ok(client, markets)


def test_while_the_holder_goes_round_a_trigger_queues_no_task_and_its_events_are_settled(
    client: Any, markets: MarketSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queued flag stands while the holder works, so the matcher's SET NX of it fails and
    no task is sent just to meet the lock; the events of that trigger are settled by the
    holder's next round, and the flag is gone when the holder returns."""
    market = markets.markets["BTC-USDC"]
    queued = keys.market_settle_queued(market.symbol)
    triggers_that_would_send: list[bool] = []

    def trigger() -> None:
        triggers_that_would_send.append(bool(client.set(queued, "1", nx=True, px=2000)))

    client.set(queued, "1", nx=True, px=2000)  # the trigger that queued the holder's task
    holder, settled = settle_while_a_second_fill_arrives(client, market, monkeypatch, trigger)
    assert triggers_that_would_send == [False]
    assert settled == drive_event_count(client) and holder.is_settled(market.symbol)
    assert bal(client, A, "BTC") == (20_000, 0)
    assert client.exists(queued) == 0
    assert_audit_ok(client, markets)


def drive_event_count(client: Any) -> int:
    return sum(len(events_of(f)) for _, f in client.xrange(keys.market_events("BTC-USDC")))


def test_the_sweep_queues_no_task_for_a_market_whose_settle_request_stands(
    client: Any, markets: MarketSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a market's settle-queued flag stands (a task on its way or a holder at work) the
    sweep queues nothing for it (such a task only met the holder's lock); once the flag is
    gone, it queues one."""
    from services.settler import tasks

    market = markets.markets["BTC-USDC"]
    drive = MarketDriver(client, market)
    open_seller(drive, 1)
    buy_lot(drive, "b1")
    sent: list[str] = []
    monkeypatch.setattr(tasks, "_client", lambda: client)
    monkeypatch.setattr(tasks, "_markets", lambda: markets)
    monkeypatch.setattr(tasks, "_ledger", lambda: Ledger(client))
    monkeypatch.setattr(tasks.settle, "delay", sent.append)
    queued = keys.market_settle_queued(market.symbol)

    client.set(queued, "1", px=2000)
    assert tasks.sweep() == [] and sent == []
    client.delete(queued)
    assert tasks.sweep() == ["BTC-USDC"] and sent == ["BTC-USDC"]
    assert Ledger(client).settle_market(market) == drive_event_count(client)
    assert tasks.sweep() == [] and sent == ["BTC-USDC"]
    assert bal(client, A, "BTC") == (10_000, 0)


def test_a_holder_whose_time_is_up_hands_over_to_the_task_it_queues(
    client: Any, markets: MarketSet
) -> None:
    """A holder past its time while events still come leaves the flag standing (its
    successor is on its way, so the matcher queues nothing) and queues that successor once;
    the successor settles what came after and, finding nothing more, takes the flag down."""
    market = markets.markets["BTC-USDC"]
    queued = keys.market_settle_queued(market.symbol)
    drive = MarketDriver(client, market)
    open_seller(drive, 2)
    buy_lot(drive, "b1")
    first = drive_event_count(client)
    client.set(queued, "1", nx=True, px=2000)  # the trigger of the holder's task
    requeued: list[bool] = []

    assert (
        Ledger(client).settle_market(market, max_seconds=0, requeue=lambda: requeued.append(True))
        == first
    )
    assert requeued == [True] and client.exists(queued) == 1
    assert bal(client, A, "BTC") == (10_000, 0)

    buy_lot(drive, "b2")
    successor = Ledger(client)
    assert successor.settle_market(market, requeue=lambda: requeued.append(True)) == (
        drive_event_count(client) - first
    )
    assert requeued == [True] and client.exists(queued) == 0
    assert successor.is_settled(market.symbol) and bal(client, A, "BTC") == (20_000, 0)
    assert_audit_ok(client, markets)


def test_a_hand_over_that_cannot_be_queued_takes_the_flag_down(
    client: Any, markets: MarketSet
) -> None:
    """When the successor cannot be queued (the broker is away), the flag goes, so the
    matcher's next trigger queues a task; what was settled stays settled."""
    market = markets.markets["BTC-USDC"]
    queued = keys.market_settle_queued(market.symbol)
    drive = MarketDriver(client, market)
    open_seller(drive, 1)
    buy_lot(drive, "b1")
    client.set(queued, "1", nx=True, px=2000)

    def broker_away() -> None:
        raise ConnectionError("broker away")

    holder = Ledger(client)
    with pytest.raises(ConnectionError):
        holder.settle_market(market, max_seconds=0, requeue=broker_away)
    assert client.exists(queued) == 0
    assert holder.is_settled(market.symbol) and bal(client, A, "BTC") == (10_000, 0)
    assert_audit_ok(client, markets)


def test_a_script_flushed_between_rounds_is_loaded_again_and_each_fill_applies_once(
    client: Any, markets: MarketSet
) -> None:
    """The apply pipeline sends EVALSHA itself: after a SCRIPT FLUSH (a Redis restarted from
    its AOF, say) the NOSCRIPT reply makes it load the script and send the pipeline again."""
    market = markets.markets["BTC-USDC"]
    drive, ledger = MarketDriver(client, market), Ledger(client)
    open_seller(drive, 2)
    buy_lot(drive, "b1")
    assert ledger.settle_market(market) == drive_event_count(client)
    client.script_flush()
    buy_lot(drive, "b2")
    ledger.settle_market(market)
    assert ledger.is_settled(market.symbol)
    assert bal(client, A, "BTC") == (20_000, 0)
    # 3,000,000 × 1 lot each, taker fee 5 bp rounded up: 1,500 per fill.
    assert bal(client, A) == (100_000_000 - 2 * (3_000_000 + 1_500), 0)
    assert_audit_ok(client, markets)


def test_entries_read_ahead_by_a_holder_whose_cursor_another_moved_are_read_afresh(
    client: Any, markets: MarketSet
) -> None:
    """A settle loop hands its round the entries its XREAD read after where its last batch
    ended; when another worker moved the cursor since, the round checks it (in the terms'
    round trip), drops them and reads from the cursor: nothing applies twice."""
    market = markets.markets["BTC-USDC"]
    drive, ledger, other = MarketDriver(client, market), Ledger(client), Ledger(client)
    open_seller(drive, 3)
    buy_lot(drive, "b1")
    assert ledger.settle_market(market) == drive_event_count(client)
    ended = ledger.settled_to(market.symbol)
    buy_lot(drive, "b2")
    read_ahead = client.xrange(keys.market_events(market.symbol), min=f"({ended}")
    other.settle_market(market)  # another worker settles b2 and moves the cursor
    buy_lot(drive, "b3")
    assert ledger.drain(market, 10, "unused-lock", prefetched=read_ahead) == 3  # b3's events
    assert ledger.is_settled(market.symbol)
    assert bal(client, A, "BTC") == (30_000, 0)
    assert bal(client, A) == (100_000_000 - 3 * (3_000_000 + 1_500), 0)
    assert_audit_ok(client, markets)


def test_entries_read_ahead_by_a_holder_are_its_round_s_first(
    client: Any, markets: MarketSet
) -> None:
    market = markets.markets["BTC-USDC"]
    drive, ledger = MarketDriver(client, market), Ledger(client)
    open_seller(drive, 2)
    buy_lot(drive, "b1")
    ledger.settle_market(market)
    ended = ledger.settled_to(market.symbol)
    buy_lot(drive, "b2")
    read_ahead = client.xrange(keys.market_events(market.symbol), min=f"({ended}")
    assert ledger.drain(market, 10, "unused-lock", prefetched=read_ahead) == len(
        [e for _, fields in read_ahead for e in events_of(fields)]
    )
    assert ledger.is_settled(market.symbol)
    assert bal(client, A, "BTC") == (20_000, 0)
    assert_audit_ok(client, markets)
