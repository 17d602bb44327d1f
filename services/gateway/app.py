"""The FastAPI application: routes wired to the modules that do the work."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import ORJSONResponse

from common import eip712
from common.settings import DexSettings, get_settings
from services.gateway import accounts, market_data, orders, parsing
from services.gateway.context import Gateway
from services.gateway.errors import ApiError, error_response, install_error_handlers


def create_app(settings: DexSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    gateway = Gateway.build(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await gateway.redis.aclose()

    app = FastAPI(
        title="OrderBookDEX gateway",
        version="1",
        default_response_class=ORJSONResponse,
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    install_error_handlers(app)

    @app.get("/v1/health")
    async def health() -> Any:
        try:
            await gateway.redis.ping()
        except Exception as exc:
            return error_response("UNAVAILABLE", f"Redis does not answer: {exc}", 503)
        return {"status": "ok"}

    @app.get("/v1/info")
    async def info() -> Any:
        return {
            "domain": eip712.domain_for_info(settings.chain_id, settings.verifying_contract),
            "types": eip712.types_for_info(),
            "markets": [market.public() for market in gateway.markets.markets.values()],
            "assets": {
                name: {"decimals": asset.decimals} for name, asset in gateway.markets.assets.items()
            },
            "serverTime": int(time.time() * 1000),
        }

    @app.get("/v1/markets/{market}/depth")
    async def depth(market: str, limit: int = Query(market_data.DEFAULT_LIMIT)) -> Any:
        require_market(gateway, market)
        if limit < 1:
            raise ApiError("INVALID_REQUEST", f"limit must be at least 1, got {limit}")
        return await market_data.read_depth(gateway, market, min(limit, market_data.MAX_LIMIT))

    @app.post("/v1/orders", status_code=202)
    async def post_order(request: Request) -> Any:
        body = parsing.parse_json_object(await request.body())
        return await orders.submit_order(gateway, body)

    @app.get("/v1/orders/{user_id}/{client_order_id}")
    async def get_order(user_id: str, client_order_id: str) -> Any:
        user = parsing.user_id(user_id)
        order = await orders.read_order(gateway, user, client_order_id)
        if order is None:
            raise ApiError("NOT_FOUND", f"no order {client_order_id!r} of {user}")
        return order

    @app.get("/v1/accounts/{user_id}/balances")
    async def balances(user_id: str) -> Any:
        return await accounts.read_balances(gateway, accounts.account_id(user_id))

    @app.post("/v1/admin/deposits")
    async def deposit(request: Request, authorization: str | None = Header(None)) -> Any:
        accounts.require_admin(gateway, authorization)
        body = parsing.parse_json_object(await request.body())
        return await accounts.deposit(gateway, body)

    return app


def require_market(gateway: Gateway, market: str) -> None:
    if gateway.markets.market(market) is None:
        raise ApiError("UNKNOWN_MARKET", f"no market named {market!r}", status=404)
