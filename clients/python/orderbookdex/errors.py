"""The contract's errors (API.md §5) as exceptions: one class per code, grouped by family.

Every refusal the exchange answers is ``{"error": {"code", "message"}}`` with an HTTP status;
``raise_for_error`` turns it into the class of its code (``InsufficientBalance`` for
``INSUFFICIENT_BALANCE``), a subclass of its family (``Unprocessable`` for 422) and of
``DexError``. A code this client does not know yet still raises its status's family.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CODE_CLASSES",
    "BodyTooLarge",
    "Conflict",
    "DexError",
    "Duplicate",
    "FilledChanged",
    "Forbidden",
    "InsufficientBalance",
    "InsufficientFunds",
    "InsufficientMargin",
    "InternalError",
    "InvalidOrder",
    "InvalidPrice",
    "InvalidQty",
    "InvalidRequest",
    "InvalidSignature",
    "InvalidUser",
    "LimitExceeded",
    "MarketCancelOnly",
    "MarketClosed",
    "MarketHalted",
    "MarketPostOnly",
    "MarketReduceOnly",
    "MarketRefused",
    "NotFound",
    "OrderClosed",
    "Overloaded",
    "PostOnlyWouldCross",
    "QtyNotAboveFilled",
    "RateLimited",
    "ServiceUnavailable",
    "StaleTimestamp",
    "TooManyOrders",
    "Unavailable",
    "UnknownAsset",
    "UnknownMarket",
    "Unprocessable",
    "error_class",
    "raise_for_error",
]


class DexError(Exception):
    """A refusal by the exchange: ``code`` (UPPER_SNAKE), ``status`` (HTTP), ``message``.

    ``retry_after`` is the seconds of a 429's ``Retry-After``; ``index`` the action of an
    atomic batch that was refused; ``body`` the whole answer as received.
    """

    def __init__(
        self,
        code: str,
        status: int,
        message: str,
        *,
        retry_after: float | None = None,
        index: int | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.code = code
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.index = index
        self.body = body


# -- families, one per HTTP status -------------------------------------------------------------
class BodyTooLarge(DexError):
    """413: the body is over 64 KiB."""


class RateLimited(DexError):
    """429: slow down; ``retry_after`` says for how long."""


class InvalidRequest(DexError):
    """400: a malformed request or a bad value (every 400 code is one of these)."""


class InvalidSignature(DexError):
    """401: the signature does not recover the user (or an approved agent of it)."""


class Forbidden(DexError):
    """403: the admin token is wrong, or an agent key is outside its scope or markets."""


class NotFound(DexError):
    """404: no such order, agent or market."""


class Conflict(DexError):
    """409: a replay, or the order is no longer in the state the request needs."""


class Unprocessable(DexError):
    """422: well formed but refused by the account or the market."""


class ServiceUnavailable(DexError):
    """503: Redis unreachable or the market's backlog over its bound; retry later."""


class InternalError(DexError):
    """500: a fault of the exchange (never an answer to bad input)."""


# -- one class per code --------------------------------------------------------------------------
class InvalidUser(InvalidRequest):
    """INVALID_USER: ``userId`` is not an address."""


class UnknownMarket(InvalidRequest, NotFound):
    """UNKNOWN_MARKET: 400 in a body, 404 in a path."""


class UnknownAsset(InvalidRequest):
    """UNKNOWN_ASSET."""


class InvalidPrice(InvalidRequest):
    """INVALID_PRICE: not a tick multiple, not below 2^53, or outside the price band."""


class InvalidQty(InvalidRequest):
    """INVALID_QTY: not a lot multiple, under minQty, or not below 2^53."""


class InvalidOrder(InvalidRequest):
    """INVALID_ORDER: any other bad order value."""


class StaleTimestamp(InvalidRequest):
    """STALE_TS: ``ts`` too far from the server clock (check the local clock)."""


class Duplicate(Conflict):
    """DUPLICATE: this clientOrderId, signature or depositId was used before."""


class OrderClosed(Conflict):
    """ORDER_CLOSED: the order had already finished."""


class FilledChanged(Conflict):
    """FILLED_CHANGED: an amend's ``expectedFilled`` is not what the order has filled."""


class QtyNotAboveFilled(Conflict):
    """QTY_NOT_ABOVE_FILLED: an amend's new qty is not above what has filled."""


class PostOnlyWouldCross(Conflict):
    """POST_ONLY_WOULD_CROSS: a POST_ONLY order amended to a price that would take."""


