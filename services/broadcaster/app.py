"""The Starlette application: ``/ws`` (API.md §7) and ``/metrics``.

Wiring, in the order a message travels:

1. ``Hub`` over a pub/sub backend: ``ClassicBackend`` (one connection) or, on a Redis Cluster
   with sharded pub/sub, ``ShardedBackend`` (one connection per node); the hub decodes each
   publication once and hands it to the feeds of its topic.
2. ``Registry`` / feeds: one feed per canonical topic holds the subscriptions and turns a
   publication into server messages (snapshot first, then updates without gap or duplicate).
3. ``Connection``: each client's bounded queue and sender task; too slow means 1013.
4. ``Broadcaster.serve``: the limits of docs/api.md "WebSocket limits" (connections per
   address, messages per second, subscriptions per connection) and the client's commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from common import pubsub
from common.heap import freeze_startup_heap
from common.markets import load_markets
from common.redis_client import connect_async
from common.settings import DexSettings
from services.broadcaster.backends.base import Backend
from services.broadcaster.backends.classic import ClassicBackend
from services.broadcaster.backends.sharded import ShardedBackend
from services.broadcaster.connection import (
    GOING_AWAY,
    INTERNAL_ERROR,
    MAX_MESSAGES_PER_S,
    POLICY_VIOLATION,
    SERVICE_RESTART,
    Connection,
    Flusher,
    Subscription,
)
from services.broadcaster.hub import Hub
from services.broadcaster.metrics import Metrics
from services.broadcaster.registry import MarkWatcher, Registry
from services.broadcaster.settings import BroadcasterSettings, broadcaster_settings
from services.broadcaster.topics import MAX_TOPIC_LENGTH, TopicError, parse_topic

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 30.0  # a slow client gets its close frame once it reads again
PONG = '{"op":"pong"}'
EXAMPLE = '{"op":"subscribe","topic":"depth:BTC-USDC"}'


class Broadcaster:
    """Everything one process holds: Redis, hub, feeds, connections, metrics."""

    def __init__(self, settings: BroadcasterSettings) -> None:
        self.settings = settings
        self.markets = load_markets(settings.markets_file)
        self.client = connect_async(settings)
        self.metrics = Metrics()
        self.hub = Hub(on_reset=self.resync_everyone, on_message=self.metrics.count_publication)
        interval_ms = settings.broadcaster_flush_interval_ms
        self.flusher = Flusher(self.metrics, None if interval_ms is None else interval_ms / 1000)
        self.registry = Registry(self.client, self.hub, self.markets, self.metrics, self.flusher)
        self.connections: set[Connection] = set()
        self.per_address: dict[str, int] = {}  # client address -> connections it holds
        self.mark_watcher = MarkWatcher(self.client, self.registry)
        self._background: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await _wait_for_redis(self.client)
        backend: Backend
        if await pubsub.sharded_async(self.client):
            # A cluster of Redis >= 7: shard channels, SSUBSCRIBEd on their owning nodes.
            backend = ShardedBackend(self.client, list(self.markets.markets))
        else:
            backend = ClassicBackend(self.client)
        await self.hub.start(backend)
        self._background.append(asyncio.create_task(self.mark_watcher.run()))

    async def stop(self) -> None:
        for connection in list(self.connections):
            connection.close(GOING_AWAY, "broadcaster shutting down")
        for task in self._background:
            task.cancel()
        await self.hub.stop()
        await self.client.aclose()

    def resync_everyone(self) -> None:
        """Publications may have been lost with the pub/sub connection: clients reconnect."""
        self.metrics.pubsub_resets.inc()
        for connection in list(self.connections):
            connection.close(SERVICE_RESTART, "feed interrupted: reconnect and resubscribe")

    # -- one client ----------------------------------------------------------------------
    async def serve(self, websocket: WebSocket) -> None:
        address = client_address(websocket)
        limit = self.settings.broadcaster_max_connections_per_ip
        held = self.per_address.get(address, 0)
        if limit and held >= limit:
            await self._refuse(websocket, limit)
            return
        # Counted before the first await and released in ``finally``: however the connection
        # ends (close, reset, error, cancellation), its address gets its place back.
        self.per_address[address] = held + 1
        try:
            await websocket.accept()
            await self._serve_accepted(websocket)
        finally:
            left = self.per_address[address] - 1
            if left:
                self.per_address[address] = left
            else:
                del self.per_address[address]

    async def _refuse(self, websocket: WebSocket, limit: int) -> None:
        """Over the per-address bound: accept only to close at once with 1008 and a reason."""
        self.metrics.refused_connections.inc()
        with contextlib.suppress(Exception):
            await websocket.accept()
            await asyncio.wait_for(
                websocket.close(
                    POLICY_VIOLATION,
                    f"too many connections from this address: at most {limit}; close one first",
                ),
                CLOSE_TIMEOUT_S,
            )

    async def _serve_accepted(self, websocket: WebSocket) -> None:
        connection = Connection(
            websocket, self.settings.broadcaster_send_queue, self.metrics, self.flusher
        )
        self.connections.add(connection)
        self.metrics.connections.inc()
        tasks = [
            asyncio.create_task(connection.send_loop()),
            asyncio.create_task(self._receive_loop(connection)),
            asyncio.create_task(connection.closing.wait()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for subscription in connection.subscriptions.values():
                self.registry.unsubscribe(subscription)
            connection.subscriptions.clear()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if connection.close_code is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        websocket.close(connection.close_code, connection.close_reason),
                        CLOSE_TIMEOUT_S,
                    )
            self.connections.discard(connection)
            self.metrics.connections.dec()

    async def _receive_loop(self, connection: Connection) -> None:
        idle = self.settings.broadcaster_idle_timeout_s
        loop = asyncio.get_running_loop()
        # A connection asked to close reads no more, even if the cancellation that should end
        # this loop was lost in a library's wait below (asyncio.wait_for on Python 3.11).
        while connection.close_code is None:
            timeout = None if connection.subscriptions else idle
            try:
                # Not asyncio.wait_for, which on Python 3.11 can swallow the cancellation that
                # ends this connection when a message arrives at the same moment.
                async with asyncio.timeout(timeout):
                    message = await connection.websocket.receive()
            except TimeoutError:
                self.metrics.idle_disconnects.inc()
                connection.close(1000, f"idle: no subscription and no message for {idle:g} s")
                return
            if message["type"] == "websocket.disconnect":
                return
            if not connection.received.admit(loop.time()):
                self.metrics.flood_disconnects.inc()
                connection.close(
                    POLICY_VIOLATION,
                    f"more than {MAX_MESSAGES_PER_S} messages in one second",
                )
                return
            text = message.get("text")
            try:
                if text is None:
                    connection.error(
                        "BAD_MESSAGE",
                        f"binary frames are not accepted: send {EXAMPLE} as a text frame",
                    )
                else:
                    await self.handle(connection, text)
            except Exception:
                # A bug, not the client's doing: this connection ends, the process goes on.
                log.exception("broadcaster: handling a client message failed")
                self.metrics.handler_errors.inc()
                connection.close(INTERNAL_ERROR, "internal error handling the message")
                return

    async def handle(self, connection: Connection, raw: str) -> None:
        """Answer one client message (subscribe / unsubscribe / ping).

        Every answer is built by the JSON encoder, and shows at most a bounded prefix of what
        the client sent (topics are at most ``MAX_TOPIC_LENGTH`` characters).
        """
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            connection.error(
                "BAD_MESSAGE",
                f"expected a JSON object like {EXAMPLE}, got {_show(raw)}: {str(exc)[:120]}",
            )
            return
        if not isinstance(message, dict):
            connection.error(
                "BAD_MESSAGE", f"expected a JSON object like {EXAMPLE}, got {_show(raw)}"
            )
            return
        op = message.get("op")
        if op == "ping":
            connection.push(PONG)
            return
        if op not in ("subscribe", "unsubscribe"):
            shown = _show(op if isinstance(op, str) else orjson.dumps(op).decode(), 64)
            connection.error(
                "BAD_MESSAGE",
                f"unknown op {shown}: expected 'subscribe', 'unsubscribe' or 'ping'",
            )
            return
        spelled = message.get("topic")
        if not isinstance(spelled, str) or not spelled:
            connection.error("BAD_MESSAGE", f"{op} needs a topic string, got {_show(raw)}")
            return
        if len(spelled) > MAX_TOPIC_LENGTH:
            connection.error(
                "BAD_MESSAGE",
                f"{op}: a topic has at most {MAX_TOPIC_LENGTH} characters, got "
                f"{len(spelled)} starting {_show(spelled, 64)}",
            )
            return
        if op == "unsubscribe":
            subscription = connection.subscriptions.pop(spelled, None)
            if subscription is None:
                connection.error("NOT_SUBSCRIBED", f"not subscribed to {spelled!r}", spelled)
                return
            self.registry.unsubscribe(subscription)
            return
        await self.subscribe(connection, spelled)

    async def subscribe(self, connection: Connection, spelled: str) -> None:
        try:
            topic = parse_topic(spelled, self.markets)
        except TopicError as exc:
            connection.error("UNKNOWN_TOPIC", str(exc), spelled)
            return
        held = next((s for s in connection.subscriptions.values() if s.topic == topic), None)
        if held is not None:
            as_held = "" if held.spelled == spelled else f" (as {held.spelled!r})"
            connection.error(
                "ALREADY_SUBSCRIBED",
                f"already subscribed to {spelled!r}{as_held}; for a fresh snapshot "
                "unsubscribe, then subscribe",
                spelled,
            )
            return
        limit = self.settings.broadcaster_max_subscriptions
        if len(connection.subscriptions) >= limit:
            connection.error(
                "TOO_MANY_SUBSCRIPTIONS",
                f"a connection may hold {limit} subscriptions; unsubscribe one first",
                spelled,
            )
            return
        subscription = Subscription(connection, spelled, topic)
        connection.subscriptions[spelled] = subscription
        try:
            await self.registry.subscribe(subscription)
        except Exception:
            log.exception("broadcaster: snapshot of %s failed", spelled)
            if connection.subscriptions.get(spelled) is subscription:
                del connection.subscriptions[spelled]
            connection.error(
                "UNAVAILABLE", f"could not read the snapshot of {spelled!r}; try again", spelled
            )


def client_address(websocket: WebSocket) -> str:
    """The client's address as the server sees it (a trusted proxy's X-Forwarded-For
    applied by uvicorn, see docs/operations.md)."""
    client = websocket.scope.get("client")
    return str(client[0]) if client else "unknown"


def _show(text: str, limit: int = 200) -> str:
    """``text`` quoted for an error message, cut to ``limit`` characters."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


async def _wait_for_redis(client: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        try:
            await client.ping()
            return
        except (RedisError, OSError) as exc:
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"broadcaster: Redis did not answer within {timeout_s:.0f} s"
                ) from exc
            log.warning("broadcaster: waiting for Redis (%s)", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def create_app(settings: DexSettings | None = None) -> Starlette:
    broadcaster = Broadcaster(broadcaster_settings(settings))

    async def metrics(_: Request) -> Response:
        return Response(broadcaster.metrics.render(), media_type="text/plain; version=0.0.4")

    async def health(_: Request) -> Response:
        try:
            await broadcaster.client.ping()
        except (RedisError, OSError):
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok", "connections": len(broadcaster.connections)})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await broadcaster.start()
        yield
        await broadcaster.stop()

    app = Starlette(
        routes=[
            WebSocketRoute("/ws", broadcaster.serve),
            Route("/metrics", metrics),
            Route("/health", health),
        ],
        lifespan=lifespan,
    )
    app.state.broadcaster = broadcaster
    return app


def create_server_app() -> Starlette:
    """The app uvicorn serves: :func:`create_app` with the start-up heap frozen."""
    app = create_app()
    freeze_startup_heap()
    return app
