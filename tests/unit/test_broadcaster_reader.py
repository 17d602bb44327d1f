"""The pub/sub reader's parsing, fed by hand (no server): every complete reply of a read is
handled at once, a reply cut anywhere by the end of a read is handled once whole with the next
read, a PING's reply confirms its own subscribe only, a bug in one publication's handling
spares the next, and an unreadable reply drops the connection; unsubscribe replies are
expected only on the connection the unsubscribe was written on; and a ``rediss://`` URL gives
the reader the TLS checks redis-py makes of it."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import hiredis
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from support.redis_server import free_port

from services.broadcaster.backends.base import CLASSIC, SHARDED, Address, Reader


class Recorder:
    def __init__(self, fail_on: bytes | None = None) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.lost = 0
        self.fail_on = fail_on

    def on_published(self, channel: str, data: Any) -> None:
        if data == self.fail_on:
            raise ValueError("a bug in the handling of one publication")
        self.published.append((channel, data))

    def on_lost(self) -> None:
        self.lost += 1


class Transport:
    """What the reader writes, and whether it dropped the connection."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False

    def get_extra_info(self, name: str) -> Any:
        return None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        pass


def reply(*items: bytes | int) -> bytes:
    """One RESP2 array reply, as Redis writes pub/sub replies."""
    parts = [b"*%d\r\n" % len(items)]
    for item in items:
        if isinstance(item, int):
            parts.append(b":%d\r\n" % item)
        else:
            parts.append(b"$%d\r\n%s\r\n" % (len(item), item))
    return b"".join(parts)


def nowhere() -> Address:
    return Address(port=free_port())  # refused: the reader retries while the test feeds it


