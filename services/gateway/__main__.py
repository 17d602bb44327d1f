"""``python -m services.gateway``: serve the REST API with uvicorn (uvloop + httptools)."""

from __future__ import annotations

import os

import uvicorn

from common.settings import get_settings
from services.gateway import logs


def main() -> None:
    settings = get_settings()
    level = os.environ.get("DEX_LOG_LEVEL", "INFO").upper()
    logs.configure(level)
    uvicorn.run(
        "services.gateway.app:create_app",
        factory=True,
        host=settings.gateway_host,
        port=settings.gateway_port,
        loop="uvloop",
        http="httptools",
        access_log=False,  # the gateway writes its own JSON line per request
        log_config=None,
        log_level=level.lower(),
    )


if __name__ == "__main__":
    main()
