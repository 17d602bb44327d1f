"""What every request handler needs, built once per process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.eip712 import Verifier
from common.lua import ScriptSet
from common.markets import MarketSet, load_markets
from common.redis_client import connect_async
from common.settings import DexSettings

LUA_DIR = Path(__file__).parent / "lua"


@dataclass
class Gateway:
    settings: DexSettings
    markets: MarketSet
    redis: Any
    scripts: ScriptSet
    verifier: Verifier

    @classmethod
    def build(cls, settings: DexSettings) -> Gateway:
        client = connect_async(settings)
        return cls(
            settings=settings,
            markets=load_markets(settings.markets_file),
            redis=client,
            scripts=ScriptSet(client, LUA_DIR),
            verifier=Verifier(settings.chain_id, settings.verifying_contract),
        )
