"""The HTTP load: a minimal keep-alive client, and sender processes built on it.

The load generator shares the machine's cores with the exchange it measures, so every
microsecond it spends is taken from the system under test. One connection sends a
pre-encoded ``POST /v1/orders`` and reads the answer on plain asyncio streams: no per-request
task, session, header object or cookie jar (what a general client like aiohttp spends).

Senders run in their own processes (``in_processes``), each on its own uvloop, and start
together through a :class:`StartGate` once every one of them has its connections open: ``open_loop``
releases each order at its scheduled time (an order rate), ``open_loop_batches`` does the same
with signed batches (``POST /v1/orders/batch``), ``closed_loop`` sends the next order when a
connection's last one is answered (as fast as the gateway answers).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson


class OrderConnection:
    """One keep-alive connection to the gateway, one request at a time."""

    def __init__(self, url: str, path: str = "/v1/orders") -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self._head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> OrderConnection:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """Send one order body; its (status, payload)."""
        assert self._reader is not None and self._writer is not None, "open() first"
        self._writer.write(self._head + str(len(body)).encode() + b"\r\n\r\n" + body)
        header = await self._reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in header.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return int(header[9:12]), await self._reader.readexactly(length)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def error_code(payload: bytes, default: str) -> str:
    """The ``error.code`` of a refusal's body, or ``default``."""
    return str(orjson.loads(payload).get("error", {}).get("code", default))


class StartGate:
    """The senders' common start, shared by their processes.

    A spawned sender takes a second or more to import, receive its orders and open its
    connections, and not every sender the same. A start time fixed before spawning them
    would find a late sender with its first orders already overdue: it would release them at
    once, and the burst, and the latency its backlog adds, would be the load generator's, not
    the exchange's. So each sender calls :meth:`wait` when ready to send; the last to arrive
    sets the start, ``LEAD_S`` ahead, for all.
    """

    LEAD_S = 0.2

    def __init__(self, context: Any, parties: int) -> None:
        self._arrived = context.Barrier(parties)
        self._started = context.Barrier(parties)
        self._at = context.Value("d", 0.0)

    def wait(self) -> float:
        """Block until every sender is ready; the wall-clock time they all start at."""
        if self._arrived.wait() == 0:
            self._at.value = time.time() + self.LEAD_S
        self._started.wait()
        return float(self._at.value)

    @property
    def start_at(self) -> float:
        """The start the senders were given (0 before they all arrived)."""
        return float(self._at.value)


def in_processes(
    target: Callable[..., None], shares: Sequence[tuple[Any, ...]]
) -> tuple[list[Any], float]:
    """Run ``target(*share, gate, queue)`` in one spawned process per share, all started by
    one :class:`StartGate`; what each put on ``queue``, in the order they arrived, and the
    time they started at."""
    context = multiprocessing.get_context("spawn")
    queue: Any = context.Queue()
    gate = StartGate(context, len(shares))
    processes = [context.Process(target=target, args=(*share, gate, queue)) for share in shares]
    for process in processes:
        process.start()
    results = [queue.get() for _ in processes]
    for process in processes:
        process.join()
    return results, gate.start_at


def open_loop(
    gateway: str,
    bodies: list[tuple[str, bytes]],
    rate: float,
    concurrency: int,
    gate: StartGate,
    results: Any,
) -> None:
    """Send ``bodies`` (cid, body) at ``rate`` from the ``gate``'s start over
    ``concurrency`` keep-alive connections; put (accepted cid -> scheduled time, refusals per
    code, this process's CPU seconds) on ``results``.

    Open loop: a scheduler releases each order at its time and a free connection sends it.
    The latency clock starts at the scheduled time, so when every connection is busy the
    order's wait counts too: a slow exchange cannot hide behind the client's queue.
    """
    accepted: dict[str, float] = {}
    rejected: dict[str, int] = {}

    def answered(cid: str, status: int, payload: bytes, scheduled: float) -> None:
        if status == 202:
            accepted[cid] = scheduled
        else:
            code = error_code(payload, "HTTP")
            rejected[code] = rejected.get(code, 0) + 1

    _open_loop(gateway, "/v1/orders", bodies, rate, concurrency, gate, answered)
    results.put((accepted, rejected, time.process_time()))


