"""``python -m services.broadcaster``: serve ``/ws`` and ``/metrics`` with uvicorn."""

from __future__ import annotations

import uvicorn

from services.broadcaster.settings import BroadcasterSettings
from services.broadcaster.wire import FrameProtocol


def main() -> None:
    settings = BroadcasterSettings()
    uvicorn.run(
        "services.broadcaster.app:create_server_app",
        factory=True,
        host=settings.broadcaster_host,
        port=settings.broadcaster_port,
        log_level="info",
        ws=FrameProtocol,
        # Server heartbeat: a ping every interval; no pong within the timeout drops the client.
        ws_ping_interval=settings.broadcaster_ping_interval_s,
        ws_ping_timeout=settings.broadcaster_ping_timeout_s,
        ws_max_size=settings.broadcaster_max_message_bytes,
        # Compressing every frame per client costs more CPU than the small messages save.
        ws_per_message_deflate=False,
    )


if __name__ == "__main__":
    main()
