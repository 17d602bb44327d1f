"""The WebSocket order entry's protocol against the real gateway app on a real Redis: the
envelope (400 with the id echoed, or null), 413, ping, the bound on requests in flight, the
bound on connections per address, the address's rate limit shared with REST, and the flood
that closes a connection. The matcher's side is played by ``ReplyingMatcher``; the answers'
equality with REST through the real processes is in test_ws_entry.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from support.gateway import ADMIN, ReplyingMatcher, gateway_client
from support.redis_server import wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader

from common import keys
from common.eip712 import sign
from common.lua import read_script
from services.gateway import wsentry
from services.gateway.transport import LUA_DIR

pytestmark = pytest.mark.integration

SPOT = "BTC-USDC"


@pytest.fixture
def client(redis_url: str) -> Iterator[TestClient]:
    with gateway_client(redis_url) as running:
        yield running


def cancel_all_body(trader: Trader, ts: int) -> dict[str, Any]:
    message = {"userId": trader.address, "market": SPOT, "ts": ts}
    return {**message, "sig": sign(trader.key, "CancelAll", message, CHAIN_ID, VERIFYING_CONTRACT)}


def disconnect_cancels(matcher: ReplyingMatcher) -> list[str]:
    """The users of the cancel_all commands with reason DISCONNECT the matcher received."""
    return [
        c["user"]
        for c in matcher.seen
        if c["op"] == "cancel_all" and c.get("reason") == "DISCONNECT"
    ]


def error(answer: dict[str, Any]) -> tuple[Any, int, str]:
    return answer["id"], answer["status"], answer["body"]["error"]["code"]


def test_malformed_messages_are_answered_400_with_the_id_when_there_is_one(
    client: TestClient,
) -> None:
    cases: list[tuple[str, Any]] = [
        ("not json", None),
        ("[1, 2]", None),
        ('{"op": "order", "body": {}}', None),  # no id
        ('{"id": true, "op": "order", "body": {}}', None),  # an id must be a string or integer
        ('{"id": {"a": 1}, "op": "order", "body": {}}', None),
        ('{"id": ' + str(2**53) + ', "op": "order", "body": {}}', None),
        ('{"id": "' + "x" * 129 + '", "op": "order", "body": {}}', None),
        ('{"id": 7, "op": "withdraw", "body": {}}', 7),  # not an entry op
        ('{"id": 8, "body": {}}', 8),  # no op
        ('{"id": "b", "op": "order", "body": [1]}', "b"),
        ('{"id": "c", "op": "order"}', "c"),
        ('{"id": "w", "op": "order", "body": {}, "wait": 1}', "w"),
        ('{"id": "s", "op": "session", "cancelOnDisconnect": "yes"}', "s"),
        ('{"id": "d", "id": "e", "op": "order", "body": {}}', None),  # a key twice
        ('{"id": "n", "op": "order", "body": {"qty": NaN}}', None),
    ]
    with client.websocket_connect("/v1/ws") as ws:
        for text, echoed in cases:
            ws.send_text(text)
            assert error(ws.receive_json()) == (echoed, 400, "INVALID_REQUEST"), text
        # The connection is still open and answers the next message.
        ws.send_json({"op": "ping", "id": "p"})
        assert ws.receive_json() == {"op": "pong", "id": "p"}


def test_an_empty_order_body_meets_the_rest_checks(client: TestClient) -> None:
    with client.websocket_connect("/v1/ws") as ws:
        ws.send_json({"id": 1, "op": "order", "body": {}})
        answer = ws.receive_json()
    rest = client.post("/v1/orders", json={})
    assert (answer["status"], answer["body"]) == (rest.status_code, rest.json())


def test_a_message_over_64_kib_is_413_and_one_over_the_frame_cap_closes(
    client: TestClient,
) -> None:
    with client.websocket_connect("/v1/ws") as ws:
        padding = "x" * (wsentry.MAX_MESSAGE_BYTES + 1)
        ws.send_text(orjson.dumps({"id": 1, "op": "order", "body": {"pad": padding}}).decode())
        assert error(ws.receive_json()) == (None, 413, "BODY_TOO_LARGE")
        ws.send_json({"op": "ping"})
        assert ws.receive_json() == {"op": "pong"}


def test_one_request_past_the_in_flight_bound_is_refused_at_once(
    client: TestClient, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The matcher never answers, so each cancel_all waits its 5 s: the bound is full."""
    monkeypatch.setattr(wsentry, "MAX_IN_FLIGHT", 4)
    trader = Trader()
    now = int(time.time() * 1000)
    with ReplyingMatcher(redis_url, [SPOT], answer=False), client.websocket_connect("/v1/ws") as ws:
        started = time.monotonic()
        for n in range(5):
            ws.send_json({"id": n, "op": "cancel_all", "body": cancel_all_body(trader, now + n)})
        first = ws.receive_json()
        assert time.monotonic() - started < 2
        assert error(first) == (4, 429, "RATE_LIMITED")
        assert "4 requests already in flight" in first["body"]["error"]["message"]
        rest = [ws.receive_json() for _ in range(4)]
    assert sorted(a["id"] for a in rest) == [0, 1, 2, 3]
    assert {(a["status"], orjson.dumps(a["body"])) for a in rest} == {(202, b'{"cancelled":0}')}


