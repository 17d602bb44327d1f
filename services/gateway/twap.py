"""TWAP orders: a signed parent order of ``qty`` sent as LIMIT IOC slices, one every
``DEX_TWAP_INTERVAL_MS``, two slices per minute of ``durationMinutes`` (docs/api.md "TWAP
orders").

The parent lives in the account's slot (``dex:{u}:twap:<cid>``): its terms, its cursor ``k``
(slices done, sent or skipped), ``sent`` and ``skipped``, its status. Every gateway process
fires due TWAPs from a loop, as the dead-man's switch does: the due zset ``dex:{twap}:due``
only says when to look; the parent's cursor decides. Slice ``k`` is built from the parent as
it stands (size, price from the book) and admitted by ``accept_slice.lua``, the rules of a
single order plus the cursor's move from ``k`` to ``k + 1`` in one step, refused when the
cursor has moved or the parent has ended. So two firers, or one killed anywhere and restarted,
send each slice at most once, and a slice is lost only to a refusal, which the parent counts.
After the last slice the firer waits until every slice's order is final and ends the parent:
FILLED if the slices filled ``qty``, else EXP. A Cancel of the parent's id, a CancelAll, the
dead-man's switch or a cancel-on-disconnect session ends it at once (CXL) and cancels a slice
still open. Each of those steps (twap_create.lua, accept_slice.lua, twap_end.lua) publishes
the TWAP's message on ``orders:<u>`` itself (lua/twap/message.lua), so the messages follow
the steps, and the end's is published once, by whoever ended it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal, cast

from common import keys, pubsub
from common.events import COMMAND_FIELD, CancelCommand, TwapUpdate, dumps
from common.markets import Market
from common.types import FINAL_STATUSES, OrderType, Side, TimeInForce
from services.gateway import funds, orders, ratelimit, shapes, signed
from services.gateway.context import Gateway
from services.gateway.errors import ApiError, ErrorCode
from services.gateway.transport import Commands

log = logging.getLogger("services.gateway.twap")

MAX_ACTIVE = 10
"""Active TWAPs per account; one more is 422 TOO_MANY_ORDERS."""
SLICES_PER_MINUTE = 2
RANDOM_PCT = 20
"""With ``randomize``, a slice is its even share times 80..120 %, drawn from (parent, k)."""
BATCH = 200
CONCURRENT_STEPS = 32
"""Due TWAPs stepped at once by one firer round (each is its own parent: the cursor script
keeps them apart as it keeps two firers apart)."""
ORPHAN_MS = 60_000
"""A due member without a parent (a cluster gateway died between its two steps) is dropped
once it is this old."""
ACTIVE = "ACTIVE"
TwapStatus = Literal["ACTIVE", "FILLED", "EXP", "CXL"]
TwapReason = Literal["USER", "DEADMAN", "DISCONNECT", "AGENT_REVOKED", "AGENT_EXPIRED"] | None
BPS = 10_000


def now_ms() -> int:
    return int(time.time() * 1000)


# -- the schedule, pure ------------------------------------------------------------------------


def slice_count(minutes: int) -> int:
    """Slices of a TWAP of ``minutes``: one per 30 s."""
    return minutes * SLICES_PER_MINUTE


def draw_pct(user: str, cid: str, k: int) -> int:
    """The percent (100 − RANDOM_PCT .. 100 + RANDOM_PCT) slice ``k`` of a randomized TWAP
    takes of its even share: the same for every attempt at that slice."""
    digest = hashlib.sha256(f"{user}|{cid}|{k}".encode()).digest()
    return 100 - RANDOM_PCT + int.from_bytes(digest[:8], "big") % (2 * RANDOM_PCT + 1)


def slice_qty(
    remaining: int, k: int, n: int, lot: int, min_qty: int, percent: int | None = None
) -> int:
    """Slice ``k`` of ``n``: what remains divided by the slices left, rounded down to the lot
    (times ``percent`` / 100 when randomized, rounded down), never more than remains; the last
    slice takes all that remains, and so does a slice that would leave less than the smallest
    order. 0 when that is below the lot or ``min_qty`` (it carries to the later slices)."""
    smallest = max(lot, min_qty)
    if k >= n - 1:
        size = remaining
    else:
        size = remaining // (n - k)
        if percent is not None:
            size = size * percent // 100
        size = min(size - size % lot, remaining)
        if size >= smallest and remaining - size < smallest:
            size = remaining
    return size if size >= smallest else 0


def slice_price(side: Side, best: int, slippage_bps: int, tick: int) -> int:
    """The limit of a slice: ``slippage_bps`` past the best opposite price, rounded to the tick
    towards that price (a BUY never above the bound, a SELL never below it)."""
    if side is Side.BUY:
        bound = best * (BPS + slippage_bps) // BPS
        return bound - bound % tick
    bound = -(-best * (BPS - slippage_bps) // BPS)
    return max(tick, bound + (-bound) % tick)


# -- the parent ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Parent:
    user: str
    cid: str
    market: Market
    side: Side
    qty: int
    minutes: int
    randomize: bool
    slippage_bps: int
    reduce_only: bool
    n: int
    k: int
    sent: int
    skipped: int
    start: int
    interval: int
    status: str
    record: dict[str, str]

    @classmethod
    def of(cls, gateway: Gateway, user: str, cid: str, record: dict[str, str]) -> Parent:
        return cls(
            user=user,
            cid=cid,
            market=gateway.markets.markets[record["market"]],
            side=Side(record["side"]),
            qty=int(record["qty"]),
            minutes=int(record["durationMinutes"]),
            randomize=record["randomize"] == "1",
            slippage_bps=int(record["slippageBps"]),
            reduce_only=record["reduceOnly"] == "1",
            n=int(record["n"]),
            k=int(record["k"]),
            sent=int(record.get("sent", 0)),
            skipped=int(record.get("skipped", 0)),
            start=int(record["start"]),
            interval=int(record["interval"]),
            status=record["status"],
            record=record,
        )

    def slice_id(self, k: int) -> str:
        return f"{self.cid}.{k}"

    def due(self, k: int) -> int:
        return self.start + k * self.interval


async def read_parent(gateway: Gateway, user: str, cid: str) -> Parent | None:
    record = cast(dict[str, str], await gateway.redis.hgetall(keys.twap_parent(user, cid)))
    return Parent.of(gateway, user, cid, record) if record else None


async def progress(gateway: Gateway, parent: Parent) -> tuple[int, int]:
    """``(filled, open)``: the sum of the filled of the slices' orders (exact) and how many are
    not final yet. The slices before ``fk`` were all final, their filled summing to ``ff``
    (kept in the parent), so only the last few orders are read; the prefix moves on as they
    end. (Any firer may write it: a pair written by one HSET, so never inconsistent.)"""
    record = parent.record
    final_k, final_filled = int(record.get("fk", 0)), int(record.get("ff", 0))
    ids = [parent.slice_id(j) for j in range(final_k, parent.k)]
    children = await orders.read_orders(gateway, parent.user, ids)
    filled, still_open, prefix = final_filled, 0, True
    for child in children:  # None: a skipped slice, never placed
        done = child is None or child["status"] in FINAL_STATUSES
        filled += 0 if child is None else int(child["filled"])
        still_open += 0 if done else 1
        prefix = prefix and done
        if prefix:
            final_k += 1
            final_filled = filled
    if final_k > int(record.get("fk", 0)):
        await gateway.redis.hset(
            keys.twap_parent(parent.user, parent.cid), mapping={"fk": final_k, "ff": final_filled}
        )
    return filled, still_open


async def view(gateway: Gateway, parent: Parent) -> TwapUpdate:
    """The TWAP as GET /v1/twaps/{userId}/{clientOrderId} shows it (:func:`progress`)."""
    filled, still_open = await progress(gateway, parent)
    record = parent.record
    answer: TwapUpdate = {
        "clientOrderId": parent.cid,
        "userId": parent.user,
        "market": parent.market.symbol,
        "type": "TWAP",
        "side": parent.side.value,
        "qty": parent.qty,
        "durationMinutes": parent.minutes,
        "randomize": parent.randomize,
        "slippageBps": parent.slippage_bps,
        "reduceOnly": parent.reduce_only,
        "sent": parent.sent,
        "filled": filled,
        "slicesDone": parent.k,
        "slicesTotal": parent.n,
        "slicesSkipped": parent.skipped,
        "lastSkip": record.get("lastSkip") or None,
        "open": still_open,
        "status": cast(TwapStatus, parent.status),
        "reason": cast(TwapReason, record.get("reason") or None),
        "nextSliceAt": parent.due(parent.k)
        if parent.status == ACTIVE and parent.k < parent.n
        else None,
        "ts": int(record["ts"]),
        "updatedTs": int(record["updatedTs"]),
    }
    if record.get("agent"):
        answer["agent"] = record["agent"]
    return answer


async def channel(gateway: Gateway, user: str) -> str:
    """The channel the TWAP scripts PUBLISH ``orders:<user>`` on; "" on a Redis Cluster with
    sharded pub/sub, where the script cannot reach the market's shard channel and
    :func:`announce` SPUBLISHes what it returned."""
    if await pubsub.sharded_async(gateway.redis):
        return ""
    return keys.channel(keys.orders_topic(user))


async def announce(gateway: Gateway, parent: Parent, message: str) -> None:
    """SPUBLISH a TWAP message a script built (sharded pub/sub only: elsewhere the script
    published it itself, in the step that made it)."""
    if await pubsub.sharded_async(gateway.redis):
        topic = keys.orders_topic(parent.user)
        await gateway.redis.spublish(keys.shard_channel(parent.market.symbol, topic), message)


# -- placing -------------------------------------------------------------------------------------


async def submit(gateway: Gateway, body: dict[str, Any]) -> tuple[int, TwapUpdate]:
    """Record a signed Twap; its first slice is due at once. 200 with the TWAP.

    Order of checks: the body (shapes.TWAP), STALE_TS, INVALID_SIGNATURE, an agent's FORBIDDEN,
    the user's rate limit, then DUPLICATE (the id was used by an order or a TWAP) and
    INSUFFICIENT_BALANCE / INSUFFICIENT_MARGIN (the first slice would not be affordable now:
    :func:`first_slice_refusal`), TOO_MANY_ORDERS (``MAX_ACTIVE`` active TWAPs already).
    Nothing is reserved: each slice is judged as an order when it is due.
    """
    message, sig = shapes.TWAP.parse_signed(body, gateway.markets)
    user = message["userId"].lower()
    market = gateway.markets.markets[message["market"]]
    agent = await signed.authorize(gateway, "Twap", message, sig, user, market.symbol)
    await ratelimit.check_user(gateway, user)
    cid = message["clientOrderId"]
    start = now_ms()
    record: dict[str, Any] = {
        "market": market.symbol,
        "side": message["side"],
        "qty": message["qty"],
        "durationMinutes": message["durationMinutes"],
        "randomize": "1" if message["randomize"] else "0",
        "slippageBps": message["slippageBps"],
        "reduceOnly": "1" if message["reduceOnly"] else "0",
        "n": slice_count(message["durationMinutes"]),
        "k": 0,
        "sent": 0,
        "skipped": 0,
        "start": start,
        "interval": gateway.settings.twap_interval_ms,
        "status": ACTIVE,
        "ts": message["ts"],
        "updatedTs": start,
    }
    if agent is not None:
        record["agent"] = agent
    refusal = await first_slice_refusal(gateway, user, market, message)
    member = keys.twap_member(user, cid)
    script_keys = [keys.account_cids(user), keys.twap_parent(user, cid), keys.account_twaps(user)]
    if gateway.settings.redis_cluster:
        # The schedule first: a gateway killed before the parent leaves only a member the
        # firer drops (ORPHAN_MS), never a parent nobody fires.
        await gateway.redis.zadd(keys.twap_due(), {member: start}, nx=True)
    else:
        script_keys.append(keys.twap_due())
    fields = [item for pair in record.items() for item in pair]
    verdict, *message = await gateway.transport.script(
        "twap_create",
        script_keys,
        [cid, market.symbol, MAX_ACTIVE, start, member, refusal[0], user,
         await channel(gateway, user), *fields],
    )  # fmt: skip
    if verdict == "DUPLICATE":
        raise ApiError(ErrorCode.DUPLICATE, f"clientOrderId {cid!r} was already used by {user}")
    if verdict == refusal[0]:
        raise ApiError(ErrorCode[verdict], refusal[1])
    if verdict == "TOO_MANY_ORDERS":
        raise ApiError(
            ErrorCode.TOO_MANY_ORDERS, f"{user} already runs {MAX_ACTIVE} TWAPs, the most allowed"
        )
    parent = await read_parent(gateway, user, cid)
    assert parent is not None
    await announce(gateway, parent, message[0])
    return 200, await view(gateway, parent)


async def first_slice_refusal(
    gateway: Gateway, user: str, market: Market, message: dict[str, Any]
) -> tuple[str, str]:
    """``(code, message)`` when the account could not afford the TWAP's first slice now (at the
    best opposite price moved by the slippage bound, or at the mark when that side is empty),
    else ``("", "")``: an account with nothing to trade with places no TWAP. The slices are
    judged again when due; this only keeps unfunded accounts from running TWAPs for a day."""
    side, spec = Side(message["side"]), market.spec
    smallest = max(spec.lotSize, spec.minQty)
    n = slice_count(message["durationMinutes"])
    qty = slice_qty(message["qty"], 0, n, spec.lotSize, spec.minQty) or smallest
    prices = await funds.market_prices(gateway, market)
    best = await best_opposite(gateway, market.symbol, side)
    price = slice_price(side, prices.mark if best is None else best, message["slippageBps"],
                        spec.tickSize)  # fmt: skip
    reserve = await funds.order_reservation(
        gateway, user, market, side, OrderType.LIMIT, price, qty, message["reduceOnly"], prices
    )
    if reserve.amount == funds.ALL_AVAILABLE:
        return "", ""
    held = await gateway.redis.hmget(
        keys.balances(user), [keys.total_field(reserve.asset), keys.locked_field(reserve.asset)]
    )
    free = int(held[0] or 0) - int(held[1] or 0) + reserve.adjustment
    if int(reserve.amount) + reserve.headroom <= free:
        return "", ""
    quantum = gateway.markets.assets[reserve.asset].quantum
    return reserve.short_code, (
        f"the TWAP's first slice ({qty} at {price}) needs {int(reserve.amount) * quantum} "
        f"{reserve.asset}, which {user} lacks"
    )


async def read(gateway: Gateway, user: str, cid: str) -> TwapUpdate:
    """GET /v1/twaps/{userId}/{clientOrderId}: the TWAP, or 404 NOT_FOUND."""
    parent = await read_parent(gateway, user, cid)
    if parent is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no TWAP {cid!r} of {user}")
    return await view(gateway, parent)


async def active(gateway: Gateway, user: str) -> list[TwapUpdate]:
    """GET /v1/twaps/{userId}: the account's active TWAPs, oldest first."""
    cids = cast(list[str], await gateway.redis.zrange(keys.account_twaps(user), 0, -1))
    found = [await read_parent(gateway, user, cid) for cid in cids]
    return [await view(gateway, parent) for parent in found if parent is not None]


