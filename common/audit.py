"""The auditor: check DESIGN.md's invariants on a live Redis (API.md ``GET /v1/admin/audit``).

``audit(client, markets)`` reads every known account, every market's book, events and order
records, and returns per asset ``{deposits, withdrawals, userTotals, fees, insurance,
entryNotional, difference}`` (summed in quanta, reported in atomic units) and ``invariants``:
each invariant with ``ok`` and, when broken, ``problems`` saying what broke it (amounts in
them are in quanta, as stored). The checks mean "at a quiet point": while fills are still
being settled, the settlement checks report the work in flight.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from common import keys, money
from common.chain import ChainError, Rpc
from common.events import events_of, loads
from common.markets import Market, MarketSet
from common.order_reads import record_fields, record_hmget_fields
from common.reservations import (
    NO_TERMS,
    PAIR_HOLD,
    need,
    order_terms,
    pair_hold,
    with_matched_qty,
)
from common.types import Product

# what the auditor reads of a matcher order record (either shape: common.order_reads)
MATCHED = ("status", "filled", "side", "qty")
MATCHED_FIELDS = record_hmget_fields(*MATCHED)
# oc: an attached TP/SL child's OCO sibling (docs/api.md "Attached TP/SL and position TP/SL")
BOOK = ("status", "aseq", "side", "userId", "clientOrderId", "type", "t", "oc")
BOOK_FIELDS = record_hmget_fields(*BOOK)
# a SPOT attached TP/SL pair: its children's state, its parent's (at: "<tp>|<sl>|<src>[|<hold>]")
CHILD = ("status", "qty", "filled")
PARENT_FIELDS = record_hmget_fields("status", "side", "at")

FINAL_STATUSES = {"FILLED", "CXL", "EXP", "REJECTED"}
RESTING_STATUSES = {"NEW", "PARTIAL"}
UNTRIGGERED = "UNTRIGGERED"  # open, waiting in its trigger set, not in the book
FILLS_SCAN_LIMIT = 9_000  # an account's fills stream is trimmed near 10,000 entries
MAX_PROBLEMS = 50


def audit(
    client: Any, markets: MarketSet, chain: Rpc | None = None, vault: str = ""
) -> dict[str, Any]:
    """The auditor's report (see the module docstring); with a chain (``rpc`` and the
    ``vault``'s address) also the vault's holdings against the bridge's ledger."""
    accounts = sorted(set(client.smembers(keys.known_accounts())) | set(keys.SYSTEM_ACCOUNTS))
    pipe = client.pipeline(transaction=False)
    for account in accounts:
        pipe.hgetall(keys.balances(account))
        pipe.hgetall(keys.reservations(account))
        pipe.hgetall(keys.positions(account))
        pipe.hgetall(keys.watermarks(account))
    raw = pipe.execute()
    books = {a: raw[i * 4 : i * 4 + 4] for i, a in enumerate(accounts)}

    invariants = {
        name: _Check()
        for name in (
            "conservation",
            "noNegativeBalance",
            "reservationsMatchOpenOrders",
            "openQuantitiesMatchOpenOrders",
            "everyTradeSettledOnce",
            "bookNotCrossed",
            "ordersFinalOrResting",
        )
    }
    warnings: list[str] = []
    assets = _conservation(markets, books, invariants["conservation"], warnings)
    _negative_balances(books, invariants["noNegativeBalance"])
    _reservations(client, markets, books, invariants["reservationsMatchOpenOrders"])
    _open_quantities(client, books, invariants["openQuantitiesMatchOpenOrders"])
    _settled_once(client, markets, books, invariants["everyTradeSettledOnce"])
    _books(client, markets, invariants["bookNotCrossed"], invariants["ordersFinalOrResting"])
    report: dict[str, Any] = {}
    if chain is not None:
        invariants["vaultHoldings"] = _Check()
        report["chain"] = _vault_holdings(
            client, markets, books, chain, vault, invariants["vaultHoldings"], warnings
        )
    return {
        **report,
        "assets": assets,
        "invariants": {name: check.report() for name, check in invariants.items()},
        "warnings": warnings,
        "ok": all(check.ok for check in invariants.values()),
    }


class _Check:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.count = 0

    @property
    def ok(self) -> bool:
        return self.count == 0

    def fail(self, problem: str) -> None:
        self.count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)

    def report(self) -> dict[str, Any]:
        if self.ok:
            return {"ok": True}
        return {"ok": False, "problems": self.problems, "count": self.count}


