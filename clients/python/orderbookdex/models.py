"""Typed results of the REST API (API.md §5): frozen dataclasses, every amount an ``int``.

Prices and quantities are integers in the market's units, balances in the asset's atomic
units (the wire's decimal strings become ints here; no float anywhere). Each class keeps the
answer it was read from in ``raw``, so fields the server adds later are not lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Balance",
    "Candle",
    "Depth",
    "Fill",
    "Leverage",
    "Margin",
    "Market",
    "MarketHealth",
    "Order",
    "Position",
    "Ticker",
    "Trade",
    "Twap",
    "Withdrawal",
    "as_int",
    "opt_int",
]


def as_int(value: Any) -> int:
    """An integer from a JSON number or a decimal string (``"-5"`` included); never a float."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected an integer or a decimal string, got {value!r}")
    return int(value)


def opt_int(value: Any) -> int | None:
    return None if value is None else as_int(value)


@dataclass(frozen=True)
class Order:
    client_order_id: str
    user_id: str
    market: str
    side: str
    type: str
    time_in_force: str
    reduce_only: bool
    expires_at: int
    price: int
    qty: int
    filled: int
    status: str
    reason: str | None
    ts: int
    updated_ts: int
    agent: str | None = None
    # Trigger orders (docs/api.md "Trigger orders"): present on an OrderV4 stop or take-profit.
    trigger_price: int | None = None
    trigger_source: str | None = None
    triggered: bool | None = None
    trailing_delta: int | None = None
    trailing_unit: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_open(self) -> bool:
        return self.status in ("ACCEPTED", "NEW", "PARTIAL", "UNTRIGGERED")

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Order:
        return cls(
            client_order_id=d["clientOrderId"],
            user_id=d["userId"],
            market=d["market"],
            side=d["side"],
            type=d["type"],
            time_in_force=d.get("timeInForce", "GTC"),
            reduce_only=bool(d.get("reduceOnly", False)),
            expires_at=as_int(d.get("expiresAt", 0)),
            price=as_int(d["price"]),
            qty=as_int(d["qty"]),
            filled=as_int(d.get("filled", 0)),
            status=d["status"],
            reason=d.get("reason"),
            ts=as_int(d.get("ts", 0)),
            updated_ts=as_int(d.get("updatedTs", 0)),
            agent=d.get("agent"),
            trigger_price=opt_int(d.get("triggerPrice")),
            trigger_source=d.get("triggerSource"),
            triggered=d.get("triggered"),
            trailing_delta=opt_int(d.get("trailingDelta")),
            trailing_unit=d.get("trailingUnit"),
            raw=d,
        )


@dataclass(frozen=True)
class Twap:
    """A TWAP order and its progress (docs/api.md "TWAP orders")."""

    client_order_id: str
    user_id: str
    market: str
    side: str
    qty: int
    duration_minutes: int
    randomize: bool
    slippage_bps: int
    reduce_only: bool
    sent: int
    filled: int
    slices_done: int
    slices_total: int
    slices_skipped: int
    last_skip: str | None
    open: int
    status: str
    reason: str | None
    next_slice_at: int | None
    ts: int
    updated_ts: int
    agent: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_active(self) -> bool:
        return self.status == "ACTIVE"

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Twap:
        return cls(
            client_order_id=d["clientOrderId"],
            user_id=d["userId"],
            market=d["market"],
            side=d["side"],
            qty=as_int(d["qty"]),
            duration_minutes=as_int(d["durationMinutes"]),
            randomize=bool(d["randomize"]),
            slippage_bps=as_int(d["slippageBps"]),
            reduce_only=bool(d["reduceOnly"]),
            sent=as_int(d["sent"]),
            filled=as_int(d["filled"]),
            slices_done=as_int(d["slicesDone"]),
            slices_total=as_int(d["slicesTotal"]),
            slices_skipped=as_int(d.get("slicesSkipped", 0)),
            last_skip=d.get("lastSkip"),
            open=as_int(d.get("open", 0)),
            status=d["status"],
            reason=d.get("reason"),
            next_slice_at=opt_int(d.get("nextSliceAt")),
            ts=as_int(d.get("ts", 0)),
            updated_ts=as_int(d.get("updatedTs", 0)),
            agent=d.get("agent"),
            raw=d,
        )


@dataclass(frozen=True)
class Leverage:
    """An account's initial margin in one derivative market (docs/api.md "Leverage").
    ``leverage`` is the server's display string; compute with ``initial_margin_bps``."""

    user_id: str
    market: str
    initial_margin_bps: int
    leverage: str
    chosen: bool

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Leverage:
        return cls(
            d["userId"],
            d["market"],
            as_int(d["initialMarginBps"]),
            str(d["leverage"]),
            bool(d["chosen"]),
        )


@dataclass(frozen=True)
class MarketHealth:
    """One market of ``GET /v1/admin/markets/health`` (docs/api.md "Operator reads")."""

    market: str
    status: str
    backlog: int
    unsettled_events: int
    settlement_lag_ms: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MarketHealth:
        return cls(
            d["market"],
            d["status"],
            as_int(d["backlog"]),
            as_int(d["unsettledEvents"]),
            as_int(d["settlementLagMs"]),
        )


