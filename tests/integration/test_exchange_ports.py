"""The test harness's own guard: a server's readiness is its own, not that of another test's
process that was given the same free port (the suite runs two files at once): the exchange's
servers and the local chain node."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from support.chain import HARDHAT_CLI, HardhatNode
from support.exchange import Exchange

from common.chain import Rpc

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


class _ChainImpostor(BaseHTTPRequestHandler):
    """Answers every JSON-RPC call, as another test's chain node does."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"jsonrpc": "2.0", "id": 1, "result": "0x7a69"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_chain_node_is_not_taken_for_another_on_its_port() -> None:
    """The node cannot bind a port another process holds: it fails loudly instead of
    handing the test a chain that is not its own."""
    if shutil.which("node") is None or not HARDHAT_CLI.exists():
        pytest.skip("the local chain is not installed (make setup)")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChainImpostor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    node = HardhatNode()
    node.port = server.server_address[1]
    node.url = f"http://127.0.0.1:{node.port}"
    node.rpc = Rpc(node.url)
    try:
        with pytest.raises(RuntimeError, match="hardhat node exited"):
            node.start()
    finally:
        node.stop()
        server.shutdown()
        server.server_close()
