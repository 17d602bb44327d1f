"""Settlement-event stream entries: the matcher's (one field per event, named by its eseq),
the single-event one (field ``e``) and a JSON array (field ``b``)."""

from __future__ import annotations

from common.events import dumps, events_of


def test_matcher_entry_gives_one_event_per_field_in_order() -> None:
    events = [{"k": "fill", "eseq": 9}, {"k": "done", "eseq": 10}, {"k": "done", "eseq": 11}]
    fields = {str(e["eseq"]): dumps(e) for e in events}
    assert events_of(fields) == events
    assert events_of({k.encode(): v.encode() for k, v in fields.items()}) == events


def test_batched_entry_gives_its_events_in_order() -> None:
    events = [{"k": "fill", "eseq": 7}, {"k": "done", "eseq": 8}]
    assert events_of({"b": dumps(events)}) == events


def test_single_event_entry_gives_one_event() -> None:
    assert events_of({"e": dumps({"k": "done", "eseq": 3})}) == [{"k": "done", "eseq": 3}]


def test_undecoded_fields_are_read_too() -> None:
    assert events_of({b"b": dumps([{"eseq": 1}]).encode()}) == [{"eseq": 1}]
    assert events_of({b"e": b'{"eseq": 2}'}) == [{"eseq": 2}]
    assert events_of({}) == []
