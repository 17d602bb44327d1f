"""The upper-case words of the wire, as literal types (the StrEnums of common/types.py hold
the same values; tests/unit/test_message_declarations.py holds the two equal)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict

SideName = Literal["BUY", "SELL"]
OrderTypeName = Literal["LIMIT", "MARKET"]
TriggerTypeName = Literal[
    "STOP_MARKET", "STOP_LIMIT", "TAKE_PROFIT_MARKET", "TAKE_PROFIT_LIMIT", "TRAILING_STOP_MARKET"
]
TriggerSourceName = Literal["MARK", "LAST", "INDEX"]
TrailingUnitName = Literal["TICKS", "BPS"]
TimeInForceName = Literal["GTC", "IOC", "FOK", "POST_ONLY"]
OrderStatusName = Literal["UNTRIGGERED", "NEW", "PARTIAL", "FILLED", "CXL", "EXP", "REJECTED"]
FinalStatusName = Literal["FILLED", "CXL", "EXP", "REJECTED"]
MarketStatusName = Literal["OPEN", "HALTED", "EXPIRED", "CANCEL_ONLY", "POST_ONLY", "REDUCE_ONLY"]
LiquidityName = Literal["MAKER", "TAKER"]

CancelReason = Literal["USER", "LIQUIDATION", "DEADMAN", "DISCONNECT"]
"""Why a ``cancel`` or ``cancel_all`` command removes orders (the ``done`` reason)."""

DoneReason = Literal[
    "USER",  # cancelled by its owner
    "LIQUIDATION",  # cancelled by the liquidation engine
    "DEADMAN",  # cancelled by its owner's dead-man's switch (ScheduleCancel) at its deadline
    "DISCONNECT",  # its owner's cancel-on-disconnect WebSocket entry session ended
    "SELF_TRADE",  # a resting order met its owner's incoming one
    "INSUFFICIENT_MARGIN",  # may open no more than its reserved margin allows
    "TIME_IN_FORCE",  # IOC / FOK / MARKET rest not filled
    "EXPIRES_AT",  # its expiresAt passed
    "MARKET_EXPIRED",  # the market expired with it on the book
    "MARKET_HALTED",  # refused: the market is halted
    "MARKET_CLOSED",  # refused: the market has expired
    "REDUCE_ONLY",  # refused: it would not reduce a position
    "POST_ONLY_WOULD_CROSS",  # refused: it would have taken liquidity
    "REPLACED",  # cancelled by its owner's cancel-replace, whose new order follows it (or a
    # position TP/SL by a newer one of its kind)
    "REPLACE_FAILED",  # refused: the order its cancel-replace names was not open to cancel
    "MARKET_CANCEL_ONLY",  # refused: the market takes only cancels
    "MARKET_POST_ONLY",  # refused: the market takes only POST_ONLY limit orders
    "MARKET_REDUCE_ONLY",  # refused: the market takes only reduce-only orders
    "OCO",  # an attached TP/SL child whose sibling fired
]
"""Why an order reached its final status (``null`` for FILLED)."""

MESSAGE = ConfigDict(extra="forbid")
"""Every declaration's pydantic config: a key not declared is an error when validated."""
