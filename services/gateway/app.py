"""The FastAPI application: every route of API.md §5 wired to the module that does the work.

A write travels: middleware (request id, 413 on a declared size) → body read with the 64 KiB
cap → rate limits (IP + the user the body names) → strict parse in the contract's order of
checks → signature → the account script (reserve/debit, atomically) → the market stream.
Each body is declared once in ``shapes``, which parses it (a bad one is a 400 in the
contract's shape, never FastAPI's 422) and gives its schema to the OpenAPI document. Every
endpoint is defined once: a route below, or a ``middleware.FastRoute`` that the middleware
answers and :func:`add_fast_route` registers for the document.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from common import eip712
from common.heap import freeze_startup_heap
from common.settings import DexSettings, get_settings
from services.gateway import (
    accounts,
    admin,
    agents,
    amends,
    cancels,
    deadman,
    leverage,
    market_data,
    metrics,
    orders,
    outbox,
    parsing,
    replaces,
    shapes,
    twap,
    withdrawals,
    writes,
    wsentry,
)
from services.gateway import schemas as s
from services.gateway.context import Gateway
from services.gateway.errors import (
    ApiError,
    ErrorCode,
    JsonResponse,
    error_response,
    install_error_handlers,
)
from services.gateway.middleware import FAST_ROUTES, FastRoute, GatewayMiddleware, client_ip
from services.gateway.writes import SignedWrite

LIMIT_DOC = "how many (default 100, at most 1000)"
# The web page's built files (clients/web, `make setup` builds them with npm).
WEB_PAGE_DIR = Path(__file__).resolve().parents[2] / "clients" / "web" / "dist"


async def read_write_body(gateway: Gateway, request: Request) -> dict[str, Any]:
    """413 (the body cap), then 429, then the JSON object (400)."""
    raw = await parsing.read_body(request)
    return await writes.admit(gateway, raw, client_ip(request.scope))


async def read_admin_body(request: Request) -> dict[str, Any]:
    return parsing.parse_json_object(await parsing.read_body(request))


SHUTDOWN_STEP_S = 5.0


def create_app(settings: DexSettings | None = None, sweeper: bool = True) -> FastAPI:
    settings = settings or get_settings()
    gateway = Gateway.build(settings)
    entry = wsentry.Entry(gateway)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = outbox.start(gateway) if sweeper else None
        firer = deadman.start(gateway) if sweeper else None
        twaps = twap.start(gateway) if sweeper else None
        renewer = entry.start()
        try:
            yield
        finally:
            renewer.cancel()
            if twaps is not None:
                twaps.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(twaps, SHUTDOWN_STEP_S)
            if firer is not None:
                firer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(firer, SHUTDOWN_STEP_S)
            # Each step of the shutdown is bounded: a Redis call that never answers must not
            # keep the process (or a test's client) from stopping.
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, SHUTDOWN_STEP_S)
            await gateway.close()

    app = FastAPI(
        **_no_framework_telemetry(),
        title="OrderBookDEX gateway",
        version="1",
        description="REST API of OrderBookDEX (API.md §5). Every error is "
        '`{"error": {"code", "message"}}`; amounts are integers (numbers or digit strings).',
        default_response_class=JsonResponse,
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    install_error_handlers(app)
    app.add_middleware(GatewayMiddleware, gateway=gateway)

    # -- orders (POST /v1/orders is middleware.PLACE_ORDER, answered before the framework) --
    for fast in FAST_ROUTES.values():
        add_fast_route(app, fast)

    # -- the signed writes of order entry: each a body, its domain coroutine, its answer ----
    def signed_write(
        path: str, name: str, run: SignedWrite, shape: shapes.Shape, answer: Any, *codes: int
    ) -> None:
        async def endpoint(request: Request) -> Any:
            status, result = await run(gateway, await read_write_body(gateway, request))
            return JsonResponse(result, status_code=status)

        app.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            name=name,
            responses=s.ok(answer, *codes),
            openapi_extra=shapes.openapi_body(shape),
        )

    signed_write(
        "/v1/orders/cancel", "cancel", cancels.cancel, shapes.CANCEL, s.Order,
        400, 401, 404, 409, 413,
    )  # fmt: skip
    signed_write(
        "/v1/orders/cancel-all", "cancel_all", cancels.cancel_all, shapes.CANCEL_ALL,
        s.Cancelled, 400, 401, 409, 413,
    )  # fmt: skip
    signed_write(
        "/v1/orders/cancel-replace", "cancel_replace", replaces.cancel_replace,
        shapes.CANCEL_REPLACE, s.CancelReplaced, 400, 401, 403, 404, 409, 413, 422, 429, 503,
    )  # fmt: skip
    signed_write(
        "/v1/orders/amend", "amend", amends.amend, shapes.AMEND, s.Order,
        400, 401, 403, 404, 409, 413, 422, 503,
    )  # fmt: skip
    signed_write(
        "/v1/orders/batch", "batch", writes.place_batch, shapes.BATCH, s.BatchResult,
        400, 401, 403, 404, 409, 413, 422,
    )  # fmt: skip
    signed_write(
        "/v1/orders/schedule-cancel", "schedule_cancel", writes.schedule_cancel,
        shapes.SCHEDULE_CANCEL, s.DeadmanSwitch, 400, 401, 409, 413,
    )  # fmt: skip

    signed_write(
        "/v1/orders/twap", "twap", writes.place_twap, shapes.TWAP, s.Twap,
        400, 401, 403, 409, 413, 422,
    )  # fmt: skip

    @app.get("/v1/twaps/{user_id}", responses=s.ok(list[s.Twap], 400))
    async def twap_list(user_id: str) -> Any:
        return JsonResponse(await twap.active(gateway, parsing.user_id(user_id)))

    @app.get("/v1/twaps/{user_id}/{client_order_id}", responses=s.ok(s.Twap, 400, 404))
    async def twap_read(user_id: str, client_order_id: str) -> Any:
        return JsonResponse(await twap.read(gateway, parsing.user_id(user_id), client_order_id))

    @app.get(
        "/v1/orders/schedule-cancel/{user_id}",
        responses=s.ok(list[s.DeadmanSwitch], 400),
    )
    async def schedule_cancel_list(user_id: str) -> Any:
        return JsonResponse(await deadman.switches(gateway, parsing.user_id(user_id)))

    @app.get(
        "/v1/orders/{user_id}/{client_order_id}",
        responses=s.ok(s.Order, 400, 404),
    )
    async def get_order(user_id: str, client_order_id: str) -> Any:
        user = parsing.user_id(user_id)
        order = await orders.read_order(gateway, user, client_order_id)
        if order is None:
            raise ApiError(ErrorCode.NOT_FOUND, f"no order {client_order_id!r} of {user}")
        return JsonResponse(order)

    # -- WebSocket order entry (wsentry.py): the writes above, one message each ------------
    app.add_api_websocket_route(wsentry.PATH, entry.serve)

    # -- health, info, metrics ----------------------------------------------------------
    @app.get("/v1/health", responses=s.ok(s.Health))
    async def health() -> Any:
        try:
            await gateway.redis.ping()
        except Exception as exc:
            return error_response(ErrorCode.UNAVAILABLE, f"Redis does not answer: {exc}")
        return {"status": "ok"}

    @app.get("/v1/info", responses=s.errors())
    async def info() -> Any:
        return {
            "domain": eip712.domain_for_info(settings.chain_id, settings.verifying_contract),
            "types": eip712.types_for_info(),
            "markets": await market_data.list_markets(gateway),
            "assets": {name: asset.public() for name, asset in gateway.markets.assets.items()},
            "serverTime": int(time.time() * 1000),
        }

    @app.get("/metrics", include_in_schema=True, response_class=Response)
    async def prometheus() -> Response:
        payload, content_type = metrics.render()
        payload += await metrics.render_settler(gateway.redis)
        return Response(payload, media_type=content_type)

    # -- markets ------------------------------------------------------------------------
    @app.get("/v1/markets", responses=s.ok(list[s.MarketView]))
    async def markets() -> Any:
        return await market_data.list_markets(gateway)

    @app.get("/v1/markets/{market}", responses=s.ok(s.MarketView, 404))
    async def market(market: str) -> Any:
        found = market_data.require_market(gateway, market)
        return await market_data.market_view(gateway, found)

    @app.get("/v1/markets/{market}/depth", responses=s.ok(s.Depth, 400, 404))
    async def depth(market: str, limit: str | None = Query(None, description=LIMIT_DOC)) -> Any:
        market_data.require_market(gateway, market)
        return await market_data.read_depth(gateway, market, parsing.limit(limit))

    @app.get("/v1/markets/{market}/trades", responses=s.ok(list[s.Trade], 400, 404))
    async def trades(market: str, limit: str | None = Query(None, description=LIMIT_DOC)) -> Any:
        market_data.require_market(gateway, market)
        return await market_data.read_trades(gateway, market, parsing.limit(limit))

    @app.get("/v1/markets/{market}/ticker", responses=s.ok(s.Ticker, 404))
    async def ticker(market: str) -> Any:
        found = market_data.require_market(gateway, market)
        return await market_data.read_ticker(gateway, found)

    @app.get(
        "/v1/markets/{market}/candles",
        responses=s.ok(list[s.Candle], 400, 404),
    )
    async def candles(
        market: str,
        interval: str | None = Query(None, description="1m 5m 15m 1h 4h 1d (default 1m)"),
        limit: str | None = Query(None, description=LIMIT_DOC),
    ) -> Any:
        market_data.require_market(gateway, market)
        return await market_data.read_candles(
            gateway, market, interval or "1m", parsing.limit(limit)
        )

    # -- accounts -----------------------------------------------------------------------
    @app.get("/v1/accounts/{user_id}/orders", responses=s.ok(list[s.Order], 400))
    async def account_orders(
        user_id: str,
        market: str | None = Query(None, description="only this market"),
        open: str | None = Query(None, description="1: only open ones (also UNTRIGGERED)"),
        limit: str | None = Query(None, description=LIMIT_DOC),
    ) -> Any:
        user = accounts.account_id(user_id)
        size = parsing.limit(limit)
        only_open = parsing.flag(open, "open")
        if market and gateway.markets.market(market) is None:
            raise ApiError(ErrorCode.UNKNOWN_MARKET, f"no market named {market!r}")
        return await accounts.list_orders(gateway, user, market or None, only_open, size)

    @app.get("/v1/accounts/{user_id}/fills", responses=s.ok(list[s.Fill], 400))
    async def fills(
        user_id: str,
        market: str | None = Query(None, description="only this market"),
        limit: str | None = Query(None, description=LIMIT_DOC),
    ) -> Any:
        user = accounts.account_id(user_id)
        size = parsing.limit(limit)
        if market and gateway.markets.market(market) is None:
            raise ApiError(ErrorCode.UNKNOWN_MARKET, f"no market named {market!r}")
        return await accounts.list_fills(gateway, user, market or None, size)

    @app.get(
        "/v1/accounts/{user_id}/balances",
        responses=s.ok(dict[str, s.Balance], 400),
    )
    async def balances(user_id: str) -> Any:
        return await accounts.read_balances(gateway, accounts.account_id(user_id))

    @app.get(
        "/v1/accounts/{user_id}/positions",
        responses=s.ok(list[s.Position], 400),
    )
    async def positions(user_id: str) -> Any:
        view = await accounts.positions_and_margin(gateway, accounts.account_id(user_id))
        return view["positions"]

    @app.get("/v1/accounts/{user_id}/margin", responses=s.ok(dict[str, s.Margin], 400))
    async def margin(user_id: str) -> Any:
        view = await accounts.positions_and_margin(gateway, accounts.account_id(user_id))
        return view["margin"]

    @app.get(
        "/v1/accounts/{user_id}/withdrawals",
        responses=s.ok(list[s.WithdrawalListed], 400),
    )
    async def account_withdrawals(
        user_id: str, limit: str | None = Query(None, description=LIMIT_DOC)
    ) -> Any:
        user = accounts.account_id(user_id)
        return await withdrawals.list_withdrawals(gateway, user, parsing.limit(limit))

    @app.post(
        "/v1/withdrawals",
        responses=s.ok(s.Withdrawal, 400, 401, 409, 413, 422),
        openapi_extra=shapes.openapi_body(shapes.WITHDRAW),
    )
    async def withdraw(request: Request) -> Any:
        body = await read_write_body(gateway, request)
        return await withdrawals.withdraw(gateway, body)

    # -- agent keys -----------------------------------------------------------------------
    @app.post(
        "/v1/accounts/agents",
        responses=s.ok(s.Agent, 400, 401, 403, 409, 413, 422),
        openapi_extra=shapes.openapi_body(shapes.APPROVE_AGENT),
    )
    async def approve_agent(request: Request) -> Any:
        body = await read_write_body(gateway, request)
        return await agents.approve(gateway, body)

    @app.post(
        "/v1/accounts/agents/revoke",
        responses=s.ok(s.AgentRevoked, 400, 401, 403, 404, 409, 413),
        openapi_extra=shapes.openapi_body(shapes.REVOKE_AGENT),
    )
    async def revoke_agent(request: Request) -> Any:
        body = await read_write_body(gateway, request)
        return await agents.revoke(gateway, body)

    @app.get("/v1/accounts/{user_id}/agents", responses=s.ok(list[s.Agent], 400))
    async def list_agents(user_id: str) -> Any:
        return await agents.list_agents(gateway, parsing.user_id(user_id))

    # -- leverage (docs/api.md "Leverage") --------------------------------------------------
    signed_write(
        "/v1/accounts/leverage", "set_leverage", writes.set_leverage, shapes.SET_LEVERAGE,
        s.Leverage, 400, 401, 403, 409, 413, 429,
    )  # fmt: skip

    @app.get("/v1/accounts/{user_id}/leverage", responses=s.ok(list[s.Leverage], 400))
    async def list_leverage(user_id: str) -> Any:
        return await leverage.list_leverage(gateway, parsing.user_id(user_id))

    @app.get("/v1/system/accounts", responses=s.ok(s.SystemAccounts))
    async def system_accounts() -> Any:
        return await accounts.system_accounts(gateway)

    # -- admin (bearer token; a call without it counts against the address's rate limit) --
    @app.post(
        "/v1/admin/deposits",
        responses=s.ok(s.Balance, 400, 403, 409, 413),
        openapi_extra=shapes.openapi_body(shapes.DEPOSIT),
    )
    async def deposit(request: Request, authorization: str | None = Header(None)) -> Any:
        body = await read_admin_body(request)
        user, asset, amount, deposit_id = admin.parse_deposit(gateway, body)
        admin.require_admin(gateway, authorization)
        return await admin.deposit(gateway, user, asset, amount, deposit_id)

    @app.post(
        "/v1/admin/oracle",
        responses=s.ok(s.OracleResult, 400, 403, 413),
        openapi_extra=shapes.openapi_body(shapes.ORACLE),
    )
    async def oracle(request: Request, authorization: str | None = Header(None)) -> Any:
        body = await read_admin_body(request)
        symbol, index = admin.parse_oracle(gateway, body)
        admin.require_admin(gateway, authorization)
        return await admin.push_oracle(gateway, symbol, index)

    @app.post(
        "/v1/admin/markets/{market}/halt",
        responses=s.ok(s.MarketView, 403, 404),
    )
    async def halt(market: str, authorization: str | None = Header(None)) -> Any:
        admin.require_admin(gateway, authorization)
        market_data.require_market(gateway, market)
        status, view = await admin.set_status(gateway, market, "halt")
        return JsonResponse(view, status_code=status)

    @app.post(
        "/v1/admin/markets/{market}/resume",
        responses=s.ok(s.MarketView, 403, 404),
    )
    async def resume(market: str, authorization: str | None = Header(None)) -> Any:
        admin.require_admin(gateway, authorization)
        market_data.require_market(gateway, market)
        status, view = await admin.set_status(gateway, market, "resume")
        return JsonResponse(view, status_code=status)

    @app.post(
        "/v1/admin/markets/{market}/status",
        responses=s.ok(s.MarketView, 400, 403, 404, 413, 422),
        openapi_extra=shapes.openapi_body(shapes.MARKET_STATUS),
    )
    async def market_status(
        market: str, request: Request, authorization: str | None = Header(None)
    ) -> Any:
        new_status = admin.parse_status(gateway, await read_admin_body(request))
        admin.require_admin(gateway, authorization)
        market_data.require_market(gateway, market)
        status, view = await admin.set_status(gateway, market, "status", new_status)
        return JsonResponse(view, status_code=status)

    @app.get("/v1/admin/audit", responses=s.errors(403))
    async def audit(authorization: str | None = Header(None)) -> Any:
        admin.require_admin(gateway, authorization)
        return await admin.audit(gateway)

    @app.get("/v1/admin/markets/health", responses=s.ok(list[s.MarketHealth], 403))
    async def market_health(authorization: str | None = Header(None)) -> Any:
        admin.require_admin(gateway, authorization)
        return await admin.market_health(gateway)

    mount_web_page(app, settings)
    install_openapi(app)
    return app


def mount_web_page(app: FastAPI, settings: DexSettings) -> None:
    """Serve the web page (clients/web) under ``/app/`` from its own built files, so the page
    is same-origin with the REST API and fetches nothing from elsewhere; ``/app/config.json``
    tells it the broadcaster's port (its WebSocket is on another port of the same host). Not
    mounted when the page has not been built (``make setup`` builds it)."""

    @app.get("/app/config.json", include_in_schema=False)
    async def web_config() -> Any:
        return {"broadcasterPort": settings.broadcaster_port}

    if WEB_PAGE_DIR.is_dir():
        app.mount("/app", StaticFiles(directory=WEB_PAGE_DIR, html=True), name="web")


def create_server_app() -> Any:
    """The ASGI app uvicorn serves: the FastAPI app behind an outer copy of the gateway
    middleware that answers the fast routes (``POST /v1/orders``) before the framework's
    layers (every other request passes straight through to the app, whose own middleware
    handles it)."""
    app = create_app()
    server_app = GatewayMiddleware(app, gateway=app.state.gateway, fast_only=True)
    freeze_startup_heap()
    return server_app


def _no_framework_telemetry() -> dict[str, Any]:
    """FastAPI's built-in OpenTelemetry probes its providers on every request; the gateway
    has its own Prometheus metrics, so switch it off where the option exists."""
    import inspect

    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def install_openapi(app: FastAPI) -> None:
    """The generated document minus FastAPI's 422 validation answer, which this API never
    gives (a bad request is 400 INVALID_REQUEST)."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    answer = operation.get("responses", {}).get("422")
                    if answer is not None and "HTTPValidationError" in str(answer):
                        del operation["responses"]["422"]
            schemas = document.get("components", {}).get("schemas", {})
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def add_fast_route(app: FastAPI, route: FastRoute) -> None:
    """Register a middleware route with the framework as well, made from its declaration: the
    OpenAPI document describes it, and the router answers its path's other methods (405) and
    its trailing-slash form as for any route. The middleware answers the route itself first;
    were a request to reach the framework, the same handler would serve it."""

    async def serve(request: Request) -> JsonResponse:
        raw = await parsing.read_body(request)
        status, payload = await route.handler(request.app.state.gateway, raw, request.scope)
        return JsonResponse(payload, status_code=status)

    app.add_api_route(
        route.path,
        serve,
        methods=[route.method],
        name=route.name,
        status_code=route.status_code,
        responses=route.responses,
        openapi_extra=route.openapi_extra(),
        response_class=JsonResponse,
    )