# -- ending --------------------------------------------------------------------------------------


async def end(gateway: Gateway, parent: Parent, reason: str) -> bool:
    """End an ACTIVE TWAP (CXL, ``reason``; its end message published by the same step) and
    cancel its last slice if it is still open; False if it had already ended."""
    filled, still_open = await progress(gateway, parent)
    verdict = await end_step(gateway, parent, "CXL", "CXL", reason, filled, still_open, now_ms())
    if verdict[0] != "OK":
        return False
    await gateway.redis.zrem(keys.twap_due(), keys.twap_member(parent.user, parent.cid))
    cursor = int(verdict[1])
    if cursor > 0:
        last = parent.slice_id(cursor - 1)
        child = await orders.read_order(gateway, parent.user, last)
        if child is not None and child["status"] not in FINAL_STATUSES:
            command: CancelCommand = {"op": "cancel", "user": parent.user, "cid": last,
                                      "ts": now_ms()}  # fmt: skip
            await gateway.redis.xadd(
                keys.market_in(parent.market.symbol), {COMMAND_FIELD: dumps(command)}
            )
    return True


async def end_step(
    gateway: Gateway,
    parent: Parent,
    mode: str,
    status: str,
    reason: str,
    filled: int,
    still_open: int,
    now: int,
) -> list[Any]:
    """Run twap_end.lua (``mode`` CXL or FINISH); its reply. The end message is published by
    the script (or, on sharded pub/sub, here right after it)."""
    target = await channel(gateway, parent.user)
    args: list[Any] = [parent.cid, mode, status, reason, now, parent.user, target, filled,
                       still_open]  # fmt: skip
    script_keys = [keys.twap_parent(parent.user, parent.cid), keys.account_twaps(parent.user)]
    verdict = list(await gateway.transport.script("twap_end", script_keys, args))
    if verdict[0] == "OK":
        await announce_end(gateway, parent, verdict[2])
    return verdict


