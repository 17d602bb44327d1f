"""WebSocket order entry (docs/api.md "WebSocket order entry"): ``GET /v1/ws`` takes the same
signed bodies as REST, each in an envelope with a request id, and answers each with the REST
answer (status and body), possibly out of order.

A message travels:

1. Size: over ``MAX_MESSAGE_BYTES`` (64 KiB, the REST body cap) is a 413 answer; a frame over
   ``MAX_FRAME_BYTES`` closes the connection (1009, by the server library).
2. In flight: one more than ``MAX_IN_FLIGHT`` requests of the connection is a 429 at once.
3. ``ping`` is answered here; anything else becomes a task of its own, which
4. charges the address's rate limit (429), as every REST write does before its body is read,
5. reads the envelope (400), then
6. runs the op's entry in :data:`OPS`: the same coroutine the REST route calls, whose
   ``ApiError`` becomes the same §5 body with the same status.
7. An accepted signed request joins its account (in its market) to the connection's
   cancel-on-disconnect session, if one is on (sessions.py); then the answer is sent.

When the connection ends, a session's accounts are cancelled at once (reason DISCONNECT), and
again for any account a request still in flight adds, before the session is removed. The
process renews its sessions every second; if it dies they lapse and any gateway fires them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
import redis
from starlette.websockets import WebSocket

from services.gateway import (
    amends,
    cancels,
    logs,
    metrics,
    parsing,
    ratelimit,
    replaces,
    sessions,
    twap,
    writes,
)
from services.gateway.context import Gateway
from services.gateway.errors import ApiError, ErrorCode
from services.gateway.middleware import client_ip

log = logging.getLogger("services.gateway.wsentry")
access_log = logging.getLogger("services.gateway.access")

PATH = "/v1/ws"
MAX_MESSAGE_BYTES = parsing.MAX_BODY_BYTES
MAX_FRAME_BYTES = 1024 * 1024
MAX_IN_FLIGHT = 64
MAX_CONNECTIONS_PER_ADDRESS = 32
MAX_REFUSALS_IN_A_ROW = 100
MAX_ID_LENGTH = 128
MAX_ID = 2**53
MAX_PING_BYTES = 256

POLICY_VIOLATION = 1008
SESSION_LAPSED = 4001

OpRun = Callable[[Gateway, dict[str, Any], bool], Awaitable[tuple[int, Any]]]


def _user_in_market(body: dict[str, Any]) -> list[str]:
    """The account and market a single-account signed body acts on ("" = every market)."""
    return [sessions.member(str(body["userId"]).lower(), str(body.get("market", "")))]


def _batch_accounts(body: dict[str, Any]) -> list[str]:
    """A signed Batch's account, in each market its actions name."""
    user = str(body["userId"]).lower()
    markets = {str(action.get("market", "")) for action in body["actions"]}
    return [sessions.member(user, market) for market in sorted(markets)]


@dataclass(frozen=True, slots=True)
class EntryOp:
    """One op of the entry: the coroutine the REST route calls, and which accounts (in which
    markets) an accepted request of it joins to a cancel-on-disconnect session."""

    run: OpRun
    accounts: Callable[[dict[str, Any]], list[str]] = _user_in_market


async def _order(gateway: Gateway, body: dict[str, Any], wait: bool) -> tuple[int, Any]:
    return await writes.submit_order(gateway, body, wait)


async def _cancel(gateway: Gateway, body: dict[str, Any], _: bool) -> tuple[int, Any]:
    return await cancels.cancel(gateway, body)


async def _cancel_all(gateway: Gateway, body: dict[str, Any], _: bool) -> tuple[int, Any]:
    return await cancels.cancel_all(gateway, body)


async def _amend(gateway: Gateway, body: dict[str, Any], _: bool) -> tuple[int, Any]:
    return await amends.amend(gateway, body)