def _conservation(
    markets: MarketSet, books: dict[str, list[Any]], check: _Check, warnings: list[str]
) -> dict[str, dict[str, str]]:
    sums: dict[str, Counter[str]] = defaultdict(Counter)
    for asset in markets.assets:
        sums.setdefault(asset, Counter())  # every asset appears, even untouched
    for account, (balances, _, positions, _) in books.items():
        for field, value in balances.items():
            asset, _, kind = field.rpartition(":")
            amount = int(value)
            if kind == "dep":
                sums[asset]["deposits"] += amount
            elif kind == "wd":
                sums[asset]["withdrawals"] += amount
            elif kind == "t":
                if account == keys.FEES_ACCOUNT:
                    sums[asset]["fees"] += amount
                elif account == keys.INSURANCE_ACCOUNT:
                    sums[asset]["insurance"] += amount
                else:
                    sums[asset]["userTotals"] += amount
        for field, value in positions.items():
            symbol, _, kind = field.rpartition(":")
            market = markets.market(symbol)
            if kind != "entry" or market is None:
                continue
            if market.product in (Product.PERP, Product.FUTURE):
                sums[market.quote.symbol]["entryNotional"] += int(value)
    report: dict[str, dict[str, str]] = {}
    for asset, s in sorted(sums.items()):
        # Sums are in quanta; the report speaks the wire's atomic units (exact: × quantum).
        quantum = markets.assets[asset].quantum if asset in markets.assets else 1
        difference = (
            s["userTotals"]
            + s["fees"]
            + s["insurance"]
            - s["entryNotional"]
            - (s["deposits"] - s["withdrawals"])
        ) * quantum
        report[asset] = {
            name: str(s[name] * quantum)
            for name in (
                "deposits",
                "withdrawals",
                "userTotals",
                "fees",
                "insurance",
                "entryNotional",
            )
        }
        report[asset]["difference"] = str(difference)
        if difference:
            check.fail(f"{asset}: totals minus deposits net of withdrawals is off by {difference}")
        if s["insurance"] < 0:
            insurance = s["insurance"] * quantum
            warnings.append(f"the insurance fund holds {insurance} {asset} (below zero)")
    return report


def _vault_holdings(
    client: Any,
    markets: MarketSet,
    books: dict[str, list[Any]],
    rpc: Rpc,
    vault: str,
    check: _Check,
    warnings: list[str],
) -> dict[str, dict[str, str]]:
    """The vault's holdings of each asset with a token, at the bridge's cursor block (every
    deposit up to it is credited), against what the accounts' ledgers say it holds: chain
    deposits (whole quanta, plus the dust below a quantum left uncredited) less the vault's
    CONFIRMED payouts. At a quiet point they are equal; a payout mined but not yet CONFIRMED
    shows as a shortfall until the bridge records it, a coin or token sent to the vault
    without ``deposit`` as a surplus."""
    cursor = client.hget(keys.bridge_cursor(), "block")
    if cursor is None:
        warnings.append("the bridge has not read any block yet: vault holdings not compared")
        return {}
    sums: dict[str, Counter[str]] = defaultdict(Counter)
    for balances, *_ in books.values():
        for field, value in balances.items():
            asset, _, kind = field.rpartition(":")
            if kind in ("cdep", "cwd", "cdust"):
                sums[asset][kind] += int(value)
    report: dict[str, dict[str, str]] = {}
    for symbol, asset in sorted(markets.assets.items()):
        if asset.token is None:
            continue
        s = sums[symbol]
        try:
            held = rpc.holdings(vault, asset.token, hex(int(cursor)))
        except ChainError as exc:
            check.fail(f"{symbol}: the chain did not answer for the vault's holdings: {exc}")
            continue
        expected = (s["cdep"] - s["cwd"]) * asset.quantum + s["cdust"]
        difference = held - expected
        report[symbol] = {
            "block": cursor,
            "vault": str(held),
            "deposits": str(s["cdep"] * asset.quantum),
            "dust": str(s["cdust"]),
            "withdrawals": str(s["cwd"] * asset.quantum),
            "difference": str(difference),
        }
        if difference:
            check.fail(
                f"{symbol}: the vault holds {held} at block {cursor}, its deposits net of "
                f"confirmed withdrawals are {expected}: off by {difference}"
            )
    return report