async def announce_end(gateway: Gateway, parent: Parent, message: str) -> None:
    """Sharded pub/sub only: SPUBLISH the end message, then drop the copy twap_end.lua kept in
    the parent (``endMessage``). A process killed between the two leaves the copy, and the
    TWAP in the due zset: the next firer step publishes it (at least once, then)."""
    if await pubsub.sharded_async(gateway.redis):
        await announce(gateway, parent, message)
        await gateway.redis.hdel(keys.twap_parent(parent.user, parent.cid), "endMessage")


async def cancel(
    gateway: Gateway, request: signed.SignedRequest, user: str, cid: str, symbol: str
) -> tuple[int, dict[str, Any]] | None:
    """A verified Cancel whose id names a TWAP of ``user`` in ``symbol``: end it (200 with the
    TWAP); None when the id is no TWAP there. DUPLICATE (the signature used), then
    ORDER_CLOSED (the TWAP had already ended)."""
    parent = await read_parent(gateway, user, cid)
    if parent is None or parent.market.symbol != symbol:
        return None
    if await signed.signature_used(gateway, request):
        raise ApiError(ErrorCode.DUPLICATE, "this Cancel signature was already used")
    if parent.status != ACTIVE:
        raise ApiError(ErrorCode.ORDER_CLOSED, f"TWAP {cid!r} is already {parent.status}")
    await signed.claim_signature(gateway, request)
    if not await end(gateway, parent, "USER"):
        raise ApiError(ErrorCode.ORDER_CLOSED, f"TWAP {cid!r} ended before the cancel arrived")
    return 200, dict(await read(gateway, user, cid))


