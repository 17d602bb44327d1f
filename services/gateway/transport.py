"""The gateway's one way to reach Redis: pipelined command groups, scripts, blocking reads.

Everything above this module reaches Redis through a :class:`Transport`:

* :meth:`Transport.execute` runs a group of commands (built with :class:`Commands`) in order and
  answers their replies. Groups of concurrent requests are micro-batched: a single flusher
  sends everything queued so far as one pipeline (at most ``MAX_IN_FLIGHT`` at once) and wakes
  each caller with its own replies. A group's commands stay adjacent and in order, so "SADD
  before the script" holds within a group. On a single plain ``redis://`` Redis the pipeline is
  the lean RESP connection of ``lane.py``; anywhere else (TLS, a socket path, a cluster) it is a
  redis-py pipeline. A cluster pipeline may reorder commands bound for different nodes, so
  there a group of several commands is sent one command after another.
* :meth:`Transport.gather` runs commands whose order does not matter (reads): one round trip,
  per node on a cluster.
* :meth:`Transport.send` queues commands nobody waits for (failures are logged).
* A script (one ``lua/<name>.lua`` file) goes into a group as EVALSHA; a NOSCRIPT reply (a
  restarted Redis) loads the script and re-sends exactly the commands that answered NOSCRIPT,
  here and nowhere else. Nothing runs twice, but a command queued after a script then runs
  before it: put scripts last in their group.
* :meth:`Transport.blpop` waits on a reply key on its own connection pool, whose read timeout
  is longer than the wait.
* :attr:`Transport.client` is the redis-py client, for single commands and the shared readers
  of ``common/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from redis.exceptions import NoScriptError

from common.direct import pairs_to_dict
from common.lua import read_script
from common.redis_client import AsyncRedis, connect_async
from common.settings import DexSettings
from services.gateway.lane import RespLane, lane_for

log = logging.getLogger("services.gateway")

LUA_DIR = Path(__file__).parent / "lua"
BLOCKING_READ_TIMEOUT_S = 15.0
"""The blocking client's read timeout: longer than any BLPOP the gateway waits."""
MAX_IN_FLIGHT = 2
"""Pipelines in flight at once: one being answered while the next fills."""
CLOSE_STEP_S = 5.0
"""Each step of :meth:`Transport.close` is bounded: a Redis that never answers cannot keep
the process from stopping."""

Arg: TypeAlias = str | int | float
Reply: TypeAlias = Any
"""A reply as redis-py gives it (text decoded; HGETALL as a dict)."""
Convert: TypeAlias = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Script:
    """One Lua script, sent by its SHA-1 and loaded by its text on NOSCRIPT."""

    name: str
    text: str
    sha: str

    @classmethod
    def load(cls, directory: Path, name: str) -> Script:
        text = read_script(str(directory), name)
        return cls(name, text, hashlib.sha1(text.encode()).hexdigest())


def load_scripts(directory: Path = LUA_DIR) -> dict[str, Script]:
    """Every ``<directory>/*.lua`` by file stem."""
    return {
        path.stem: Script.load(directory, path.stem) for path in sorted(directory.glob("*.lua"))
    }