def _negative_balances(books: dict[str, list[Any]], check: _Check) -> None:
    for account, (balances, _, _, _) in books.items():
        for field, value in balances.items():
            asset, _, kind = field.rpartition(":")
            amount = int(value)
            if kind not in ("t", "l"):
                continue
            if account == keys.INSURANCE_ACCOUNT and kind == "t":
                continue  # the insurance fund may go below zero: a warning, not a break
            if amount < 0:
                check.fail(f"{account}: {asset} {'total' if kind == 't' else 'locked'} {amount}")
            if kind == "l" and amount > int(balances.get(keys.total_field(asset), 0)):
                check.fail(f"{account}: {asset} locked {amount} exceeds its total")


def _reservations(
    client: Any, markets: MarketSet, books: dict[str, list[Any]], check: _Check
) -> None:
    lookups: list[tuple[str, str, str]] = []
    holds: list[tuple[str, str, str]] = []
    for account, (_, reservations, _, _) in books.items():
        for cid, amount in reservations.items():
            (holds if cid.endswith(PAIR_HOLD) else lookups).append((account, cid, amount))
    pipe = client.pipeline(transaction=False)
    for account, cid, _ in lookups:
        pipe.hmget(keys.account_order(account, cid), "market", "asset", "reserved", "cmd", "pa")
    records = pipe.execute()
    pipe = client.pipeline(transaction=False)
    for (account, cid, _), (symbol, *_rest) in zip(lookups, records, strict=True):
        pipe.hmget(keys.market_order(symbol or "?", account, cid), MATCHED_FIELDS)
    matched: list[list[Any]] = [
        [record_fields(dict(zip(MATCHED_FIELDS, values, strict=True))).get(f) for f in MATCHED]
        for values in pipe.execute()
    ]
    locked_by_orders = _pair_holds(client, markets, holds, check)
    for (account, cid, amount), record, state in zip(lookups, records, matched, strict=True):
        symbol, asset, reserved, command, pending = record
        held = int(amount)
        if symbol is None or asset is None:
            check.fail(f"{account}: reservation {held} for unknown order {cid}")
            continue
        locked_by_orders[(account, asset)] += held
        market = markets.market(symbol)
        status, filled, side, matched_qty = state
        if market is None or status is None:
            if reserved is not None and held != int(reserved) and not int(pending or 0):
                check.fail(f"{account}: order {cid} not yet matched holds {held}, not {reserved}")
            continue
        if status in FINAL_STATUSES:
            check.fail(f"{account}: order {cid} is {status} but still reserves {held}")
            continue
        terms = (
            with_matched_qty(
                order_terms(market, side, loads(command), int(reserved)),
                int(matched_qty) if matched_qty else None,
            )
            if command and reserved
            else NO_TERMS
        )
        expected = need(market, terms, terms.qty - int(filled or 0))
        if expected is None:
            continue
        if int(pending or 0) > 0:
            # an amend in flight: at least what either version needs (docs/api.md "Amend")
            if held < expected:
                check.fail(
                    f"{account}: order {cid} with an amend pending reserves {held}, "
                    f"less than its rest needs ({expected})"
                )
        elif expected != held:
            check.fail(f"{account}: open order {cid} reserves {held}, its rest needs {expected}")
    for account, (balances, _, _, _) in books.items():
        for field, value in balances.items():
            asset, _, kind = field.rpartition(":")
            if kind == "l" and int(value) != locked_by_orders.get((account, asset), 0):
                check.fail(
                    f"{account}: {asset} locked {value} but its open orders reserve "
                    f"{locked_by_orders.get((account, asset), 0)}"
                )


