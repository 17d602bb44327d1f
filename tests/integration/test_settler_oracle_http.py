"""The HTTP oracle against a real HTTP server on 127.0.0.1 and a real redis-server.

The server answers whatever the test sets (status, headers, body, a slow drip); each bad answer
must leave every index as it was, count exactly one ignored value or failed fetch, and warn
in the log without repeating itself every run; a good answer afterwards is applied.
"""

from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.exchange import Exchange
from support.redis_server import free_port, wait_for

from common import keys, oracle_health
from common.markets import load_markets
from services.settler import oracle
from services.settler.oracle import MAX_BODY_BYTES, run_oracle

pytestmark = pytest.mark.integration

MARKETS = load_markets(Path(__file__).resolve().parents[2] / "deploy" / "markets.yaml")
PERP, SPOT = "BTC-PERP", "BTC-USDC"
INTERVAL_MS = 3_600_000
START = 3_000_000


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    length: bool = True
    """Send Content-Length; without it the body runs to the end of the connection."""
    stream_bytes: int = 0
    """Instead of ``body``: this many bytes of JSON-ish padding, written in 64 KiB chunks."""
    drip_s: float = 0.0
    """Instead of ``body``: one byte of ``body`` every ``drip_s`` seconds."""


class PriceServer:
    """A ThreadingHTTPServer on 127.0.0.1 answering ``answer`` to every GET."""

    def __init__(self) -> None:
        self.answer = Answer()
        self.sent = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                answer = server.answer
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                if answer.length and not answer.stream_bytes and not answer.drip_s:
                    self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                try:
                    if answer.stream_bytes:
                        chunk = b" " * 65536
                        while server.sent < answer.stream_bytes:
                            self.wfile.write(chunk)
                            server.sent += len(chunk)
                    elif answer.drip_s:
                        for byte in answer.body:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(answer.drip_s)
                    else:
                        self.wfile.write(answer.body)
                except OSError:
                    pass  # the oracle stopped reading and closed the connection

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/prices"

    def serve(self, **answer: Any) -> None:
        self.sent = 0
        self.answer = Answer(**answer)

    def serve_prices(self, *entries: dict[str, Any]) -> None:
        self.serve(body=json.dumps({"markets": list(entries)}).encode())

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[PriceServer]:
    price_server = PriceServer()
    yield price_server
    price_server.close()


def index(client: Any, symbol: str = PERP) -> int:
    return int(client.hget(keys.market_prices(symbol), "index"))


def health(client: Any) -> dict[str, str]:
    return dict(client.hgetall(keys.oracle_health()))


def ignored(client: Any, reason: str, market: str = "") -> int:
    return int(client.hget(keys.oracle_health(), oracle_health.ignored_field(reason, market)) or 0)


def failures(client: Any, reason: str) -> int:
    return int(client.hget(keys.oracle_health(), oracle_health.failure_field(reason)) or 0)


def run(client: Any, url: str, now_ms: int = 5_000, **kwargs: Any) -> None:
    run_oracle(client, MARKETS, url, now_ms, INTERVAL_MS, **kwargs)


def accepted_start(client: Any, server: PriceServer) -> None:
    """A first good sample: BTC-PERP's index is START, accepted."""
    server.serve_prices({"symbol": PERP, "price": START})
    run(client, server.url)
    assert index(client) == START


BAD_PRICES = [
    0,
    -3_000_000,
    2**53,
    10**30,
    True,
    3_000_000.0,
    3.0e6,
    None,
    [3_000_000],
    {"value": 3_000_000},
    "",
    "3000000.0",
    "3e6",
    "-3000000",
    "+3000000",
    "03000000",
    "3000000\n",
    " 3000000",
    "²",
    "３００００００",
    "9007199254740992",
]


@pytest.mark.parametrize("bad", BAD_PRICES, ids=repr)
def test_a_price_that_is_not_a_positive_integer_below_2_53_is_ignored_and_counted(
    client: Any, server: PriceServer, bad: Any
) -> None:
    accepted_start(client, server)
    server.serve_prices({"symbol": PERP, "price": bad}, {"symbol": SPOT, "price": 3_000_100})
    run(client, server.url)
    assert index(client) == START
    assert index(client, SPOT) == 3_000_100  # the good entry beside it is taken
    assert ignored(client, oracle_health.INVALID_PRICE, PERP) == 1
    assert health(client)[oracle_health.CONSECUTIVE_FAILURES] == "0"  # the source answered
    server.serve_prices({"symbol": PERP, "price": 3_000_500})
    run(client, server.url)
    assert index(client) == 3_000_500
    assert ignored(client, oracle_health.INVALID_PRICE, PERP) == 1


