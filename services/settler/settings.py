"""The settler's own settings on top of the shared ``DEX_*`` ones."""

from __future__ import annotations

from functools import lru_cache

from common.settings import DexSettings


class SettlerSettings(DexSettings):
    liquidation_grace_s: float = 10.0
    """How long liquidation orders may take in the book before the insurance fund takes over."""
    settle_batch: int = 5000
    """Events settled per batch (one Lua call per account per batch)."""
    beat_lease_s: float = 15.0
    """How long a beat's lease lasts without renewal; a second beat waits until it lapses."""


@lru_cache(maxsize=1)
def get_settler_settings() -> SettlerSettings:
    return SettlerSettings()
