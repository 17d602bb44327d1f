"""The broadcaster's split of the matcher's ``orderchanges:<m>`` publications, without Redis:
each order goes to the feed of its user only, in order, as that user's own publication; the
market channels are held while any ``orders:`` feed is open and dropped with the last."""

from __future__ import annotations

import asyncio
from typing import Any

from services.broadcaster.feeds import OrderChanges
from services.broadcaster.topics import Kind, Topic

MARKETS = ["BTC-USDC", "BTC-PERP"]


class StubHub:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def add(self, topic: str, sink: Any) -> None:
        self.calls.append(("add", topic))

    def remove(self, topic: str, sink: Any) -> None:
        self.calls.append(("remove", topic))


class StubFeed:
    def __init__(self, user: str) -> None:
        self.topic = Topic(Kind.ORDERS, user)
        self.received: list[tuple[str, Any]] = []

    def on_publication(self, topic: str, payload: Any) -> None:
        self.received.append((topic, payload))


def feed(user: str) -> Any:
    return StubFeed(user)  # an EventFeed to OrderChanges: its topic and on_publication


def order(user: str, cid: str, status: str = "NEW") -> dict[str, Any]:
    return {"clientOrderId": cid, "userId": user, "status": status}


def test_each_order_goes_to_its_users_feed_only_in_order() -> None:
    hub = StubHub()
    changes = OrderChanges(hub, MARKETS)
    alice, bob = feed("0xa"), feed("0xb")
    asyncio.run(changes.join(alice))
    asyncio.run(changes.join(bob))
    assert hub.calls == [("add", f"orderchanges:{m}") for m in MARKETS] * 2
    changes.on_publication(
        "orderchanges:BTC-USDC",
        {"seq": 7, "data": [order("0xa", "a1"), order("0xc", "c1"), order("0xb", "b1"),
                            order("0xa", "a1", "FILLED"), order("0xA", "a2")]},
    )  # fmt: skip
    assert alice.received == [
        ("orders:0xa", {"seq": 7, "data": order("0xa", "a1")}),
        ("orders:0xa", {"seq": 7, "data": order("0xa", "a1", "FILLED")}),
    ]  # an order of another spelling of the user is not this feed's (channel names: exact)
    assert bob.received == [("orders:0xb", {"seq": 7, "data": order("0xb", "b1")})]


def test_the_market_channels_are_dropped_with_the_last_feed_and_a_stale_feed_drops_nothing() -> (
    None
):
    hub = StubHub()
    changes = OrderChanges(hub, MARKETS)
    first, second, other = feed("0xa"), feed("0xa"), feed("0xb")
    asyncio.run(changes.join(first))
    asyncio.run(changes.join(other))
    asyncio.run(changes.join(second))  # the user's feed was replaced (closed and re-created)
    hub.calls.clear()
    changes.leave(first)
    changes.on_publication("orderchanges:BTC-PERP", {"seq": 1, "data": [order("0xa", "x")]})
    assert second.received == [("orders:0xa", {"seq": 1, "data": order("0xa", "x")})]
    changes.leave(other)
    assert hub.calls == []
    changes.leave(second)
    assert hub.calls == [("remove", f"orderchanges:{m}") for m in MARKETS]
    changes.on_publication("orderchanges:BTC-PERP", {"seq": 2, "data": [order("0xa", "y")]})
    assert len(second.received) == 1