def open_loop_batches(
    gateway: str,
    batches: list[tuple[list[str], bytes]],
    rate: float,
    concurrency: int,
    gate: StartGate,
    results: Any,
) -> None:
    """:func:`open_loop` for signed batches: ``batches`` are (cids of its actions, body),
    released at ``rate`` batches/s; every action's order counts as accepted at its batch's
    scheduled time when its result is 202."""
    accepted: dict[str, float] = {}
    rejected: dict[str, int] = {}

    def answered(cids: list[str], status: int, payload: bytes, scheduled: float) -> None:
        if status != 200:
            code = error_code(payload, "HTTP")
            rejected[code] = rejected.get(code, 0) + len(cids)
            return
        for cid, result in zip(cids, orjson.loads(payload)["results"], strict=True):
            if result["status"] == 202:
                accepted[cid] = scheduled
            else:
                code = str(result.get("error", {}).get("code", result["status"]))
                rejected[code] = rejected.get(code, 0) + 1

    _open_loop(gateway, "/v1/orders/batch", batches, rate, concurrency, gate, answered)
    results.put((accepted, rejected, time.process_time()))


def _open_loop(
    gateway: str,
    path: str,
    items: Sequence[tuple[Any, bytes]],
    rate: float,
    concurrency: int,
    gate: StartGate,
    answered: Callable[[Any, int, bytes, float], None],
) -> None:
    """Open the connections, wait at the ``gate``, then release each (key, body) of ``items``
    at its time; ``answered(key, status, payload, scheduled)`` for each answer."""
    import uvloop

    async def main() -> None:
        ready: asyncio.Queue[tuple[Any, bytes, float] | None] = asyncio.Queue()
        connections = [await OrderConnection(gateway, path).open() for _ in range(concurrency)]
        start_at = gate.wait()  # blocks the loop, which has nothing else to do yet

        async def connection_worker(connection: OrderConnection) -> None:
            try:
                while (item := await ready.get()) is not None:
                    key, body, scheduled = item
                    try:
                        status, payload = await connection.post(body)
                    except (asyncio.IncompleteReadError, ConnectionError):
                        # The server closed a connection left idle past its keep-alive (a
                        # batch rate leaves each connection seconds between requests): the
                        # request never reached it, so it goes again on a new one.
                        connection.close()
                        connection = await OrderConnection(gateway, path).open()
                        status, payload = await connection.post(body)
                    answered(key, status, payload, scheduled)
            finally:
                connection.close()

        workers = [asyncio.create_task(connection_worker(c)) for c in connections]
        for index, (key, body) in enumerate(items):
            scheduled = start_at + index / rate
            delay = scheduled - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            ready.put_nowait((key, body, scheduled))
        for _ in workers:
            ready.put_nowait(None)
        await asyncio.gather(*workers)

    uvloop.run(main())


def closed_loop(
    url: str, bodies: list[bytes], concurrency: int, gate: StartGate, results: Any
) -> None:
    """From the ``gate``'s start, ``concurrency`` keep-alive connections each send their
    next pre-encoded body when the last one is answered; put (began, ended, answers per code,
    ``ACCEPTED`` for a 202) on ``results``."""
    import uvloop

    codes: dict[str, int] = {}

    async def main() -> tuple[float, float]:
        queue = list(reversed(bodies))

        async def worker(connection: OrderConnection) -> None:
            try:
                while queue:
                    status, payload = await connection.post(queue.pop())
                    code = "ACCEPTED" if status == 202 else error_code(payload, str(status))
                    codes[code] = codes.get(code, 0) + 1
            finally:
                connection.close()

        connections = [await OrderConnection(url).open() for _ in range(concurrency)]
        delay = gate.wait() - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        began = time.time()
        await asyncio.gather(*(worker(c) for c in connections))
        return began, time.time()

    began, ended = uvloop.run(main())
    results.put((began, ended, codes))
