"""The server's lean path for ``POST /v1/orders`` (services/gateway/server.py) answers every
request with the bytes uvicorn's own path gives, the Date header aside.

Two copies of the gateway's server app run in this process, each on its own Redis database
with a stand-in matcher: one served by the gateway's protocol, one by the same protocol with
the lean path off. The same raw requests go to both over TCP (valid orders, each refusal on the
route, bad and oversize bodies, pipelined pairs, HTTP/1.0, ``Connection: close``, ``?wait=1``,
a 429 with Retry-After, an exception in the handler) and the answers are compared byte for
byte, as are the access log lines (but their milliseconds) and the request metrics' counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis
import uvicorn
from support.gateway import ADMIN, ADMIN_TOKEN, ReplyingMatcher
from support.redis_server import RedisServer, free_port, wait_for
from support.signing import Trader

from common.settings import DexSettings
from services.gateway import logs, writes
from services.gateway.server import GatewayHttpProtocol, LeanCycle

pytestmark = pytest.mark.integration

SPOT = "BTC-USDC"
DEPOSIT = 10 * 30_015_000  # ten orders of 0.001 BTC at 30,000.00 USDC, fee included
DATE = re.compile(rb"\r\ndate: [^\r]*\r\n")
WAIT = re.compile(rb"content-length: \d+(\r\n(?:.*\r\n)*?\r\n.*?)in \d+ ms")
"""A 429's time to wait, and its length (which holds as many digits)."""
MILLIS = re.compile(rb'(?<=":)1\d{12}(?=[,}])')
"""A time in milliseconds (the admission's, in a ?wait=1 answer): one per side."""
NEW_ID = re.compile(rb"\r\nx-request-id: [0-9a-f]{32}\r\n")
"""A request id the gateway made (random): the same on both sides once normalized."""


class UvicornPath(GatewayHttpProtocol):
    lean = False


class Side:
    """One gateway server app (its own Redis database and matcher) on a free port."""

    def __init__(self, redis_url: str, protocol: type[GatewayHttpProtocol]) -> None:
        from services.gateway.app import create_app
        from services.gateway.middleware import GatewayMiddleware

        settings = DexSettings(
            redis_url=redis_url, admin_token=ADMIN_TOKEN, rate_limit_user=1, rate_limit_ip=0
        )
        app = create_app(settings)
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                GatewayMiddleware(app, gateway=app.state.gateway, fast_only=True),
                host="127.0.0.1",
                port=self.port,
                http=protocol,
                access_log=False,
                log_config=None,
            )
        )
        self.matcher = ReplyingMatcher(redis_url, [SPOT])

    def send(self, raw: bytes, answers: int) -> bytes:
        """``raw`` in one write; what comes back until ``answers`` answers are whole or the
        connection closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=15) as sock:
            sock.sendall(raw)
            return read_answers(sock, answers)


def read_answers(sock: socket.socket, answers: int) -> bytes:
    data = b""
    complete = 0
    while complete < answers:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        complete = count_answers(data)
    return data


def count_answers(data: bytes) -> int:
    count, at = 0, 0
    while (end := data.find(b"\r\n\r\n", at)) >= 0:
        head = data[at:end].lower()
        match = re.search(rb"content-length: (\d+)", head)
        size = int(match.group(1)) if match else 0
        if len(data) < end + 4 + size:
            break
        count, at = count + 1, end + 4 + size
    return count


def same_but_date(answer: bytes) -> bytes:
    """The answer with what differs between two runs blanked out: the Date, a time in
    milliseconds, a 429's wait and a request id the gateway made."""
    answer = DATE.sub(b"\r\ndate: -\r\n", answer)
    answer = MILLIS.sub(b"1000000000000", answer)
    answer = WAIT.sub(rb"content-length: -\1in - ms", answer)
    return NEW_ID.sub(b"\r\nx-request-id: new\r\n", answer)


@contextlib.contextmanager
def serving(redis_server: RedisServer, dbs: tuple[int, int]) -> Iterator[tuple[Side, Side]]:
    """The two sides served from one thread, on empty Redis databases ``dbs``."""
    urls = [redis_server.url_for_db(db) for db in dbs]
    for url in urls:
        redis.Redis.from_url(url).flushdb()
    lean, plain = Side(urls[0], GatewayHttpProtocol), Side(urls[1], UvicornPath)
    loop = asyncio.new_event_loop()

    async def serve() -> None:
        await asyncio.gather(lean.server.serve(), plain.server.serve())

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: lean.server.started and plain.server.started, timeout=30)
        yield lean, plain
    finally:
        lean.server.should_exit = plain.server.should_exit = True
        thread.join(timeout=30)
        loop.close()


@pytest.fixture(scope="module")
def sides(redis_server: RedisServer) -> Iterator[tuple[Side, Side]]:
    with serving(redis_server, (1, 2)) as (lean, plain), lean.matcher, plain.matcher:
        yield lean, plain