async def _batch(gateway: Gateway, body: dict[str, Any], _: bool) -> tuple[int, Any]:
    return await writes.place_batch(gateway, body)


async def _cancel_replace(gateway: Gateway, body: dict[str, Any], _: bool) -> tuple[int, Any]:
    return await replaces.cancel_replace(gateway, body)


async def _schedule_cancel(gateway: Gateway, body: dict[str, Any], _: bool) -> tuple[int, Any]:
    return await writes.schedule_cancel(gateway, body)


async def _set_leverage(gateway: Gateway, body: dict[str, Any], _: bool) -> tuple[int, Any]:
    return await writes.set_leverage(gateway, body)


async def _twap(gateway: Gateway, body: dict[str, Any], _: bool) -> tuple[int, Any]:
    return await writes.place_twap(gateway, body)


OPS: dict[str, EntryOp] = {
    "order": EntryOp(_order),  # POST /v1/orders (wait: ?wait=1)
    "cancel": EntryOp(_cancel),  # POST /v1/orders/cancel
    "cancel_all": EntryOp(_cancel_all),  # POST /v1/orders/cancel-all
    "amend": EntryOp(_amend),  # POST /v1/orders/amend
    "batch": EntryOp(_batch, _batch_accounts),  # POST /v1/orders/batch
    "cancel_replace": EntryOp(_cancel_replace),  # POST /v1/orders/cancel-replace
    "schedule_cancel": EntryOp(_schedule_cancel),  # POST /v1/orders/schedule-cancel
    "set_leverage": EntryOp(_set_leverage),  # POST /v1/accounts/leverage
    "twap": EntryOp(_twap),  # POST /v1/orders/twap
}
"""op -> its entry; each REST write of order entry is one line here."""

SESSION_OP = "session"
PING_OP = "ping"
OP_NAMES = ", ".join(repr(name) for name in (*OPS, SESSION_OP, PING_OP))


@dataclass(slots=True)
class Envelope:
    id: str | int | None
    op: str = ""
    body: dict[str, Any] | None = None
    wait: bool = False
    cancel_on_disconnect: bool = False


def read_id(message: Any) -> str | int | None:
    """The request id to echo: a string of at most 128 characters or an integer below 2^53
    in magnitude; None for anything else (the answer is then a 400 with id null)."""
    if not isinstance(message, dict):
        return None
    value = message.get("id")
    if isinstance(value, str) and len(value) <= MAX_ID_LENGTH:
        return value
    if type(value) is int and -MAX_ID < value < MAX_ID:
        return value
    return None


def loads(raw: bytes) -> Any:
    """The message as REST reads a body (parsing.loads: integers of any size; NaN, a key twice
    and lone surrogates refused), with orjson's answer kept when it is already exact."""
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return parsing.loads(raw)
    if isinstance(message, dict):
        body = message.get("body")
        inner = body if isinstance(body, dict) else {}
        exact = (
            all(type(v) is not float for v in message.values())
            and all(type(v) is not float and not isinstance(v, dict | list) for v in inner.values())
            # A colon for each key (none in any string): no key came twice.
            and raw.count(b":") == len(message) + len(inner)
        )
        if exact:
            return message
    return parsing.loads(raw)