def test_a_reply_cut_anywhere_is_handled_once_whole_with_the_next_read() -> None:
    async def scenario() -> None:
        listener = Recorder()
        unsubscribed: list[str] = []
        reader = Reader(nowhere(), "test", CLASSIC, listener, unsubscribed.append)
        transport = Transport()
        reader.connection_made(transport)  # type: ignore[arg-type]
        try:
            big = b'{"seq":2,"data":"' + b"x" * 70_000 + b'"}'
            for cut in [*range(1, 80), *range(70_000, 70_200), 70_150]:
                listener.published.clear()
                unsubscribed.clear()
                confirmed = reader.confirmation()
                token = hiredis.Reader()
                token.feed(transport.written[-1])
                ping = token.gets()
                assert ping[0] == b"PING"
                stream = b"".join(
                    [
                        reply(b"message", b"dex:ch:trade:A", b'{"seq":1}'),
                        reply(b"unsubscribe", b"dex:ch:depth:A", 1),
                        reply(b"pong", ping[1]),
                        reply(b"message", b"dex:ch:trade:A", big),
                        reply(b"message", b"dex:ch:depth:B", b'{"seq":3}'),
                    ]
                )
                cut = min(cut, len(stream) - 1)
                reader.data_received(stream[:cut])
                reader.data_received(stream[cut:])
                assert listener.published == [
                    ("dex:ch:trade:A", b'{"seq":1}'),
                    ("dex:ch:trade:A", big),
                    ("dex:ch:depth:B", b'{"seq":3}'),
                ], cut
                assert unsubscribed == ["dex:ch:depth:A"]
                assert confirmed.done()
        finally:
            await reader.stop()
        assert listener.lost == 0 and not transport.aborted

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_pong_confirms_only_its_own_ping_and_a_lost_connection_settles_the_rest() -> None:
    async def scenario() -> None:
        reader = Reader(nowhere(), "test", CLASSIC, Recorder())
        transport = Transport()
        reader.connection_made(transport)  # type: ignore[arg-type]
        try:
            first, second = reader.confirmation(), reader.confirmation()
            tokens = []
            for written in transport.written[1:]:  # after the connection's own PING
                parser = hiredis.Reader()
                parser.feed(written)
                tokens.append(parser.gets()[1])
            assert tokens[0] != tokens[1]
            reader.data_received(reply(b"pong", b"hub-health"))  # a health check's reply
            reader.data_received(reply(b"pong", tokens[1]))
            assert second.done() and not first.done()
            reader.data_received(b"+OK\r\n")  # AUTH's
            assert not first.done()
            third = reader.confirmation()
            parser = hiredis.Reader()
            parser.feed(transport.written[-1])
            token = parser.gets()[1]
            # Out of pub/sub mode (every channel left) Redis echoes a PING's token bare.
            reader.data_received(b"$%d\r\n%s\r\n" % (len(token), token))
            assert third.done() and not first.done()
            reader.connection_lost(None)
            assert first.done()  # its reply will not come: settled (the listener hears later)
            assert reader.confirmation().done()  # no connection now: nothing to wait for
        finally:
            await reader.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_bug_in_one_publication_spares_the_next_and_garbage_drops_the_connection() -> None:
    async def scenario() -> None:
        listener = Recorder(fail_on=b"bad")
        reader = Reader(nowhere(), "test", CLASSIC, listener)
        transport = Transport()
        reader.connection_made(transport)  # type: ignore[arg-type]
        try:
            reader.data_received(reply(b"message", b"c", b"bad") + reply(b"message", b"c", b"good"))
            assert listener.published == [("c", b"good")]
            assert not transport.aborted
            reader.data_received(b"?not RESP\r\n")
            assert transport.aborted
        finally:
            await reader.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_unsubscribe_replies_are_expected_only_on_the_connection_they_were_written_on() -> None:
    async def scenario() -> None:
        dropped: list[str] = []
        reader = Reader(nowhere(), "test", SHARDED, Recorder(), dropped.append)
        first = Transport()
        reader.connection_made(first)  # type: ignore[arg-type]
        try:
            reader.subscribe(["a", "b", "c"])
            reader.unsubscribe(["a"])
            assert first.written[-1] == hiredis.pack_command(("SUNSUBSCRIBE", "a"))
            reader.connection_lost(None)  # before the reply to it came
            reader.unsubscribe(["b"])  # no connection: nothing written, nothing due
            assert len(first.written) == 3  # PING, SSUBSCRIBE, SUNSUBSCRIBE
            second = Transport()
            reader.connection_made(second)  # type: ignore[arg-type]
            assert second.written == [
                hiredis.pack_command(("SSUBSCRIBE", "c")),
                hiredis.pack_command(("PING", "hub-connected")),
            ]
            reader.unsubscribe(["c"])
            reader.data_received(reply(b"sunsubscribe", b"c", 0))  # asked for on this connection
            assert dropped == []
            reader.subscribe(["a", "b", "c"])
            # Later the server drops each by itself (their slot moved): none is taken for the
            # reply of an unsubscribe written before, on a connection since lost.
            for channel in (b"a", b"b", b"c"):
                reader.data_received(reply(b"sunsubscribe", channel, 0))
            assert dropped == ["a", "b", "c"]
            assert reader.channels == set()  # dropped channels are held no more
        finally:
            await reader.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_refused_command_is_reported_and_its_channels_dropped_expect_no_reply() -> None:
    async def scenario() -> None:
        dropped: list[str] = []
        refused: list[str] = []
        reader = Reader(
            nowhere(), "test", SHARDED, Recorder(), dropped.append, on_refused=refused.append
        )
        reader.connection_made(Transport())  # type: ignore[arg-type]
        try:
            reader.subscribe(["a", "b", "c"])
            reader.unsubscribe(["a"])
            reader.data_received(b"-MOVED 42 127.0.0.1:7001\r\n")  # the SUNSUBSCRIBE's answer
            assert refused == ["MOVED 42 127.0.0.1:7001"]
            assert reader.drop(lambda channel: channel in ("a", "b")) == ["b"]
            assert reader.channels == {"c"}
            # No reply for "a" is due any more: one now is the server's own.
            reader.data_received(reply(b"sunsubscribe", b"a", 0))
            assert dropped == ["a"]
        finally:
            await reader.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))


@pytest.mark.parametrize(
    ("query", "verify", "hostname"),
    [
        ("", ssl.CERT_REQUIRED, True),  # checked by default
        ("?ssl_cert_reqs=optional", ssl.CERT_OPTIONAL, True),
        ("?ssl_check_hostname=false", ssl.CERT_REQUIRED, False),
        ("?ssl_cert_reqs=none", ssl.CERT_NONE, False),
    ],
)
def test_a_rediss_url_gives_the_reader_the_tls_checks_redis_py_makes_of_it(
    query: str, verify: ssl.VerifyMode, hostname: bool
) -> None:
    url = f"rediss://who:secret@127.0.0.1:7000/0{query}"
    cluster = RedisCluster.from_url(url)
    node = next(iter(cluster.nodes_manager.startup_nodes.values()))
    for address in (
        Address.of_pool(aioredis.Redis.from_url(url).connection_pool),
        Address.of_node(node),
    ):
        assert (address.host, address.port) == ("127.0.0.1", 7000)
        assert (address.username, address.password) == ("who", "secret")
        assert address.tls is not None
        assert address.tls.verify_mode == verify
        assert address.tls.check_hostname is hostname
    assert (
        Address.of_pool(aioredis.Redis.from_url("redis://127.0.0.1:7000").connection_pool).tls
        is None
    )
