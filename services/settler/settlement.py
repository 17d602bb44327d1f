"""Turn a market's settlement events into per-account operations (pure, exact integers).

Each fill becomes operations on the buyer, the seller and the fee account; each finished
order releases what its reservation still holds, leaves the account's open-order index and
drops its accepted record (``finished``: its reads need only the matcher's record now).
:mod:`services.settler.ledger` applies them, one Lua call per account, keyed by the event's
``eseq`` so each applies once.

SPOT: the buyer pays notional + fee and receives the base; the seller the reverse.
PERP/FUTURE: fees come out of collateral, the position moves with an exact integer entry
notional and any realized PnL is credited in the Lua step (it depends on the position there).
OPTION: the premium moves as cash like a spot price, the position size and entry are tracked
for display, and no PnL moves as cash until expiry.
After each leg the order's reservation becomes what its unfilled rest needs (``trim``), but
never less while an amend of the order is pending (docs/api.md "Amend"); an ``amend`` event
ends its hold and, when the book took it, gives the order its new terms; a ``decrement``
(self-trade prevention) lowers the order's qty and trims its reservation the same way.
A SPOT BUY parent's attached TP/SL pair holds the base its fills bought (a fill's ``hold``:
moved from available into the pair's reservation ``<cid>|tpsl`` with the credit); the child
that fires takes it as its own reservation (``take``) and sells from it; a child that ends
unfired with no sibling open releases it (its done event's ``hold``). docs/api.md "Attached
TP/SL and position TP/SL".
A SPOT SELL parent's pair holds quote instead, locked whole at admission (the children buy the
base back): its done event's ``keep`` and a child's ``take`` with ``keep`` bring the hold down
to that amount (``keep``: the rest is released) before the take moves it to the child.
A fee a side cannot pay in full (per-fill rounding can need a few units more than the
reservation held) is cut, never taken below zero; the fee account is credited what was paid.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from common import keys, money
from common.events import (
    AmendEvent,
    DecrementEvent,
    FillEvent,
    FillRecord,
    SettlementEvent,
    dumps,
)
from common.markets import Market
from common.reservations import (
    NO_TERMS,
    OrderTerms,
    order_terms,
    reserve_asset,
    with_matched_qty,
)
from common.types import Product, Side

__all__ = [
    "AccountOps",
    "Operation",
    "amended_terms",
    "decremented_terms",
    "keep_op",
    "order_terms",
    "plan",
    "reserve_asset",
]

Operation = list[str]
AccountOps = dict[str, list[tuple[int, list[Operation]]]]


def plan(
    market: Market,
    events: Sequence[SettlementEvent],
    terms: Mapping[tuple[str, str], OrderTerms] | None = None,
) -> AccountOps:
    """Operations per account, grouped by event, in event order. An amend the book took
    makes its new terms the order's for the events after it."""
    terms = dict(terms or {})
    finishing = finishing_orders(events)
    per_account: dict[str, dict[int, list[Operation]]] = defaultdict(dict)

    def add(account: str, eseq: int, *ops: Operation) -> None:
        per_account[account].setdefault(eseq, []).extend(ops)

    for event in events:
        eseq = int(event["eseq"])
        if event["k"] == "done":
            asset = reserve_asset(market, event["side"])
            user, cid = event["user"], event["cid"]
            # a SPOT attached pair's hold ends with its last child, unfired; a SELL parent's
            # quote hold keeps what buying back its filled qty may spend
            pair: list[Operation] = []
            if "keep" in event:
                pair = [keep_op(market, event["hold"], int(event["keep"]))]
            elif "hold" in event:
                pair = [["release", asset, event["hold"]]]
            add(
                user,
                eseq,
                ["release", asset, cid],
                *pair,
                ["finished", cid, keys.account_order(user, cid)],
                # attached TP/SL children never created leave the open-order index too
                *(["finished", child, keys.account_order(user, child)] for child in unborn(event)),
            )
        elif event["k"] == "take":
            # a SPOT child fires: its pair's hold becomes its reservation (a buy-back child's:
            # what its budget is, the rest released first)
            kept = [keep_op(market, event["hold"], int(event["keep"]))] if "keep" in event else []
            add(event["user"], eseq, *kept, ["take", event["hold"], event["cid"]])
        elif event["k"] == "fill":
            for account, ops in fill_ops(market, event, terms, finishing).items():
                add(account, eseq, *ops)
        elif event["k"] == "amend":
            key = (event["user"], event["cid"])
            if event["accepted"]:
                terms[key] = amended_terms(market, event)
            add(event["user"], eseq, amend_op(market, event, terms.get(key, NO_TERMS)))
        elif event["k"] == "decrement":
            key = (event["user"], event["cid"])
            if key in finishing:
                continue  # its done event releases the whole reservation
            terms[key] = decremented_terms(terms.get(key, NO_TERMS), event)
            add(event["user"], eseq, decrement_op(market, event, terms[key]))
    return {account: sorted(groups.items()) for account, groups in per_account.items()}


