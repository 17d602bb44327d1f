"""Micro-batching of Redis commands from concurrent requests into one pipeline.

Under load many requests want one or two commands each at the same moment; sending them one
by one costs a pool checkout, a write and a read per command. The batcher queues each
request's commands, and a single flusher sends everything queued so far as one
non-transactional pipeline, then wakes each request with its own result (or exception).
Commands of one ``submit`` stay adjacent and in order, so a caller may rely on "SADD before
the script" within its group. Used on a single Redis only (a cluster pipeline may reorder
across nodes), see ``Gateway.batched``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from redis.exceptions import NoScriptError

from services.gateway.lane import Recorder, RespLane

MAX_IN_FLIGHT = 2
"""Pipelines in flight at once: one being answered while the next fills."""


class Batcher:
    def __init__(self, client: Any, lane: RespLane | None = None) -> None:
        self._client = client
        self._lane = lane
        self._queue: list[tuple[Callable[[Any], Any], int, asyncio.Future[list[Any]]]] = []
        self._in_flight = 0
        self._scheduled = False

    async def submit(self, queue_commands: Callable[[Any], Any], count: int) -> list[Any]:
        """Queue ``count`` commands (``queue_commands(pipe)`` adds them); their results."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((queue_commands, count, future))
        self._schedule()
        return await future

    def send(self, queue_commands: Callable[[Any], Any], count: int) -> None:
        """Queue commands whose result nobody waits for (failures are only logged)."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_log_failure)
        self._queue.append((queue_commands, count, future))
        self._schedule()

    def _schedule(self) -> None:
        if self._scheduled or self._in_flight >= MAX_IN_FLIGHT or not self._queue:
            return
        self._scheduled = True
        asyncio.get_running_loop().call_soon(self._start_flush)

    def _start_flush(self) -> None:
        self._scheduled = False
        if not self._queue or self._in_flight >= MAX_IN_FLIGHT:
            return
        batch, self._queue = self._queue, []
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._flush(batch))
        task.add_done_callback(self._flushed)

    def _flushed(self, _: Any) -> None:
        self._in_flight -= 1
        self._schedule()

    async def _flush(
        self, batch: list[tuple[Callable[[Any], Any], int, asyncio.Future[list[Any]]]]
    ) -> None:
        try:
            results = await self._execute(batch)
        except Exception as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        position = 0
        for _, count, future in batch:
            mine = results[position : position + count]
            position += count
            if future.done():
                continue
            failure = next((r for r in mine if isinstance(r, Exception)), None)
            if failure is not None:
                future.set_exception(failure)
            else:
                future.set_result(mine)

    async def _execute(
        self, batch: list[tuple[Callable[[Any], Any], int, asyncio.Future[list[Any]]]]
    ) -> list[Any]:
        if self._lane is None:
            pipe = self._client.pipeline(transaction=False)
            for queue_commands, _, _ in batch:
                queue_commands(pipe)
            return list(await pipe.execute(raise_on_error=False))
        recorder = Recorder()
        for queue_commands, _, _ in batch:
            queue_commands(recorder)
        replies = await self._lane.execute(recorder.commands)
        return [
            convert(reply) if convert is not None and not isinstance(reply, Exception) else reply
            for reply, convert in zip(replies, recorder.converters, strict=True)
        ]

    async def close(self) -> None:
        if self._lane is not None:
            await self._lane.close()


def _log_failure(future: asyncio.Future[list[Any]]) -> None:
    if not future.cancelled() and future.exception() is not None:
        import logging

        logging.getLogger("services.gateway").warning(
            "a background Redis command failed: %s", future.exception()
        )


async def run_with_script_retry(
    batcher: Batcher, script: Any, queue_commands: Callable[[Any], Any], count: int
) -> list[Any]:
    """Submit a group that ends in ``script``'s EVALSHA; on NOSCRIPT load it and resend once."""
    try:
        return await batcher.submit(queue_commands, count)
    except NoScriptError:
        await script.registered_client.script_load(script.script)
        return await batcher.submit(queue_commands, count)
