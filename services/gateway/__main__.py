"""``python -m services.gateway``: serve the REST API with uvicorn (uvloop + httptools, each
answer in one write: server.py)."""

from __future__ import annotations

import os

import uvicorn

from common.settings import get_settings
from services.gateway import logs, wsentry
from services.gateway.server import GatewayHttpProtocol


def main() -> None:
    settings = get_settings()
    level = os.environ.get("DEX_LOG_LEVEL", "INFO").upper()
    logs.configure(level)
    uvicorn.run(
        "services.gateway.app:create_server_app",
        factory=True,
        host=settings.gateway_host,
        port=settings.gateway_port,
        loop="uvloop",
        http=GatewayHttpProtocol,
        access_log=False,  # the gateway writes its own JSON line per request
        log_config=None,
        log_level=level.lower(),
        # The WebSocket order entry: a frame past this closes the connection (1009); one past
        # the 64 KiB body cap but within it is answered 413 (wsentry.py).
        ws_max_size=wsentry.MAX_FRAME_BYTES,
        ws_per_message_deflate=False,
    )


if __name__ == "__main__":
    main()