def keep_op(market: Market, hold: str, amount: int) -> Operation:
    """A SPOT SELL parent's pair hold (quote) comes down to ``amount``: the rest is
    released (0: all of it, the hold ends)."""
    return ["keep", market.quote.symbol, hold, str(amount)]


def unborn(event: Mapping[str, Any]) -> list[str]:
    """The attached TP/SL children a parent that ended unfilled held ids for (never created):
    a done event's ``attached``."""
    return list(event.get("attached", []))


def amended_terms(market: Market, event: AmendEvent) -> OrderTerms:
    """The terms an amend the book took gives its order (as its new command says them)."""
    fields = ("price", "qty", "open", "mp", "loss", "im")
    command: Any = {"type": "LIMIT", **{k: v for k, v in event.items() if k in fields}}
    return order_terms(market, event["side"], command, int(event["reserved"]))


def amend_op(market: Market, event: AmendEvent, order: OrderTerms) -> Operation:
    """The amend's operation: the pending count falls, the new command becomes the order's
    when the book took it, and with nothing pending the reservation becomes what ``order``
    (the terms in force after the amend) needs for the rest."""
    user, cid = event["user"], event["cid"]
    return [
        "amend",
        reserve_asset(market, event["side"]),
        cid,
        keys.account_order(user, cid),
        event["aid"],
        "1" if event["accepted"] else "0",
        *_terms_args(market, order),
    ]


def decremented_terms(order: OrderTerms, event: DecrementEvent) -> OrderTerms:
    """The order's terms once self-trade prevention's DECREMENT left it ``event["qty"]``: the
    lower qty, as the matcher's record says it (a pro-rata reservation keeps its own)."""
    return with_matched_qty(order, int(event["qty"]))


def decrement_op(market: Market, event: DecrementEvent, order: OrderTerms) -> Operation:
    """The decrement's operation: a derivative order's unfilled qty falls by the cut, and
    the reservation becomes what ``order`` (the decremented terms) needs for the rest, as a
    fill's trim sets it."""
    user, cid = event["user"], event["cid"]
    return [
        "decrement",
        reserve_asset(market, event["side"]),
        cid,
        str(int(event["cut"])),
        *_terms_args(market, order),
        keys.account_order(user, cid),
    ]


def _terms_args(market: Market, order: OrderTerms) -> list[str]:
    """An order's terms as apply_ops.lua's trim and amend read them: kind, price, qty, mult,
    bps1, bps2, reserved, open, margin price, loss."""
    spec = market.spec
    mult = market.base_multiplier if order.kind == "base" else market.notional_multiplier
    return [
        order.kind,
        str(order.price),
        str(order.qty),
        str(mult),
        str(order.im or spec.initialMarginBps or 0),
        str(spec.takerFeeBps),
        str(order.reserved),
        str(order.open),
        str(order.margin_price),
        str(order.loss),
    ]


