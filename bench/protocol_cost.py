"""CPU per request of the gateway's HTTP server and middleware alone, independent of the load.

One keep-alive connection on an in-memory socket (no system calls, no Redis): ``POST
/v1/orders`` requests are fed to the gateway's protocol (services/gateway/server.py, as
``python -m services.gateway`` configures uvicorn) one after another, each answered by the
gateway's middleware with a stub in place of the order's handler, on uvloop. What it counts is
the process's CPU time per request for what lies between the bytes received and the bytes
written: httptools' parsing, uvicorn's protocol, its cycle and task, the proxy-headers and
gateway middleware (request id, metrics, access-log check), the answer's bytes. If the
protocol has a lean path (a ``lean`` switch), both are measured, in alternation.

    .venv/bin/python bench/protocol_cost.py                  # 5 rounds of 20,000 requests
    .venv/bin/python bench/protocol_cost.py --rounds 3 --requests 50000
    cd /tmp/gw-main-build && .venv/bin/python bench/protocol_cost.py   # another checkout
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import time
from typing import Any

import lib  # noqa: F401 - puts this checkout's root first on sys.path
import uvicorn
import uvloop
from uvicorn.server import ServerState

from services.gateway import middleware, server

BODY = b'{"clientOrderId": "c1", "market": "BTC-USDC"}' * 8
REQUEST = (
    b"POST /v1/orders HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)


async def stub(gateway: Any, raw: bytes, scope: Any) -> tuple[int, Any]:
    return 202, {"status": "ACCEPTED", "clientOrderId": "c1"}


class Socket:
    """A transport that counts writes."""

    def __init__(self) -> None:
        self.writes = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes += 1

    def writelines(self, lines: Any) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        addresses = {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}
        return addresses.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def cost(protocol_class: type, requests: int) -> float:
    """CPU µs per request on one connection, after 500 requests of warm-up."""
    app = middleware.GatewayMiddleware(None, gateway=None, fast_only=True)  # type: ignore[arg-type]
    config = uvicorn.Config(app, access_log=False, log_config=None)
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    socket = Socket()
    protocol.connection_made(socket)
    started = 0.0
    for n in range(500 + requests):
        if n == 500:
            started = time.process_time()
        protocol.data_received(REQUEST)
        while socket.writes <= n:
            await asyncio.sleep(0)
    return (time.process_time() - started) / requests * 1e6


async def main(rounds: int, requests: int) -> None:
    logging.getLogger("services.gateway.access").setLevel(logging.WARNING)  # as in the benches
    middleware.FAST_ROUTES[("POST", "/v1/orders")] = dataclasses.replace(
        middleware.PLACE_ORDER, handler=stub
    )
    protocol = server.GatewayHttpProtocol
    paths: dict[str, type] = {"uvicorn's path": protocol}
    if hasattr(protocol, "lean"):
        paths = {
            "uvicorn's path": type("UvicornPath", (protocol,), {"lean": False}),
            "lean path": type("LeanPath", (protocol,), {"lean": True}),
        }
    for _ in range(rounds):
        figures = {name: await cost(cls, requests) for name, cls in paths.items()}
        print("  ".join(f"{name}: {us:.1f} µs" for name, us in figures.items()), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    uvloop.run(main(args.rounds, args.requests))
