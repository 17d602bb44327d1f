"""The Starlette application: ``/ws`` with subscribe / unsubscribe / ping (API.md §7)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from common.book_reads import read_depth, read_trades
from common.markets import load_markets
from common.redis_client import connect_async
from common.settings import DexSettings, get_settings
from services.broadcaster.hub import Hub

log = logging.getLogger(__name__)

SEND_QUEUE_LIMIT = 1000
TRADE_SNAPSHOT = 50
DEPTH_SNAPSHOT = 1000
TRY_AGAIN_LATER = 1013


class Connection:
    """One WebSocket client: its subscriptions and its bounded outgoing queue."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(SEND_QUEUE_LIMIT)
        self.topics: dict[str, int] = {}  # topic -> seq of the snapshot (updates must exceed it)
        self.too_slow = False

    def deliver(self, topic: str, payload: dict[str, Any]) -> None:
        floor = self.topics.get(topic)
        if floor is None or payload["seq"] <= floor:
            return
        message = {"topic": topic, "type": "update", "seq": payload["seq"], "data": payload["data"]}
        self.push(message)

    def push(self, message: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(orjson.dumps(message))
        except asyncio.QueueFull:
            self.too_slow = True
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)


def create_app(settings: DexSettings | None = None) -> Starlette:
    settings = settings or get_settings()
    markets = load_markets(settings.markets_file)
    client = connect_async(settings)
    hub = Hub(client)

    async def snapshot(topic: str) -> tuple[int, Any] | None:
        kind, _, name = topic.partition(":")
        if name not in markets.markets:
            return None
        if kind == "depth":
            depth = await read_depth(client, name, DEPTH_SNAPSHOT)
            return depth["seq"], {"bids": depth["bids"], "asks": depth["asks"]}
        if kind == "trade":
            trades = await read_trades(client, name, TRADE_SNAPSHOT)
            return (trades[0]["seq"] if trades else 0), trades
        return None

    async def websocket_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        connection = Connection(websocket)
        sender = asyncio.create_task(_send_loop(connection))
        try:
            while True:
                raw = await websocket.receive_text()
                await _handle(connection, raw)
        except WebSocketDisconnect:
            pass
        finally:
            for topic in list(connection.topics):
                await hub.remove(topic, connection)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _handle(connection: Connection, raw: str) -> None:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            connection.push(_error("BAD_MESSAGE", "messages must be JSON objects"))
            return
        op = message.get("op") if isinstance(message, dict) else None
        topic = message.get("topic") if isinstance(message, dict) else None
        if op == "ping":
            connection.push({"op": "pong"})
        elif op == "subscribe" and isinstance(topic, str):
            if topic in connection.topics:
                return
            connection.topics[topic] = 2**63  # hold updates until the snapshot is taken
            await hub.add(topic, connection)
            taken = await snapshot(topic)
            if taken is None:
                del connection.topics[topic]
                await hub.remove(topic, connection)
                connection.push(_error("UNKNOWN_TOPIC", f"no topic named {topic!r}"))
                return
            seq, data = taken
            connection.push({"topic": topic, "type": "snapshot", "seq": seq, "data": data})
            connection.topics[topic] = seq
        elif op == "unsubscribe" and isinstance(topic, str):
            connection.topics.pop(topic, None)
            await hub.remove(topic, connection)
        else:
            connection.push(_error("BAD_MESSAGE", f"unsupported message: {raw[:200]}"))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await hub.start()
        yield
        await hub.stop()
        await client.aclose()

    return Starlette(routes=[WebSocketRoute("/ws", websocket_endpoint)], lifespan=lifespan)


async def _send_loop(connection: Connection) -> None:
    while True:
        item = await connection.queue.get()
        if item is None or connection.too_slow:
            await connection.websocket.close(code=TRY_AGAIN_LATER)
            return
        await connection.websocket.send_text(item.decode())


def _error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}
