"""The broadcaster's pub/sub reader over TLS, against a real redis-server that speaks TLS only
(certificates made by trustme, the server's for ``localhost`` alone).

The reader takes its TLS settings from a ``rediss://`` URL as every redis-py client of the
process does (backends/base.py ``Address.of``): it relays a 1 MB publication and a burst,
comes back over TLS after ``CLIENT KILL`` (a loss), refuses a server it cannot check (the
default: certificate and host name) and keeps retrying, and accepts one only where the URL
says so. The broadcaster process relays over TLS with what an operator sets: ``DEX_REDIS_URL``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
import redis
import redis.asyncio as aioredis
import trustme
import uvloop
from support.exchange import Exchange
from support.pubsub import Heard, until
from support.redis_server import RedisServer, RedisServerUnavailable, free_port, redis_command
from support.ws import WsClient

from common import keys
from services.broadcaster.backends.base import CLASSIC, Address, Reader

pytestmark = pytest.mark.integration

CHANNEL = "dex:ch:tls-test"

Run = Callable[[Coroutine[Any, Any, Any]], Any]
LOOPS: dict[str, Run] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@dataclass(frozen=True)
class TlsRedis:
    port: int
    ca: Path  # signed the server's certificate (for "localhost")
    stranger: Path  # a CA that signed nothing of this server's
    client_cert: Path  # a client certificate (with its key) the server's CA signed
    log: Path  # the server's log

    def refused_handshakes(self) -> int:
        """TLS connections the server saw fail (it counts them nowhere but in its log)."""
        return self.log.read_text().count("Error accepting a client connection")

    def url(self, host: str = "localhost", **query: str | Path) -> str:
        text = urlencode({name: str(value) for name, value in query.items()})
        return f"rediss://{host}:{self.port}/0" + (f"?{text}" if text else "")

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url(ssl_ca_certs=self.ca))


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    folder = tmp_path_factory.mktemp("tls")
    ca, stranger = trustme.CA(), trustme.CA()
    served = ca.issue_cert("localhost")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    stranger.cert_pem.write_to_path(str(folder / "stranger.pem"))
    served.private_key_pem.write_to_path(str(folder / "key.pem"))
    served.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    ca.issue_cert("dex-broadcaster").private_key_and_cert_chain_pem.write_to_path(
        str(folder / "client.pem")
    )
    port = free_port()
    server = RedisServer(
        extra_args=(
            "--tls-port", str(port),
            "--tls-cert-file", str(folder / "cert.pem"),
            "--tls-key-file", str(folder / "key.pem"),
            "--tls-ca-cert-file", str(folder / "ca.pem"),
            "--tls-auth-clients", "no",
        )
    )  # fmt: skip
    try:
        server.start()  # seen up on its plain port...
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        # ...which then closes: TLS only from here on.
        assert redis_command(server.host, server.port, "CONFIG", "SET", "port", "0") == b"+OK"
        yield TlsRedis(
            port, folder / "ca.pem", folder / "stranger.pem", folder / "client.pem", server.log_path
        )
    finally:
        server.stop()


def address_of(url: str) -> Address:
    """The reader's address as the broadcaster builds it from ``DEX_REDIS_URL`` (a single
    Redis: its client's connection pool)."""
    return Address.of_pool(aioredis.Redis.from_url(url).connection_pool)


@pytest.mark.parametrize("loop", list(LOOPS))
def test_a_reader_over_tls_relays_a_megabyte_and_a_burst_and_comes_back_after_client_kill(
    tls: TlsRedis, loop: str
) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB, every byte value: many TLS records, many reads
    burst = [b"%d" % n for n in range(2000)]

    async def scenario() -> None:
        address = address_of(tls.url(ssl_ca_certs=tls.ca))
        assert address.tls is not None and address.tls.verify_mode == ssl.CERT_REQUIRED
        assert address.tls.check_hostname
        heard = Heard()
        reader = Reader(address, "tls", CLASSIC, heard)
        publisher = aioredis.Redis.from_url(tls.url(ssl_ca_certs=tls.ca))
        try:
            await reader.connected()
            reader.subscribe([CHANNEL])
            await asyncio.wait_for(reader.confirmation(), 10)
            assert await publisher.publish(CHANNEL, big) == 1
            async with publisher.pipeline(transaction=False) as pipe:
                for message in burst:
                    pipe.publish(CHANNEL, message)
                assert await pipe.execute() == [1] * len(burst)
            await until(lambda: len(heard.published) == 1 + len(burst))
            assert heard.published == [(CHANNEL, big), *((CHANNEL, m) for m in burst)]
            assert heard.lost == 0

            assert await publisher.client_kill_filter(_type="pubsub") == 1
            await until(lambda: heard.lost == 1)  # connected again, over TLS: a loss
            await asyncio.wait_for(reader.confirmation(), 10)  # subscribed again before it
            assert await publisher.publish(CHANNEL, b"after the kill") == 1
            await until(lambda: heard.published[-1] == (CHANNEL, b"after the kill"))
            assert len(heard.published) == 2 + len(burst) and heard.lost == 1
        finally:
            await reader.stop()
            await publisher.aclose()

    LOOPS[loop](scenario())