async def end_all(gateway: Gateway, user: str, symbols: list[str], reason: str) -> int:
    """End every active TWAP of ``user`` in ``symbols`` (a CancelAll, the dead-man's switch);
    how many ended."""
    ended = 0
    for cid in cast(list[str], await gateway.redis.zrange(keys.account_twaps(user), 0, -1)):
        parent = await read_parent(gateway, user, cid)
        if parent is not None and parent.market.symbol in symbols:
            ended += await end(gateway, parent, reason)
    return ended


async def end_agent(gateway: Gateway, user: str, agent: str, reason: str) -> int:
    """End every active TWAP of ``user`` that ``agent`` signed (its approval revoked); how many
    ended. A TWAP this misses (a gateway killed on the way) ends at its next slice, which
    accept_slice.lua refuses to send for an agent no longer approved."""
    ended = 0
    for cid in cast(list[str], await gateway.redis.zrange(keys.account_twaps(user), 0, -1)):
        parent = await read_parent(gateway, user, cid)
        if parent is not None and parent.record.get("agent") == agent:
            ended += await end(gateway, parent, reason)
    return ended


async def end_members(gateway: Gateway, members: list[str]) -> int:
    """End the TWAPs a cancel-on-disconnect session held (members ``"<userId>|<market>"``,
    market "" for every market), reason DISCONNECT; how many ended."""
    ended = 0
    for member in members:
        user, _, market = member.partition("|")
        symbols = [market] if market else list(gateway.markets.markets)
        ended += await end_all(gateway, user, symbols, "DISCONNECT")
    return ended


