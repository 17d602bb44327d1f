"""A lean pipelined Redis connection: the wire of the gateway's batched commands (transport.py).

redis-py's asyncio pipeline spends, per command, a timeout context, response callbacks and
connection bookkeeping that together cost more than the Redis work they wrap (measured with
bench/gateway.py: 10-20 % more gateway CPU per order). The transport's commands are few and
simple (SADD, EVALSHA, XADD, ZREM, HGETALL, ...), so this lane sends each batch as RESP packed
by hiredis over one TCP connection and reads the replies with hiredis's reader, in order.
Batches may overlap on the connection (replies come back in order). Error replies become the
same exceptions redis-py raises (NOSCRIPT → ``NoScriptError``); a broken connection fails the
batches in flight with ``redis.ConnectionError`` and the next batch reconnects. Only plain
``redis://`` URLs use it; anything else stays on redis-py.

The connection is an asyncio protocol: the bytes Redis sends are parsed where they arrive and
each batch's future is resolved there, with no reader task, stream buffer or per-batch timer in
between (:meth:`RespLane.send` hands the caller that future). One watchdog timer, armed while
batches wait, fails them all with ``redis.TimeoutError`` once the oldest has waited
``REPLY_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import hiredis
import redis
from redis._parsers.base import BaseParser

CONNECT_TIMEOUT_S = 2.0
REPLY_TIMEOUT_S = 10.0
WATCHDOG_S = 1.0
"""How often the watchdog looks at the oldest batch in flight."""


def lane_for(url: str, cluster: bool) -> RespLane | None:
    """A lane for a plain single-node ``redis://`` URL, else None (redis-py serves)."""
    if cluster:
        return None
    parsed = urlparse(url)
    if parsed.scheme != "redis" or not parsed.hostname:
        return None
    db = int(parsed.path.lstrip("/") or 0) if parsed.path.lstrip("/").isdigit() else 0
    return RespLane(
        parsed.hostname,
        parsed.port or 6379,
        db,
        unquote(parsed.username) if parsed.username else None,
        unquote(parsed.password) if parsed.password else None,
    )


class RespLane:
    def __init__(
        self, host: str, port: int, db: int, username: str | None, password: str | None
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self._protocol: _LaneProtocol | None = None
        self._connecting: asyncio.Lock | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._pending: collections.deque[_Batch] = collections.deque()

    async def execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` as one write; their replies in order (errors as exceptions)."""
        return await self.send(commands)

    def send(self, commands: list[tuple[Any, ...]]) -> asyncio.Future[list[Any]]:
        """Send ``commands`` as one write now (or once connected); the future of their replies
        in order (error replies as exceptions; a broken or silent connection fails it)."""
        protocol = self._protocol
        if protocol is None or protocol.transport.is_closing():
            return asyncio.ensure_future(self._connect_and_send(commands))
        return self._write(protocol, commands)

    async def close(self) -> None:
        self._fail(redis.ConnectionError("the lane is closed"))

    async def _connect_and_send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        return await self._write(await self._connection(), commands)

    def _write(
        self, protocol: _LaneProtocol, commands: list[tuple[Any, ...]]
    ) -> asyncio.Future[list[Any]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._pending.append(_Batch(len(commands), [], future, loop.time()))
        try:
            protocol.transport.write(b"".join([hiredis.pack_command(c) for c in commands]))
        except Exception as exc:
            error = redis.ConnectionError(f"writing to Redis failed: {exc}")
            self._fail(error)
            raise error from exc
        if self._watchdog is None:
            self._watchdog = loop.call_later(WATCHDOG_S, self._watch)
        return future

    def _watch(self) -> None:
        """Fail every batch in flight once the oldest has waited ``REPLY_TIMEOUT_S``."""
        self._watchdog = None
        if not self._pending:
            return
        loop = asyncio.get_running_loop()
        if loop.time() - self._pending[0].sent >= REPLY_TIMEOUT_S:
            self._fail(redis.TimeoutError("Redis did not answer in time"))
            return
        self._watchdog = loop.call_later(WATCHDOG_S, self._watch)

    async def _connection(self) -> _LaneProtocol:
        if self._protocol is not None and not self._protocol.transport.is_closing():
            return self._protocol
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._protocol is not None and not self._protocol.transport.is_closing():
                return self._protocol
            loop = asyncio.get_running_loop()
            try:
                _, protocol = await asyncio.wait_for(
                    loop.create_connection(lambda: _LaneProtocol(self), self.host, self.port),
                    CONNECT_TIMEOUT_S,
                )
            except (OSError, TimeoutError) as exc:
                raise redis.ConnectionError(
                    f"cannot connect to Redis at {self.host}:{self.port}: {exc}"
                ) from exc
            hello: list[tuple[Any, ...]] = []
            if self.password is not None:
                auth = ("AUTH", self.username, self.password) if self.username else None
                hello.append(auth or ("AUTH", self.password))
            if self.db:
                hello.append(("SELECT", self.db))
            self._protocol = protocol
            if hello:
                try:
                    replies = await asyncio.wait_for(
                        self._write(protocol, hello), CONNECT_TIMEOUT_S
                    )
                except TimeoutError:
                    self._fail(redis.ConnectionError("Redis did not answer the handshake"))
                    raise redis.ConnectionError("Redis did not answer the handshake") from None
                refused = next((r for r in replies if isinstance(r, Exception)), None)
                if refused is not None:
                    self._fail(redis.ConnectionError(f"Redis refused the connection: {refused}"))
                    raise redis.ConnectionError(f"Redis refused the connection: {refused}")
            return protocol

    def _deliver(self, reply: Any) -> None:
        if not self._pending:
            return
        batch = self._pending[0]
        if isinstance(reply, hiredis.ReplyError):
            reply = BaseParser.parse_error(str(reply))
        batch.results.append(reply)
        if len(batch.results) == batch.count:
            self._pending.popleft()
            if not batch.future.done():
                batch.future.set_result(batch.results)

    def _lost(self, protocol: _LaneProtocol, error: Exception) -> None:
        """The connection of ``protocol`` ended: fail what waits on it (a newer connection's
        batches are not its)."""
        if protocol is self._protocol:
            self._fail(error)

    def _fail(self, error: Exception) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.transport.close()
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
        while self._pending:
            future = self._pending.popleft().future
            if not future.done():
                future.set_exception(error)


@dataclass(slots=True)
class _Batch:
    count: int
    results: list[Any]
    future: asyncio.Future[list[Any]]
    sent: float
    """The loop's clock when it was written."""


class _LaneProtocol(asyncio.Protocol):
    """One connection of a lane: replies are parsed as their bytes arrive."""

    transport: asyncio.Transport

    def __init__(self, lane: RespLane) -> None:
        self._lane = lane
        self._parser = hiredis.Reader(encoding="utf-8")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        parser.feed(data)
        deliver = self._lane._deliver
        while (reply := parser.gets()) is not False:
            deliver(reply)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost fails what waits

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc else ""
        self._lane._lost(self, redis.ConnectionError(f"Redis closed the connection{reason}"))
