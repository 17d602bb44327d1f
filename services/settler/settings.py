"""The settler's own settings on top of the shared ``DEX_*`` ones."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from common.settings import DexSettings

DEFAULT_ORACLE_MAX_MOVE_BPS = 1000


class SettlerSettings(DexSettings):
    liquidation_grace_s: float = 10.0
    """How long liquidation orders may take in the book before the insurance fund takes over."""
    settle_batch: int = 5000
    """Events settled per batch (one Lua call per account per batch)."""
    settle_round_gap_ms: int = Field(default=10, ge=0)
    """Least time between the starts of two settle rounds of one market (the holder's)."""
    settle_loop: bool = True
    """Whether each process of a worker that takes the ``settle`` queue runs a settle loop
    (services/settler/loop.py; a single Redis only); off, settle tasks do all settlement."""
    settle_lease_ms: int = Field(default=5000, ge=2000)
    """How long a settle loop's hold on a market lasts without renewal (renewed every 0.5 s):
    how long a killed worker's markets wait for another loop."""
    beat_lease_s: float = 15.0
    """How long a beat's lease lasts without renewal; a second beat waits until it lapses."""
    oracle_max_move_bps: int = Field(default=DEFAULT_ORACLE_MAX_MOVE_BPS, ge=0)
    """How far (basis points of the last accepted index) one HTTP oracle sample may move a
    market's index; a price further away is ignored and counted. ``0``: no bound."""


@lru_cache(maxsize=1)
def get_settler_settings() -> SettlerSettings:
    return SettlerSettings()
