"""Messages signed by ethers.js v6 ``signTypedData`` are accepted by the gateway.

The vectors were made once by tests/fixtures/ethers/make_vectors.mjs (its header says how to
regenerate them); their ``ts`` is fixed, so the window is widened for this test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.gateway import ADMIN, ReplyingMatcher, gateway_client
from support.redis_server import wait_for

from common.markets import load_markets
from common.settings import DEFAULT_MARKETS_FILE

pytestmark = pytest.mark.integration

VECTORS = Path(__file__).resolve().parents[1] / "fixtures" / "ethers" / "vectors.json"
WIDE_WINDOW_MS = 10**13


def vectors(primary: str | None = None) -> list[dict[str, Any]]:
    data = json.loads(VECTORS.read_text())
    assert data["ethersVersion"].startswith("6.")
    return [v for v in data["vectors"] if primary is None or v["primaryType"] == primary]


def body(vector: dict[str, Any]) -> dict[str, Any]:
    return {**vector["message"], "sig": vector["sig"]}


def test_ethers_signed_orders_cancels_and_withdrawals_are_accepted(redis_url: str) -> None:
    markets = list(load_markets(DEFAULT_MARKETS_FILE).markets)
    with (
        gateway_client(redis_url, signature_max_age_ms=WIDE_WINDOW_MS) as client,
        ReplyingMatcher(redis_url, markets),
    ):
        addresses = {v["address"] for v in vectors()}
        for address in addresses:
            for asset, amount in (("USDC", 10**10), ("BTC", 10**8)):
                response = client.post(
                    "/v1/admin/deposits",
                    json={"userId": address, "asset": asset, "amount": amount},
                    headers=ADMIN,
                )
                assert response.status_code == 200
        orders = vectors("Order") + vectors("OrderV2") + vectors("OrderV3") + vectors("OrderV4")
        assert len(orders) == 10
        for vector in orders:
            response = client.post("/v1/orders", json=body(vector))
            assert response.status_code == 202, (vector["message"], response.text)
        for vector in vectors("Withdraw"):
            response = client.post("/v1/withdrawals", json=body(vector))
            assert response.status_code == 200, response.text
            assert response.json()["userId"] == vector["address"].lower()
        for vector in vectors("Cancel"):
            response = client.post("/v1/orders/cancel", json=body(vector))
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "CXL"
        for vector in vectors("CancelAll"):
            response = client.post("/v1/orders/cancel-all", json=body(vector))
            assert response.status_code == 200, response.text
            # the PERP order, the MARKET one, the OrderV3 and the OrderV4 (the stand-in
            # matcher rests every order)
            assert response.json() == {"cancelled": 4}


def test_ethers_signed_batches_are_accepted(redis_url: str) -> None:
    """A Batch holds an array of BatchAction structs (and an int256, -1 in an AMEND): ethers
    signs it as the gateway verifies it, and its AMEND is applied after the PLACE before it."""
    markets = list(load_markets(DEFAULT_MARKETS_FILE).markets)
    with (
        gateway_client(redis_url, signature_max_age_ms=WIDE_WINDOW_MS) as client,
        ReplyingMatcher(redis_url, markets) as matcher,
    ):
        batches = vectors("Batch")
        assert [v["message"]["atomic"] for v in batches] == [True, False]
        for vector in batches:
            for asset, amount in (("USDC", 10**10), ("BTC", 10**8)):
                response = client.post(
                    "/v1/admin/deposits",
                    json={"userId": vector["address"], "asset": asset, "amount": amount},
                    headers=ADMIN,
                )
                assert response.status_code == 200
        answers = []
        for vector in batches:
            response = client.post("/v1/orders/batch", json=body(vector))
            assert response.status_code == 200, (vector["message"], response.text)
            answers.append([r["status"] for r in response.json()["results"]])
        # the second one's CANCEL names no order; its AMEND amends the order its PLACE placed
        assert answers == [[202, 202], [202, 404, 202]]
        amended = batches[1]["message"]["actions"][2]
        assert wait_for(lambda: any(c["op"] == "amend" for c in matcher.seen), 10)
        command = next(c for c in matcher.seen if c["op"] == "amend")
        assert (command["cid"], command["price"], command["qty"], command["expectedFilled"]) == (
            amended["clientOrderId"],
            amended["price"],
            amended["qty"],
            -1,
        )
        assert [c["op"] for c in matcher.seen if c["cid"] == amended["clientOrderId"]] == [
            "order",
            "amend",
        ]
        tampered = {**body(batches[0]), "actions": batches[0]["message"]["actions"][:1]}
        response = client.post("/v1/orders/batch", json=tampered)
        assert response.status_code == 401


def test_a_tampered_ethers_order_is_refused(redis_url: str) -> None:
    with gateway_client(redis_url, signature_max_age_ms=WIDE_WINDOW_MS) as client:
        vector = vectors("OrderV2")[0]
        tampered = {**body(vector), "qty": vector["message"]["qty"] + 1}
        response = client.post("/v1/orders", json=tampered)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "INVALID_SIGNATURE"


def test_an_ethers_signed_cancel_replace_is_accepted(redis_url: str) -> None:
    markets = list(load_markets(DEFAULT_MARKETS_FILE).markets)
    with (
        gateway_client(redis_url, signature_max_age_ms=WIDE_WINDOW_MS) as client,
        ReplyingMatcher(redis_url, markets) as matcher,
    ):
        replaces = vectors("CancelReplace")
        assert len(replaces) == 2
        for vector in replaces:
            response = client.post(
                "/v1/admin/deposits",
                json={"userId": vector["address"], "asset": "USDC", "amount": 10**10},
                headers=ADMIN,
            )
            assert response.status_code == 200
            old = next(
                v
                for v in vectors("Order")
                if v["message"]["clientOrderId"] == vector["message"]["cancelClientOrderId"]
            )
            assert client.post("/v1/orders", json=body(old)).status_code == 202
            response = client.post("/v1/orders/cancel-replace", json=body(vector))
            assert response.status_code == 200, response.text
            assert response.json()["order"]["clientOrderId"] == vector["message"]["clientOrderId"]
        sent = [c for c in matcher.seen if "replaces" in c]
        assert [c["replaces"] for c in sent] == ["ethers-0-limit", "ethers-1-limit"]


def test_ethers_signed_amends_are_verified(redis_url: str) -> None:
    """An Amend (int256 expectedFilled: -1, and a guard that finds 0 filled, not 250)."""
    markets = list(load_markets(DEFAULT_MARKETS_FILE).markets)
    with (
        gateway_client(redis_url, signature_max_age_ms=WIDE_WINDOW_MS) as client,
        ReplyingMatcher(redis_url, markets),
    ):
        for vector in vectors("Order"):
            response = client.post(
                "/v1/admin/deposits",
                json={"userId": vector["address"], "asset": "USDC", "amount": 10**10},
                headers=ADMIN,
            )
            assert response.status_code == 200
            assert client.post("/v1/orders", json=body(vector)).status_code == 202
        unguarded, guarded = vectors("Amend")
        response = client.post("/v1/orders/amend", json=body(unguarded))
        assert response.status_code == 200, response.text
        assert (response.json()["price"], response.json()["qty"]) == (3000100, 500)
        response = client.post("/v1/orders/amend", json=body(guarded))
        assert (response.status_code, response.json()["error"]["code"]) == (409, "FILLED_CHANGED")
        tampered = {**body(unguarded), "expectedFilled": 0}
        response = client.post("/v1/orders/amend", json=tampered)
        assert (response.status_code, response.json()["error"]["code"]) == (
            401,
            "INVALID_SIGNATURE",
        )
