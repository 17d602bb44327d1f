"""Per-account money steps outside the event stream: funding, expiry, takeover, cover.

Each step is one call of ``account_step.lua`` on one account slot, keyed by a business id,
so a task re-run after a crash applies every account's share exactly once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import keys
from common.events import AccountPublication, dumps
from common.lua import ScriptSet
from services.settler.ledger import publish_all

LUA_DIR = Path(__file__).parent / "lua"


class AccountSteps:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.scripts = ScriptSet(client, LUA_DIR)

    def step(self, user: str, field: str, number: int, ops: list[list[str]]) -> bool:
        """Apply ``ops`` to ``user`` once for (``field``, ``number``); True if applied now."""
        applied = self.scripts["account_step"](
            keys=[
                keys.balances(user),
                keys.watermarks(user),
                keys.positions(user),
                keys.account_funding(user),
            ],
            args=[field, number, dumps(ops)],
        )
        return bool(applied)

    def cover(self, user: str, asset: str) -> int:
        """Make a negative ``asset`` total whole from the insurance fund; return the amount."""
        if user == keys.INSURANCE_ACCOUNT:
            return 0
        script = self.scripts["cover"]
        cover_keys = [keys.balances(user), keys.account_liquidation(user)]
        amount, cover_id = (int(v) for v in script(keys=cover_keys, args=[asset, "start"]))
        if amount:
            self.step(
                keys.INSURANCE_ACCOUNT, f"cover:{user}", cover_id, [["credit", asset, str(-amount)]]
            )
            script(keys=cover_keys, args=[asset, "done"])
        return amount

    @contextmanager
    def lock(self, key: str, ttl_ms: int = 60_000) -> Iterator[bool]:
        """Hold ``key`` while a periodic job runs, so two runs never work side by side."""
        token = uuid.uuid4().hex
        held = bool(self.client.set(key, token, nx=True, px=ttl_ms))
        try:
            yield held
        finally:
            if held and self.client.get(key) == token:
                self.client.delete(key)

    def notify(self, users: list[str] | set[str], markets: list[str]) -> None:
        """Tell the broadcaster these accounts changed (``acct:<user>`` notices)."""
        seq = int(time.time() * 1000)  # informational (docs/architecture.md)
        notice: AccountPublication = {"seq": seq, "data": {"markets": markets}}
        publish_all(
            self.client,
            [
                (keys.channel(keys.account_topic(user)), dumps(notice))
                for user in users
                if user not in keys.SYSTEM_ACCOUNTS
            ],
        )