def test_connections_past_the_bound_per_address_are_closed_with_1008(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wsentry, "MAX_CONNECTIONS_PER_ADDRESS", 2)
    with client.websocket_connect("/v1/ws") as one, client.websocket_connect("/v1/ws") as two:
        with (
            client.websocket_connect("/v1/ws") as third,
            pytest.raises(WebSocketDisconnect) as closed,
        ):
            third.receive_json()
        assert closed.value.code == 1008
        assert "at most 2" in closed.value.reason
        for ws in (one, two):
            ws.send_json({"op": "ping"})
            assert ws.receive_json() == {"op": "pong"}
    # Closed connections give their places back.
    with client.websocket_connect("/v1/ws") as again:
        again.send_json({"op": "ping"})
        assert again.receive_json() == {"op": "pong"}


def test_the_address_budget_is_shared_with_rest_and_a_flood_is_closed(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wsentry, "MAX_REFUSALS_IN_A_ROW", 5)
    with gateway_client(redis_url, rate_limit_ip=1) as client:
        # The bucket holds 2: REST spends both, the entry's first message meets an empty one.
        for _ in range(2):
            assert client.post("/v1/orders", json={}).status_code == 400
        rest = client.post("/v1/orders", json={})
        with client.websocket_connect("/v1/ws") as ws:
            ws.send_json({"id": "r", "op": "order", "body": {}})
            answer = ws.receive_json()
            assert (answer["status"], answer["body"]["error"]["code"]) == (429, "RATE_LIMITED")
            assert (rest.status_code, rest.json()["error"]["code"]) == (429, "RATE_LIMITED")
            assert answer["headers"] == {"Retry-After": rest.headers["Retry-After"]}
            for n in range(4):
                ws.send_json({"id": n, "op": "order", "body": {}})
                assert ws.receive_json()["status"] == 429
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
        assert closed.value.code == 1008


def test_a_session_holds_only_accounts_with_an_accepted_request(
    client: TestClient, redis_url: str, r: Any
) -> None:
    """A forged request names the victim but is refused: the session never holds the victim."""
    victim, attacker = Trader(), Trader()
    for trader in (victim, attacker):
        client.post(
            "/v1/admin/deposits",
            json={"userId": trader.address, "asset": "USDC", "amount": 10**9},
            headers=ADMIN,
        )
    forged = attacker.order(SPOT, "BUY", 1_000, 10)
    forged["userId"] = victim.address
    matcher = ReplyingMatcher(redis_url, [SPOT])
    with matcher, client.websocket_connect("/v1/ws") as ws:
        ws.send_json({"id": 1, "op": "session", "cancelOnDisconnect": True})
        assert ws.receive_json() == {
            "id": 1,
            "status": 200,
            "body": {"cancelOnDisconnect": True},
        }
        ws.send_json({"id": 2, "op": "order", "body": forged})
        assert error(ws.receive_json()) == (2, 401, "INVALID_SIGNATURE")
        ws.send_json({"id": 3, "op": "order", "body": attacker.order(SPOT, "BUY", 1_000, 10)})
        assert ws.receive_json()["status"] == 202
        (session,) = r.zrange(keys.entry_sessions(), 0, -1)
        held = r.smembers(keys.entry_session(session))
        assert held == {f"{attacker.address.lower()}|{SPOT}"}
        ws.close()
        # Closed: the attacker's own orders are cancelled, never the victim's.
        assert wait_for(lambda: disconnect_cancels(matcher) == [attacker.address.lower()], 5)
        time.sleep(0.5)
        assert disconnect_cancels(matcher) == [attacker.address.lower()]


