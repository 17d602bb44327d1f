"""The hub's view of Redis pub/sub: a small interface, and the reader both backends share.

A :class:`Backend` subscribes and unsubscribes channels, hands back for each subscribe what
Redis will confirm it by, and tells the :class:`Listener` that connected it (the hub,
services/broadcaster/hub.py) of each publication and each moment publications may have been
lost. Everything else (sinks per topic, the order of commands, decoding, fan-out, reset) is
the hub's, written once for both backends:

- :mod:`~services.broadcaster.backends.classic`: PUBLISH / SUBSCRIBE on ``dex:ch:<topic>``,
  one connection (a single Redis, or a Redis Cluster without sharded pub/sub).
- :mod:`~services.broadcaster.backends.sharded`: SPUBLISH / SSUBSCRIBE on hash-tagged shard
  channels, one connection per node (a Redis Cluster >= 7).

Each connection is a :class:`Reader`: the one place that speaks pub/sub to Redis, for both.
common/pubsub.py decides which one a process uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import ssl
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, cast

import hiredis
from redis.asyncio.connection import SSLConnection

log = logging.getLogger(__name__)

# A standing subscription on this topic keeps a connection open before any client arrives.
KEEPALIVE_TOPIC = "_"
RETRY_CONNECT_S = 0.5
# A connection that has heard nothing for this long is sent a PING; one still silent after as
# long again is dropped (and made again), as redis-py's health check does.
HEALTH_CHECK_S = 30.0
CONNECT_TIMEOUT_S = 5.0


class Listener(Protocol):
    """What a backend reports to (the hub)."""

    def on_published(self, channel: str, data: Any) -> None:
        """One publication on ``channel``, undecoded."""

    def on_lost(self) -> None:
        """Publications may have been lost (a reconnect, a slot that moved)."""


class Backend(ABC):
    """One flavour of Redis pub/sub, seen as channels."""

    @abstractmethod
    def channels(self, topic: str) -> list[str]:
        """The channels that carry ``topic``."""

    @abstractmethod
    def topic(self, channel: str) -> str:
        """The topic ``channel`` carries."""

    @abstractmethod
    async def connect(self, listener: Listener) -> None:
        """Open the standing subscription and start reporting to ``listener``."""

    @abstractmethod
    async def disconnect(self) -> None:
        """Stop reading and close every connection."""

    @abstractmethod
    async def subscribe(self, channels: list[str]) -> Awaitable[object]:
        """Send the subscription of ``channels``; return what is done once Redis has taken
        them, or once a connection that carries them was lost (the listener hears that)."""

    @abstractmethod
    async def unsubscribe(self, channels: list[str]) -> None:
        """Send the unsubscription of ``channels``."""


class Flavour(NamedTuple):
    """One kind of pub/sub: its publication's reply type and its two commands (whose replies
    are typed by the command's name in lower case)."""

    message: bytes
    subscribe: str
    unsubscribe: str


CLASSIC = Flavour(b"message", "SUBSCRIBE", "UNSUBSCRIBE")
SHARDED = Flavour(b"smessage", "SSUBSCRIBE", "SUNSUBSCRIBE")


