"""A plain-Python order book with the matcher's rules (API.md §6), for tests to compare against.

Deliberately simple (lists, linear scans): it is the executable statement of the rules, not an
engine. ``batch(now, commands)`` mirrors one call of ``match.lua``: resting orders whose
``expiresAt`` has passed expire first, then each command applies in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BPS = 10_000


def bps_ceil(amount: int, bps: int) -> int:
    return -(-amount * bps // BPS)


@dataclass
class RefOrder:
    user: str
    cid: str
    side: str
    type: str
    tif: str
    reduce_only: bool
    expires_at: int
    price: int
    qty: int
    aseq: int
    filled: int = 0
    status: str = "NEW"
    reason: str | None = None

    @property
    def left(self) -> int:
        return self.qty - self.filled

    @property
    def is_open(self) -> bool:
        return self.status in ("NEW", "PARTIAL")


@dataclass
class RefTrade:
    price: int
    qty: int
    taker_side: str
    buyer: str
    seller: str
    buy_cid: str
    sell_cid: str


@dataclass
class ReferenceBook:
    product: str = "SPOT"
    mult: int = 1
    taker_fee_bps: int = 0
    initial_margin_bps: int = 0
    lot: int = 1
    status: str = "OPEN"
    seq: int = 0
    aseq: int = 0
    bids: list[RefOrder] = field(default_factory=list)  # best first, then arrival
    asks: list[RefOrder] = field(default_factory=list)
    orders: dict[tuple[str, str], RefOrder] = field(default_factory=dict)
    trades: list[RefTrade] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)
    replies: list[Any] = field(default_factory=list)

    @property
    def is_derivative(self) -> bool:
        return self.product in ("PERP", "FUTURE", "OPTION")

    # -- book helpers -------------------------------------------------------------------
    def _side_list(self, side: str) -> list[RefOrder]:
        return self.bids if side == "BUY" else self.asks

    def _insert(self, order: RefOrder) -> None:
        book = self._side_list(order.side)
        book.append(order)
        if order.side == "BUY":
            book.sort(key=lambda o: (-o.price, o.aseq))
        else:
            book.sort(key=lambda o: (o.price, o.aseq))

    def _remove(self, order: RefOrder, status: str, reason: str) -> None:
        self._side_list(order.side).remove(order)
        order.status, order.reason = status, reason

    def levels(self, side: str) -> dict[int, int]:
        totals: dict[int, int] = {}
        for order in self._side_list(side):
            totals[order.price] = totals.get(order.price, 0) + order.left
        return totals

    def _cost(self, price: int, qty: int, reduce_only: bool) -> int:
        notional = price * qty * self.mult
        fee = bps_ceil(notional, self.taker_fee_bps)
        if reduce_only:
            return fee
        if self.product in ("PERP", "FUTURE"):
            return bps_ceil(notional, self.initial_margin_bps) + fee
        return notional + fee

    def _affordable(self, price: int, cap: int, budget: int, reduce_only: bool) -> int:
        best = 0
        for lots in range(cap // self.lot + 1):
            if self._cost(price, lots * self.lot, reduce_only) <= budget:
                best = lots * self.lot
            else:
                break
        return best

    # -- one call of match.lua ----------------------------------------------------------
    def batch(self, now: int, commands: list[dict[str, Any]]) -> None:
        for order in sorted(self.bids + self.asks, key=lambda o: (o.expires_at, o.aseq)):
            if 0 < order.expires_at <= now:
                self._remove(order, "EXP", "EXPIRES_AT")
                self.seq += 1
        for command in commands:
            op = command["op"]
            if op == "order":
                self.replies.append(self._order(now, command))
            elif op == "cancel":
                self.replies.append(self._cancel(command))
            elif op == "cancel_all":
                self.replies.append(self._cancel_all(command))
            else:
                self.replies.append(self._admin(op))

    def _order(self, now: int, c: dict[str, Any]) -> str:
        key = (c["user"], c["cid"])
        if key in self.orders:
            return self.orders[key].status
        self.aseq += 1
        is_buy = c["side"] == "BUY"
        order = RefOrder(
            user=c["user"], cid=c["cid"], side=c["side"], type=c["type"], tif=c["tif"],
            reduce_only=bool(c["reduceOnly"]), expires_at=int(c["expiresAt"]),
            price=int(c["price"]), qty=int(c["qty"]), aseq=self.aseq,
        )  # fmt: skip
        self.orders[key] = order
        if self.status != "OPEN":
            order.status = "REJECTED"
            order.reason = "MARKET_HALTED" if self.status == "HALTED" else "MARKET_CLOSED"
            return order.status
        if order.reduce_only:
            pos = self.positions.get(order.user, 0)
            if not self.is_derivative or (is_buy and pos >= 0) or (not is_buy and pos <= 0):
                order.status, order.reason = "REJECTED", "REDUCE_ONLY"
                return order.status
            order.qty = min(order.qty, abs(pos))
        is_market = order.type == "MARKET"
        no_limit = is_market and order.price == 0

        def crosses(price: int) -> bool:
            if no_limit:
                return True
            return price <= order.price if is_buy else price >= order.price

        opposite = self.asks if is_buy else self.bids
        budget: int | None = int(c["reserved"]) if (is_market and is_buy and no_limit) else None
        changed = False
        post_only = order.tif == "POST_ONLY" and not is_market
        if post_only and opposite and crosses(opposite[0].price):
            order.status, order.reason = "REJECTED", "POST_ONLY_WOULD_CROSS"
            return order.status
        if order.tif == "FOK":
            need, left_budget = order.qty, budget
            for maker in opposite:
                if not crosses(maker.price) or need == 0:
                    break
                if maker.user == order.user:
                    continue
                fill = min(need, maker.left)
                if left_budget is not None:
                    if self._affordable(maker.price, fill, left_budget, order.reduce_only) < fill:
                        break
                    left_budget -= self._cost(maker.price, fill, order.reduce_only)
                need -= fill
            if need > 0:
                order.status, order.reason = "EXP", "TIME_IN_FORCE"
                return order.status
        remaining = order.qty
        while remaining > 0 and opposite and crosses(opposite[0].price):
            maker = opposite[0]
            if maker.user == order.user:
                self._remove(maker, "CXL", "SELF_TRADE")
                changed = True
                continue
            fill = min(remaining, maker.left)
            if budget is not None:
                fill = self._affordable(maker.price, fill, budget, order.reduce_only)
                if fill == 0:
                    break
                budget -= self._cost(maker.price, fill, order.reduce_only)
            changed = True
            remaining -= fill
            order.filled += fill
            maker.filled += fill
            if maker.left == 0:
                self._remove(maker, "FILLED", None)  # type: ignore[arg-type]
                maker.reason = None
            else:
                maker.status = "PARTIAL"
            buyer, seller = (order, maker) if is_buy else (maker, order)
            self.trades.append(
                RefTrade(maker.price, fill, order.side, buyer.user, seller.user, buyer.cid,
                         seller.cid)
            )  # fmt: skip
            if self.is_derivative:
                self.positions[buyer.user] = self.positions.get(buyer.user, 0) + fill
                self.positions[seller.user] = self.positions.get(seller.user, 0) - fill
        if remaining == 0:
            order.status = "FILLED"
        elif is_market or order.tif in ("IOC", "FOK"):
            order.status, order.reason = "EXP", "TIME_IN_FORCE"
        elif 0 < order.expires_at <= now:
            order.status, order.reason = "EXP", "EXPIRES_AT"
        else:
            order.status = "PARTIAL" if order.filled else "NEW"
            self._insert(order)
            changed = True
        if changed:
            self.seq += 1
        return order.status

    def _cancel(self, c: dict[str, Any]) -> str:
        order = self.orders.get((c["user"], c["cid"]))
        if order is None:
            return "UNKNOWN"
        if not order.is_open:
            return "CLOSED"
        self._remove(order, "CXL", c.get("reason") or "USER")
        self.seq += 1
        return "CANCELLED"

    def _cancel_all(self, c: dict[str, Any]) -> int:
        mine = sorted(
            (o for o in self.bids + self.asks if o.user == c["user"]), key=lambda o: o.aseq
        )
        for order in mine:
            self._remove(order, "CXL", c.get("reason") or "USER")
            self.seq += 1
        return len(mine)

    def _admin(self, op: str) -> str:
        if op == "halt" and self.status == "OPEN":
            self.status = "HALTED"
        elif op == "resume" and self.status == "HALTED":
            self.status = "OPEN"
        elif op == "expire" and self.status != "EXPIRED":
            self.status = "EXPIRED"
            for order in sorted(self.bids + self.asks, key=lambda o: o.aseq):
                self._remove(order, "CXL", "MARKET_EXPIRED")
                self.seq += 1
        return self.status