class InsufficientFunds(Unprocessable):
    """The account cannot reserve what the request needs (balance or margin)."""


class InsufficientBalance(InsufficientFunds):
    """INSUFFICIENT_BALANCE."""


class InsufficientMargin(InsufficientFunds):
    """INSUFFICIENT_MARGIN."""


class MarketRefused(Unprocessable):
    """The market's state refuses the request."""


class MarketHalted(MarketRefused):
    """MARKET_HALTED."""


class MarketClosed(MarketRefused):
    """MARKET_CLOSED: the market has expired."""


class MarketCancelOnly(MarketRefused):
    """MARKET_CANCEL_ONLY."""


class MarketPostOnly(MarketRefused):
    """MARKET_POST_ONLY."""


class MarketReduceOnly(MarketRefused):
    """MARKET_REDUCE_ONLY."""


class TooManyOrders(Unprocessable):
    """TOO_MANY_ORDERS: the account's open-order limit in the market."""


class LimitExceeded(Unprocessable):
    """LIMIT_EXCEEDED: an amount would reach 2^53 quanta, or too many agents."""


class Unavailable(ServiceUnavailable):
    """UNAVAILABLE: Redis unreachable."""


class Overloaded(ServiceUnavailable):
    """OVERLOADED: the market's stream backlog (or Redis memory) over its bound."""


CODE_CLASSES: dict[str, type[DexError]] = {
    "BODY_TOO_LARGE": BodyTooLarge,
    "RATE_LIMITED": RateLimited,
    "INVALID_REQUEST": InvalidRequest,
    "INVALID_USER": InvalidUser,
    "UNKNOWN_MARKET": UnknownMarket,
    "UNKNOWN_ASSET": UnknownAsset,
    "INVALID_PRICE": InvalidPrice,
    "INVALID_QTY": InvalidQty,
    "INVALID_ORDER": InvalidOrder,
    "STALE_TS": StaleTimestamp,
    "INVALID_SIGNATURE": InvalidSignature,
    "FORBIDDEN": Forbidden,
    "NOT_FOUND": NotFound,
    "DUPLICATE": Duplicate,
    "ORDER_CLOSED": OrderClosed,
    "FILLED_CHANGED": FilledChanged,
    "QTY_NOT_ABOVE_FILLED": QtyNotAboveFilled,
    "POST_ONLY_WOULD_CROSS": PostOnlyWouldCross,
    "INSUFFICIENT_BALANCE": InsufficientBalance,
    "INSUFFICIENT_MARGIN": InsufficientMargin,
    "MARKET_HALTED": MarketHalted,
    "MARKET_CLOSED": MarketClosed,
    "MARKET_CANCEL_ONLY": MarketCancelOnly,
    "MARKET_POST_ONLY": MarketPostOnly,
    "MARKET_REDUCE_ONLY": MarketReduceOnly,
    "TOO_MANY_ORDERS": TooManyOrders,
    "LIMIT_EXCEEDED": LimitExceeded,
    "UNAVAILABLE": Unavailable,
    "OVERLOADED": Overloaded,
    "INTERNAL": InternalError,
}

_BY_STATUS: dict[int, type[DexError]] = {
    400: InvalidRequest,
    401: InvalidSignature,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: BodyTooLarge,
    422: Unprocessable,
    429: RateLimited,
    500: InternalError,
    503: ServiceUnavailable,
}


def error_class(code: str, status: int) -> type[DexError]:
    """The class of ``code``, else of its status's family, else ``DexError``."""
    return CODE_CLASSES.get(code) or _BY_STATUS.get(status) or DexError


def raise_for_error(status: int, body: Any, headers: Any = None) -> None:
    """Raise the error a non-2xx answer carries; return for a 2xx."""
    if 200 <= status < 300:
        return
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        code, message, index = "HTTP_ERROR", f"HTTP {status}: {str(body)[:200]}", None
    else:
        code = str(error.get("code", "HTTP_ERROR"))
        message = str(error.get("message", ""))
        index = error.get("index") if isinstance(error.get("index"), int) else None
    retry_after = None
    if headers is not None:
        raw = headers.get("Retry-After") or headers.get("retry-after")
        if raw is not None:
            try:
                retry_after = float(raw)
            except ValueError:
                retry_after = None
    raise error_class(code, status)(
        code, status, message, retry_after=retry_after, index=index, body=body
    )
