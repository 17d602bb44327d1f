"""A redis-py asyncio connection that packs commands with hiredis (C) instead of Python.

redis-py's asyncio connection encodes and frames every argument in Python; for the
gateway's few-commands-per-order hot path that is a visible share of the CPU. hiredis's
``pack_command`` produces the same RESP bytes; anything it refuses falls back to redis-py.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

try:
    import hiredis

    HIREDIS = True
except ImportError:  # pragma: no cover - hiredis ships with redis[hiredis]
    HIREDIS = False


class HiredisPackingConnection(aioredis.Connection):
    def pack_command(self, *args: Any) -> list[bytes]:
        if not HIREDIS:
            return super().pack_command(*args)
        command = args
        first = args[0]
        if isinstance(first, str) and " " in first:
            command = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(command)]
        except TypeError:
            return super().pack_command(*args)


def connection_options(cluster: bool) -> dict[str, Any]:
    """Client options for ``connect_async``: the fast packer on a single Redis."""
    if cluster or not HIREDIS:
        return {}
    return {"connection_class": HiredisPackingConnection}