def test_a_huge_json_integer_is_ignored_without_converting_it(
    client: Any, server: PriceServer
) -> None:
    accepted_start(client, server)
    server.serve(body=b'{"markets": [{"symbol": "BTC-PERP", "price": ' + b"7" * 100_000 + b"}]}")
    run(client, server.url)
    assert index(client) == START
    assert ignored(client, oracle_health.INVALID_PRICE, PERP) == 1


def test_entries_without_symbol_or_given_twice_are_ignored_and_counted(
    client: Any, server: PriceServer
) -> None:
    accepted_start(client, server)
    server.serve_prices(
        {"symbol": PERP, "price": 3_000_100},
        {"symbol": PERP, "price": 3_000_200},
        {"price": 3_000_300},
        ["BTC-PERP", 3_000_400],
    )
    run(client, server.url)
    assert index(client) == START  # which of the two would be the price? neither
    assert ignored(client, oracle_health.INVALID_ENTRY) == 3


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "to-eof"])
def test_a_body_over_1_mib_is_ignored_and_not_read_past_the_cap(
    client: Any, server: PriceServer, with_length: bool
) -> None:
    accepted_start(client, server)
    prices = json.dumps({"markets": [{"symbol": PERP, "price": 3_000_100}]}).encode()
    if with_length:
        body = prices + b" " * (MAX_BODY_BYTES + 1 - len(prices))
        server.serve(body=body)
    else:
        server.serve(stream_bytes=512 * MAX_BODY_BYTES)  # 512 MiB offered, to the end
    started = time.monotonic()
    run(client, server.url)
    assert time.monotonic() - started < 3
    assert index(client) == START
    assert ignored(client, oracle_health.BODY_TOO_LARGE) == 1
    assert failures(client, oracle_health.BODY_TOO_LARGE) == 1
    if not with_length:
        # The oracle stopped reading at the cap: the server could only fill socket buffers.
        wait_for(lambda: False, 0.5)
        assert server.sent < 64 * MAX_BODY_BYTES
    server.serve_prices({"symbol": PERP, "price": 3_000_200})
    run(client, server.url)
    assert index(client) == 3_000_200
    assert ignored(client, oracle_health.BODY_TOO_LARGE) == 1


def test_a_body_of_exactly_1_mib_is_read(client: Any, server: PriceServer) -> None:
    accepted_start(client, server)
    prices = json.dumps({"markets": [{"symbol": PERP, "price": 3_000_100}]}).encode()
    server.serve(body=prices + b" " * (MAX_BODY_BYTES - len(prices)), length=False)
    run(client, server.url)
    assert index(client) == 3_000_100
    assert ignored(client, oracle_health.BODY_TOO_LARGE) == 0


def test_a_move_beyond_the_bound_is_ignored_and_counted(client: Any, server: PriceServer) -> None:
    accepted_start(client, server)
    for price in (3_300_001, 2_699_999, 30_000_000):  # default bound: 1000 bps
        server.serve_prices({"symbol": PERP, "price": price})
        run(client, server.url)
        assert index(client) == START
    assert ignored(client, oracle_health.MOVE_TOO_LARGE, PERP) == 3
    server.serve_prices({"symbol": PERP, "price": 3_300_000})  # exactly +10 %
    run(client, server.url)
    assert index(client) == 3_300_000
    server.serve_prices({"symbol": PERP, "price": 3_630_001})  # measured from the new index
    run(client, server.url, max_move_bps=1000)
    assert index(client) == 3_300_000
    run(client, server.url, max_move_bps=1001)
    assert index(client) == 3_630_001
    server.serve_prices({"symbol": PERP, "price": 1})
    run(client, server.url, max_move_bps=0)  # 0: no bound
    assert index(client) == 1
    assert ignored(client, oracle_health.MOVE_TOO_LARGE, PERP) == 4


def test_the_first_sample_has_no_last_index_to_be_measured_from(
    client: Any, server: PriceServer
) -> None:
    server.serve_prices({"symbol": PERP, "price": 9 * START})
    run(client, server.url)
    assert index(client) == 9 * START
    assert ignored(client, oracle_health.MOVE_TOO_LARGE, PERP) == 0