# -- firing --------------------------------------------------------------------------------------


async def fire_due(gateway: Gateway, now: int | None = None) -> int:
    """One step of every TWAP due by ``now``: a slice, or its end; how many were looked at."""
    now = now_ms() if now is None else now
    due = cast(
        list[tuple[str, float]],
        await gateway.redis.zrangebyscore(
            keys.twap_due(), "-inf", now, start=0, num=BATCH, withscores=True
        ),
    )
    running = asyncio.Semaphore(CONCURRENT_STEPS)

    async def one(member: str, score: float) -> None:
        user, _, cid = member.partition("|")
        async with running:
            await step(gateway, user, cid, int(score), now)

    outcomes = await asyncio.gather(*(one(m, s) for m, s in due), return_exceptions=True)
    for (member, _), outcome in zip(due, outcomes, strict=True):
        if isinstance(outcome, Exception):
            log.warning("TWAP %s: step failed, retried next round: %s", member, outcome)
    return len(due)


async def step(gateway: Gateway, user: str, cid: str, score: int, now: int) -> None:
    """Do what the parent says is due, then put its next look in the due zset."""
    member = keys.twap_member(user, cid)
    parent = await read_parent(gateway, user, cid)
    if parent is None:
        if score < now - ORPHAN_MS:
            await gateway.redis.zrem(keys.twap_due(), member)
        return
    if parent.status != ACTIVE:
        if parent.record.get("endMessage"):
            await announce_end(gateway, parent, parent.record["endMessage"])
        await gateway.redis.zrem(keys.twap_due(), member)
        return
    if parent.k >= parent.n:
        if not await finish(gateway, parent, now):
            await gateway.redis.zadd(keys.twap_due(), {member: now + parent.interval})
        return
    if parent.due(parent.k) > now:
        await gateway.redis.zadd(keys.twap_due(), {member: parent.due(parent.k)})
        return
    verdict, detail = await send_slice(gateway, parent, now)
    if verdict == "AGENT":
        log.info("TWAP %s of %s: its agent may no longer trade (%s)", cid, user, detail)
        await end(gateway, parent, detail)
        return
    due = now  # RETRY, STALE, ENDED: look at the parent again next round
    if verdict in ("OK", "SKIPPED"):
        log.info("TWAP %s of %s: slice %d %s", cid, user, parent.k, verdict.lower())
        following = parent.k + 1
        due = parent.due(following) if following < parent.n else now + parent.interval
    await gateway.redis.zadd(keys.twap_due(), {member: max(due, now)})


