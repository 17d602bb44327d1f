"""``python -m services.gateway``: serve the REST API with uvicorn."""

from __future__ import annotations

import uvicorn

from common.settings import get_settings


def main() -> None:
    settings = get_settings()
    uvicorn.run(
        "services.gateway.app:create_app",
        factory=True,
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level="info",
    )


if __name__ == "__main__":
    main()