def test_an_admin_push_is_the_last_index_the_bound_measures_from(
    client: Any, server: PriceServer
) -> None:
    client.hset(keys.market_prices(PERP), mapping={"static": 4_000_000, "index": 4_000_000})
    server.serve_prices({"symbol": PERP, "price": START})  # −25 %
    run(client, server.url)
    assert index(client) == 4_000_000
    assert ignored(client, oracle_health.MOVE_TOO_LARGE, PERP) == 1
    # The operator's way out: a push near the source's price (as POST /v1/admin/oracle writes).
    client.hset(keys.market_prices(PERP), mapping={"static": 3_100_000, "index": 3_100_000})
    run(client, server.url)
    assert index(client) == START
    assert ignored(client, oracle_health.MOVE_TOO_LARGE, PERP) == 1


def dead_port() -> str:
    return f"http://127.0.0.1:{free_port()}/prices"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"status": 500, "body": b'{"markets": []}'}, oracle_health.HTTP_STATUS),
        ({"status": 404, "body": b"not found"}, oracle_health.HTTP_STATUS),
        ({"status": 204}, oracle_health.HTTP_STATUS),
        ({"body": b"<html>prices</html>"}, oracle_health.INVALID_JSON),
        ({"body": b'{"markets": [{"symbol": "BTC-PERP", "price": 3000100}'}, "invalid_json"),
        ({"body": b"[" * 200_000}, oracle_health.INVALID_JSON),
        ({"body": b'[{"symbol": "BTC-PERP", "price": 3000100}]'}, oracle_health.INVALID_SHAPE),
        ({"body": b'{"markets": {"BTC-PERP": 3000100}}'}, oracle_health.INVALID_SHAPE),
        ({"body": b'{"prices": []}'}, oracle_health.INVALID_SHAPE),
    ],
)
def test_a_failed_fetch_keeps_every_index_and_is_counted(
    client: Any, server: PriceServer, answer: dict[str, Any], reason: str
) -> None:
    accepted_start(client, server)
    server.serve(**answer)
    run(client, server.url, now_ms=9_000)
    assert index(client) == START
    state = health(client)
    assert failures(client, reason) == 1
    assert state[oracle_health.CONSECUTIVE_FAILURES] == "1"
    assert (state[oracle_health.LAST_SUCCESS_MS], state[oracle_health.LAST_FAILURE_MS]) == (
        "5000",
        "9000",
    )
    assert state[oracle_health.LAST_FAILURE].startswith(f"{reason}: ")


def test_a_refused_connection_is_counted_as_unreachable(client: Any) -> None:
    client.hset(keys.market_prices(PERP), "index", START)
    run(client, dead_port())
    assert index(client) == START
    assert failures(client, oracle_health.UNREACHABLE) == 1
    assert health(client)[oracle_health.CONSECUTIVE_FAILURES] == "1"
    assert oracle_health.LAST_SUCCESS_MS not in health(client)


def test_a_source_that_never_answers_times_out_as_unreachable(client: Any) -> None:
    client.hset(keys.market_prices(PERP), "index", START)
    with socket.socket() as silent:  # the kernel accepts the connection; nobody answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        started = time.monotonic()
        run(client, f"http://127.0.0.1:{silent.getsockname()[1]}/prices")
        assert time.monotonic() - started < oracle.FETCH_TIMEOUT_S + 1.5
    assert index(client) == START
    assert failures(client, oracle_health.UNREACHABLE) == 1
    assert "timed out" in health(client)[oracle_health.LAST_FAILURE]


def test_a_source_that_drips_its_body_is_cut_off(client: Any, server: PriceServer) -> None:
    accepted_start(client, server)
    server.serve(body=json.dumps({"markets": [{"symbol": PERP, "price": 3_000_100}]}).encode())
    server.answer.drip_s = 0.5
    started = time.monotonic()
    run(client, server.url)
    assert time.monotonic() - started < oracle.FETCH_TIMEOUT_S + 1.5
    assert index(client) == START
    assert failures(client, oracle_health.UNREACHABLE) == 1


