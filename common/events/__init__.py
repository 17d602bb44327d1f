"""The messages that cross service boundaries: one typed declaration each, and their codec.

These are the interfaces between services (docs/architecture.md):

* a **command** on ``dex:{m}:in`` (field ``c``) for the matcher, and the matcher's **reply**
  when the command names a reply list (:mod:`.commands`);
* **settlement events** the matcher XADDs to ``dex:{m}:events`` for the settler
  (:mod:`.settlement`; :func:`events_of` reads an entry);
* **records** read back for REST: trades on ``dex:{m}:trades`` (field ``t``) and candles from
  the matcher, an account's fills from the settler (:mod:`.records`);
* a **publication** on ``dex:ch:<topic>``: ``{"seq": N, "data": ...}``; on ``depth:`` the
  matcher publishes once per script call, several seqs as ``{"seq": last, "batch": [{"seq",
  "data"}, ...]}`` (:mod:`.publications`; :func:`depth_updates` splits it).

Each declaration is a TypedDict (pydantic config: undeclared keys forbidden), so mypy checks
every producer in Python and :mod:`.schema` validates decoded JSON against the same
declaration in tests. Every integer is a JSON number below 2^53 (Lua reads them exactly)
unless noted.
"""

from common.events.codec import (
    COMMAND_FIELD,
    EVENT_BATCH_FIELD,
    EVENT_FIELD,
    FILL_FIELD,
    MAX_SAFE_INTEGER,
    TRADE_FIELD,
    depth_updates,
    dumps,
    events_of,
    loads,
)
from common.events.commands import (
    AdminCommand,
    AdminReply,
    AmendCommand,
    AmendReply,
    AmendResult,
    CancelAllCommand,
    CancelAllReply,
    CancelCommand,
    CancelReply,
    Command,
    OrderCommand,
    OrderReply,
    Reply,
)
from common.events.publications import (
    TOPIC_MESSAGES,
    AccountNotice,
    AccountPublication,
    DepthBatch,
    DepthChange,
    DepthPublication,
    DepthUpdate,
    Level,
    OrderChangesPublication,
    OrderPublication,
    OrderUpdate,
    PriceTicker,
    Publication,
    StatusTicker,
    Ticker,
    TickerPublication,
    TradePublication,
    TwapPublication,
    TwapUpdate,
    topic_message,
)
from common.events.records import Candle, FillRecord, Trade
from common.events.settlement import (
    AmendEvent,
    DecrementEvent,
    DoneEvent,
    FillEvent,
    SettlementEvent,
    TakeEvent,
)

__all__ = [
    "COMMAND_FIELD",
    "EVENT_BATCH_FIELD",
    "EVENT_FIELD",
    "FILL_FIELD",
    "MAX_SAFE_INTEGER",
    "TOPIC_MESSAGES",
    "TRADE_FIELD",
    "AccountNotice",
    "AccountPublication",
    "AdminCommand",
    "AdminReply",
    "AmendCommand",
    "AmendEvent",
    "AmendReply",
    "AmendResult",
    "CancelAllCommand",
    "CancelAllReply",
    "CancelCommand",
    "CancelReply",
    "Candle",
    "Command",
    "DecrementEvent",
    "DepthBatch",
    "DepthChange",
    "DepthPublication",
    "DepthUpdate",
    "DoneEvent",
    "FillEvent",
    "FillRecord",
    "Level",
    "OrderChangesPublication",
    "OrderCommand",
    "OrderPublication",
    "OrderReply",
    "OrderUpdate",
    "PriceTicker",
    "Publication",
    "Reply",
    "SettlementEvent",
    "StatusTicker",
    "TakeEvent",
    "Ticker",
    "TickerPublication",
    "Trade",
    "TradePublication",
    "TwapPublication",
    "TwapUpdate",
    "depth_updates",
    "dumps",
    "events_of",
    "loads",
    "topic_message",
]
