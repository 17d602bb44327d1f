"""Feeds: one per canonical topic per process, shared by every client subscribed to it.

Every subscription starts the same way, so snapshot and updates join with no gap and no
duplicate: the feed's channel is subscribed (and confirmed) first, then the snapshot is read,
and only then does the subscription go live. What arrives in between is held per subscription:

* :class:`SeqFeed` (``depth:``, ``trade:``) forwards held and later updates only when their
  ``seq`` is above the last one the client has (the snapshot's at first).
* :class:`EventFeed` (``orders:``) forwards every order change, numbering the subscription's
  messages; held changes the snapshot already shows (same or newer order state) are dropped.
  The matcher publishes the order changes of a call for all users at once, on its market's
  ``orderchanges:`` channel; one :class:`OrderChanges` per process splits them by ``userId``
  among the ``orders:`` feeds (each feed also listens to its user's own channel, where the
  gateway publishes TWAP progress).
* :class:`StateFeed` (``ticker:``, ``pnl:``) re-reads the whole state in one worker when a
  publication says it changed, and sends the new state to every subscriber; snapshots are taken
  by the same worker, so a subscriber never receives a state older than one it has.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from common import keys
from common.events import depth_updates
from services.broadcaster.connection import Connection, Flusher, Subscription
from services.broadcaster.hub import Hub
from services.broadcaster.topics import Topic
from services.broadcaster.wire import text_frame

log = logging.getLogger(__name__)

Reader = Callable[[], Awaitable[tuple[int, Any]]]
FINAL_STATUSES = frozenset({"FILLED", "CXL", "EXP", "REJECTED"})


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class Feed:
    """What all feeds share: members, the hub channels they need, and their lifetime."""

    reader: Reader  # the snapshot (or state) reader

    def __init__(self, topic: Topic, hub: Hub, channels: list[str]) -> None:
        self.topic = topic
        self.hub = hub
        self.channels = channels
        self.members: set[Subscription] = set()

    async def join(self, subscription: Subscription) -> None:
        """Register ``subscription`` and wait until the feed's channels are live."""
        self.members.add(subscription)
        for channel in self.channels:
            await self.hub.add(channel, self)

    async def subscribe(self, subscription: Subscription) -> None:
        raise NotImplementedError

    def remove(self, subscription: Subscription) -> None:
        subscription.removed = True
        self.members.discard(subscription)

    @property
    def empty(self) -> bool:
        return not self.members

    def close(self) -> None:
        for channel in self.channels:
            self.hub.remove(channel, self)

    def on_publication(self, topic: str, payload: Any) -> None:
        raise NotImplementedError


class SeqFeed(Feed):
    """``depth:`` and ``trade:``: updates carry the matcher's seq; forward each once, in order.

    The hot path of the broadcaster. Live subscriptions that hold every update up to the
    feed's last seq (their own ``seq`` is then the feed's) sit in ``groups`` by spelling: an
    update is framed once per spelling and its frame appended to each of their queues, with
    no per-subscription check. A subscription
    whose snapshot is newer than the feed's last update waits in ``ahead`` until the feed
    catches up with it.
    """

    def __init__(self, topic: Topic, hub: Hub, reader: Reader, flusher: Flusher) -> None:
        super().__init__(topic, hub, [topic.canonical])
        self.reader = reader
        self.flusher = flusher
        self.last_seq = 0
        self.groups: dict[str, dict[Connection, Subscription]] = {}  # spelled -> connection -> sub
        self.ahead: set[Subscription] = set()
        self.pending: set[Subscription] = set()  # taking their snapshot
        self._appenders: dict[str, list[Callable[[bytes], None]]] = {}  # spelled -> queue.append

    async def subscribe(self, subscription: Subscription) -> None:
        self.pending.add(subscription)
        await self.join(subscription)
        seq, data = await self.reader()
        subscription.send("snapshot", seq, _dumps(data))
        for payload in subscription.held:
            if payload["seq"] > subscription.seq:
                subscription.send("update", payload["seq"], _dumps(payload["data"]))
        subscription.held = []
        subscription.live = True
        self.pending.discard(subscription)
        if subscription.seq > self.last_seq:
            self.ahead.add(subscription)
        else:
            self._promote(subscription)

    def _promote(self, subscription: Subscription) -> None:
        group = self.groups.setdefault(subscription.spelled, {})
        group[subscription.connection] = subscription
        self._appenders.pop(subscription.spelled, None)

    def remove(self, subscription: Subscription) -> None:
        super().remove(subscription)
        self.ahead.discard(subscription)
        self.pending.discard(subscription)
        group = self.groups.get(subscription.spelled)
        if group is not None and group.get(subscription.connection) is subscription:
            del group[subscription.connection]
            self._appenders.pop(subscription.spelled, None)
            if not group:
                del self.groups[subscription.spelled]

    def on_publication(self, topic: str, payload: Any) -> None:
        if "batch" in payload:  # depth: several seqs of one matcher call, one update each
            for update in depth_updates(payload):
                self._on_update(update)
            return
        self._on_update(payload)

    def _on_update(self, payload: Any) -> None:
        seq = payload["seq"]
        if seq <= self.last_seq:
            return  # every live subscription already has it (or its snapshot does)
        self.last_seq = seq
        data_json: str | None = None
        if self.groups:
            data_json = _dumps(payload["data"])
            dirty = self.flusher.dirty
            for spelled, group in self.groups.items():
                text = (
                    f'{{"topic":{_dumps(spelled)},"type":"update","seq":{seq},"data":{data_json}}}'
                )
                frame = text_frame(text.encode())
                appenders = self._appenders.get(spelled)
                if appenders is None:
                    appenders = self._appenders[spelled] = [c.queue.append for c in group]
                for append in appenders:
                    append(frame)
                dirty.update(group)  # the flush pass enforces each queue's bound
            self.flusher.schedule()
        for subscription in list(self.ahead):
            if seq > subscription.seq:
                if data_json is None:
                    data_json = _dumps(payload["data"])
                subscription.send("update", seq, data_json)
            if subscription.seq <= seq:
                self.ahead.discard(subscription)
                self._promote(subscription)
        for subscription in self.pending:
            subscription.hold(payload)


