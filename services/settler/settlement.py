"""Turn a market's settlement events into per-account operations (pure, exact integers).

Each fill becomes operations on the buyer, the seller and the fee account; each finished
order releases what its reservation still holds. :mod:`services.settler.ledger` applies
them, one Lua call per account, keyed by the event's ``eseq`` so each applies once.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from common import keys, money
from common.events import dumps
from common.markets import Market
from common.types import Liquidity, Product, Side

Operation = list[str]
AccountOps = dict[str, list[tuple[int, list[Operation]]]]


def reserve_asset(market: Market, side: str) -> str:
    """The asset an order of ``side`` locks on ``market``."""
    if market.product is Product.SPOT and side == Side.SELL:
        return market.base.symbol
    return market.quote.symbol


def plan(market: Market, events: list[dict[str, Any]]) -> AccountOps:
    """Operations per account, grouped by event, in event order."""
    per_account: dict[str, dict[int, list[Operation]]] = defaultdict(dict)

    def add(account: str, eseq: int, *ops: Operation) -> None:
        per_account[account].setdefault(eseq, []).extend(ops)

    for event in events:
        eseq = int(event["eseq"])
        if event["k"] == "done":
            asset = reserve_asset(market, event["side"])
            add(event["user"], eseq, ["release", asset, event["cid"]])
        elif event["k"] == "fill":
            if market.product is not Product.SPOT:
                raise NotImplementedError(f"settlement of {market.product} fills")
            for account, ops in spot_fill(market, event).items():
                add(account, eseq, *ops)
    return {account: sorted(groups.items()) for account, groups in per_account.items()}


def spot_fill(market: Market, fill: dict[str, Any]) -> dict[str, list[Operation]]:
    """Buyer pays notional + fee and gets the base; seller delivers and gets notional − fee."""
    price, qty = int(fill["price"]), int(fill["qty"])
    amount = money.notional(market, price, qty)
    delivered = money.base_units(market, qty)
    buyer_is_taker = fill["takerSide"] == Side.BUY
    spec = market.spec
    buyer_fee = money.fee(amount, spec.takerFeeBps if buyer_is_taker else spec.makerFeeBps)
    seller_fee = money.fee(amount, spec.makerFeeBps if buyer_is_taker else spec.takerFeeBps)
    quote, base = market.quote.symbol, market.base.symbol

    def record(cid: str, side: Side, fee: int, taker: bool) -> Operation:
        return [
            "fill",
            dumps(
                {
                    "tradeId": fill["tradeId"],
                    "market": market.symbol,
                    "clientOrderId": cid,
                    "side": side.value,
                    "price": price,
                    "qty": qty,
                    "fee": str(fee),
                    "liquidity": (Liquidity.TAKER if taker else Liquidity.MAKER).value,
                    "ts": fill["ts"],
                }
            ),
        ]

    ops: dict[str, list[Operation]] = defaultdict(list)
    ops[fill["buyer"]] += [
        ["spend", quote, str(amount + buyer_fee), fill["buyCid"]],
        ["credit", base, str(delivered)],
        record(fill["buyCid"], Side.BUY, buyer_fee, buyer_is_taker),
    ]
    ops[fill["seller"]] += [
        ["spend", base, str(delivered), fill["sellCid"]],
        ["credit", quote, str(amount - seller_fee)],
        record(fill["sellCid"], Side.SELL, seller_fee, not buyer_is_taker),
    ]
    if buyer_fee + seller_fee:
        ops[keys.FEES_ACCOUNT].append(["credit", quote, str(buyer_fee + seller_fee)])
    return ops