class Commands(list[tuple[Arg, ...]]):
    """A group of commands in the order they run, each the tuple of its arguments; the builder
    methods append one and return the group, so that calls chain."""

    __slots__ = ()

    def script(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Commands:
        self.append(("EVALSHA", script.sha, len(keys), *keys, *args))
        return self

    def sadd(self, key: str, *members: Arg) -> Commands:
        self.append(("SADD", key, *members))
        return self

    def srem(self, key: str, *members: Arg) -> Commands:
        self.append(("SREM", key, *members))
        return self

    def zrem(self, key: str, *members: Arg) -> Commands:
        self.append(("ZREM", key, *members))
        return self

    def zcard(self, key: str) -> Commands:
        self.append(("ZCARD", key))
        return self

    def zrange_by_score(self, key: str, low: Arg, high: Arg, count: int) -> Commands:
        """Members scored ``low`` to ``high``, the first ``count`` of them."""
        self.append(("ZRANGEBYSCORE", key, low, high, "LIMIT", 0, count))
        return self

    def zrevrange_with_scores(self, key: str, start: int, stop: int) -> Commands:
        """A flat ``[member, score, member, score, …]`` list (scores as text)."""
        self.append(("ZREVRANGE", key, start, stop, "WITHSCORES"))
        return self

    def zrange_with_scores(self, key: str, start: int, stop: int) -> Commands:
        """A flat ``[member, score, member, score, …]`` list (scores as text)."""
        self.append(("ZRANGE", key, start, stop, "WITHSCORES"))
        return self

    def xadd(self, key: str, fields: dict[str, Arg]) -> Commands:
        flat = [part for pair in fields.items() for part in pair]
        self.append(("XADD", key, "*", *flat))
        return self

    def hget(self, key: str, field: str) -> Commands:
        self.append(("HGET", key, field))
        return self

    def hmget(self, key: str, fields: Sequence[str]) -> Commands:
        self.append(("HMGET", key, *fields))
        return self

    def hgetall(self, key: str) -> Commands:
        self.append(("HGETALL", key))
        return self

    def hlen(self, key: str) -> Commands:
        self.append(("HLEN", key))
        return self

    def hdel(self, key: str, *fields: str) -> Commands:
        self.append(("HDEL", key, *fields))
        return self


REPLY_CONVERSIONS: dict[str, Convert] = {"HGETALL": pairs_to_dict}
"""What redis-py makes of a reply, by command, where that differs from RESP as it comes: the
lean connection applies it so that both wires answer alike."""


def score_pairs(reply: list[str]) -> list[tuple[str, float]]:
    """``[(member, score), …]`` of a flat WITHSCORES reply."""
    return [(member, float(score)) for member, score in zip(reply[::2], reply[1::2], strict=True)]


Wire: TypeAlias = Callable[[list[Commands]], Awaitable[list[Reply]]]
"""Sends groups as one pipeline; every reply in order, error replies as exceptions."""


class Batcher:
    """Micro-batches the groups of concurrent callers into pipelines sent over ``wire``
    (``convert``: apply :data:`REPLY_CONVERSIONS`, for a wire that answers RESP as it comes).
    A pipeline's answer is handed out in its future's callback: no task per pipeline."""

    def __init__(self, wire: Wire, convert: bool = False) -> None:
        self._wire = wire
        self._convert = convert
        self._queue: list[tuple[Commands, asyncio.Future[list[Reply]]]] = []
        self._in_flight = 0
        self._scheduled = False
        self._answers: set[asyncio.Future[list[Reply]]] = set()
        """The pipelines in flight (a task running a coroutine wire is kept referenced)."""

    async def submit(self, group: Commands) -> list[Reply]:
        """The replies of ``group``, error replies in place as exceptions."""
        future: asyncio.Future[list[Reply]] = asyncio.get_running_loop().create_future()
        self._queue.append((group, future))
        self._schedule()
        return await future

    def send(self, group: Commands) -> None:
        future: asyncio.Future[list[Reply]] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_log_failure)
        self._queue.append((group, future))
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
        try:
            answer = asyncio.ensure_future(self._wire([group for group, _ in batch]))  # noqa: RUF006 - kept in _answers
            self._answers.add(answer)
        except Exception as exc:
            self._in_flight -= 1
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            self._schedule()
            return
        answer.add_done_callback(functools.partial(self._flushed, batch))

    def _flushed(
        self,
        batch: list[tuple[Commands, asyncio.Future[list[Reply]]]],
        answer: asyncio.Future[list[Reply]],
    ) -> None:
        self._in_flight -= 1
        self._answers.discard(answer)
        if answer.cancelled():
            for _, future in batch:
                future.cancel()
        elif (error := answer.exception()) is not None:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
        else:
            replies = answer.result()
            position = 0
            for group, future in batch:
                mine = replies[position : position + len(group)]
                position += len(group)
                if self._convert:
                    _convert(group, mine)
                if not future.done():
                    future.set_result(mine)
        self._schedule()


def _convert(group: Commands, replies: list[Reply]) -> None:
    """Make of each reply what redis-py would (:data:`REPLY_CONVERSIONS`), in place."""
    for index, command in enumerate(group):
        convert = REPLY_CONVERSIONS.get(str(command[0]))
        if convert is not None and not isinstance(replies[index], Exception):
            replies[index] = convert(replies[index])