class EventFeed(Feed):
    """``orders:``: every published order change, numbered per subscription.

    Its changes come from its user's channel (TWAP progress) and from ``changes``, which hands
    it its user's part of every market's ``orderchanges:`` publications.
    """

    def __init__(self, topic: Topic, hub: Hub, reader: Reader, changes: OrderChanges) -> None:
        super().__init__(topic, hub, [topic.canonical])
        self.reader = reader
        self.changes = changes

    async def join(self, subscription: Subscription) -> None:
        await super().join(subscription)
        await self.changes.join(self)

    def close(self) -> None:
        super().close()
        self.changes.leave(self)

    async def subscribe(self, subscription: Subscription) -> None:
        await self.join(subscription)
        _, orders = await self.reader()
        subscription.send("snapshot", 1, _dumps(orders))
        shown = {order["clientOrderId"]: _order_version(order) for order in orders}
        for payload in subscription.held:
            order = payload["data"]
            known = shown.get(order.get("clientOrderId"))
            if known is not None and known >= _order_version(order):
                continue
            subscription.send("update", subscription.seq + 1, _dumps(order))
        subscription.held = []
        subscription.live = True

    def on_publication(self, topic: str, payload: Any) -> None:
        data_json = _dumps(payload["data"])
        for member in self.members:
            if member.live:
                member.send("update", member.seq + 1, data_json)
            else:
                member.hold(payload)


class OrderChanges:
    """The matcher's ``orderchanges:<market>`` publications, split among the ``orders:`` feeds.

    One per process. While any ``orders:`` feed is open it is the hub's sink of every market's
    channel; each publication ``{"seq", "data": [order, ...]}`` is walked once, in order, and
    each order handed to the feed of its ``userId`` as that user's own ``{"seq", "data":
    order}`` publication, so the feed numbers and forwards it exactly as one sent on the user's
    channel. An order whose user has no feed here is dropped; no feed ever sees another user's.
    """

    def __init__(self, hub: Hub, markets: list[str]) -> None:
        self.hub = hub
        self.topics = [keys.order_changes_topic(market) for market in markets]
        self.feeds: dict[str, EventFeed] = {}  # user (as the matcher names it) -> feed

    async def join(self, feed: EventFeed) -> None:
        """Route ``feed``'s user to it; return once every market's channel is live."""
        self.feeds[feed.topic.name] = feed
        for topic in self.topics:
            await self.hub.add(topic, self)

    def leave(self, feed: EventFeed) -> None:
        if self.feeds.get(feed.topic.name) is feed:
            del self.feeds[feed.topic.name]
        if not self.feeds:
            for topic in self.topics:
                self.hub.remove(topic, self)

    def on_publication(self, topic: str, payload: Any) -> None:
        feeds = self.feeds
        seq = payload["seq"]
        for order in payload["data"]:
            feed = feeds.get(order["userId"])
            if feed is not None:
                feed.on_publication(feed.topic.canonical, {"seq": seq, "data": order})


