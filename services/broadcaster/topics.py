"""Topic names of API.md §7: parse what a client typed into a canonical topic.

A server message carries the topic exactly as the client spelled it; inside the process a
topic is canonical (market symbol as in the markets file, user lower-case), so clients that
spell one topic differently share one feed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from common import keys
from common.markets import MarketSet

ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")  # whole string (fullmatch): no trailing newline
# The longest topic served is ``orders:`` and an address (49 characters); a longer string is
# refused before it is parsed or shown, so no answer echoes more than this of what was sent.
MAX_TOPIC_LENGTH = 128


class Kind(StrEnum):
    DEPTH = "depth"
    TRADE = "trade"
    TICKER = "ticker"
    PNL = "pnl"
    ORDERS = "orders"


MARKET_KINDS = (Kind.DEPTH, Kind.TRADE, Kind.TICKER)
USER_KINDS = (Kind.PNL, Kind.ORDERS)


@dataclass(frozen=True)
class Topic:
    kind: Kind
    name: str  # canonical market symbol or lower-case user

    @property
    def canonical(self) -> str:
        """The topic as publishers name it, ``dex:ch:<canonical>`` being its channel."""
        return f"{self.kind.value}:{self.name}"


class TopicError(ValueError):
    """A topic the broadcaster does not serve; the message says why."""


def parse_topic(spelled: str, markets: MarketSet) -> Topic:
    """The canonical topic for ``spelled``, or :class:`TopicError`.

    Letter case is ignored in ASCII only, so no other spelling (``\u212a`` lowers to ``k``)
    names a topic.
    """
    kinds = ", ".join(k.value for k in Kind)
    if len(spelled) > MAX_TOPIC_LENGTH or not spelled.isascii():
        raise TopicError(
            f"topic {spelled[:MAX_TOPIC_LENGTH]!r} is not a topic: topics are ASCII, "
            f"<kind>:<name>, at most {MAX_TOPIC_LENGTH} characters (kinds: {kinds})"
        )
    kind_text, sep, name = spelled.partition(":")
    if not sep or not name:
        raise TopicError(f"topic {spelled!r} is not of the form <kind>:<name> (kinds: {kinds})")
    try:
        kind = Kind(kind_text.lower())
    except ValueError:
        raise TopicError(
            f"topic {spelled!r} has unknown kind {kind_text!r} (kinds: {kinds})"
        ) from None
    if kind in MARKET_KINDS:
        symbol = _market_symbol(name, markets)
        if symbol is None:
            raise TopicError(f"topic {spelled!r} names unknown market {name!r}")
        return Topic(kind, symbol)
    user = name.lower()
    if not ADDRESS.fullmatch(name) and user not in keys.SYSTEM_ACCOUNTS:
        raise TopicError(f"topic {spelled!r} needs a 0x address of 40 hex digits, got {name!r}")
    return Topic(kind, user)


def _market_symbol(name: str, markets: MarketSet) -> str | None:
    if name in markets.markets:
        return name
    upper = name.upper()
    return next((s for s in markets.markets if s.upper() == upper), None)