def _pair_holds(
    client: Any, markets: MarketSet, holds: list[tuple[str, str, str]], check: _Check
) -> dict[tuple[str, str], int]:
    """The holds of SPOT attached TP/SL pairs (``<parent cid>|tpsl``, docs/api.md "Attached
    TP/SL and position TP/SL"), summed per (account, asset): each belongs to a SPOT parent
    whose children still wait (both with one qty). A BUY parent's holds the base their qty
    sells; a SELL parent's holds quote: while the parent is open, what it locked at admission
    (``pairHold``: children not created count as waiting), once it has ended what buying back
    their qty at the bound may spend (:func:`common.reservations.pair_hold`), at most that."""
    locked: dict[tuple[str, str], int] = defaultdict(int)
    pipe = client.pipeline(transaction=False)
    for account, hold, _ in holds:
        pipe.hget(keys.account_cids(account), hold[: -len(PAIR_HOLD)])
    symbols = pipe.execute()
    pipe = client.pipeline(transaction=False)
    for (account, hold, _), symbol in zip(holds, symbols, strict=True):
        cid = hold[: -len(PAIR_HOLD)]
        for suffix in (".tp", ".sl"):
            pipe.hmget(keys.market_order(symbol or "?", account, cid + suffix), *CHILD)
        pipe.hmget(keys.market_order(symbol or "?", account, cid), PARENT_FIELDS)
        pipe.hget(keys.account_order(account, cid), "cmd")
    replies = pipe.execute()
    for i, ((account, hold, amount), symbol) in enumerate(zip(holds, symbols, strict=True)):
        market = markets.market(symbol or "?")
        if market is None or market.product is not Product.SPOT:
            check.fail(f"{account}: hold {amount} for {hold}, no SPOT parent")
            continue
        children = replies[4 * i : 4 * i + 2]
        raw_parent, command = replies[4 * i + 2], replies[4 * i + 3]
        parent = record_fields(dict(zip(PARENT_FIELDS, raw_parent, strict=True)))
        side = parent.get("side") or (loads(command)["side"] if command else None)
        if side != "SELL":
            locked[(account, market.base.symbol)] += int(amount)
            waiting = {
                money.base_units(market, int(qty) - int(filled or 0))
                for status, qty, filled in children
                if status == UNTRIGGERED
            }
        else:
            locked[(account, market.quote.symbol)] += int(amount)
            waiting = _buy_back_holds(market, parent, children, loads(command or "{}"))
        if len(waiting) != 1:
            check.fail(f"{account}: hold {amount} for {hold}, its children wait with {waiting}")
        elif waiting != {int(amount)}:
            check.fail(f"{account}: hold {amount} for {hold}, its waiting children sell {waiting}")
    return locked


def _buy_back_holds(
    market: Market, parent: dict[str, Any], children: list[list[Any]], command: dict[str, Any]
) -> set[int]:
    """What a SPOT SELL parent's pair hold must be, as one value per way its children wait (an
    empty set: the pair has ended and holds nothing)."""
    status = parent.get("status")
    if status is None:  # not matched yet: what its command says was locked
        return {int(command.get("pairHold", 0))}
    tp, sl, _, locked = (parent.get("at") or "0|0||0").split("|")
    if status not in FINAL_STATUSES:
        states = [c[0] for c, price in zip(children, (tp, sl), strict=True) if int(price)]
        open_pair = any(state in (None, UNTRIGGERED) for state in states)
        return {int(locked)} if open_pair else set()
    return {
        min(int(locked), pair_hold(market, int(tp), int(sl), int(qty) - int(filled or 0)))
        for state, qty, filled in children
        if state == UNTRIGGERED
    }


def _open_quantities(client: Any, books: dict[str, list[Any]], check: _Check) -> None:
    """Margin netting's sums (dex:{u}:oq) are the unfilled qty of the account's open derivative
    orders: each share belongs to an order that still holds its reservation and is not final,
    and (at a quiet point) covers that order's qty − filled. It may exceed it: a reduce-only
    order the matcher cut to the position keeps counting its accepted qty until it finishes,
    which only ever makes netting ask for more margin, never less."""
    accounts = list(books)
    pipe = client.pipeline(transaction=False)
    for account in accounts:
        pipe.hgetall(keys.open_quantities(account))
        pipe.hgetall(keys.open_quantity_shares(account))
    raw = pipe.execute()
    for i, account in enumerate(accounts):
        sums, shares = raw[2 * i], raw[2 * i + 1]
        reservations = books[account][1]
        counted: dict[str, int] = defaultdict(int)
        for cid, share in shares.items():
            left, _, field = share.partition("|")
            counted[field] += int(left)
            symbol = field.rpartition(":")[0]
            if cid not in reservations:
                check.fail(f"{account}: order {cid} counts {left} open in {field} but is finished")
                continue
            state = dict(
                zip(
                    MATCHED_FIELDS,
                    client.hmget(keys.market_order(symbol, account, cid), MATCHED_FIELDS),
                    strict=True,
                )
            )
            fields = record_fields(state)
            if fields.get("status") in ("NEW", "PARTIAL"):
                rest = int(fields["qty"]) - int(fields.get("filled") or 0)
                if rest > int(left):
                    check.fail(f"{account}: order {cid} counts {left} open, its rest is {rest}")
        for field, value in sums.items():
            if int(value) != counted.get(field, 0):
                shares_sum = counted.get(field, 0)
                check.fail(f"{account}: {field} open qty {value}, its orders' shares {shares_sum}")


