"""Stream fields and the JSON codec of every message, and the two readers that split one
entry or publication into the messages it holds."""

from __future__ import annotations

from typing import Any, cast

import orjson

from common.events.publications import DepthPublication, DepthUpdate
from common.events.settlement import SettlementEvent

COMMAND_FIELD = "c"
EVENT_FIELD = "e"
EVENT_BATCH_FIELD = "b"
TRADE_FIELD = "t"
FILL_FIELD = "f"

MAX_SAFE_INTEGER = 2**53 - 1


def dumps(value: Any) -> str:
    """JSON text for a stream field or a publication."""
    return orjson.dumps(value).decode()


def loads(text: str | bytes) -> Any:
    return orjson.loads(text)


def events_of(fields: Any) -> list[SettlementEvent]:
    """The settlement events of one ``dex:{m}:events`` entry, in ``eseq`` order. The matcher
    writes every event of a script call into one entry, one field per event: the field's name
    is the event's ``eseq``, its value the event JSON (fields come back in the order written).
    Also read: the single event in field ``e`` and a JSON array in field ``b``. Every reader
    of the stream decodes entries here; the events are not validated (the matcher's are held
    to their declaration by tests/integration/test_message_schemas.py)."""
    events: list[SettlementEvent] = []
    for name, value in fields.items():
        key = name.decode() if isinstance(name, bytes) else name
        if key == EVENT_BATCH_FIELD:
            events.extend(orjson.loads(value))
        else:  # "e" or an eseq
            events.append(orjson.loads(value))
    return events


def depth_updates(payload: DepthPublication) -> list[DepthUpdate]:
    """The ``{"seq", "data"}`` updates of one ``depth:`` publication, in seq order: the items
    of a batch (``{"seq": last, "batch": [...]}``, one per seq of a matcher call) or the
    publication itself. Every subscriber of the depth channel splits publications here."""
    batch = payload.get("batch") if isinstance(payload, dict) else None
    if batch is None:
        return [cast(DepthUpdate, payload)]
    return cast(list[DepthUpdate], batch)