def finishing_orders(events: Sequence[SettlementEvent]) -> set[tuple[str, str]]:
    """Orders whose done event is among ``events``: their release follows in the same
    account call, so their fills need no trim (and no lookup of their terms)."""
    return {(e["user"], e["cid"]) for e in events if e["k"] == "done"}


def fill_ops(
    market: Market,
    fill: FillEvent,
    terms: Mapping[tuple[str, str], OrderTerms],
    finishing: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset(),
) -> dict[str, list[Operation]]:
    """Both legs of one fill, plus the fee account's credit."""
    price, qty = int(fill["price"]), int(fill["qty"])
    amount = money.notional(market, price, qty)
    buyer_is_taker = fill["takerSide"] == Side.BUY
    spec = market.spec
    buyer_fee = money.fee(amount, spec.takerFeeBps if buyer_is_taker else spec.makerFeeBps)
    seller_fee = money.fee(amount, spec.makerFeeBps if buyer_is_taker else spec.takerFeeBps)
    quote, base = market.quote.symbol, market.base.symbol
    buyer, seller = fill["buyer"], fill["seller"]
    buy_cid, sell_cid = fill["buyCid"], fill["sellCid"]
    product = market.product

    ops: dict[str, list[Operation]] = defaultdict(list)
    if product is Product.SPOT:
        delivered = money.base_units(market, qty)
        ops[buyer] += [
            ["spend", quote, str(amount + buyer_fee), buy_cid, str(buyer_fee)],
            ["credit", base, str(delivered)],
        ]
        if "hold" in fill:  # a parent's attached pair holds what it bought (fees are in quote)
            ops[buyer].append(["hold", base, fill["hold"], str(delivered)])
        ops[seller] += [
            ["spend", base, str(delivered), sell_cid],
            ["credit", quote, str(amount - seller_fee)],
        ]
    elif product is Product.OPTION:
        ops[buyer] += [["spend", quote, str(amount + buyer_fee), buy_cid, str(buyer_fee)]]
        ops[seller] += [
            ["spend", quote, str(seller_fee), sell_cid, str(seller_fee)],
            ["credit", quote, str(amount)],
        ]
    else:
        ops[buyer] += [["spend", quote, str(buyer_fee), buy_cid, str(buyer_fee)]]
        ops[seller] += [["spend", quote, str(seller_fee), sell_cid, str(seller_fee)]]
    if product.is_derivative:
        cash = "1" if product in (Product.PERP, Product.FUTURE) else "0"
        multiplier = str(market.notional_multiplier)
        ops[buyer].append(["position", quote, str(qty), str(price), multiplier, cash])
        ops[seller].append(["position", quote, str(-qty), str(price), multiplier, cash])
    for user, cid, side in ((buyer, buy_cid, Side.BUY), (seller, sell_cid, Side.SELL)):
        if (user, cid) in finishing:
            continue
        order = terms.get((user, cid), NO_TERMS)
        ops[user].append(
            [
                "trim",
                reserve_asset(market, side),
                cid,
                str(qty),
                *_terms_args(market, order),
                keys.account_order(user, cid),
            ]
        )
    ops[buyer].append(_record(market, fill, buy_cid, Side.BUY, buyer_fee, buyer_is_taker))
    ops[seller].append(_record(market, fill, sell_cid, Side.SELL, seller_fee, not buyer_is_taker))
    if buyer_fee + seller_fee:
        # what the sides could not pay of their fees is taken off when applied (ledger)
        ops[keys.FEES_ACCOUNT].append(["credit", quote, str(buyer_fee + seller_fee)])
    return ops


def _record(
    market: Market, fill: FillEvent, cid: str, side: Side, fee: int, taker: bool
) -> Operation:
    record: FillRecord = {
        "tradeId": fill["tradeId"],
        "market": market.symbol,
        "clientOrderId": cid,
        "side": "BUY" if side is Side.BUY else "SELL",
        "price": int(fill["price"]),
        "qty": int(fill["qty"]),
        "fee": str(fee),
        "liquidity": "TAKER" if taker else "MAKER",
        "ts": fill["ts"],
    }
    return ["fill", dumps(record)]
