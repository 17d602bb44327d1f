"""Typed results of the REST API (API.md §5): frozen dataclasses, every amount an ``int``.

Prices and quantities are integers in the market's units, balances in the asset's atomic
units (the wire's decimal strings become ints here; no float anywhere). Each class keeps the
answer it was read from in ``raw``, so fields the server adds later are not lost.

Every class reads its answer one way (:class:`Model`): each field from the camelCase key of
its name (``time_in_force`` from ``timeInForce``), converted by its annotation (``int`` by
:func:`as_int`, ``int | None`` by :func:`opt_int`, ``bool``, ``str``); a key the answer lacks
is the field's default, else its value in the class's ``ABSENT``, else ``None`` for an
optional field, else an error (``KeyError``). ``raw`` holds the answer itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Self

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
]


def as_int(value: Any) -> int:
    """An integer from a JSON number or a decimal string (``"-5"`` included); never a float."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected an integer or a decimal string, got {value!r}")
    return int(value)


def opt_int(value: Any) -> int | None:
    return None if value is None else as_int(value)


def camel(name: str) -> str:
    """The JSON key of a field (``time_in_force``: ``timeInForce``; ``open_24h``: ``open24h``)."""
    first, *rest = name.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "int": as_int, "int | None": opt_int, "bool": bool, "str": str,
}  # fmt: skip
"""How a field of each annotation is read from the answer (other annotations: as they come)."""


class Model:
    """What every result class shares: :meth:`from_json`, as the module's doc says."""

    ABSENT: ClassVar[dict[str, Any]] = {}
    """The value of a required field whose key the server may leave out."""

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        values: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name == "raw":
                values["raw"] = d
                continue
            key = camel(f.name)
            if key in d:
                convert = _CONVERT.get(str(f.type))
                values[f.name] = convert(d[key]) if convert else d[key]
            elif f.default is not MISSING:
                values[f.name] = f.default
            elif f.name in cls.ABSENT:
                values[f.name] = cls.ABSENT[f.name]
            elif str(f.type).endswith("| None"):
                values[f.name] = None
            else:
                raise KeyError(key)
        return cls(**values)


@dataclass(frozen=True)
class Order(Model):
    ABSENT: ClassVar[dict[str, Any]] = {
        "time_in_force": "GTC", "reduce_only": False, "expires_at": 0, "filled": 0, "ts": 0,
        "updated_ts": 0,
    }  # fmt: skip

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


@dataclass(frozen=True)
class Twap(Model):
    """A TWAP order and its progress (docs/api.md "TWAP orders")."""

    ABSENT: ClassVar[dict[str, Any]] = {"slices_skipped": 0, "open": 0, "ts": 0, "updated_ts": 0}

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


@dataclass(frozen=True)
class Leverage(Model):
    """An account's initial margin in one derivative market (docs/api.md "Leverage").
    ``leverage`` is the server's display string; compute with ``initial_margin_bps``."""

    user_id: str
    market: str
    initial_margin_bps: int
    leverage: str
    chosen: bool


@dataclass(frozen=True)
class MarketHealth(Model):
    """One market of ``GET /v1/admin/markets/health`` (docs/api.md "Operator reads")."""

    market: str
    status: str
    backlog: int
    unsettled_events: int
    settlement_lag_ms: int


@dataclass(frozen=True)
class Withdrawal(Model):
    """A withdrawal: ``PENDING``, ``SENT``, ``CONFIRMED`` or ``FAILED``; ``tx_hash`` from
    ``SENT`` on (docs/api.md "Deposits and withdrawals through the vault")."""

    ABSENT: ClassVar[dict[str, Any]] = {"withdrawal_id": "", "user_id": "", "ts": 0}

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


@dataclass(frozen=True)
class Balance(Model):
    total: int
    available: int
    locked: int


@dataclass(frozen=True)
class Position(Model):
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


@dataclass(frozen=True)
class Margin(Model):
    equity: int
    initial_margin: int
    maintenance_margin: int
    free_collateral: int
    unrealized_pnl: int


@dataclass(frozen=True)
class Trade(Model):
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


@dataclass(frozen=True)
class Fill(Model):
    trade_id: str
    market: str
    client_order_id: str
    side: str
    price: int
    qty: int
    fee: int
    liquidity: str
    ts: int


Level = tuple[int, int]


@dataclass(frozen=True)
class Depth(Model):
    market: str
    seq: int
    bids: list[Level]
    asks: list[Level]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Depth:
        levels = {side: [(as_int(p), as_int(q)) for p, q in d[side]] for side in ("bids", "asks")}
        return super().from_json(d | levels)


@dataclass(frozen=True)
class Ticker(Model):
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


@dataclass(frozen=True)
class Candle(Model):
    t: int
    o: int
    h: int
    l: int  # noqa: E741 - the contract's field name
    c: int
    v: int


@dataclass(frozen=True)
class Market(Model):
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