def _settled_once(
    client: Any, markets: MarketSet, books: dict[str, list[Any]], check: _Check
) -> None:
    expected_trades: dict[str, int] = {}
    for symbol in markets.markets:
        last = client.xrevrange(keys.market_events(symbol), count=1)
        cursor = client.get(keys.market_settled(symbol)) or "0-0"
        last_eseq = int(events_of(last[0][1])[-1]["eseq"]) if last else 0
        if last and _id_key(cursor) < _id_key(last[0][0]):
            check.fail(f"{symbol}: events up to {last[0][0]} but settled only to {cursor}")
        for account, (_, _, _, watermarks) in books.items():
            mark = int(watermarks.get(symbol, 0))
            if mark > last_eseq:
                check.fail(f"{account}: watermark {mark} on {symbol} past its last event")
        expected_trades[symbol] = int(client.hget(keys.market_state(symbol), "tseq") or 0)
    seen: Counter[str] = Counter()
    for account in books:
        if account in keys.SYSTEM_ACCOUNTS:
            continue
        if client.xlen(keys.account_fills(account)) > FILLS_SCAN_LIMIT:
            return  # trimmed streams cannot prove once-ness; conservation still does
        for _, fields in client.xrange(keys.account_fills(account)):
            seen[loads(fields["f"])["tradeId"]] += 1
    for symbol, count in expected_trades.items():
        for tseq in range(1, count + 1):
            legs = seen.pop(f"{symbol}:{tseq}", 0)
            if legs != 2:
                check.fail(f"trade {symbol}:{tseq} settled on {legs} account legs, not 2")
    for trade_id, legs in seen.items():
        check.fail(f"trade {trade_id} settled on {legs} legs but the market never printed it")


def _books(client: Any, markets: MarketSet, crossed: _Check, orders: _Check) -> None:
    for symbol in markets.markets:
        bid = client.zrange(keys.book_bids(symbol), 0, 0, withscores=True)
        ask = client.zrange(keys.book_asks(symbol), 0, 0, withscores=True)
        if bid and ask and -int(bid[0][1]) >= int(ask[0][1]):
            crossed.fail(f"{symbol}: best bid {-int(bid[0][1])} >= best ask {int(ask[0][1])}")
        prefix = keys.market_order_prefix(symbol)
        pattern = prefix.replace("{", "\\{").replace("}", "\\}") + "*"
        order_keys = list(client.scan_iter(match=pattern, count=1000))
        pipe = client.pipeline(transaction=False)
        for key in order_keys:
            pipe.hmget(key, BOOK_FIELDS)
        states = [
            [record_fields(dict(zip(BOOK_FIELDS, values, strict=True))).get(f) for f in BOOK]
            for values in pipe.execute()
        ]
        for key, (status, aseq, side, user, cid, kind, trigger, sibling) in zip(
            order_keys, states, strict=True
        ):
            if status in FINAL_STATUSES:
                continue
            if status == UNTRIGGERED:
                member = f"{int(aseq or 0):016d}|{user}|{cid}"
                if not _waiting(client, symbol, member, side or "", kind or "", trigger or ""):
                    orders.fail(f"{key}: UNTRIGGERED but in no trigger set")
                if sibling and _fired(client, keys.market_order(symbol, user or "", sibling)):
                    orders.fail(f"{key}: UNTRIGGERED though its OCO sibling {sibling} fired")
                continue
            if status not in RESTING_STATUSES:
                orders.fail(f"{key}: status {status!r} is neither final nor resting")
                continue
            member = f"{int(aseq or 0):016d}|{user}|{cid}"
            book = keys.book_bids(symbol) if side == "BUY" else keys.book_asks(symbol)
            if client.zscore(book, member) is None:
                orders.fail(f"{key}: {status} but not in the book")


def _fired(client: Any, key: str) -> bool:
    """Has the trigger order at ``key`` fired (its t field's triggered flag)?"""
    trigger = client.hget(key, "t") or ""
    return trigger.split("|")[2:3] == ["1"]


def _waiting(client: Any, symbol: str, member: str, side: str, kind: str, trigger: str) -> bool:
    """Is an untriggered order in its trigger set (or, a trailing stop, its trailing set)?"""
    source = trigger.partition("|")[0]
    stop = not kind.startswith("TAKE_PROFIT")
    direction = "U" if (side == "BUY") == stop else "D"
    if client.zscore(keys.market_triggers(symbol, source, direction), member) is not None:
        return True
    trailing = keys.market_trailing(symbol, source, side[:1])
    return kind == "TRAILING_STOP_MARKET" and client.zscore(trailing, member) is not None


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)