@pytest.mark.parametrize(
    ("query", "host", "why"),
    [
        ({}, "localhost", "CERTIFICATE_VERIFY_FAILED"),  # the system's CAs: not this one's
        ({"ssl_ca_certs": "stranger"}, "localhost", "CERTIFICATE_VERIFY_FAILED"),
        ({"ssl_ca_certs": "ca"}, "127.0.0.1", "127.0.0.1"),  # not the certificate's name
    ],
    ids=["default-cas", "wrong-ca", "wrong-name"],
)
def test_a_reader_refuses_a_server_it_cannot_check_relays_nothing_and_keeps_retrying(
    tls: TlsRedis, query: dict[str, str], host: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    options = {name: getattr(tls, value) for name, value in query.items()}

    async def scenario() -> None:
        heard = Heard()
        reader = Reader(address_of(tls.url(host, **options)), "tls", CLASSIC, heard)
        before = tls.refused_handshakes()
        try:
            reader.subscribe([CHANNEL])
            # It keeps trying (every RETRY_CONNECT_S), and never gets as far as a command.
            await until(lambda: tls.refused_handshakes() >= before + 3)
            with tls.client() as server:
                assert server.pubsub_numsub(CHANNEL) == [(CHANNEL.encode(), 0)]
                assert server.publish(CHANNEL, b"unheard") == 0
            assert heard.published == [] and heard.lost == 0
        finally:
            await reader.stop()

    with caplog.at_level(logging.WARNING, logger="services.broadcaster.backends.base"):
        asyncio.run(scenario())
    failures = [
        r.getMessage() for r in caplog.records if "connection to tls failed" in r.getMessage()
    ]
    assert len(failures) == 1, failures  # said once, not at every retry
    assert why in failures[0], failures[0]


@pytest.mark.parametrize(
    ("query", "host"),
    [
        ({"ssl_cert_reqs": "none"}, "127.0.0.1"),  # no check at all
        ({"ssl_ca_certs": "ca", "ssl_check_hostname": "false"}, "127.0.0.1"),  # the CA only
    ],
    ids=["cert-reqs-none", "no-hostname-check"],
)
def test_a_reader_accepts_what_the_url_says_not_to_check(
    tls: TlsRedis, query: dict[str, str], host: str
) -> None:
    options = {name: getattr(tls, value, value) for name, value in query.items()}

    async def scenario() -> None:
        address = address_of(tls.url(host, **options))
        assert address.tls is not None and not address.tls.check_hostname
        heard = Heard()
        reader = Reader(address, "tls", CLASSIC, heard)
        try:
            await reader.connected()
            reader.subscribe([CHANNEL])
            await asyncio.wait_for(reader.confirmation(), 10)
            with tls.client() as server:
                assert server.publish(CHANNEL, b"relayed") == 1
            await until(lambda: heard.published == [(CHANNEL, b"relayed")])
        finally:
            await reader.stop()

    asyncio.run(scenario())


def test_a_server_that_closes_each_connection_unanswered_is_retried_at_a_pace_and_told_once(
    tls: TlsRedis,
) -> None:
    """A server that wants a client certificate the reader has not got: each connection is
    closed before Redis answers anything. The reader does not spin, and does not tell of a
    loss at each attempt (which would reset every client), only once a connection answers;
    a reader with the client certificate is served meanwhile."""

    async def scenario() -> None:
        heard, certified = Heard(), Heard()
        reader = Reader(address_of(tls.url(ssl_ca_certs=tls.ca)), "tls", CLASSIC, heard)
        with_cert = tls.url(ssl_ca_certs=tls.ca, ssl_certfile=tls.client_cert)
        other = Reader(address_of(with_cert), "tls-client-cert", CLASSIC, certified)
        with tls.client() as server:  # a connection made before the certificates are asked for
            try:
                await reader.connected()
                reader.subscribe([CHANNEL])
                await asyncio.wait_for(reader.confirmation(), 10)
                server.config_set("tls-auth-clients", "yes")
                before = tls.refused_handshakes()
                assert server.client_kill_filter(_type="pubsub") == 1
                started = time.monotonic()
                await until(lambda: tls.refused_handshakes() >= before + 3)
                # Three attempts, two waits of RETRY_CONNECT_S (0.5 s) between them at least.
                assert time.monotonic() - started >= 0.9
                assert heard.lost == 0
                await other.connected()
                other.subscribe([CHANNEL])
                await asyncio.wait_for(other.confirmation(), 10)
                assert server.publish(CHANNEL, b"certified") == 1
                await until(lambda: certified.published == [(CHANNEL, b"certified")])
            finally:
                server.config_set("tls-auth-clients", "no")
            try:
                await until(lambda: heard.lost == 1)  # a connection answered: told once
                await asyncio.wait_for(reader.confirmation(), 10)
                assert server.publish(CHANNEL, b"back") == 2
                await until(lambda: heard.published == [(CHANNEL, b"back")])
                assert heard.lost == 1 and certified.lost == 0
            finally:
                await reader.stop()
                await other.stop()

    asyncio.run(scenario())


def test_the_broadcaster_relays_over_tls_with_a_rediss_url(tls: TlsRedis) -> None:
    topic = "trade:BTC-USDC"
    with Exchange(tls.url(ssl_ca_certs=tls.ca)) as exchange:
        exchange.start("broadcaster")

        async def scenario() -> None:
            async with await WsClient.connect(exchange.ws) as ws:
                assert (await ws.subscribe(topic))["seq"] == 0
                with tls.client() as server:
                    payload = {"seq": 1, "data": [{"seq": 1, "price": 3000100}]}
                    assert server.publish(keys.channel(topic), orjson.dumps(payload)) == 1
                update = await ws.seen(lambda m: m.get("topic") == topic and m.get("seq") == 1)
                assert update["data"] == [{"seq": 1, "price": 3000100}]

        asyncio.run(scenario())