async def send_slice(gateway: Gateway, parent: Parent, now: int) -> tuple[str, str]:
    """Build slice ``parent.k`` and run accept_slice.lua (which publishes the TWAP's progress);
    its first word and, for AGENT, why the TWAP's agent may no longer place it."""
    market, k = parent.market, parent.k
    filled, still_open = await progress(gateway, parent)
    spec = market.spec
    percent = draw_pct(parent.user, parent.cid, k) if parent.randomize else None
    qty = slice_qty(parent.qty - parent.sent, k, parent.n, spec.lotSize, spec.minQty, percent)
    order = None
    reason = ""
    best = await best_opposite(gateway, market.symbol, parent.side)
    if parent.sent == parent.qty:
        reason = "NOTHING_LEFT"
    elif qty == 0:
        reason = "BELOW_LOT"
    elif best is None:
        reason = "NO_BOOK"
    else:
        price = slice_price(parent.side, best, parent.slippage_bps, spec.tickSize)
        order = orders.SignedOrder(
            primary_type="Twap",
            message={"clientOrderId": parent.slice_id(k)},
            signature="",
            user=parent.user,
            market=market,
            side=parent.side,
            type=OrderType.LIMIT,
            price=price,
            qty=qty,
            tif=TimeInForce.IOC,
            reduce_only=parent.reduce_only,
            expires_at=0,
            ts=now,
            agent=parent.record.get("agent") or None,
        )
    script_args: list[Any] = [""] * 18
    script_keys = slice_keys(parent.user, parent.slice_id(k), market.symbol)
    if order is not None:
        try:
            prices = None
            if market.price_band_bps is not None:
                prices = await funds.market_prices(gateway, market)
                funds.check_price_band(market, order.price, prices)
            refusal = orders.market_refusal(await gateway.market_status(market), order)
            memory_high = await gateway.memory_high()
            backlog_rule = await orders.backlog_argument(gateway, market.symbol, memory_high)
            _, script_keys, script_args = await orders.order_admission(
                gateway, order, prices, refusal, backlog_rule
            )
        except ApiError as exc:
            reason = str(exc.code)
    script_keys = [
        *script_keys,
        keys.twap_parent(parent.user, parent.cid),
        keys.account_agents(parent.user),
    ]
    group = Commands()
    if gateway.via_outbox:
        group.sadd(keys.outbox_accounts(), parent.user)
    else:
        script_keys.append(keys.market_in(market.symbol))
    args = [*script_args, k, qty, reason, now, parent.user, parent.cid,
            await channel(gateway, parent.user), filled, still_open,
            parent.record.get("agent", ""), market.symbol]  # fmt: skip
    group.script(gateway.transport.scripts["accept_slice"], script_keys, args)
    verdict = list((await gateway.transport.execute(group))[-1])
    if verdict[0] == "OK" and verdict[2] != "SENT":
        await orders.enqueue(gateway, market.symbol, parent.user, parent.slice_id(k), verdict[1])
    if verdict[0] in ("OK", "SKIPPED"):
        await announce(gateway, parent, verdict[-1])
    return str(verdict[0]), str(verdict[1]) if verdict[0] == "AGENT" else ""