@dataclass(frozen=True)
class Address:
    """Where one pub/sub connection goes, and how it logs in."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a Unix socket instead of host:port
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None

    @classmethod
    def of(cls, host: str, port: int, options: dict[str, Any], connection_class: type) -> Address:
        """Where redis-py (asyncio) connects with ``connection_class`` to ``host:port`` given
        ``options`` (its connection keyword arguments).

        Over TLS (``rediss://``) the SSL context is the one redis-py's own connection builds
        from the same options, so the reader checks the server as every other client of the
        process does: certificate and host name checked by default (the system's CAs, or
        ``ssl_ca_certs`` / ``ssl_ca_path`` / ``ssl_ca_data``); ``ssl_cert_reqs=none`` checks
        neither, ``ssl_check_hostname=false`` not the name; ``ssl_certfile`` / ``ssl_keyfile``
        (``ssl_password``) are the client's certificate; ``ssl_min_version``, ``ssl_ciphers``.
        """
        context = None
        if issubclass(connection_class, SSLConnection):
            context = connection_class(**options).ssl_context.get()  # connects nothing
        return cls(
            host=host,
            port=int(port),
            path=options.get("path"),
            username=options.get("username"),
            password=options.get("password"),
            tls=context,
        )

    @classmethod
    def of_pool(cls, pool: Any) -> Address:
        """Where the connections of a redis-py (asyncio) connection pool go."""
        options = pool.connection_kwargs
        host, port = options.get("host", "127.0.0.1"), options.get("port", 6379)
        return cls.of(host, port, options, pool.connection_class)

    @classmethod
    def of_node(cls, node: Any) -> Address:
        """Where a redis-py (asyncio) cluster node's connections go."""
        options = node.connection_kwargs or {}
        return cls.of(node.host, node.port, options, node.connection_class)


class Reader(asyncio.Protocol):
    """One pub/sub connection: keeps its channels subscribed and reports what it reads.

    Reading costs what the hub's work on the publications costs and little more: each read
    from the socket is fed to a hiredis parser and every complete reply in it handled at
    once, in the transport's callback: no task wakes up per publication, no reply is
    reshaped into a dict. A reply cut at the end of a read waits in the parser for the rest.

    The reader keeps the set of channels it was asked to hold. When the connection is lost it
    makes a new one (every ``RETRY_CONNECT_S`` until one is made), subscribes that set again
    (grouped by ``regroup``: the sharded backend needs one command per slot), then PINGs, and
    once Redis has answered tells the listener ``on_lost``: what was published meanwhile is
    gone. A connection closed before Redis answered anything (a client certificate refused, too
    many clients) counts as an attempt that failed: the next one waits ``RETRY_CONNECT_S`` too,
    and the listener hears of the loss once, when a connection has answered.

    An unsubscribe written on a connection is answered on that connection, one reply per
    channel: the reader counts the replies due on the connection it wrote to, and forgets
    them when that connection is lost (their replies will never come, and the next connection
    subscribes only the channels still held). A reply it counted is expected; any other is
    the server dropping the channel by itself (a shard channel whose slot moved to another
    node): the channel is no longer held, and ``on_unsubscribed`` hears it. ``on_refused``
    hears the text of each error reply (a command Redis refused, e.g. ``MOVED <slot> ...``),
    ``on_unreachable`` each attempt to connect that failed.

    A subscribe is confirmed by :meth:`confirmation`: a PING with a token of its own, sent
    after the subscribe on the same connection. Its reply proves Redis has taken every command
    sent before it on that connection. A token is never reused; the ones outstanding when the
    connection is lost are settled, as their replies are lost (and the listener hears
    ``on_lost`` once a new connection has subscribed again).
    """

    def __init__(
        self,
        address: Address,
        name: str,
        flavour: Flavour,
        listener: Listener,
        on_unsubscribed: Callable[[str], None] | None = None,
        regroup: Callable[[Iterable[str]], list[list[str]]] | None = None,
        on_refused: Callable[[str], None] | None = None,
        on_unreachable: Callable[[], None] | None = None,
    ) -> None:
        self.address = address
        self.name = name
        self.flavour = flavour
        self.listener = listener
        self.on_unsubscribed = on_unsubscribed
        self.on_refused = on_refused
        self.on_unreachable = on_unreachable
        self.regroup = regroup or (lambda channels: [sorted(channels)])
        self.channels: set[str] = set()  # what the connection is to hold
        self._unsubscribed = flavour.unsubscribe.lower().encode()  # its confirmations' type
        self._leaving: Counter[str] = Counter()  # channel -> its unsubscribe replies due
        self._tokens = itertools.count(1)
        self._confirming: dict[bytes, asyncio.Future[None]] = {}  # PING token -> its waiter
        self._transport: asyncio.Transport | None = None
        self._parser = hiredis.Reader()
        self._lost: asyncio.Future[None] | None = None
        self._heard = False
        self._answered = False  # Redis has answered on this connection (not with an error)
        self._untold = False  # a connection was lost and the listener not told yet
        self._failing = False  # connecting has failed since the last connection that answered
        self._connected = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"hub-pump-{name}")

    async def connected(self) -> None:
        """Wait for the first connection; ConnectionError when none is made in time."""
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self._connected.wait()
        except TimeoutError:
            raise ConnectionError(f"no pub/sub connection to {self.name}") from None

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        if self._transport is not None:
            self._transport.close()
        self._settle()

    # -- commands ------------------------------------------------------------------------
    def subscribe(self, channels: list[str]) -> None:
        """Hold ``channels``: subscribe them now, and again on every new connection."""
        self.channels.update(channels)
        self._send([self.flavour.subscribe, *channels])

    def unsubscribe(self, channels: list[str]) -> None:
        """Stop holding ``channels``; if connected, unsubscribe them and expect the replies."""
        self.channels.difference_update(channels)
        if self._send([self.flavour.unsubscribe, *channels]):
            self._leaving.update(channels)

    def drop(self, matches: Callable[[str], bool]) -> list[str]:
        """Hold no more, and expect no unsubscribe reply for, the channels ``matches`` picks:
        their slot is served elsewhere now (this node refused a command of theirs with MOVED,
        or cannot be reached and the slot map gives them to another). Return those held."""
        held = [channel for channel in self.channels if matches(channel)]
        self.channels.difference_update(held)
        for channel in [channel for channel in self._leaving if matches(channel)]:
            del self._leaving[channel]
        return held

    def confirmation(self) -> asyncio.Future[None]:
        """Send a PING after what was sent so far; the future is done when it comes back (or
        when the connection is lost before)."""
        token = b"hub-confirm-%d" % next(self._tokens)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._transport is None:
            future.set_result(None)  # no connection: the next one resets everyone anyway
            return future
        self._confirming[token] = future
        self._send(["PING", token])
        return future

    def _send(self, command: list[Any]) -> bool:
        """Write ``command`` if connected, and say whether it was; a lost command is made good
        by the next connection (it subscribes ``channels`` again)."""
        if self._transport is None or len(command) < 2:
            return False
        self._transport.write(hiredis.pack_command(tuple(command)))
        return True

    # -- the connection ------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        address = self.address
        while True:
            lost = self._lost = loop.create_future()
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    if address.path is not None:
                        await loop.create_unix_connection(lambda: self, address.path)
                    else:
                        await loop.create_connection(
                            lambda: self, address.host, address.port, ssl=address.tls
                        )
            except (OSError, TimeoutError) as exc:
                self._failed(f"failed: {exc}")
                if self.on_unreachable is not None:
                    self.on_unreachable()
                await asyncio.sleep(RETRY_CONNECT_S)
                continue
            await self._watch(lost)
            if not self._answered:
                self._failed("was closed before Redis answered")
                await asyncio.sleep(RETRY_CONNECT_S)

    def _failed(self, what: str) -> None:
        """Warn of an attempt to connect that failed, the first one since Redis answered."""
        if not self._failing:
            log.warning("broadcaster: pub/sub connection to %s %s", self.name, what)
        self._failing = True

    def _log_in(self) -> None:
        address = self.address
        if address.password is not None:
            credentials = [address.password]
            if address.username:
                credentials.insert(0, address.username)
            self._send(["AUTH", *credentials])

    async def _watch(self, lost: asyncio.Future[None]) -> None:
        """Until the connection is lost: PING it when it has been silent for a while, and drop
        it when that PING stays unanswered as long."""
        pinged = False
        while True:
            self._heard = False
            done, _ = await asyncio.wait([lost], timeout=HEALTH_CHECK_S)
            if done:
                return
            if self._heard:
                pinged = False
            elif pinged:
                log.warning("broadcaster: pub/sub connection to %s is silent; dropping", self.name)
                if self._transport is not None:
                    self._transport.abort()
            else:
                self._send(["PING", b"hub-health"])
                pinged = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Log in, subscribe every channel held and PING: its answer proves the connection."""
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._parser = hiredis.Reader()
        self._transport = transport
        self._answered = False
        self._log_in()
        for group in self.regroup(self.channels):
            self._send([self.flavour.subscribe, *group])
        self._send(["PING", b"hub-connected"])
        self._connected.set()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget what was due on the connection: its replies will not come. Publications
        may be lost until a new connection has subscribed again: the listener will hear it."""
        self._transport = None
        self._untold = True
        self._leaving.clear()
        self._settle()
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        parser.feed(data)
        self._heard = True
        message = self.flavour.message
        published = self.listener.on_published
        while True:
            try:
                reply = parser.gets()
                if reply is False:
                    return
                if type(reply) is list and reply[0] == message:
                    published(reply[1].decode(), reply[2])
                else:
                    self._other(reply)
            except hiredis.ProtocolError:
                log.exception("broadcaster: unreadable reply on %s; reconnecting", self.name)
                if self._transport is not None:
                    self._transport.abort()
                return
            except Exception:
                # A bug in handling one reply: the next ones are still handled.
                log.exception("broadcaster: handling a reply on %s failed", self.name)

    def _other(self, reply: Any) -> None:
        """A reply that is not a publication: a PING's, an (un)subscribe's, a log-in's."""
        if isinstance(reply, hiredis.ReplyError):
            log.error("broadcaster: Redis refused a pub/sub command on %s: %s", self.name, reply)
            if self.on_refused is not None:
                self.on_refused(str(reply))
            return
        if not self._answered:
            self._answer()
        if type(reply) is bytes:
            # +OK of AUTH, or a PING's token echoed by a connection out of pub/sub mode (a
            # subscribe before it was refused, or every channel was left): it confirms too.
            self._confirmed(reply)
            return
        if not isinstance(reply, list) or len(reply) < 2:
            return
        kind = reply[0]
        if kind == b"pong":
            self._confirmed(reply[1])
        elif kind == self._unsubscribed and type(reply[1]) is bytes:
            self._left(reply[1].decode())

    def _left(self, channel: str) -> None:
        """An unsubscribe reply: one the reader asked for, or the server dropping ``channel``."""
        due = self._leaving[channel]
        if due > 1:
            self._leaving[channel] = due - 1
        elif due == 1:
            del self._leaving[channel]
        else:
            self.channels.discard(channel)
            if self.on_unsubscribed is not None:
                self.on_unsubscribed(channel)

    def _answer(self) -> None:
        """Redis's first answer on this connection: it works; tell of a loss before it."""
        self._answered = True
        if self._failing:
            log.warning("broadcaster: pub/sub connection to %s made again", self.name)
            self._failing = False
        if self._untold:
            self._untold = False
            asyncio.get_running_loop().call_soon(self.listener.on_lost)

    def _confirmed(self, token: Any) -> None:
        future = self._confirming.pop(token, None)
        if future is not None and not future.done():
            future.set_result(None)

    def _settle(self) -> None:
        """Settle every confirmation outstanding: its PING's reply will not come."""
        confirming, self._confirming = self._confirming, {}
        for future in confirming.values():
            if not future.done():
                future.set_result(None)
