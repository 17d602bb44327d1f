"""The gateway's log lines are JSON objects carrying the request id of the request served."""

from __future__ import annotations

import logging

import orjson

from services.gateway.logs import REQUEST_ID, JsonFormatter


def test_a_log_line_is_one_json_object_with_the_request_id_and_extras() -> None:
    record = logging.LogRecord(
        "services.gateway", logging.WARNING, __file__, 1, "sent %s", ("x",), None
    )
    record.status = 202
    token = REQUEST_ID.set("req-7")
    try:
        line = JsonFormatter().format(record)
    finally:
        REQUEST_ID.reset(token)
    entry = orjson.loads(line)
    assert entry["message"] == "sent x" and entry["level"] == "WARNING"
    assert entry["request_id"] == "req-7" and entry["status"] == 202
    assert entry["ts"].endswith("Z")
    assert "request_id" not in orjson.loads(JsonFormatter().format(record))
