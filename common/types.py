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


class TimeInForce(StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    POST_ONLY = "POST_ONLY"


class OrderStatus(StrEnum):
    ACCEPTED = "ACCEPTED"
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