def read_envelope(raw: bytes) -> Envelope:
    """The envelope; 400 INVALID_REQUEST when it is not one (the id kept when readable)."""
    message = loads(raw)
    request_id = read_id(message)
    if not isinstance(message, dict):
        raise ApiError(ErrorCode.INVALID_REQUEST, "a message must be a JSON object")
    if request_id is None:
        raise ApiError(
            ErrorCode.INVALID_REQUEST,
            f"a message needs an id: a string of at most {MAX_ID_LENGTH} characters or an "
            "integer below 2^53",
        )
    envelope = Envelope(request_id)
    op = message.get("op")
    if op == SESSION_OP:
        flag = message.get("cancelOnDisconnect")
        if not isinstance(flag, bool):
            raise ApiError(ErrorCode.INVALID_REQUEST, "cancelOnDisconnect must be true or false")
        envelope.op, envelope.cancel_on_disconnect = op, flag
        return envelope
    if not isinstance(op, str) or op not in OPS:
        shown = repr(op)[:64] if isinstance(op, str) else orjson.dumps(op).decode()[:64]
        raise ApiError(ErrorCode.INVALID_REQUEST, f"unknown op {shown}: expected {OP_NAMES}")
    body = message.get("body")
    if not isinstance(body, dict):
        raise ApiError(ErrorCode.INVALID_REQUEST, "body must be a JSON object")
    wait = message.get("wait", False)
    if not isinstance(wait, bool):
        raise ApiError(ErrorCode.INVALID_REQUEST, f"wait must be true or false, got {wait!r}")
    envelope.op, envelope.body, envelope.wait = op, body, wait
    return envelope


def failure(exc: Exception) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, §5 body, headers) of a failed request, as the HTTP middleware answers it."""
    if isinstance(exc, ApiError):
        return exc.status, _error(exc.code, exc.message), exc.headers
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return 503, _error(ErrorCode.OVERLOADED, f"the exchange's store is full: {exc}"), {}
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
        message = f"the exchange's store is unreachable: {exc}"
        return 503, _error(ErrorCode.UNAVAILABLE, message), {}
    log.error("unhandled error on a WebSocket entry request", exc_info=exc)
    return 500, _error(ErrorCode.INTERNAL, f"the gateway failed: {type(exc).__name__}"), {}


def _error(code: ErrorCode, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class Entry:
    """The process's WebSocket entry: its connections per address and its live sessions,
    renewed every ``sessions.RENEW_S``."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.per_address: dict[str, int] = {}
        self.live: dict[str, EntryConnection] = {}

    async def serve(self, websocket: WebSocket) -> None:
        address = client_ip(websocket.scope)
        held = self.per_address.get(address, 0)
        if held >= MAX_CONNECTIONS_PER_ADDRESS:
            with contextlib.suppress(Exception):
                await websocket.accept()
                await websocket.close(
                    POLICY_VIOLATION,
                    f"too many entry connections from this address: at most "
                    f"{MAX_CONNECTIONS_PER_ADDRESS} per gateway; close one first",
                )
            return
        # Counted before the first await, given back in ``finally`` however the connection ends.
        self.per_address[address] = held + 1
        try:
            await websocket.accept()
            await EntryConnection(self, websocket, address).run()
        finally:
            left = self.per_address[address] - 1
            if left:
                self.per_address[address] = left
            else:
                del self.per_address[address]

    async def renew_forever(self) -> None:
        """Renew every live session each ``RENEW_S``; close the connection of one that lapsed."""
        while True:
            await asyncio.sleep(sessions.RENEW_S)
            held = list(self.live)
            try:
                standing = await sessions.renew(self.gateway, held)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("renewing cancel-on-disconnect sessions failed, retrying: %s", exc)
                continue
            for session, ok in zip(held, standing, strict=True):
                connection = self.live.get(session)
                if not ok and connection is not None:
                    connection.lapsed()

    def start(self) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(self.renew_forever(), name="ws-sessions")


