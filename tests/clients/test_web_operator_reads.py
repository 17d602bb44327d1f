"""The operator view's reads on the gateway: ``GET /v1/admin/markets/health`` (docs/api.md
"Operator reads") and the web page's mount under ``/app/`` with its ``config.json``."""

from __future__ import annotations

import time

import pytest
import redis
from support.gateway import ADMIN, error_of, gateway_client

from common import keys
from services.gateway.admin import UNSETTLED_COUNT_CAP
from services.gateway.app import WEB_PAGE_DIR

pytestmark = pytest.mark.integration

SPOT = "BTC-USDC"


def row(rows: list[dict[str, object]], market: str) -> dict[str, object]:
    return next(r for r in rows if r["market"] == market)


def test_market_health_counts_the_backlog_and_the_unsettled_events_to_the_unit(
    redis_url: str, r: redis.Redis
) -> None:
    with gateway_client(redis_url) as client:
        assert error_of(client.get("/v1/admin/markets/health")) == (403, "FORBIDDEN")
        assert error_of(
            client.get("/v1/admin/markets/health", headers={"Authorization": "Bearer nope"})
        ) == (403, "FORBIDDEN")

        rows = client.get("/v1/admin/markets/health", headers=ADMIN).json()
        markets = client.get("/v1/markets").json()
        assert [x["market"] for x in rows] == [m["symbol"] for m in markets]
        assert row(rows, SPOT) == {
            "market": SPOT, "status": "OPEN", "backlog": 0, "unsettledEvents": 0,
            "settlementLagMs": 0,
        }  # fmt: skip

        # Three commands the matcher has not read, two events past the settlement cursor.
        r.xgroup_create(keys.market_in(SPOT), keys.MATCHER_GROUP, id="0", mkstream=True)
        for i in range(3):
            r.xadd(keys.market_in(SPOT), {"c": f"{i}"})
        old = int(time.time() * 1000) - 5_000
        settled = r.xadd(keys.market_events(SPOT), {"e": "0"}, id=f"{old}-0")
        r.set(keys.market_settled(SPOT), settled)
        r.xadd(keys.market_events(SPOT), {"e": "1"}, id=f"{old + 1}-0")
        r.xadd(keys.market_events(SPOT), {"e": "2"}, id=f"{old + 2}-0")
        r.hset(keys.market_state(SPOT), "status", "HALTED")

        health = row(client.get("/v1/admin/markets/health", headers=ADMIN).json(), SPOT)
        assert (health["status"], health["backlog"], health["unsettledEvents"]) == (
            "HALTED", 3, 2
        )  # fmt: skip
        assert 5_000 <= int(str(health["settlementLagMs"])) < 60_000

        # Everything settled: no lag. Past the cap, the count stops at the cap.
        r.set(keys.market_settled(SPOT), f"{old + 2}-0")
        assert (
            row(client.get("/v1/admin/markets/health", headers=ADMIN).json(), SPOT)[
                "unsettledEvents"
            ]
            == 0
        )
        pipe = r.pipeline()
        for i in range(UNSETTLED_COUNT_CAP + 5):
            pipe.xadd(keys.market_events(SPOT), {"e": "x"}, id=f"{old + 3 + i}-0")
        pipe.execute()
        health = row(client.get("/v1/admin/markets/health", headers=ADMIN).json(), SPOT)
        assert health["unsettledEvents"] == UNSETTLED_COUNT_CAP
        assert "/v1/admin/markets/health" in client.get("/openapi.json").json()["paths"]


def test_the_page_config_names_the_broadcaster_port(redis_url: str) -> None:
    with gateway_client(redis_url, broadcaster_port=18_001) as client:
        assert client.get("/app/config.json").json() == {"broadcasterPort": 18_001}
        page = client.get("/app/")
        if WEB_PAGE_DIR.is_dir():
            assert page.status_code == 200
            assert "<title>OrderBookDEX</title>" in page.text
            assert "https://" not in page.text and "http://" not in page.text
        else:
            assert error_of(page) == (404, "NOT_FOUND")
        # Only the built files: no way out of the directory, misses in the contract's shape.
        for path in ("/app/nope.js", "/app/../pyproject.toml", "/app/%2e%2e/pyproject.toml"):
            assert error_of(client.get(path)) == (404, "NOT_FOUND"), path
