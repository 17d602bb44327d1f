"""Configuration shared by every service, read from ``DEX_*`` environment variables.

Each service subclasses :class:`DexSettings` when it needs more fields, so there is one
place that names a variable and its default (API.md §1).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MARKETS_FILE = REPO_ROOT / "deploy" / "markets.yaml"


class DexSettings(BaseSettings):
    """Every ``DEX_*`` variable of API.md §1 with its documented default."""

    model_config = SettingsConfigDict(env_prefix="DEX_", env_file=".env", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False
    markets_file: Path = DEFAULT_MARKETS_FILE
    chain_id: int = 1
    verifying_contract: str = "0x0000000000000000000000000000000000000000"
    # The vault's chain (docs/operations.md); unset: no chain, admin deposits only.
    chain_rpc_url: str | None = None
    admin_token: SecretStr | None = None
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    broadcaster_host: str = "127.0.0.1"
    broadcaster_port: int = 8001
    signature_max_age_ms: int = 60_000
    matcher_markets: str = "*"
    matcher_shards: int = 0  # >1: split the selected markets over that many matcher replicas
    matcher_shard: int | None = None  # this replica's index; default: HOSTNAME's "-<ordinal>"
    # Commands per match.lua call at most. Redis runs one call at a time, so a long call stalls
    # every other client (admissions, settlement, reads); past ~100 the per-call cost is noise.
    matcher_batch: int = 100
    funding_interval_s: int = 3600
    oracle_source: str = "static"
    broker_url: str | None = None
    rate_limit_user: int = 100
    rate_limit_ip: int = 1000
    max_backlog: int = 100_000
    max_open_orders: int = 200  # per account and market; one more is 422 TOO_MANY_ORDERS
    order_outbox: bool = False  # single Redis: admit through the outbox as on a cluster
    memory_high_water_pct: int = 90  # writes get 503 OVERLOADED past this % of maxmemory; 0 = off
    twap_interval_ms: int = 30_000  # between two slices of a TWAP (docs/api.md "TWAP orders")

    @property
    def celery_broker_url(self) -> str:
        """The Celery broker: ``DEX_BROKER_URL``, else the main Redis."""
        return self.broker_url or self.redis_url


@lru_cache(maxsize=1)
def get_settings() -> DexSettings:
    """The process-wide settings, read once."""
    return DexSettings()
