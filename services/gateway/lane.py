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
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any
from urllib.parse import unquote, urlparse

import hiredis
import redis
from redis._parsers.base import BaseParser

CONNECT_TIMEOUT_S = 2.0
REPLY_TIMEOUT_S = 10.0


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
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._connecting: asyncio.Lock | None = None
        self._pending: collections.deque[tuple[int, list[Any], asyncio.Future[list[Any]]]] = (
            collections.deque()
        )

    async def execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` as one write; their replies in order (errors as exceptions)."""
        writer = await self._connection()
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending.append((len(commands), [], future))
        try:
            writer.write(b"".join(hiredis.pack_command(c) for c in commands))
        except Exception as exc:
            self._fail(redis.ConnectionError(f"writing to Redis failed: {exc}"))
            raise redis.ConnectionError(f"writing to Redis failed: {exc}") from exc
        try:
            return await asyncio.wait_for(asyncio.shield(future), REPLY_TIMEOUT_S)
        except TimeoutError:
            self._fail(redis.TimeoutError("Redis did not answer in time"))
            raise redis.TimeoutError("Redis did not answer in time") from None

    async def close(self) -> None:
        self._fail(redis.ConnectionError("the lane is closed"))

    async def _connection(self) -> asyncio.StreamWriter:
        if self._writer is not None and not self._writer.is_closing():
            return self._writer
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is not None and not self._writer.is_closing():
                return self._writer
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError) as exc:
                raise redis.ConnectionError(
                    f"cannot connect to Redis at {self.host}:{self.port}: {exc}"
                ) from exc
            parser = hiredis.Reader(encoding="utf-8")
            hello: list[tuple[Any, ...]] = []
            if self.password is not None:
                auth = ("AUTH", self.username, self.password) if self.username else None
                hello.append(auth or ("AUTH", self.password))
            if self.db:
                hello.append(("SELECT", self.db))
            if hello:
                writer.write(b"".join(hiredis.pack_command(c) for c in hello))
                for _ in hello:
                    reply = await _read_one(reader, parser)
                    if isinstance(reply, hiredis.ReplyError):
                        writer.close()
                        raise redis.ConnectionError(f"Redis refused the connection: {reply}")
            self._writer = writer
            self._reader_task = asyncio.get_running_loop().create_task(
                self._read_loop(reader, parser)
            )
            return writer

    async def _read_loop(self, reader: asyncio.StreamReader, parser: hiredis.Reader) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    raise redis.ConnectionError("Redis closed the connection")
                parser.feed(data)
                while True:
                    reply = parser.gets()
                    if reply is False:
                        break
                    self._deliver(reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc if isinstance(exc, redis.RedisError) else redis.ConnectionError(str(exc))
            self._fail(error)

    def _deliver(self, reply: Any) -> None:
        if not self._pending:
            return
        count, results, future = self._pending[0]
        if isinstance(reply, hiredis.ReplyError):
            reply = BaseParser.parse_error(str(reply))
        results.append(reply)
        if len(results) == count:
            self._pending.popleft()
            if not future.done():
                future.set_result(results)

    def _fail(self, error: Exception) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        task, self._reader_task = self._reader_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        while self._pending:
            _, _, future = self._pending.popleft()
            if not future.done():
                future.set_exception(error)


async def _read_one(reader: asyncio.StreamReader, parser: hiredis.Reader) -> Any:
    while True:
        reply = parser.gets()
        if reply is not False:
            return reply
        data = await asyncio.wait_for(reader.read(65536), CONNECT_TIMEOUT_S)
        if not data:
            raise redis.ConnectionError("Redis closed the connection")
        parser.feed(data)
