"""Structured logs: one JSON object per line, with the request id when there is one."""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

import orjson

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The request being served; every log line written while serving it carries the id."""

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


_second = [0, ""]


def _timestamp(now: float) -> str:
    """ISO-8601 UTC with milliseconds; the strftime part is computed once per second."""
    whole = int(now)
    if whole != _second[0]:
        _second[0] = whole
        _second[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{_second[1]}.{int((now - whole) * 1000):03d}Z"


def access(fields: dict[str, Any]) -> None:
    """One access-log line per request, written straight to stdout: the same JSON shape as
    other lines (ts, level, logger, message) without the logging machinery's per-record
    cost, which at thousands of requests a second is larger than serving the request."""
    entry = {
        "ts": _timestamp(time.time()),
        "level": "INFO",
        "logger": "services.gateway.access",
        "message": "request",
        **fields,
    }
    stream = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
    if stream is not None:
        stream.write(orjson.dumps(entry) + b"\n")
    else:
        sys.stdout.write(orjson.dumps(entry).decode() + "\n")


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