def no_uvicorn_access_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn's access log off, as the gateway runs it: pytest's log capture adds handlers
    to its logger as each test starts, and a protocol that finds one writes uvicorn's line,
    which the lean path does not (it is not taken then)."""
    monkeypatch.setattr(logging.getLogger("uvicorn.access"), "handlers", [])


def request(
    body: bytes,
    *,
    target: str = "/v1/orders",
    version: str = "1.1",
    headers: tuple[str, ...] = (),
    request_id: str | None = "rid-1",
    length: bool = True,
) -> bytes:
    lines = [f"POST {target} HTTP/{version}", "Host: gateway", *headers]
    if request_id is not None:
        lines.append(f"X-Request-ID: {request_id}")
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def fund(sides: tuple[Side, Side], trader: Trader) -> None:
    for side in sides:
        answer = httpx.post(
            f"http://127.0.0.1:{side.port}/v1/admin/deposits",
            json={"userId": trader.address, "asset": "USDC", "amount": DEPOSIT},
            headers=ADMIN,
        )
        assert answer.status_code == 200, answer.text


def order_metrics(side: Side) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{side.port}/metrics").text
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if '/v1/orders"' in line
        and not line.startswith("#")
        and not any(part in line for part in ("_bucket", "_sum", "_created"))
    }


def both(sides: tuple[Side, Side], raw: bytes, answers: int = 1) -> tuple[bytes, bytes]:
    lean, plain = sides
    return same_but_date(lean.send(raw, answers)), same_but_date(plain.send(raw, answers))


def test_every_answer_on_the_route_is_uvicorns_byte_for_byte(
    sides: tuple[Side, Side], monkeypatch: pytest.MonkeyPatch
) -> None:
    no_uvicorn_access_log(monkeypatch)

    def funded() -> Trader:
        trader = Trader()
        fund(sides, trader)
        return trader

    # Each trader sends at most two orders (the burst of a 1/s limit) but carol, who is limited.
    alice, bob, carol, dave, erin, mallory = (funded() for _ in range(6))
    order = orjson.dumps(alice.order(SPOT, "BUY", 3_000_000, 10))
    forged = orjson.loads(orjson.dumps(mallory.order(SPOT, "BUY", 3_000_000, 10)))
    forged["userId"] = alice.address
    too_big = orjson.dumps(bob.order(SPOT, "BUY", 3_000_000, 10_000_000))
    no_market = orjson.dumps(bob.order("NOPE-USDC", "BUY", 3_000_000, 10))
    pair = [orjson.dumps(dave.order(SPOT, "BUY", 3_000_000, 10)) for _ in range(2)]
    burst = [orjson.dumps(carol.order(SPOT, "BUY", 3_000_000, 10)) for _ in range(4)]
    waited = orjson.dumps(erin.order(SPOT, "BUY", 3_000_000, 10))
    unfunded = orjson.dumps(Trader().order(SPOT, "BUY", 3_000_000, 10))
    chunked = b'5\r\n{"a":\r\n0\r\n\r\n'
    # (case, the request(s) in one write, the statuses answered, how many take the lean path)
    cases: list[tuple[str, bytes, list[int], int]] = [
        ("accepted", request(order), [202], 1),
        ("duplicate", request(order), [409], 1),
        ("forged", request(orjson.dumps(forged)), [401], 1),
        ("no funds", request(unfunded), [422], 1),
        ("over the balance", request(too_big), [422], 1),
        ("unknown market", request(no_market), [400], 1),
        ("malformed JSON", request(b'{"clientOrderId": '), [400], 1),
        ("not an object", request(b"[1, 2]"), [400], 1),
        ("empty body", request(b""), [400], 1),
        ("no content-length", request(b"", length=False), [400], 0),
        ("no request id", request(b"{}", request_id=None), [400], 1),
        ("bad request id", request(b"{}", request_id="a" * 200), [400], 1),
        ("declared oversize", request(b"{}", headers=("Content-Length: 70000",), length=False),
         [413], 0),
        ("oversize body", request(b" " * 65_537 + b"{}"), [413], 0),
        ("chunked", request(chunked, headers=("Transfer-Encoding: chunked",), length=False),
         [400], 0),
        ("expect", request(b"{}", headers=("Expect: 100-continue",)), [100, 400], 0),
        ("forwarded", request(b"{}", headers=("X-Forwarded-For: 10.0.0.9",)), [400], 0),
        ("query", request(b"{}", target="/v1/orders?wait=0&x=1"), [400], 1),
        ("bad wait", request(b"{}", target="/v1/orders?wait=yes"), [400], 1),
        ("encoded path", request(b"{}", target="/v1/%6frders"), [400], 0),
        ("other method", b"GET /v1/orders HTTP/1.1\r\nX-Request-ID: r\r\n\r\n", [405], 0),
        ("pipelined pair", request(pair[0]) + request(pair[1], request_id="rid-2"),
         [202, 202], 2),
        ("pipelined after a GET", b"GET /v1/markets HTTP/1.1\r\nX-Request-ID: r\r\n\r\n"
         + request(b"{}"), [200, 400], 1),
        ("HTTP/1.0", request(b"{}", version="1.0"), [400], 1),
        ("HTTP/1.0 keep-alive", request(b"{}", version="1.0", headers=("Connection: keep-alive",)),
         [400], 1),
        ("Connection: close", request(b"{}", headers=("Connection: close",)) + request(b"{}"),
         [400], 1),
        ("wait=1", request(waited, target="/v1/orders?wait=1"), [200], 1),
        ("rate limited", b"".join(request(body) for body in burst), [202, 202, 429, 429], 4),
    ]  # fmt: skip
    lines: list[dict[str, Any]] = []
    monkeypatch.setattr(logs, "access", lines.append)
    access_log = logging.getLogger("services.gateway.access")
    monkeypatch.setattr(access_log, "level", logging.INFO)
    leans: list[Any] = []
    monkeypatch.setattr(LeanCycle, "__init__", spy(LeanCycle.__init__, leans))
    lean, plain = sides
    for case, raw, statuses, lean_count in cases:
        # Read until the answers expected are whole (or the connection closes: one more is
        # asked after a "Connection: close", which must not come).
        answers = len(statuses) + (case == "Connection: close")
        lean_metrics = order_metrics(lean)
        lean_answer = same_but_date(lean.send(raw, answers))
        lean_delta = delta(lean_metrics, order_metrics(lean))
        lean_lines = without_ms(lines)
        assert len(leans) == lean_count, case
        lines.clear()
        leans.clear()
        plain_metrics = order_metrics(plain)
        plain_answer = same_but_date(plain.send(raw, answers))
        plain_delta = delta(plain_metrics, order_metrics(plain))
        assert leans == [], case
        assert lean_answer == plain_answer, case
        assert [int(x) for x in re.findall(rb"HTTP/1.1 (\d+)", lean_answer)] == statuses, case
        assert lean_lines == without_ms(lines), case
        assert lean_delta == plain_delta, case
        lines.clear()


def spy(function: Any, calls: list[Any]) -> Any:
    def spied(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return function(*args, **kwargs)

    return spied


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def without_ms(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Log lines but their milliseconds and a request id the gateway made."""
    return [
        {
            k: "new" if k == "request_id" and re.fullmatch("[0-9a-f]{32}", v) else v
            for k, v in line.items()
            if k != "ms"
        }
        for line in lines
    ]


