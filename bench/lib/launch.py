"""Exchange processes for the single-service benchmarks, on the test suite's launcher.

``support.exchange.Exchange`` starts each process with the command of API.md §1, its own log
and ports, waits until it is ready, and stops it; these helpers add what the benchmarks set.
"""

from __future__ import annotations

from pathlib import Path

from support.exchange import Exchange


def matcher(
    redis_url: str, market: str, markets_file: Path | None = None, **settings: str
) -> Exchange:
    """``python -m services.matcher`` for ``market`` alone (markets from ``markets_file``, or
    the default file), with extra ``DEX_*`` settings."""
    env = {"DEX_MATCHER_MARKETS": market, **settings}
    if markets_file is not None:
        env["DEX_MARKETS_FILE"] = str(markets_file)
    return Exchange(redis_url, **env).start("matcher")


def ensure_running(exchange: Exchange, name: str) -> None:
    """Stop the benchmark, with the tail of its log, if process ``name`` has exited."""
    if exchange.processes[name].poll() is not None:
        raise SystemExit(f"{name} exited:\n{exchange.log(name)[-3000:]}")
