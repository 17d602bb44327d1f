"""``python -m services.broadcaster``: serve ``/ws`` with uvicorn."""

from __future__ import annotations

import uvicorn

from common.settings import get_settings


def main() -> None:
    settings = get_settings()
    uvicorn.run(
        "services.broadcaster.app:create_app",
        factory=True,
        host=settings.broadcaster_host,
        port=settings.broadcaster_port,
        log_level="info",
    )


if __name__ == "__main__":
    main()