def _log_failure(future: asyncio.Future[list[Reply]]) -> None:
    if future.cancelled():
        return
    error = future.exception()
    if error is None:
        error = next((r for r in future.result() if isinstance(r, Exception)), None)
    if error is not None:
        log.warning("a background Redis command failed: %s", error)


def lane_wire(lane: RespLane) -> Wire:
    """The lane's own future: the Batcher converts its replies (``convert=True``)."""

    def send(groups: list[Commands]) -> asyncio.Future[list[Reply]]:
        return lane.send(groups[0] if len(groups) == 1 else [c for g in groups for c in g])

    return send


def client_wire(client: AsyncRedis) -> Wire:
    """A redis-py pipeline, which converts replies itself."""

    async def send(groups: list[Commands]) -> list[Reply]:
        pipe = client.pipeline(transaction=False)
        for group in groups:
            for command in group:
                pipe.execute_command(*command)
        return list(await pipe.execute(raise_on_error=False))

    return send


class Transport:
    """Redis for the gateway: one client, one blocking client, the batched pipeline, scripts."""

    def __init__(
        self,
        client: AsyncRedis,
        blocking: AsyncRedis,
        cluster: bool,
        lane: RespLane | None = None,
        scripts: dict[str, Script] | None = None,
    ) -> None:
        self.client = client
        self._blocking = blocking
        self._cluster = cluster
        self._lane = lane
        self._batcher = (
            Batcher(lane_wire(lane), convert=True)
            if lane is not None
            else Batcher(client_wire(client))
        )
        self.scripts = scripts if scripts is not None else load_scripts()
        self._by_sha = {script.sha: script for script in self.scripts.values()}

    @classmethod
    def connect(cls, settings: DexSettings) -> Transport:
        return cls(
            client=connect_async(settings),
            blocking=connect_async(settings, socket_timeout=BLOCKING_READ_TIMEOUT_S),
            cluster=settings.redis_cluster,
            lane=lane_for(settings.redis_url, settings.redis_cluster),
        )

    async def execute(self, group: Commands) -> list[Reply]:
        """The replies of ``group``'s commands, run in order; the first error reply raises."""
        if self._cluster and len(group) > 1:
            replies = []
            for command in group:
                replies.extend(await self._submit(Commands([command])))
            return replies
        return await self._submit(group)

    async def gather(self, group: Commands) -> list[Reply]:
        """Like :meth:`execute` for commands whose order does not matter (one round trip per
        node on a cluster)."""
        return await self._submit(group)

    def send(self, group: Commands) -> None:
        """Queue commands whose replies nobody waits for; a failure is only logged."""
        self._batcher.send(group)

    async def script(self, name: str, keys: Sequence[str], args: Sequence[Arg]) -> Reply:
        """Run one script; its reply."""
        (reply,) = await self.execute(Commands().script(self.scripts[name], keys, args))
        return reply

    async def blpop(self, key: str, timeout_s: float) -> tuple[str, str] | None:
        """Wait up to ``timeout_s`` for an element pushed to ``key``: (key, element) or None."""
        answer = await self._blocking.blpop([key], timeout=timeout_s)
        return (str(answer[0]), str(answer[1])) if answer else None

    async def _submit(self, group: Commands) -> list[Reply]:
        if not group:
            return []
        replies = await self._batcher.submit(group)
        for reply in replies:
            if isinstance(reply, Exception):
                return await self._recover(group, replies)
        return replies

    async def _recover(self, group: Commands, replies: list[Reply]) -> list[Reply]:
        """Load the scripts that answered NOSCRIPT and send those commands again; then the
        first error reply left raises."""
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            for sha in {group[i][1] for i in missing}:
                await self.client.script_load(self._by_sha[str(sha)].text)
            again = await self._batcher.submit(Commands(group[i] for i in missing))
            for index, reply in zip(missing, again, strict=True):
                replies[index] = reply
        failure = next((reply for reply in replies if isinstance(reply, Exception)), None)
        if failure is not None:
            raise failure
        return replies

    async def close(self) -> None:
        """Close every connection, each step bounded by ``CLOSE_STEP_S``."""
        steps: list[Awaitable[None]] = [self.client.aclose(), self._blocking.aclose()]
        if self._lane is not None:
            steps.insert(0, self._lane.close())
        for step in steps:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(step, CLOSE_STEP_S)
