"""One Redis connection held by a hot loop, without redis-py's per-command client machinery.

redis-py's client spends, for every command, a pool checkout (with a ``poll()`` system call
to check the connection), retry and event wrappers, and an encoder that type-checks each
argument one by one: ~25 µs of CPU on our machines for a PING, ~50 µs for match.lua's
EVALSHA of 25 arguments, where Redis itself spends a few. The matcher and the settle loops
wake about once per order at 2,000 orders/s and send a few commands each time, so that
machinery was most of their CPU. Their hot loops hold one connection of the client's pool
instead and send each command packed by hiredis (C), reading the reply with the connection's
own parser: decoded as the client's replies are, error replies raised as the same exceptions
(``NoScriptError``, ``ResponseError``, ``ConnectionError``). Replies are Redis's own shape: no
redis-py response callback runs.

Single Redis only: on a Redis Cluster the client routes every command to its slot's node, so
:func:`direct_connection` gives None and the caller keeps using the client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hiredis
import redis
from redis.exceptions import ResponseError

from common.lua import Library, evalsha


class DirectConnection:
    """One connection taken from ``client``'s pool for one thread's loop (not thread-safe)."""

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._connection: Any = None

    def call(self, *args: Any) -> Any:
        """Send one command (str, bytes or int arguments); its reply (see :meth:`pipeline`)."""
        return self.pipeline((args,))[0]

    def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send ``commands`` in one write; their replies in order. Every reply is read before
        an error reply is raised (the first), so the connection stays in step. A broken
        connection is dropped and the commands sent once more on a new one: every caller's
        commands are safe to repeat (reads, a script that applies each event once, a cursor
        written again)."""
        packed = b"".join([hiredis.pack_command(tuple(command)) for command in commands])
        for attempt in (1, 2):
            connection = self._connection
            if connection is None:
                connection = self._connection = self._pool.get_connection()
            try:
                connection.send_packed_command([packed])
                replies: list[Any] = []
                for _ in commands:
                    try:
                        replies.append(connection.read_response())
                    except ResponseError as error:
                        replies.append(error)
            except (redis.ConnectionError, redis.TimeoutError):
                connection.disconnect()
                if attempt == 2:
                    raise
                continue
            refused = next((r for r in replies if isinstance(r, ResponseError)), None)
            if refused is not None:
                raise refused
            return replies
        raise AssertionError("unreachable")

    def xread(
        self, stream: str, after: str, count: int, block_ms: int
    ) -> list[tuple[str, dict[str, str]]] | None:
        """``XREAD COUNT count BLOCK block_ms`` on one stream after ``after``: its entries as
        redis-py's client gives them ((id, fields) pairs), or None when none came in time."""
        reply = self.call("XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", stream, after)
        if not reply:
            return None
        # {stream: entries} under RESP3, [[stream, entries]] under RESP2; fields come flat
        entries = reply[stream] if isinstance(reply, dict) else reply[0][1]
        return [(entry_id, pairs_to_dict(flat)) for entry_id, flat in entries]

    def run_script(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run a script of ``common.lua.ScriptSet`` (a function library by FCALL, else
        redis-py's ``Script`` by EVALSHA), loading it first if Redis does not know it."""
        if isinstance(script, Library):
            return script.run(self.call, keys, args)
        return evalsha(script, self.call, keys, args)

    def close(self) -> None:
        """Give the connection back to the pool."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool.release(connection)


def pairs_to_dict(reply: list[Any]) -> dict[Any, Any]:
    """A flat field, value, field, value ... reply (HGETALL, a stream entry's fields) as the
    dict redis-py's client makes of it."""
    pairs = iter(reply)  # one iterator read twice per pair: no copy of either half
    return dict(zip(pairs, pairs, strict=True))


def direct_connection(client: Any) -> DirectConnection | None:
    """A :class:`DirectConnection` on ``client``'s pool, or None for a cluster client."""
    return DirectConnection(client) if isinstance(client, redis.Redis) else None


def read_stream(
    direct: DirectConnection | None,
    client: Any,
    stream: str,
    after: str,
    count: int,
    block_ms: int,
) -> list[tuple[str, dict[str, str]]] | None:
    """``XREAD COUNT count BLOCK block_ms`` on ``stream`` after ``after``, on ``direct`` when
    there is one, else through ``client``: the entries ((id, fields) pairs), or None when none
    came in time."""
    if direct is not None:
        return direct.xread(stream, after, count, block_ms)
    reply = client.xread({stream: after}, count=count, block=block_ms)
    if not reply:
        return None
    return reply[stream] if isinstance(reply, dict) else reply[0][1]


def round_trip(
    direct: DirectConnection | None, client: Any, commands: Sequence[Sequence[Any]]
) -> list[Any]:
    """``commands`` in one round trip, on ``direct`` when there is one (a single Redis), else
    in a pipeline of ``client`` (which routes them on a cluster); their replies in order."""
    if direct is not None:
        return direct.pipeline(commands)
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return list(pipe.execute())
