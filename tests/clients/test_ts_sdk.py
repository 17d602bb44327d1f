"""The TypeScript SDK (clients/ts) against the real processes on a real redis-server: its
npm tests sign and place, cancel, read every endpoint, and keep a book in sync while 1,000
random orders flow, across a broadcaster kill -9 and restart, ending equal to REST depth."""

from __future__ import annotations

import re
import warnings

import pytest
from npm_support import (
    CLIENTS,
    ControlServer,
    compile_if_stale,
    exchange_env,
    require_npm_package,
    run_npm,
)
from support.exchange import Exchange

from services.gateway.errors import ErrorCode


@pytest.mark.integration
def test_typescript_sdk_against_the_real_exchange(redis_url: str) -> None:
    package = require_npm_package("ts")
    compile_if_stale(package)
    env = {"DEX_MAX_OPEN_ORDERS": "5000", "DEX_RATE_LIMIT_USER": "0"}
    with Exchange(redis_url, **env) as exchange:
        exchange.start("gateway", "matcher", "settler", "broadcaster")
        with ControlServer(exchange) as control:
            output = run_npm(package, "test", exchange_env(exchange, control), timeout=240)
            assert control.restarts == 1
    assert "# fail 0" in output
    assert "book synced at seq" in output


def test_the_sdk_names_only_codes_the_gateway_answers_and_warns_of_new_ones() -> None:
    """A code added to the gateway still reaches SDK users (as a string, and its status's
    exception class); the warning says to add it to the SDK's union."""
    source = (CLIENTS / "ts" / "src" / "errors.ts").read_text()
    union = source.split("export type ErrorCode =", 1)[1].split(";", 1)[0]
    typed = set(re.findall(r'"([A-Z_]+)"', union))
    answered = {code.value for code in ErrorCode}
    assert typed <= answered, f"the SDK names codes the gateway never answers: {typed - answered}"
    assert len(typed) >= 30
    if answered - typed:
        warnings.warn(
            f"clients/ts/src/errors.ts ErrorCode lacks {sorted(answered - typed)}", stacklevel=1
        )
