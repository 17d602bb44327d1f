"""``python -m services.broadcaster``: serve ``/ws`` and ``/metrics`` with uvicorn."""

from __future__ import annotations

import uvicorn

from services.broadcaster.settings import BroadcasterSettings


def main() -> None:
    settings = BroadcasterSettings()
    uvicorn.run(
        "services.broadcaster.app:create_app",
        factory=True,
        host=settings.broadcaster_host,
        port=settings.broadcaster_port,
        log_level="info",
        ws="websockets-sansio",
        # Server heartbeat: a ping every interval; no pong within the timeout drops the client.
        ws_ping_interval=settings.broadcaster_ping_interval_s,
        ws_ping_timeout=settings.broadcaster_ping_timeout_s,
        ws_max_size=settings.broadcaster_max_message_bytes,
    )


if __name__ == "__main__":
    main()
