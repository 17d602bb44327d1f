"""The test harness's own guard: a server's readiness is its own, not that of another test's
process that was given the same free port (the suite runs two files at once)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from support.exchange import Exchange

pytestmark = pytest.mark.integration


class _Impostor(BaseHTTPRequestHandler):
    """Answers every GET 200, as another test's gateway answers /v1/health."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def impostor() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Impostor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_gateway_whose_port_another_process_holds_is_started_on_a_new_one(
    redis_url: str, impostor: int
) -> None:
    exchange = Exchange(redis_url)
    exchange.gateway_port = impostor  # as if free_port() had given it to us too
    exchange.env["DEX_GATEWAY_PORT"] = str(impostor)
    try:
        exchange.start("gateway")
        assert exchange.gateway_port != impostor
        assert "address already in use" in exchange.log("gateway").lower()
        # What answers now is our gateway: it knows the markets the impostor does not.
        info = httpx.get(f"{exchange.http}/v1/info", timeout=5).json()
        assert info["markets"]
    finally:
        exchange.stop()
