"""A beat scheduler that runs only while it holds a Redis lease, so one beat is in charge.

Two ``celery beat`` processes may be started (a rolling deploy, an operator's mistake): each
tries to take ``dex:lease:beat`` (SET NX PX) and renews it on every tick; the one without it
sends nothing and checks again shortly. The tasks are idempotent anyway; the lease only
keeps the schedule from running twice as often.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery.beat import PersistentScheduler

from common import keys
from common.redis_client import connect
from services.settler.settings import get_settler_settings

log = logging.getLogger(__name__)

RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


class LeasedScheduler(PersistentScheduler):
    """``PersistentScheduler`` (honours ``-s <file>``) gated by a Redis lease."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._token = uuid.uuid4().hex
        self._client = connect()
        self._renew = self._client.register_script(RENEW)
        self._lease_ms = int(get_settler_settings().beat_lease_s * 1000)
        self._leader = False
        super().__init__(*args, **kwargs)

    def _hold_lease(self) -> bool:
        try:
            held = bool(
                self._renew(keys=[keys.settler_lease("beat")], args=[self._token, self._lease_ms])
            )
        except Exception as exc:
            log.warning("beat: cannot reach Redis for the lease: %s", exc)
            held = False
        if held != self._leader:
            log.warning("beat: %s the lease", "took" if held else "lost")  # leadership changed
            self._leader = held
        return held

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self._hold_lease():
            return 1.0
        interval: float = super().tick(*args, **kwargs)
        return min(interval, self._lease_ms / 3000)
