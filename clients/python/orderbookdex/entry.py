"""WebSocket order entry (the gateway's ``GET /v1/ws``, docs/api.md "WebSocket order entry").

The same signed bodies as REST, one per message in an envelope with a request id; answers may
come out of order and are matched by id. Each call returns the REST answer's body or raises
the contract's error as REST would (``DexError`` subclasses). A connection is a session (its
cancel-on-disconnect covers what it placed), so it does not reconnect by itself: when it
closes, the requests in flight raise ``ConnectionError`` and the caller decides.

    async with OrderEntry(client) as entry:
        order = await entry.place("BTC-USDC", "BUY", 1000, 3000000, wait=True)
        await entry.cancel("BTC-USDC", order["clientOrderId"])
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Sequence
from typing import Any

import websockets

from orderbookdex.client import BatchAction, Client
from orderbookdex.errors import raise_for_error

__all__ = ["OrderEntry"]


class OrderEntry:
    """One order-entry connection of ``client``'s account (its key signs every body)."""

    def __init__(self, client: Client, url: str | None = None, *, timeout: float = 15.0) -> None:
        self.client = client
        base = str(client.http.base_url).rstrip("/")
        self.url = url or base.replace("http://", "ws://").replace("https://", "wss://") + "/v1/ws"
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> OrderEntry:
        await self.connect()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def connect(self) -> None:
        self._ws = await websockets.connect(self.url)
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                answer = json.loads(raw)
                future = self._pending.pop(answer.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(answer)
        finally:
            error = ConnectionError("the order-entry connection closed")
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(error)
            self._pending.clear()

    async def request(self, op: str, body: dict[str, Any] | None = None, **fields: Any) -> Any:
        """Send one envelope; the answer's body, or the contract's error raised."""
        if self._ws is None:
            raise ConnectionError("not connected: use `async with OrderEntry(...)`")
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        envelope: dict[str, Any] = {"id": request_id, "op": op, **fields}
        if body is not None:
            envelope["body"] = body
        await self._ws.send(json.dumps(envelope))
        answer = await asyncio.wait_for(future, self.timeout)
        if "status" in answer:
            raise_for_error(answer["status"], answer.get("body"), answer.get("headers"))
        return answer.get("body", answer)

    async def ping(self) -> Any:
        return await self.request("ping")

    async def place(
        self,
        market: str,
        side: str,
        qty: int,
        price: int = 0,
        *,
        wait: bool = False,
        **options: Any,
    ) -> dict[str, Any]:
        body = self.client.build_order(market, side, qty, price, **options)
        return dict(await self.request("order", body, wait=wait))

    async def cancel(self, market: str, client_order_id: str) -> dict[str, Any]:
        return dict(await self.request("cancel", self.client.build_cancel(market, client_order_id)))

    async def cancel_all(self, market: str = "") -> dict[str, Any]:
        return dict(await self.request("cancel_all", self.client.build_cancel_all(market)))

    async def amend(
        self, market: str, client_order_id: str, price: int, qty: int, expected_filled: int = -1
    ) -> dict[str, Any]:
        body = self.client.build_amend(market, client_order_id, price, qty, expected_filled)
        return dict(await self.request("amend", body))

    async def cancel_replace(
        self,
        cancel_client_order_id: str,
        market: str,
        side: str,
        qty: int,
        price: int = 0,
        **options: Any,
    ) -> dict[str, Any]:
        body = self.client.build_cancel_replace(
            cancel_client_order_id, market, side, qty, price, **options
        )
        return dict(await self.request("cancel_replace", body))

    async def batch(self, actions: Sequence[BatchAction], atomic: bool = False) -> dict[str, Any]:
        return dict(await self.request("batch", self.client.build_batch(actions, atomic)))

    async def schedule_cancel(self, deadline: int, market: str = "") -> dict[str, Any]:
        body = self.client.build_schedule_cancel(deadline, market)
        return dict(await self.request("schedule_cancel", body))

    async def twap(
        self, market: str, side: str, qty: int, duration_minutes: int, **options: Any
    ) -> dict[str, Any]:
        """Place a TWAP (``Client.build_twap``'s options); a TWAP placed here joins the
        session's cancel-on-disconnect."""
        body = self.client.build_twap(market, side, qty, duration_minutes, **options)
        return dict(await self.request("twap", body))

    async def set_leverage(self, market: str, initial_margin_bps: int) -> dict[str, Any]:
        body = self.client.build_set_leverage(market, initial_margin_bps)
        return dict(await self.request("set_leverage", body))

    async def cancel_on_disconnect(self, on: bool = True) -> dict[str, Any]:
        """Cancel this connection's accounts' orders when it ends ("Cancel on disconnect")."""
        return dict(await self.request("session", cancelOnDisconnect=on))