@dataclass(frozen=True)
class Withdrawal:
    """A withdrawal: ``PENDING``, ``SENT``, ``CONFIRMED`` or ``FAILED``; ``tx_hash`` from
    ``SENT`` on (docs/api.md "Deposits and withdrawals through the vault")."""

    withdrawal_id: str
    user_id: str
    asset: str
    amount: int
    status: str
    ts: int
    tx_hash: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_final(self) -> bool:
        return self.status in ("CONFIRMED", "FAILED")

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Withdrawal:
        return cls(
            withdrawal_id=str(d.get("withdrawalId", "")),
            user_id=str(d.get("userId", "")),
            asset=d["asset"],
            amount=as_int(d["amount"]),
            status=d["status"],
            ts=as_int(d.get("ts", 0)),
            tx_hash=d.get("txHash"),
            raw=d,
        )


@dataclass(frozen=True)
class Balance:
    total: int
    available: int
    locked: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Balance:
        return cls(as_int(d["total"]), as_int(d["available"]), as_int(d["locked"]))


@dataclass(frozen=True)
class Position:
    market: str
    size: int
    entry_notional: int
    avg_entry: str  # a decimal string in price units, for display only
    realized_pnl: int
    unrealized_pnl: int
    mark_price: int
    funding_paid: int
    liquidation_price: int | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Position:
        return cls(
            market=d["market"],
            size=as_int(d["size"]),
            entry_notional=as_int(d["entryNotional"]),
            avg_entry=str(d["avgEntry"]),
            realized_pnl=as_int(d["realizedPnl"]),
            unrealized_pnl=as_int(d["unrealizedPnl"]),
            mark_price=as_int(d["markPrice"]),
            funding_paid=as_int(d["fundingPaid"]),
            liquidation_price=opt_int(d.get("liquidationPrice")),
            raw=d,
        )


@dataclass(frozen=True)
class Margin:
    equity: int
    initial_margin: int
    maintenance_margin: int
    free_collateral: int
    unrealized_pnl: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Margin:
        return cls(
            as_int(d["equity"]),
            as_int(d["initialMargin"]),
            as_int(d["maintenanceMargin"]),
            as_int(d["freeCollateral"]),
            as_int(d["unrealizedPnl"]),
        )


@dataclass(frozen=True)
class Trade:
    trade_id: str
    market: str
    price: int
    qty: int
    taker_side: str
    buyer: str
    seller: str
    buy_oid: str
    sell_oid: str
    ts: int
    seq: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Trade:
        return cls(
            d["tradeId"],
            d["market"],
            as_int(d["price"]),
            as_int(d["qty"]),
            d["takerSide"],
            d["buyer"],
            d["seller"],
            d["buyOid"],
            d["sellOid"],
            as_int(d["ts"]),
            as_int(d["seq"]),
        )


@dataclass(frozen=True)
class Fill:
    trade_id: str
    market: str
    client_order_id: str
    side: str
    price: int
    qty: int
    fee: int
    liquidity: str
    ts: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Fill:
        return cls(
            d["tradeId"],
            d["market"],
            d["clientOrderId"],
            d["side"],
            as_int(d["price"]),
            as_int(d["qty"]),
            as_int(d["fee"]),
            d["liquidity"],
            as_int(d["ts"]),
        )


Level = tuple[int, int]


@dataclass(frozen=True)
class Depth:
    market: str
    seq: int
    bids: list[Level]
    asks: list[Level]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Depth:
        return cls(
            d["market"],
            as_int(d["seq"]),
            [(as_int(p), as_int(q)) for p, q in d["bids"]],
            [(as_int(p), as_int(q)) for p, q in d["asks"]],
        )


@dataclass(frozen=True)
class Ticker:
    last: int | None
    best_bid: int | None
    best_ask: int | None
    open_24h: int | None
    high_24h: int | None
    low_24h: int | None
    volume_24h: int | None
    quote_volume_24h: int | None
    index_price: int | None
    mark_price: int | None
    funding_rate: int | None
    next_funding_ts: int | None
    open_interest: int | None
    status: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Ticker:
        g = d.get
        return cls(
            opt_int(g("last")),
            opt_int(g("bestBid")),
            opt_int(g("bestAsk")),
            opt_int(g("open24h")),
            opt_int(g("high24h")),
            opt_int(g("low24h")),
            opt_int(g("volume24h")),
            opt_int(g("quoteVolume24h")),
            opt_int(g("indexPrice")),
            opt_int(g("markPrice")),
            opt_int(g("fundingRate")),
            opt_int(g("nextFundingTs")),
            opt_int(g("openInterest")),
            g("status"),
            raw=d,
        )


@dataclass(frozen=True)
class Candle:
    t: int
    o: int
    h: int
    l: int  # noqa: E741 - the contract's field name
    c: int
    v: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Candle:
        return cls(*(as_int(d[k]) for k in ("t", "o", "h", "l", "c", "v")))


@dataclass(frozen=True)
class Market:
    symbol: str
    status: str
    product: str
    base: str
    quote: str
    price_scale: int
    qty_scale: int
    tick_size: int
    lot_size: int
    min_qty: int
    maker_fee_bps: int
    taker_fee_bps: int
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Market:
        return cls(
            d["symbol"],
            d["status"],
            d["product"],
            d["base"],
            d["quote"],
            as_int(d["priceScale"]),
            as_int(d["qtyScale"]),
            as_int(d["tickSize"]),
            as_int(d["lotSize"]),
            as_int(d["minQty"]),
            as_int(d["makerFeeBps"]),
            as_int(d["takerFeeBps"]),
            raw=d,
        )