def test_a_failing_source_warns_on_the_first_failure_and_every_nth_then_on_recovery(
    client: Any, server: PriceServer, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    monkeypatch.setattr(oracle, "WARN_EVERY", 3)
    accepted_start(client, server)
    server.serve(status=503, body=b"busy")
    caplog.set_level(logging.WARNING, logger=oracle.__name__)
    for run_number in range(1, 8):
        run(client, server.url, now_ms=5_000 + run_number)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3  # failures 1, 3 and 6
    assert "received HTTP status 503" in warnings[0]
    assert "expected a 200 answer" in warnings[0]
    assert "1 failure(s) in a row" in warnings[0] and "6 failure(s) in a row" in warnings[2]
    assert health(client)[oracle_health.CONSECUTIVE_FAILURES] == "7"
    assert failures(client, oracle_health.HTTP_STATUS) == 7
    assert index(client) == START
    caplog.clear()
    server.serve_prices({"symbol": PERP, "price": 3_000_300})
    run(client, server.url, now_ms=6_000)
    assert index(client) == 3_000_300
    assert [r.getMessage() for r in caplog.records] == [
        f"oracle: {server.url} answers again after 7 failure(s)"
    ]
    state = health(client)
    assert (state[oracle_health.CONSECUTIVE_FAILURES], state[oracle_health.LAST_SUCCESS_MS]) == (
        "0",
        "6000",
    )


def test_a_repeated_bad_price_warns_once_per_n_with_what_was_received(
    client: Any, server: PriceServer, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    monkeypatch.setattr(oracle, "WARN_EVERY", 4)
    accepted_start(client, server)
    server.serve_prices({"symbol": PERP, "price": 3_000_000.5})
    caplog.set_level(logging.WARNING, logger=oracle.__name__)
    for _ in range(8):
        run(client, server.url)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3  # the 1st, 4th and 8th
    assert "for BTC-PERP (invalid_price): received 3000000.5" in warnings[0]
    assert "expected a positive integer below 2^53 (9007199254740992)" in warnings[0]
    assert ignored(client, oracle_health.INVALID_PRICE, PERP) == 8
    assert index(client) == START


def metric_lines(text: str) -> set[str]:
    return {line for line in text.splitlines() if line.startswith("dex_oracle_")}


def test_gateway_metrics_show_the_oracle_health(
    redis_url: str, client: Any, server: PriceServer
) -> None:
    with Exchange(redis_url).start("gateway") as exchange:
        assert metric_lines(httpx.get(f"{exchange.http}/metrics").text) == set()
        accepted_start(client, server)
        server.serve_prices({"symbol": PERP, "price": "3.1e6"})
        run(client, server.url)
        server.serve_prices({"symbol": PERP, "price": 9 * START})
        run(client, server.url)
        server.serve(status=502, body=b"bad gateway")
        run(client, server.url, now_ms=1_700_000_000_000)
        run(client, server.url, now_ms=1_700_000_005_000)
        response = httpx.get(f"{exchange.http}/metrics")
    assert response.status_code == 200
    lines = metric_lines(response.text)
    assert {
        'dex_oracle_ignored_total{market="BTC-PERP",reason="invalid_price"} 1.0',
        'dex_oracle_ignored_total{market="BTC-PERP",reason="move_too_large"} 1.0',
        'dex_oracle_source_failures_total{reason="http_status"} 2.0',
        'dex_oracle_source_failures_total{reason="unreachable"} 0.0',
        "dex_oracle_consecutive_failures 2.0",
        "dex_oracle_last_success_timestamp_seconds 5.0",
        "dex_oracle_last_failure_timestamp_seconds 1.700000005e+09",
    } <= lines
    assert "dex_gateway_requests_total" in response.text  # the gateway's own are still there


def test_worker_reads_the_move_bound_from_the_environment(
    redis_url: str, client: Any, server: PriceServer
) -> None:
    from celery import Celery

    def oracle_run() -> None:
        app = Celery("test-client", broker=redis_url)
        app.send_task("dex.oracle", queue="periodic")
        app.close()

    env = {"DEX_ORACLE_SOURCE": server.url, "DEX_ORACLE_MAX_MOVE_BPS": "500"}
    with Exchange(redis_url, **env).start("settler") as exchange:
        server.serve_prices({"symbol": PERP, "price": 3_100_000})
        oracle_run()
        assert wait_for(lambda: client.hget(keys.market_prices(PERP), "index") == "3100000", 30)
        server.serve_prices({"symbol": PERP, "price": 3_255_001})  # 5.0000x % above
        oracle_run()
        assert wait_for(lambda: ignored(client, oracle_health.MOVE_TOO_LARGE, PERP) == 1, 30), (
            exchange.log("settler")[-3000:]
        )
        assert index(client) == 3_100_000
        server.serve_prices({"symbol": PERP, "price": 3_255_000})  # exactly 5 %
        oracle_run()
        assert wait_for(lambda: index(client) == 3_255_000, 30)
    assert ignored(client, oracle_health.MOVE_TOO_LARGE, PERP) == 1
