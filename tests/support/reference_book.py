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
    allowance: int | None = None  # what the order may still open (None: no bound)

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
    mark: int = 0
    index: int = 0
    band_bps: int = 0  # PERP/FUTURE: a MARKET order without a price trades within this of mark
    status: str = "OPEN"
    stp: str = "EXPIRE_MAKER"  # the market's self-trade prevention mode
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

    def _pays_premium(self, is_buy: bool) -> bool:
        return not self.is_derivative or (self.product == "OPTION" and is_buy)

    def _cost(self, price: int, qty: int, is_buy: bool, reducing: int) -> int:
        """A budgeted order's spend on a fill whose first ``reducing`` units only reduce."""
        notional = price * qty * self.mult
        fee = bps_ceil(notional, self.taker_fee_bps)
        if self._pays_premium(is_buy):
            return notional + fee
        opening = qty - reducing
        if opening <= 0:
            return fee
        margin_price = self.index if self.product == "OPTION" else price
        loss = max(price - self.mark, 0) if is_buy else max(self.mark - price, 0)
        margin = bps_ceil(margin_price * opening * self.mult, self.initial_margin_bps)
        return fee + margin + loss * opening * self.mult

    def _affordable(self, price: int, cap: int, budget: int, is_buy: bool, reducing: int) -> int:
        best = 0
        for lots in range(cap // self.lot + 1):
            if self._cost(price, lots * self.lot, is_buy, reducing) <= budget:
                best = lots * self.lot
            else:
                break
        return best

    @staticmethod
    def _reducible(is_buy: bool, position: int) -> int:
        return max(-position, 0) if is_buy else max(position, 0)

    def _cap(self, allowance: int | None, is_buy: bool, fill: int, position: int) -> int:
        """The most of ``fill`` an order may fill: it never opens beyond its allowance."""
        if allowance is None:
            return fill
        return min(fill, self._reducible(is_buy, position) + allowance)

    def _after(self, allowance: int | None, is_buy: bool, fill: int, position: int) -> int | None:
        if allowance is None:
            return None
        return allowance - max(fill - self._reducible(is_buy, position), 0)

    STP_MODES = ("EXPIRE_MAKER", "EXPIRE_TAKER", "EXPIRE_BOTH", "DECREMENT")

    def _stp_mode(self, wanted: Any) -> str:
        """The order's own mode when it names one, else the market's."""
        return wanted if wanted in self.STP_MODES else self.stp

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
            elif op == "amend":
                self.replies.append(self._amend(now, command))
            else:
                self.replies.append(self._admin(op, command.get("status")))

    def _status_refusal(self, order: RefOrder, liquidation: bool) -> str | None:
        """What the market's status refuses of an incoming order (docs/api.md "Market
        states"), or None."""
        if self.status == "OPEN":
            return None
        if self.status == "HALTED":
            return "MARKET_HALTED"
        if self.status == "CANCEL_ONLY":
            return "MARKET_CANCEL_ONLY"
        if self.status == "POST_ONLY":
            ok = order.tif == "POST_ONLY" and order.type != "MARKET"
            return None if ok else "MARKET_POST_ONLY"
        if self.status == "REDUCE_ONLY":
            return None if order.reduce_only or liquidation else "MARKET_REDUCE_ONLY"
        return "MARKET_CLOSED"

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
        if self.is_derivative:
            order.allowance = 0 if order.reduce_only else c.get("open")
        self.orders[key] = order
        refusal = self._status_refusal(order, bool(c.get("liquidation")))
        if refusal:
            order.status, order.reason = "REJECTED", refusal
            return order.status
        if order.reduce_only:
            pos = self.positions.get(order.user, 0)
            if not self.is_derivative or (is_buy and pos >= 0) or (not is_buy and pos <= 0):
                order.status, order.reason = "REJECTED", "REDUCE_ONLY"
                return order.status
            order.qty = min(order.qty, abs(pos))
        is_market = order.type == "MARKET"
        no_limit = is_market and order.price == 0
        limit = order.price
        if no_limit and self.band_bps and self.product in ("PERP", "FUTURE"):
            no_limit = False
            if is_buy:
                limit = self.mark * (BPS + self.band_bps) // BPS
            else:
                limit = -(-self.mark * (BPS - self.band_bps) // BPS)

        def crosses(price: int) -> bool:
            if no_limit:
                return True
            return price <= limit if is_buy else price >= limit

        opposite = self.asks if is_buy else self.bids
        budget: int | None = None
        if is_market and order.price == 0 and not c.get("liquidation"):
            opens = order.allowance != 0 and not order.reduce_only
            premium = self._pays_premium(is_buy)
            if (premium and is_buy) or (not premium and opens):
                budget = int(c["reserved"])
        changed = False
        post_only = order.tif == "POST_ONLY" and not is_market
        if post_only and opposite and crosses(opposite[0].price):
            order.status, order.reason = "REJECTED", "POST_ONLY_WOULD_CROSS"
            return order.status
        mode = "EXPIRE_MAKER" if c.get("liquidation") else self._stp_mode(c.get("stp"))
        if order.tif == "FOK":
            need, left_budget = order.qty, budget
            simulated = dict(self.positions)
            allowances: dict[tuple[str, str], int | None] = {}
            taker_allowance = order.allowance
            for maker in opposite:
                if not crosses(maker.price) or need == 0:
                    break
                if maker.user == order.user:
                    if mode != "EXPIRE_MAKER":
                        break  # the taker would end or be decremented here: no further
                    continue
                fill = min(need, maker.left)
                tpos, mpos = simulated.get(order.user, 0), simulated.get(maker.user, 0)
                if self._cap(taker_allowance, is_buy, fill, tpos) < fill:
                    break
                maker_allowance = allowances.get((maker.user, maker.cid), maker.allowance)
                fill = self._cap(maker_allowance, not is_buy, fill, mpos)
                if left_budget is not None:
                    reducing = self._reducible(is_buy, tpos)
                    if self._affordable(maker.price, fill, left_budget, is_buy, reducing) < fill:
                        break
                    left_budget -= self._cost(maker.price, fill, is_buy, reducing)
                taker_allowance = self._after(taker_allowance, is_buy, fill, tpos)
                allowances[(maker.user, maker.cid)] = self._after(
                    maker_allowance, not is_buy, fill, mpos
                )
                simulated[order.user] = tpos + (fill if is_buy else -fill)
                simulated[maker.user] = mpos - (fill if is_buy else -fill)
                need -= fill
            if need > 0:
                order.status, order.reason = "EXP", "TIME_IN_FORCE"
                return order.status
        remaining, margin_stop, took, self_stop = self._take(
            order, order.qty, crosses, budget, mode
        )
        changed = changed or took
        if remaining == 0:
            order.status = "FILLED"
        elif margin_stop:
            order.status, order.reason = "CXL", "INSUFFICIENT_MARGIN"
        elif self_stop:
            order.status, order.reason = "CXL", "SELF_TRADE"
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

    def _take(
        self, order: RefOrder, qty: int, crosses: Any, budget: int | None, mode: str
    ) -> tuple[int, bool, bool, bool]:
        """The order takes crossing makers, best first, up to ``qty``: what is left, whether
        it stopped because it may open no more, whether the book changed, and whether it
        stopped at its own maker (self-trade prevention ``mode`` EXPIRE_TAKER/EXPIRE_BOTH, or
        DECREMENT leaving it nothing). DECREMENT takes the smaller remaining qty off both: the
        one left with none ends (its qty kept), the other's qty falls (a maker keeps its
        place)."""
        is_buy = order.side == "BUY"
        opposite = self.asks if is_buy else self.bids
        remaining = qty
        changed = False
        margin_stop = False
        while remaining > 0 and opposite and crosses(opposite[0].price):
            maker = opposite[0]
            if maker.user == order.user and mode == "DECREMENT":
                cut = min(remaining, maker.left)
                if cut == maker.left:
                    self._remove(maker, "CXL", "SELF_TRADE")
                else:
                    maker.qty -= cut
                changed = True
                if cut == remaining:
                    return remaining, False, changed, True
                remaining -= cut
                order.qty -= cut
                continue
            if maker.user == order.user:
                if mode != "EXPIRE_TAKER":
                    self._remove(maker, "CXL", "SELF_TRADE")
                    changed = True
                if mode != "EXPIRE_MAKER":
                    return remaining, False, changed, True
                continue
            tpos, mpos = self.positions.get(order.user, 0), self.positions.get(maker.user, 0)
            fill = self._cap(order.allowance, is_buy, min(remaining, maker.left), tpos)
            if fill == 0:
                margin_stop = True
                break
            maker_cap = self._cap(maker.allowance, not is_buy, fill, mpos)
            maker_short = maker_cap < fill
            fill = maker_cap
            if budget is not None and fill > 0:
                reducing = self._reducible(is_buy, tpos)
                can = self._affordable(maker.price, fill, budget, is_buy, reducing)
                if can == 0:
                    break
                if can < fill:
                    maker_short = False
                fill = can
                budget -= self._cost(maker.price, fill, is_buy, reducing)
            changed = True
            if fill > 0:
                order.allowance = self._after(order.allowance, is_buy, fill, tpos)
                maker.allowance = self._after(maker.allowance, not is_buy, fill, mpos)
                remaining -= fill
                order.filled += fill
                maker.filled += fill
                buyer, seller = (order, maker) if is_buy else (maker, order)
                self.trades.append(
                    RefTrade(maker.price, fill, order.side, buyer.user, seller.user, buyer.cid,
                             seller.cid)
                )  # fmt: skip
                if self.is_derivative:
                    self.positions[buyer.user] = self.positions.get(buyer.user, 0) + fill
                    self.positions[seller.user] = self.positions.get(seller.user, 0) - fill
            if maker_short:
                self._remove(maker, "CXL", "INSUFFICIENT_MARGIN")
            elif maker.left == 0:
                self._remove(maker, "FILLED", None)  # type: ignore[arg-type]
                maker.reason = None
            else:
                maker.status = "PARTIAL"
        return remaining, margin_stop, changed, False

    def _amend(self, now: int, c: dict[str, Any]) -> str:
        """Amend (docs/api.md "Amend"): refused and unchanged, or the qty lowered in place
        (same price: the order keeps its place), or the order re-enters with a fresh arrival
        at the new price and qty, trading first if it crosses."""
        order = self.orders.get((c["user"], c["cid"]))
        price, qty = int(c["price"]), int(c["qty"])
        expected = int(c.get("expectedFilled", -1))
        if order is None:
            return "UNKNOWN"
        if not order.is_open:
            return "CLOSED"
        if self.status == "CANCEL_ONLY":
            return "MARKET_CANCEL_ONLY"
        if self.status not in ("OPEN", "POST_ONLY", "REDUCE_ONLY"):
            return "MARKET_HALTED"
        if expected >= 0 and expected != order.filled:
            return "FILLED_CHANGED"
        if qty <= order.filled:
            return "QTY_NOT_ABOVE_FILLED"
        if self.status == "REDUCE_ONLY" and (price != order.price or qty > order.qty):
            return "MARKET_REDUCE_ONLY"
        is_buy = order.side == "BUY"
        opposite = self.asks if is_buy else self.bids

        def crosses(maker_price: int) -> bool:
            return maker_price <= price if is_buy else maker_price >= price

        moved = price != order.price
        post_only = order.tif == "POST_ONLY" or self.status == "POST_ONLY"
        if post_only and moved and opposite and crosses(opposite[0].price):
            return "POST_ONLY_WOULD_CROSS"
        allowance = order.allowance
        if self.is_derivative:
            allowance = 0 if order.reduce_only else c.get("open")
        if price == order.price and qty <= order.qty:
            if qty < order.qty:
                self.seq += 1
            order.qty, order.allowance = qty, allowance
            return "AMENDED"
        self._side_list(order.side).remove(order)
        self.aseq += 1
        order.aseq, order.price, order.qty, order.allowance = self.aseq, price, qty, allowance
        # an amend meets its own makers by the market's mode (the order record keeps none)
        remaining, margin_stop, _, self_stop = self._take(
            order, qty - order.filled, crosses, None, self.stp
        )
        if remaining == 0:
            order.status = "FILLED"
        elif margin_stop:
            order.status, order.reason = "CXL", "INSUFFICIENT_MARGIN"
        elif self_stop:
            order.status, order.reason = "CXL", "SELF_TRADE"
        elif 0 < order.expires_at <= now:
            order.status, order.reason = "EXP", "EXPIRES_AT"
        else:
            order.status = "PARTIAL" if order.filled else "NEW"
            self._insert(order)
        self.seq += 1
        return "AMENDED"

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

    def _admin(self, op: str, status: str | None = None) -> str:
        """halt, resume, status (docs/api.md "Market states"), expire; EXPIRED is final."""
        settable = {"OPEN", "HALTED", "CANCEL_ONLY", "POST_ONLY"}
        if self.is_derivative:
            settable.add("REDUCE_ONLY")
        if self.status == "EXPIRED":
            pass
        elif op == "halt":
            self.status = "HALTED"
        elif op == "resume":
            self.status = "OPEN"
        elif op == "status" and status in settable:
            self.status = status
        elif op == "expire":
            self.status = "EXPIRED"
            for order in sorted(self.bids + self.asks, key=lambda o: o.aseq):
                self._remove(order, "CXL", "MARKET_EXPIRED")
                self.seq += 1
        return self.status