def test_a_session_that_lapsed_closes_its_connection_with_4001(
    client: TestClient, redis_url: str, r: Any
) -> None:
    """Another gateway fired the session (its renewals stopped): the client must not go on
    believing it is covered."""
    trader = Trader()
    client.post(
        "/v1/admin/deposits",
        json={"userId": trader.address, "asset": "USDC", "amount": 10**9},
        headers=ADMIN,
    )
    matcher = ReplyingMatcher(redis_url, [SPOT])
    with matcher, client.websocket_connect("/v1/ws") as ws:
        ws.send_json({"id": 1, "op": "order", "body": trader.order(SPOT, "BUY", 1_000, 10)})
        assert ws.receive_json()["status"] == 202
        ws.send_json({"id": 2, "op": "session", "cancelOnDisconnect": True})
        assert ws.receive_json()["status"] == 200
        (session,) = r.zrange(keys.entry_sessions(), 0, -1)
        # Accounts accepted before the flag was turned on are held too.
        assert r.smembers(keys.entry_session(session)) == {f"{trader.address.lower()}|{SPOT}"}
        r.zadd(keys.entry_sessions(), {session: 1})  # its deadline long past
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert wait_for(lambda: disconnect_cancels(matcher) == [trader.address.lower()], 5)
    assert closed.value.code == wsentry.SESSION_LAPSED
    assert "lapsed" in closed.value.reason
    assert r.zcard(keys.entry_sessions()) == 0
    assert r.keys(keys.entry_session("*")) == []


def ws_order_text(body_text: str, request_id: int = 1) -> str:
    return f'{{"id": {request_id}, "op": "order", "body": {body_text}}}'


def test_odd_bodies_are_read_over_websocket_as_rest_reads_them(client: TestClient) -> None:
    """The envelope is read by REST's reader: integers past 64 bits, floats, digit strings, a
    key twice inside the body, colons inside strings, lone surrogates."""
    trader = Trader()
    client.post(
        "/v1/admin/deposits",
        json={"userId": trader.address, "asset": "USDC", "amount": 10**9},
        headers=ADMIN,
    )
    signed = orjson.dumps(trader.order(SPOT, "BUY", 1_000, 10, cid="a:b:c")).decode()
    # (body text, whether the message is read at all: a body the reader refuses as JSON
    # leaves the whole message unread, so its answer has id null)
    refused = [
        (signed.replace('"qty":10', '"qty":' + str(2**70)), True),
        (signed.replace('"qty":10', '"qty":10.0'), True),
        (signed.replace('"qty":10', '"qty":1e1'), True),
        (signed.replace('"qty":10', '"qty":10,"qty":10'), False),
        (signed.replace('"side":"BUY"', '"side":"\\ud800"'), False),
        (signed.replace('"market":"BTC-USDC"', '"market":{"a":1}'), True),
        (signed.replace('"price":1000', '"price":-0'), True),
    ]
    with client.websocket_connect("/v1/ws") as ws:
        for n, (text, read) in enumerate(refused):
            ws.send_text(ws_order_text(text, n))
            answer = ws.receive_json()
            rest = client.post("/v1/orders", content=text)
            assert rest.status_code >= 400, text
            assert (answer["id"], answer["status"], answer["body"]) == (
                n if read else None,
                rest.status_code,
                rest.json(),
            ), text
        # A digit string for an integer signs as the integer: accepted (clientOrderId with
        # colons), then the same order is a 409 on either road.
        accepted = signed.replace('"qty":10', '"qty":"10"')
        ws.send_text(ws_order_text(accepted, 100))
        assert ws.receive_json()["status"] == 202
        rest = client.post("/v1/orders", content=signed)
        ws.send_text(ws_order_text(signed, 101))
        answer = ws.receive_json()
    assert (answer["status"], answer["body"]) == (rest.status_code, rest.json())
    assert answer["body"]["error"]["code"] == "DUPLICATE"