def _order_version(order: dict[str, Any]) -> tuple[int, int, bool]:
    """Orders only move forward: later update time, more filled, then a final status."""
    return (
        int(order.get("updatedTs") or 0),
        int(order.get("filled") or 0),
        order.get("status") in FINAL_STATUSES,
    )


class StateFeed(Feed):
    """``ticker:`` and ``pnl:``: a publication on any of ``channels`` means "read again".

    One worker task serialises every read, so snapshots and updates leave in state order;
    publications that arrive during a read cause exactly one more read (coalesced).
    """

    def __init__(
        self,
        topic: Topic,
        hub: Hub,
        channels: list[str],
        reader: Reader,
        min_interval_s: float = 0.0,
        on_state: Callable[[Any], None] | None = None,
    ) -> None:
        super().__init__(topic, hub, channels)
        self.reader = reader
        self.min_interval_s = min_interval_s
        self.on_state = on_state
        # Market -> the mark price the last state was computed at (see registry.MarkWatcher).
        self.marks: dict[str, Any] = {}
        self._joining: list[tuple[Subscription, asyncio.Future[None]]] = []
        self._dirty = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def subscribe(self, subscription: Subscription) -> None:
        await self.join(subscription)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._joining.append((subscription, done))
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._work(), name=f"feed-{self.topic.canonical}")
        await done

    def trigger(self) -> None:
        """The state changed: read it again and send it to every live subscriber."""
        self._dirty = True
        self._wake.set()

    def on_publication(self, topic: str, payload: Any) -> None:
        self.trigger()

    def close(self) -> None:
        super().close()
        if self._task is not None:
            self._task.cancel()
        for _, done in self._joining:
            if not done.done():
                done.cancel()

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            joining, self._joining = self._joining, []
            update = self._dirty
            self._dirty = False
            try:
                _, state = await self.reader()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("broadcaster: reading %s failed", self.topic.canonical)
                for _, done in joining:
                    if not done.done():
                        done.set_exception(exc)
                self._dirty = self._dirty or update
                await asyncio.sleep(0.5)
                if self._dirty:
                    self._wake.set()
                continue
            if self.on_state is not None:
                self.on_state(state)
            state_json = _dumps(state)
            joined = {subscription for subscription, _ in joining}
            if update:
                for member in self.members:
                    if member.live and member not in joined:
                        member.send("update", member.seq + 1, state_json)
            for subscription, done in joining:
                if not subscription.removed and not done.done():
                    subscription.send("snapshot", 1, state_json)
                    subscription.live = True
                    done.set_result(None)
            if self.min_interval_s:
                await asyncio.sleep(self.min_interval_s)


class TickerFeed(StateFeed):
    """``ticker:<m>``: re-read on the oracle's ticker publications and on trades."""

    def __init__(self, topic: Topic, hub: Hub, reader: Reader, min_interval_s: float) -> None:
        channels = [topic.canonical, f"trade:{topic.name}"]
        super().__init__(
            topic, hub, channels, reader, min_interval_s=min_interval_s, on_state=self._mark
        )

    def _mark(self, state: Any) -> None:
        self.marks = {self.topic.name: state.get("markPrice")}


class PnlFeed(StateFeed):
    """``pnl:<user>``: re-read on the user's ``acct:`` notices and on a mark change of a
    market the user holds (every ticker publication is checked, only those re-read)."""

    def __init__(self, topic: Topic, hub: Hub, ticker_markets: list[str], reader: Reader) -> None:
        channels = [f"acct:{topic.name}"] + [f"ticker:{m}" for m in ticker_markets]
        super().__init__(topic, hub, channels, reader, on_state=self._remember_marks)
        self.marks: dict[str, Any] = {}  # held market -> mark the last state was computed at

    def _remember_marks(self, state: Any) -> None:
        self.marks = {
            position["market"]: position.get("markPrice")
            for position in state.get("positions", [])
            if position.get("size")
        }

    def on_publication(self, topic: str, payload: Any) -> None:
        if topic.startswith("ticker:"):
            market = topic.partition(":")[2]
            if market not in self.marks:
                return
            data = payload.get("data") if isinstance(payload, dict) else None
            mark = data.get("markPrice") if isinstance(data, dict) else None
            if mark is None or mark == self.marks[market]:
                return
            self.marks[market] = mark
        self.trigger()
