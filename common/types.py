"""Domain enums: the exact upper-case strings of the wire (API.md §4, §5)."""

from __future__ import annotations

from enum import StrEnum


class Product(StrEnum):
    SPOT = "SPOT"
    PERP = "PERP"
    FUTURE = "FUTURE"
    OPTION = "OPTION"

    @property
    def is_derivative(self) -> bool:
        return self is not Product.SPOT


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    LIMIT = "LIMIT"
    MARKET = "MARKET"


class TriggerType(StrEnum):
    """An OrderV4's types (docs/api.md "Trigger orders"): each becomes a LIMIT (``*_LIMIT``)
    or a MARKET order (``*_MARKET``) once its trigger fires."""

    STOP_MARKET = "STOP_MARKET"
    STOP_LIMIT = "STOP_LIMIT"
    TAKE_PROFIT_MARKET = "TAKE_PROFIT_MARKET"
    TAKE_PROFIT_LIMIT = "TAKE_PROFIT_LIMIT"
    TRAILING_STOP_MARKET = "TRAILING_STOP_MARKET"

    @property
    def base(self) -> OrderType:
        """The order type it becomes when its trigger fires."""
        return OrderType.LIMIT if self.value.endswith("_LIMIT") else OrderType.MARKET

    @property
    def is_stop(self) -> bool:
        """A stop (BUY fires at source >= trigger, SELL at <=); else a take-profit (mirrored)."""
        return not self.value.startswith("TAKE_PROFIT")


class TriggerSource(StrEnum):
    MARK = "MARK"
    LAST = "LAST"
    INDEX = "INDEX"


class TrailingUnit(StrEnum):
    TICKS = "TICKS"
    BPS = "BPS"


class TimeInForce(StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    POST_ONLY = "POST_ONLY"


class OrderStatus(StrEnum):
    ACCEPTED = "ACCEPTED"
    UNTRIGGERED = "UNTRIGGERED"
    NEW = "NEW"
    PARTIAL = "PARTIAL"
    FILLED = "FILLED"
    CXL = "CXL"
    EXP = "EXP"
    REJECTED = "REJECTED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {OrderStatus.FILLED, OrderStatus.CXL, OrderStatus.EXP, OrderStatus.REJECTED}
)


class SelfTradePrevention(StrEnum):
    """What an incoming order does on meeting its own user's resting order (docs/api.md
    "Self-trade prevention")."""

    EXPIRE_MAKER = "EXPIRE_MAKER"
    EXPIRE_TAKER = "EXPIRE_TAKER"
    EXPIRE_BOTH = "EXPIRE_BOTH"
    DECREMENT = "DECREMENT"


class MarketStatus(StrEnum):
    OPEN = "OPEN"
    HALTED = "HALTED"
    EXPIRED = "EXPIRED"
    CANCEL_ONLY = "CANCEL_ONLY"
    POST_ONLY = "POST_ONLY"
    REDUCE_ONLY = "REDUCE_ONLY"


class OptionType(StrEnum):
    CALL = "CALL"
    PUT = "PUT"


class Liquidity(StrEnum):
    MAKER = "MAKER"
    TAKER = "TAKER"