def test_an_exception_in_the_handler_is_the_same_500(
    sides: tuple[Side, Side], monkeypatch: pytest.MonkeyPatch
) -> None:
    no_uvicorn_access_log(monkeypatch)

    async def broken(*_: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(writes, "place_order", broken)
    lean, plain = both(sides, request(b"{}"))
    assert lean == plain
    assert lean.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b'"code":"INTERNAL"' in lean


def test_keep_alive_answers_in_turn_on_one_connection(
    sides: tuple[Side, Side], monkeypatch: pytest.MonkeyPatch
) -> None:
    no_uvicorn_access_log(monkeypatch)
    leans: list[Any] = []
    monkeypatch.setattr(LeanCycle, "__init__", spy(LeanCycle.__init__, leans))
    answers = []
    for side in sides:
        with socket.create_connection(("127.0.0.1", side.port), timeout=15) as sock:
            got = []
            for n in range(3):
                sock.sendall(request(b"{}", request_id=f"k{n}"))
                got.append(same_but_date(read_answers(sock, 1)))
            answers.append(got)
    assert len(leans) == 3  # the lean side's three, on one connection
    assert answers[0] == answers[1]
    assert [a.count(f"x-request-id: k{n}".encode()) for n, a in enumerate(answers[0])] == [1] * 3


def test_a_shutdown_drains_the_order_in_flight(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What SIGTERM does (uvicorn's ``should_exit``) while an order waits for its matcher
    (none runs: ``?wait=1`` gives up after its wait): the answer is written whole, with
    ``connection: close``, before the server stops; then nothing listens."""
    no_uvicorn_access_log(monkeypatch)
    leans: list[Any] = []
    monkeypatch.setattr(LeanCycle, "__init__", spy(LeanCycle.__init__, leans))
    trader = Trader()
    with serving(redis_server, (3, 4)) as pair:
        fund(pair, trader)
        raw = request(
            orjson.dumps(trader.order(SPOT, "BUY", 3_000_000, 10)), target="/v1/orders?wait=1"
        )
        socks = [socket.create_connection(("127.0.0.1", side.port), timeout=30) for side in pair]
        for sock in socks:
            sock.sendall(raw)
        time.sleep(0.5)  # both admitted and waiting (the wait is seconds long)
        for side in pair:
            side.server.should_exit = True
        answers = [same_but_date(read_answers(sock, 2)) for sock in socks]
        for sock in socks:
            sock.close()
        ports = [side.port for side in pair]
    assert len(leans) == 1
    assert answers[0] == answers[1]
    assert re.findall(rb"HTTP/1.1 (\d+)", answers[0]) == [b"202"]
    assert b"\r\nconnection: close\r\n" in answers[0]
    for port in ports:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
