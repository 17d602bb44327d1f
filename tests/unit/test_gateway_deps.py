"""Route handlers get the gateway, or a part of it, by type from the application's state."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from common.settings import DexSettings
from services.gateway.context import Gateway
from services.gateway.deps import GatewayDep, MarketsDep, SettingsDep, TransportDep


def test_a_route_receives_the_process_gateway_and_its_parts_by_type() -> None:
    # No server: nothing here talks to Redis, and the clients connect only when used.
    gateway = Gateway.build(DexSettings(redis_url="redis://127.0.0.1:1/0", chain_id=7))
    app = FastAPI()
    app.state.gateway = gateway

    @app.get("/probe")
    def probe(
        whole: GatewayDep, settings: SettingsDep, markets: MarketsDep, transport: TransportDep
    ) -> dict[str, object]:
        return {
            "same": whole is gateway and transport is gateway.transport,
            "chainId": settings.chain_id,
            "markets": sorted(markets.markets) == sorted(gateway.markets.markets),
        }

    with TestClient(app) as client:
        assert client.get("/probe").json() == {"same": True, "chainId": 7, "markets": True}
