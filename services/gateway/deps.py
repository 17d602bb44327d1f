"""Typed dependencies for route handlers: ``gateway: GatewayDep`` instead of a bag of fields.

The :class:`Gateway` is built once per process by ``app.create_app`` and kept on the
application's state; a route asks for it (or for a part of it) by type.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from common.markets import MarketSet
from common.settings import DexSettings
from services.gateway.context import Gateway
from services.gateway.transport import Transport


def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def get_settings(gateway: Annotated[Gateway, Depends(get_gateway)]) -> DexSettings:
    return gateway.settings


def get_markets(gateway: Annotated[Gateway, Depends(get_gateway)]) -> MarketSet:
    return gateway.markets


def get_transport(gateway: Annotated[Gateway, Depends(get_gateway)]) -> Transport:
    return gateway.transport


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
SettingsDep = Annotated[DexSettings, Depends(get_settings)]
MarketsDep = Annotated[MarketSet, Depends(get_markets)]
TransportDep = Annotated[Transport, Depends(get_transport)]