def slice_keys(user: str, cid: str, symbol: str) -> list[str]:
    """accept_order.lua's KEYS[1..10] for the slice ``cid`` (as orders.order_admission)."""
    return [
        keys.account_cids(user),
        keys.account_order(user, cid),
        keys.account_market_orders(user, symbol),
        keys.balances(user),
        keys.reservations(user),
        keys.outbox(user),
        keys.account_open_orders(user, symbol),
        keys.positions(user),
        keys.open_quantities(user),
        keys.open_quantity_shares(user),
    ]


async def best_opposite(gateway: Gateway, symbol: str, side: Side) -> int | None:
    """The best price a slice of ``side`` could trade at: the lowest ask for a BUY, the highest
    bid for a SELL (None: that side of the book is empty)."""
    book = keys.book_asks(symbol) if side is Side.BUY else keys.book_bids(symbol)
    best = cast(list[tuple[str, float]], await gateway.redis.zrange(book, 0, 0, withscores=True))
    if not best:
        return None
    return abs(int(best[0][1]))


async def finish(gateway: Gateway, parent: Parent, now: int) -> bool:
    """End a TWAP whose slices are all done once every slice's order is final: FILLED when
    they filled its qty, else EXP. False while one is still open."""
    filled, still_open = await progress(gateway, parent)
    if still_open:
        return False
    status = "FILLED" if filled == parent.qty else "EXP"
    verdict = await end_step(gateway, parent, "FINISH", status, "", filled, 0, now)
    await gateway.redis.zrem(keys.twap_due(), keys.twap_member(parent.user, parent.cid))
    if verdict[0] == "OK":
        log.info("TWAP %s of %s ended %s (filled %d of %d)", parent.cid, parent.user, status,
                 filled, parent.qty)  # fmt: skip
    return True


def loop_interval_s(gateway: Gateway) -> float:
    """How often the firer looks: 0.25 s, or a quarter of a shorter slice interval."""
    return min(0.25, gateway.settings.twap_interval_ms / 4000)


async def run_firer(gateway: Gateway) -> None:
    """Fire due TWAP steps forever; a failed round (Redis away) is logged and retried."""
    while True:
        try:
            await fire_due(gateway)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("TWAP round failed, retrying: %s", exc)
        await asyncio.sleep(loop_interval_s(gateway))


def start(gateway: Gateway) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(run_firer(gateway), name="twap-firer")
