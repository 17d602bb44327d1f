"""WebSocket order entry through the real gateway, matcher, settler and beat on a real Redis:
the same bodies answer over ``/v1/ws`` what they answer over REST (status and body, but for
the ids and times that must differ), for every op and every class of refusal; and a
cancel-on-disconnect session cancels its accounts' orders (reason DISCONNECT, every unit
released) when its connection closes, and when the gateway holding it is SIGKILLed while
another gateway runs."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import websockets
from support.exchange import Exchange
from support.redis_server import wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader
from support.ws import WsClient

from common import keys
from common.eip712 import sign

pytestmark = pytest.mark.integration

SPOT, PERP = "BTC-USDC", "BTC-PERP"
DEPOSIT = 10_000_000_000
CLOSE_WITHIN_S = 1.0


@pytest.fixture
def exchange(redis_url: str) -> Iterator[Exchange]:
    with Exchange(redis_url) as running:
        running.start("gateway", "matcher", "settler", "beat")
        yield running


def ws_url(exchange: Exchange) -> str:
    return f"ws://127.0.0.1:{exchange.gateway_port}/v1/ws"


def now_ms() -> int:
    return int(time.time() * 1000)


def signed(trader: Trader, primary: str, **message: Any) -> dict[str, Any]:
    message.setdefault("userId", trader.address)
    message.setdefault("ts", now_ms())
    return {**message, "sig": sign(trader.key, primary, message, CHAIN_ID, VERIFYING_CONTRACT)}


def funded(exchange: Exchange) -> Trader:
    trader = Trader()
    exchange.deposit(trader.address, "USDC", DEPOSIT)
    return trader


def order(exchange: Exchange, trader: Trader, cid: str) -> dict[str, Any]:
    return dict(exchange.get(f"/v1/orders/{trader.address}/{cid}"))


async def ws_ask(client: WsClient, request_id: Any, op: str, body: Any, **extra: Any) -> Any:
    await client.send({"id": request_id, "op": op, "body": body, **extra})
    return await client.next(lambda m: m.get("id") == request_id, 15)


PER_REQUEST = re.compile(r"\b1[0-9]{12}\b")  # a time in ms


def same_shape(answer: Any, cids: tuple[str, ...]) -> bytes:
    """An answer with what must differ between two requests blanked: their clientOrderIds and
    the times (ms) they carry."""
    text = orjson.dumps(answer).decode()
    for cid in cids:
        text = text.replace(cid, "<cid>")
    return PER_REQUEST.sub("<ms>", text).encode()


def test_every_op_answers_over_websocket_what_rest_answers(exchange: Exchange) -> None:
    asyncio.run(_every_op_answers_the_same(exchange))


async def _every_op_answers_the_same(exchange: Exchange) -> None:
    trader, stranger = funded(exchange), Trader()
    http = httpx.AsyncClient(base_url=exchange.http, timeout=15)
    client = await WsClient.connect(ws_url(exchange))
    pairs: list[tuple[str, tuple[int, Any], tuple[int, Any], tuple[str, ...]]] = []

    async def both(
        op: str, path: str, rest_body: Any, ws_body: Any, *cids: str, wait: bool = False
    ) -> None:
        response = await http.post(path + ("?wait=1" if wait else ""), json=rest_body)
        answer = await ws_ask(client, f"{op}-{len(pairs)}", op, ws_body, wait=wait)
        pairs.append(
            (op, (response.status_code, response.json()), (answer["status"], answer["body"]), cids)
        )

    def placed(cid: str, **over: Any) -> dict[str, Any]:
        fields = {"price": 1_000, "qty": 10, **over}
        return trader.order(SPOT, "BUY", fields["price"], fields["qty"], cid=cid)

    # accepted: 202, then 200 with wait (the order as the matcher has it)
    await both("order", "/v1/orders", placed("r1"), placed("w1"), "r1", "w1")
    await both("order", "/v1/orders", placed("r2"), placed("w2"), "r2", "w2", wait=True)
    # 409: the same signed order again, each on the other road
    await both("order", "/v1/orders", placed("w1"), placed("r1"), "r1", "w1")
    duplicate = placed("r3")
    assert (await http.post("/v1/orders", json=duplicate)).status_code == 202
    await both("order", "/v1/orders", duplicate, duplicate, "r3")
    # 400, 401, 422: one refused body sent on both roads
    for refused in (
        placed("bad-price", price=0),
        {**placed("bad-user"), "userId": "0x123"},
        {**placed("forged"), "userId": stranger.address},
        placed("too-big", qty=10**12),
    ):
        await both("order", "/v1/orders", refused, refused, refused["clientOrderId"])
    # cancel: 200 with the order cancelled; then the same signed cancel again (409)
    cancel_r = signed(trader, "Cancel", market=SPOT, clientOrderId="r1")
    cancel_w = signed(trader, "Cancel", market=SPOT, clientOrderId="w1")
    await both("cancel", "/v1/orders/cancel", cancel_r, cancel_w, "r1", "w1")
    await both("cancel", "/v1/orders/cancel", cancel_w, cancel_r, "r1", "w1")
    unknown = signed(trader, "Cancel", market=SPOT, clientOrderId="nope")
    await both("cancel", "/v1/orders/cancel", unknown, unknown, "nope")
    # cancel_all: each road cancels the one order resting (another account's)
    other = funded(exchange)
    rest_all = signed(other, "CancelAll", market=SPOT)
    ws_all = signed(other, "CancelAll", market=SPOT, ts=rest_all["ts"] + 1)
    await http.post("/v1/orders?wait=1", json=other.order(SPOT, "BUY", 1_000, 10))
    response = await http.post("/v1/orders/cancel-all", json=rest_all)
    await ws_ask(client, "w5", "order", other.order(SPOT, "BUY", 1_000, 10), wait=True)
    answer = await ws_ask(client, "all", "cancel_all", ws_all)
    assert answer["body"] == {"cancelled": 1}
    pairs.append(
        (
            "cancel_all",
            (response.status_code, response.json()),
            (answer["status"], answer["body"]),
            (),
        )
    )
    await both("cancel_all", "/v1/orders/cancel-all", ws_all, rest_all)  # 409 both

    # cancel_replace: r2 and w2 rest; each road replaces one (200), then a cancelled one (409)
    def replacing(old: str, cid: str) -> dict[str, Any]:
        return signed(
            trader, "CancelReplace", clientOrderId=cid, market=SPOT, side="BUY", type="LIMIT",
            price=1_000, qty=5, product="SPOT", timeInForce="GTC", reduceOnly=False,
            expiresAt=0, cancelClientOrderId=old,
        )  # fmt: skip

    await both(
        "cancel_replace", "/v1/orders/cancel-replace", replacing("r2", "r2b"),
        replacing("w2", "w2b"), "r2", "w2", "r2b", "w2b",
    )  # fmt: skip
    await both(
        "cancel_replace", "/v1/orders/cancel-replace", replacing("r1", "r1b"),
        replacing("w1", "w1b"), "r1", "w1", "r1b", "w1b",
    )  # fmt: skip

    # amend: each road lowers its replacement (200), then a guard that finds nothing filled (409)
    def amending(cid: str, qty: int, expected_filled: int = -1) -> dict[str, Any]:
        return signed(
            trader, "Amend", market=SPOT, clientOrderId=cid, price=1_000, qty=qty,
            expectedFilled=expected_filled,
        )  # fmt: skip

    await both("amend", "/v1/orders/amend", amending("r2b", 3), amending("w2b", 3), "r2b", "w2b")
    await both(
        "amend", "/v1/orders/amend", amending("r2b", 4, 2), amending("w2b", 4, 2), "r2b", "w2b"
    )

    # batch: each road places one order and lowers its amended one again in one signed batch
    # (200: 202 each, the AMEND of no order 404); then atomic, refused at that AMEND (404)
    def batched(cid: str, amended: str, atomic: bool = False) -> dict[str, Any]:
        blank = {"side": "", "type": "", "timeInForce": "", "reduceOnly": False, "expiresAt": 0}
        actions = [
            {"kind": "PLACE", "market": SPOT, "clientOrderId": cid, "side": "BUY",
             "type": "LIMIT", "price": 1_000, "qty": 10, "timeInForce": "GTC",
             "reduceOnly": False, "expiresAt": 0, "expectedFilled": 0},
            {"kind": "AMEND", "market": SPOT, "clientOrderId": amended, **blank,
             "price": 1_000, "qty": 2, "expectedFilled": 0},
            {"kind": "AMEND", "market": SPOT, "clientOrderId": "nope", **blank,
             "price": 1_000, "qty": 2, "expectedFilled": -1},
        ]  # fmt: skip
        return signed(trader, "Batch", atomic=atomic, actions=actions)

    await both(
        "batch", "/v1/orders/batch", batched("rb1", "r2b"), batched("wb1", "w2b"),
        "rb1", "wb1", "r2b", "w2b",
    )  # fmt: skip
    await both(
        "batch", "/v1/orders/batch", batched("rb2", "r2b", True), batched("wb2", "w2b", True),
        "rb2", "wb2", "r2b", "w2b",
    )  # fmt: skip
    # schedule_cancel: arm, the same body again (409), disarm
    deadline = now_ms() + 60_000
    arm_rest = signed(trader, "ScheduleCancel", market=SPOT, deadline=deadline)
    arm_ws = signed(trader, "ScheduleCancel", market=SPOT, deadline=deadline, ts=now_ms() + 1)
    await both("schedule_cancel", "/v1/orders/schedule-cancel", arm_rest, arm_ws)
    await both("schedule_cancel", "/v1/orders/schedule-cancel", arm_ws, arm_rest)
    past = signed(trader, "ScheduleCancel", market=SPOT, deadline=1)
    await both("schedule_cancel", "/v1/orders/schedule-cancel", past, past)

    # 413: the body cap on both roads
    padded = {**placed("pad"), "pad": "x" * 70_000}
    response = await http.post("/v1/orders", json=padded)
    await client.send({"id": "pad", "op": "order", "body": padded})
    answer = await client.next(lambda m: m.get("status") == 413, 15)
    await client.close()
    await http.aclose()
    codes = (response.status_code, response.json()["error"]["code"])
    assert codes == (413, "BODY_TOO_LARGE")
    assert (answer["status"], answer["body"]["error"]["code"]) == codes
    assert answer["id"] is None  # too large to be read

    seen = set()
    for op, (rest_status, rest_body), (ws_status, ws_body), cids in pairs:
        assert ws_status == rest_status, (op, rest_body, ws_body)
        assert same_shape(ws_body, cids) == same_shape(rest_body, cids), op
        seen.add((op, rest_status))
    assert seen >= {
        ("order", 202),
        ("order", 200),
        ("order", 400),
        ("order", 401),
        ("order", 409),
        ("order", 422),
        ("cancel", 200),
        ("cancel", 409),
        ("cancel", 404),
        ("cancel_all", 200),
        ("cancel_all", 409),
        ("amend", 200),
        ("amend", 409),
        ("cancel_replace", 200),
        ("cancel_replace", 409),
        ("schedule_cancel", 200),
        ("schedule_cancel", 409),
        ("schedule_cancel", 400),
        ("batch", 200),
        ("batch", 404),
    }, seen
    # Every order went through the one admission: each accepted one has its record.
    assert order(exchange, trader, "w2")["status"] == "CXL"
    assert wait_for(lambda: order(exchange, trader, "w2b")["qty"] == 2, 10)
    assert order(exchange, trader, "w2b")["status"] == "NEW"
    assert order(exchange, trader, "w1")["status"] == "CXL"


def rest_order(exchange: Exchange, trader: Trader, market: str, cid: str) -> None:
    product = "SPOT" if market == SPOT else "PERP"
    price = 1_000 if market == SPOT else 3_000_000
    body = trader.order(market, "BUY", price, 10, cid=cid, product=product)
    with exchange.client() as client:
        assert client.post("/v1/orders?wait=1", json=body).status_code in (200, 202)


def cancelled_on_disconnect(exchange: Exchange, trader: Trader, cid: str) -> bool:
    current = order(exchange, trader, cid)
    return (current["status"], current.get("reason")) == ("CXL", "DISCONNECT")


async def open_session_with_orders(url: str, trader: Trader, cids: list[str]) -> WsClient:
    client = await WsClient.connect(url)
    answer = await ws_ask(client, "s", "session", None, cancelOnDisconnect=True)
    assert (answer["status"], answer["body"]) == (200, {"cancelOnDisconnect": True})
    for cid in cids:
        answer = await ws_ask(
            client, cid, "order", trader.order(SPOT, "BUY", 1_000, 10, cid=cid), wait=True
        )
        assert (answer["status"], answer["body"]["status"]) == (200, "NEW"), answer
    return client


def test_closing_a_session_cancels_its_orders_within_a_second_and_releases_every_unit(
    exchange: Exchange, r: Any
) -> None:
    trader, bystander = funded(exchange), funded(exchange)
    rest_order(exchange, bystander, SPOT, "b1")
    rest_order(exchange, trader, PERP, "p1")  # a market this connection never trades
    perp_locked = exchange.balance(trader.address, "USDC")[1]
    assert perp_locked > 0

    async def scenario() -> float:
        client = await open_session_with_orders(ws_url(exchange), trader, ["c1", "c2"])
        assert exchange.balance(trader.address, "USDC")[1] > perp_locked
        await client.close()
        return time.monotonic()

    closed_at = asyncio.run(scenario())
    assert wait_for(
        lambda: all(cancelled_on_disconnect(exchange, trader, c) for c in ("c1", "c2")), 5
    )
    assert time.monotonic() - closed_at < CLOSE_WITHIN_S + 0.5  # the polling's own slack
    assert order(exchange, bystander, "b1")["status"] == "NEW"
    assert order(exchange, trader, "p1")["status"] == "NEW"
    # The two SPOT orders' reservations are released to the unit; the PERP one's stays.
    assert wait_for(lambda: exchange.balance(trader.address, "USDC") == (DEPOSIT, perp_locked), 30)
    assert r.zcard(keys.entry_sessions()) == 0
    assert r.keys(keys.entry_session("*")) == []


def test_turning_the_session_off_cancels_nothing_on_close(exchange: Exchange) -> None:
    trader = funded(exchange)

    async def scenario() -> None:
        client = await open_session_with_orders(ws_url(exchange), trader, ["o1"])
        answer = await ws_ask(client, "off", "session", None, cancelOnDisconnect=False)
        assert (answer["status"], answer["body"]) == (200, {"cancelOnDisconnect": False})
        await client.close()

    asyncio.run(scenario())
    time.sleep(1.5)
    assert order(exchange, trader, "o1")["status"] == "NEW"


def test_a_session_fires_from_another_gateway_when_its_own_is_killed(
    exchange: Exchange, redis_url: str, r: Any
) -> None:
    trader = funded(exchange)
    with Exchange(redis_url) as other:
        other.start("gateway")

        async def scenario() -> None:
            await open_session_with_orders(ws_url(other), trader, ["k1", "k2"])
            other.kill("gateway")  # SIGKILL: no close handshake, no cleanup

        asyncio.run(scenario())
        killed_at = time.monotonic()
        assert order(exchange, trader, "k1")["status"] == "NEW"
        assert wait_for(
            lambda: all(cancelled_on_disconnect(exchange, trader, c) for c in ("k1", "k2")), 10
        )
        # The lease (3 s) plus one round of the firer (0.25 s), with the polling's slack.
        assert time.monotonic() - killed_at < 5.0
    assert wait_for(lambda: exchange.balance(trader.address, "USDC") == (DEPOSIT, 0), 30)
    assert r.zcard(keys.entry_sessions()) == 0
    assert r.keys(keys.entry_session("*")) == []


def test_a_frame_past_the_frame_cap_closes_the_connection_with_1009(exchange: Exchange) -> None:
    async def scenario() -> Any:
        client = await WsClient.connect(ws_url(exchange), max_size=None)
        try:
            # the server may close while the frame is still being written: send raises then
            await client.send({"id": 1, "op": "order", "body": {"pad": "x" * (2 * 1024 * 1024)}})
            await client.receive(10)
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
        return "still open"

    assert asyncio.run(scenario()) == 1009
    assert wait_for(lambda: httpx.get(f"{exchange.http}/v1/health").status_code == 200, 5)


def test_a_gateway_stopped_gracefully_cancels_its_sessions_at_once(
    exchange: Exchange, redis_url: str
) -> None:
    trader = funded(exchange)
    with Exchange(redis_url) as other:
        other.start("gateway")

        async def scenario() -> WsClient:
            return await open_session_with_orders(ws_url(other), trader, ["t1"])

        client = asyncio.run(scenario())  # held (its socket open) until the gateway has stopped
        stopped_at = time.monotonic()
        other.kill("gateway", signal.SIGTERM)  # waits for the process to exit
        assert wait_for(lambda: cancelled_on_disconnect(exchange, trader, "t1"), 5)
        # Well before the 3 s lease: the stopping gateway sent the cancels itself.
        assert time.monotonic() - stopped_at < 2.5
        del client
    assert wait_for(lambda: exchange.balance(trader.address, "USDC") == (DEPOSIT, 0), 30)
