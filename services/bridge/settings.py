"""The bridge's own settings on top of the shared ``DEX_*`` ones (docs/api.md "The bridge")."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr

from common.settings import DexSettings


class BridgeSettings(DexSettings):
    bridge_key: SecretStr | None = None
    """The bridge's private key: the vault's ``signer`` of permits and the payer of their gas."""
    bridge_confirmations: int = Field(default=2, ge=0)
    """Blocks on top of a deposit's block before it is credited (and of a payout before its
    withdrawal is CONFIRMED)."""
    bridge_poll_s: float = Field(default=1.0, gt=0)
    bridge_start_block: int = Field(default=0, ge=0)
    """The first block to read deposits from when there is no cursor yet (the vault's)."""
    bridge_log_blocks: int = Field(default=1000, gt=0)
    """Blocks per ``eth_getLogs`` request."""
    bridge_permit_ttl_s: int = Field(default=3600, gt=0)
    """A permit's deadline: this many seconds after the chain time it is signed at."""
    bridge_lease_s: float = Field(default=15.0, gt=0)
    bridge_crash_at: str = ""
    """Test only: the step at which the process SIGKILLs itself (tests/integration)."""


@lru_cache(maxsize=1)
def get_bridge_settings() -> BridgeSettings:
    return BridgeSettings()