def test_the_users_budget_is_shared_with_rest(redis_url: str) -> None:
    trader = Trader()
    with gateway_client(redis_url, rate_limit_user=1) as client:
        client.post(
            "/v1/admin/deposits",
            json={"userId": trader.address, "asset": "USDC", "amount": 10**9},
            headers=ADMIN,
        )
        # The bucket holds 2: REST spends both on accepted orders.
        for _ in range(2):
            assert (
                client.post("/v1/orders", json=trader.order(SPOT, "BUY", 1_000, 1)).status_code
                == 202
            )
        rest = client.post("/v1/orders", json=trader.order(SPOT, "BUY", 1_000, 1))
        with client.websocket_connect("/v1/ws") as ws:
            ws.send_json({"id": "u", "op": "order", "body": trader.order(SPOT, "BUY", 1_000, 1)})
            answer = ws.receive_json()
    assert (rest.status_code, rest.json()["error"]["code"]) == (429, "RATE_LIMITED")
    assert (answer["status"], answer["body"]["error"]["code"]) == (429, "RATE_LIMITED")
    assert answer["headers"] == {"Retry-After": rest.headers["Retry-After"]}


def test_an_account_a_lapsed_session_cannot_hold_is_still_answered_and_then_cancelled(
    client: TestClient, redis_url: str, r: Any
) -> None:
    """The session was fired and removed by another gateway before this order's account could
    join: the order's answer stands, the connection closes (4001), and its end cancels it."""
    first, second = Trader(), Trader()
    for trader in (first, second):
        client.post(
            "/v1/admin/deposits",
            json={"userId": trader.address, "asset": "USDC", "amount": 10**9},
            headers=ADMIN,
        )
    matcher = ReplyingMatcher(redis_url, [SPOT])
    with matcher:
        with client.websocket_connect("/v1/ws") as ws:
            ws.send_json({"id": 1, "op": "session", "cancelOnDisconnect": True})
            assert ws.receive_json()["status"] == 200
            ws.send_json({"id": 2, "op": "order", "body": first.order(SPOT, "BUY", 1_000, 10)})
            assert ws.receive_json()["status"] == 202
            (session,) = r.zrange(keys.entry_sessions(), 0, -1)
            r.delete(keys.entry_sessions(), keys.entry_session(session))
            ws.send_json({"id": 3, "op": "order", "body": second.order(SPOT, "BUY", 1_000, 10)})
            assert ws.receive_json()["status"] == 202
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == wsentry.SESSION_LAPSED
        everyone = sorted(t.address.lower() for t in (first, second))
        assert wait_for(lambda: sorted(disconnect_cancels(matcher)) == everyone, 15)


def test_session_scripts_never_lose_a_renewal_nor_revive_a_fired_session(r: Any) -> None:
    """session_clear.lua after a firer's cancels: a renewal that landed in between keeps the
    session, a firer killed before it leaves the session to the next round (which clears it
    once); session_join.lua adds nothing to a session that is gone."""
    clear = r.register_script(read_script(str(LUA_DIR), "session_clear"))
    join = r.register_script(read_script(str(LUA_DIR), "session_join"))
    sessions_key, members_key = keys.entry_sessions(), keys.entry_session("s1")
    both = [sessions_key, members_key]
    r.zadd(sessions_key, {"s1": 2_000})
    assert join(keys=both, args=["s1", "0xabc|BTC-USDC", "0xabc|"]) == 1
    assert clear(keys=both, args=["s1", 1_000]) == 0  # renewed from 1000 to 2000: kept
    assert r.zscore(sessions_key, "s1") == 2_000
    assert r.scard(members_key) == 2
    assert clear(keys=both, args=["s1", 2_000]) == 1
    assert clear(keys=both, args=["s1", 2_000]) == 0  # a second firer: nothing to do
    assert join(keys=both, args=["s1", "0xdef|BTC-USDC"]) == 0  # gone: not stood up again
    assert (r.zcard(sessions_key), r.exists(members_key)) == (0, 0)
    # Its own gateway closing it removes it whatever its deadline.
    r.zadd(sessions_key, {"s1": 5_000})
    assert join(keys=both, args=["s1", "0xabc|"]) == 1
    assert clear(keys=both, args=["s1", ""]) == 1
    assert (r.zcard(sessions_key), r.exists(members_key)) == (0, 0)