class EntryConnection:
    """One client: its requests in flight, the accounts it had accepted, its session."""

    def __init__(self, entry: Entry, websocket: WebSocket, address: str) -> None:
        self.entry = entry
        self.gateway = entry.gateway
        self.websocket = websocket
        self.address = address
        self.in_flight: set[asyncio.Task[None]] = set()
        self.accepted: set[str] = set()
        self.session: str | None = None
        self.session_lock = asyncio.Lock()
        self.send_lock = asyncio.Lock()
        self.refusals = 0
        self.closed = False
        self.closing: asyncio.Task[None] | None = None

    async def run(self) -> None:
        try:
            while not self.closed:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                raw = text.encode() if text is not None else message.get("bytes") or b""
                await self.take(raw)
        finally:
            self.closed = True
            await self.end()

    async def take(self, raw: bytes) -> None:
        """Answer at once what needs no Redis (413, a full connection, ping); start the rest."""
        if len(raw) > MAX_MESSAGE_BYTES:
            error = ApiError(
                ErrorCode.BODY_TOO_LARGE,
                f"the message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}",
            )
            await self.answer(None, *failure(error))
            return
        if len(self.in_flight) >= MAX_IN_FLIGHT:
            error = ApiError(
                ErrorCode.RATE_LIMITED,
                f"{MAX_IN_FLIGHT} requests already in flight on this connection; wait for an "
                "answer",
            )
            await self.answer(_quick_id(raw), *failure(error))
            return
        if len(raw) <= MAX_PING_BYTES and b'"ping"' in raw:
            message = _loads_or_none(raw)
            if isinstance(message, dict) and message.get("op") == PING_OP:
                pong: dict[str, Any] = {"op": "pong"}
                if read_id(message) is not None:
                    pong["id"] = read_id(message)
                await self.send(pong)
                return
        task = asyncio.get_running_loop().create_task(self.handle(raw))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def handle(self, raw: bytes) -> None:
        started = time.perf_counter()
        request_id: str | int | None = None
        op = "unknown"
        try:
            # The address's budget first, as for a REST write before its body is read.
            await ratelimit.check(self.gateway, self.address)
            envelope = read_envelope(raw)
            request_id, op = envelope.id, envelope.op
            if op == SESSION_OP:
                status, body = await self.set_session(envelope.cancel_on_disconnect)
                headers: dict[str, str] = {}
            else:
                assert envelope.body is not None
                entry = OPS[op]
                status, body = await entry.run(self.gateway, envelope.body, envelope.wait)
                headers = {}
                if status < 300:
                    await self.join(entry.accounts(envelope.body))
        except Exception as exc:
            if request_id is None:
                request_id = _strict_id(raw)
            status, body, headers = failure(exc)
        elapsed = time.perf_counter() - started
        metrics.observe_request("WS", f"{PATH} {op}", status, elapsed)
        if access_log.isEnabledFor(logging.INFO):
            logs.access(
                {
                    "request_id": request_id,
                    "method": "WS",
                    "route": f"{PATH} {op}",
                    "path": PATH,
                    "status": status,
                    "ms": round(elapsed * 1000, 3),
                    "client": self.address,
                }
            )
        await self.answer(request_id, status, body, headers)

    async def answer(
        self, request_id: str | int | None, status: int, body: Any, headers: dict[str, str]
    ) -> None:
        self.refusals = self.refusals + 1 if status == 429 else 0
        message: dict[str, Any] = {"id": request_id, "status": status, "body": body}
        if headers:
            message["headers"] = headers
        await self.send(message)
        if self.refusals >= MAX_REFUSALS_IN_A_ROW:
            await self.close(
                POLICY_VIOLATION,
                f"{MAX_REFUSALS_IN_A_ROW} requests in a row refused with 429: slow down",
            )

    async def send(self, message: dict[str, Any]) -> None:
        """Send one message; a connection already gone swallows it."""
        with contextlib.suppress(Exception):
            async with self.send_lock:
                await self.websocket.send_text(orjson.dumps(message).decode())

    async def close(self, code: int, reason: str) -> None:
        self.closed = True
        with contextlib.suppress(Exception):
            await self.websocket.close(code, reason)

    # -- cancel-on-disconnect ------------------------------------------------------------
    async def set_session(self, on: bool) -> tuple[int, dict[str, Any]]:
        """Turn the connection's cancel-on-disconnect session on (it then holds every account
        already accepted here) or off (removed without cancelling anything)."""
        async with self.session_lock:
            if on and self.session is None:
                session = os.urandom(16).hex()
                await sessions.open_session(self.gateway, session, sorted(self.accepted))
                self.session = session
                self.entry.live[session] = self
            elif not on and self.session is not None:
                session, self.session = self.session, None
                self.entry.live.pop(session, None)
                await sessions.close(self.gateway, session)
        return 200, {"cancelOnDisconnect": self.session is not None}

    async def join(self, members: list[str]) -> None:
        """Hold the accounts of an accepted request. Never raises: the request was accepted
        whatever happens here, and its answer says so. A session that cannot take them (it
        lapsed, or Redis failed) ends its connection, which cancels them (:meth:`end`)."""
        fresh = [m for m in members if m not in self.accepted]
        if not fresh:
            return
        async with self.session_lock:
            self.accepted.update(fresh)
            if self.session is None:
                return
            try:
                joined = await sessions.join(self.gateway, self.session, fresh)
            except Exception as exc:
                log.warning("session %s could not hold %s: %s", self.session, fresh, exc)
                joined = False
            if not joined:
                self.lapsed()

    def lapsed(self) -> None:
        """The session lapsed while its connection stood (renewals failed for ``LEASE_MS``) or
        could not hold an account: the client must not believe it is covered, so the
        connection ends, and its end cancels every account it held."""
        log.warning("cancel-on-disconnect session %s lapsed; closing its connection", self.session)
        self.closing = asyncio.get_running_loop().create_task(
            self.close(
                SESSION_LAPSED,
                "the cancel-on-disconnect session lapsed and its orders were cancelled; reconnect",
            )
        )

    async def end(self) -> None:
        """Cancel the session's accounts at once, let the requests in flight finish, cancel
        any account they added, then remove the session. If a cancel could not be sent, the
        session is left to lapse in Redis, where any gateway fires it."""
        session = self.session
        fired: set[str] = set(self.accepted) if session is not None else set()
        sent = await self._fire(fired)
        if self.in_flight:
            await asyncio.gather(*self.in_flight, return_exceptions=True)
        if session is None:
            return
        self.entry.live.pop(session, None)
        sent = await self._fire(self.accepted - fired) and sent
        if not sent:
            return
        try:
            await sessions.close(self.gateway, session)
        except Exception as exc:
            # Left standing: it lapses in LEASE_MS and some gateway fires it again (harmless).
            log.warning("removing cancel-on-disconnect session %s failed: %s", session, exc)

    async def _fire(self, members: set[str]) -> bool:
        """Send the cancels of ``members``, then end their TWAPs; False if the cancels could
        not be sent. Shielded: the connection's own task is being cancelled as it closes, and
        the cancels are the point of the session."""
        if not members:
            return True
        with anyio.CancelScope(shield=True):
            try:
                await sessions.fire_members(self.gateway, sorted(members))
            except Exception as exc:
                log.warning("cancel-on-disconnect of %s failed, left to lapse: %s", members, exc)
                return False
            try:
                await twap.end_members(self.gateway, sorted(members))
            except Exception as exc:
                # a TWAP left running sends only IOC slices; its own cancel still ends it
                log.warning("ending the TWAPs of %s failed: %s", members, exc)
        return True
        try:
            await twap.end_members(self.gateway, sorted(members))
        except Exception as exc:
            # never in the way of the cancels: a TWAP left running sends only IOC slices
            log.warning("ending the TWAPs of %s failed: %s", members, exc)
        try:
            await sessions.fire_members(self.gateway, sorted(members))
        except Exception as exc:
            log.warning("cancel-on-disconnect of %s failed, left to lapse: %s", members, exc)
            return False
        return True


def _loads_or_none(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _strict_id(raw: bytes) -> str | int | None:
    """The id of a message REST's reader accepts (null for one it refuses: a key twice…)."""
    try:
        return read_id(loads(raw))
    except ApiError:
        return None


def _quick_id(raw: bytes) -> str | int | None:
    return read_id(_loads_or_none(raw))
