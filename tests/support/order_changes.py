"""A user's order changes as the matcher publishes them, read from Redis pub/sub: every order
change of a call goes out on its market's ``orderchanges:<m>`` channel, for all users at once,
and the broadcaster splits it by ``userId`` (services/broadcaster/feeds.py ``OrderChanges``);
this does the same split for tests that listen to Redis directly."""

from __future__ import annotations

from typing import Any

import orjson

from common import keys


def order_changes_channel(market: str) -> str:
    """The classic channel of ``market``'s order changes (``dex:ch:orderchanges:<m>``)."""
    return keys.channel(keys.order_changes_topic(market))


def orders_of(user: str, message: dict[str, Any] | None) -> list[dict[str, Any]]:
    """``user``'s order updates in one pub/sub ``message`` of an ``orderchanges:`` channel, in
    order (none for any other message)."""
    if message is None or message.get("type") not in ("message", "pmessage", "smessage"):
        return []
    if keys.order_changes_topic("") not in message["channel"]:
        return []
    wanted = user.lower()
    return [o for o in orjson.loads(message["data"])["data"] if o["userId"] == wanted]
