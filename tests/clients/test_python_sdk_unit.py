"""The Python SDK without a server: its signatures are ethers v6's to the byte, its type table
and error classes mirror the exchange's declarations, and it imports nothing of the exchange."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from orderbookdex import BUILTIN_TYPES, Signer, errors
from orderbookdex.client import BatchAction
from orderbookdex.models import Balance, Depth, Order, Ticker

from common.eip712 import types_for_info
from services.gateway.errors import ErrorCode

ETHERS = Path(__file__).resolve().parents[1] / "fixtures" / "ethers"


def _ethers_keys() -> dict[str, str]:
    """Address -> private key of the keys make_vectors.mjs signs with."""
    source = (ETHERS / "make_vectors.mjs").read_text()
    keys = re.findall(r'"(0x[0-9a-f]{64})"', source)
    return {Signer(key).address: key for key in keys}


def test_every_ethers_vector_is_signed_to_the_same_bytes() -> None:
    data = json.loads((ETHERS / "vectors.json").read_text())
    keys = _ethers_keys()
    primaries = set()
    for vector in data["vectors"]:
        signer = Signer(keys[vector["address"]], data["domain"])
        assert signer.sign(vector["primaryType"], vector["message"]) == vector["sig"], vector
        primaries.add(vector["primaryType"])
    assert primaries == set(BUILTIN_TYPES) - {"EIP712Domain", "BatchAction"}


def test_the_builtin_type_table_is_the_one_the_exchange_publishes() -> None:
    """Every type the SDK carries is the exchange's to the field; a type the exchange adds
    later is signed from GET /v1/info at run time (Client.signer), so it may be missing here."""
    published = types_for_info()
    assert {name: published.get(name) for name in BUILTIN_TYPES} == BUILTIN_TYPES


def test_every_error_code_of_the_exchange_has_its_class_in_its_status_family() -> None:
    family = {
        400: errors.InvalidRequest,
        401: errors.InvalidSignature,
        403: errors.Forbidden,
        404: errors.NotFound,
        409: errors.Conflict,
        413: errors.BodyTooLarge,
        422: errors.Unprocessable,
        429: errors.RateLimited,
        500: errors.InternalError,
        503: errors.ServiceUnavailable,
    }
    for code in ErrorCode:
        assert code.value in errors.CODE_CLASSES, f"{code.value} has no class of its own"
        cls = errors.error_class(code.value, code.status)
        assert issubclass(cls, family[code.status]), code
        with pytest.raises(cls) as raised:
            errors.raise_for_error(
                code.status, {"error": {"code": code.value, "message": "m"}}, {"Retry-After": "2"}
            )
        assert (raised.value.code, raised.value.status, raised.value.message) == (
            code.value,
            code.status,
            "m",
        )
        assert raised.value.retry_after == 2.0
    # A code this client does not know yet still raises its status's family.
    with pytest.raises(errors.Unprocessable) as raised:
        errors.raise_for_error(422, {"error": {"code": "SOMETHING_NEW", "message": "x"}})
    assert raised.value.code == "SOMETHING_NEW"
    errors.raise_for_error(202, {"clientOrderId": "c", "status": "ACCEPTED"})


def test_results_hold_integers_never_floats() -> None:
    balance = Balance.from_json({"total": "9007199254740993", "available": "1", "locked": "0"})
    assert balance.total == 2**53 + 1
    depth = Depth.from_json({"market": "M", "seq": 7, "bids": [[10, "5"]], "asks": []})
    assert depth.bids == [(10, 5)]
    ticker = Ticker.from_json({"last": None, "volume24h": "12", "status": "OPEN"})
    assert (ticker.last, ticker.volume_24h) == (None, 12)
    with pytest.raises(ValueError):
        Order.from_json(
            {
                "clientOrderId": "c",
                "userId": "u",
                "market": "M",
                "side": "BUY",
                "type": "LIMIT",
                "price": 1.5,
                "qty": 1,
                "status": "NEW",
            }
        )


def test_a_signer_refuses_what_the_gateway_would_refuse() -> None:
    signer = Signer("0x" + "11" * 32)
    message = {"userId": signer.address, "market": "M", "clientOrderId": "c", "ts": 1}
    with pytest.raises(ValueError, match="missing field 'ts'"):
        signer.sign("Cancel", {k: v for k, v in message.items() if k != "ts"})
    with pytest.raises(ValueError, match="expected an integer"):
        signer.sign("Cancel", {**message, "ts": 1.0})
    with pytest.raises(ValueError, match="unknown primary type"):
        signer.sign("Nope", message)
    action = BatchAction.cancel("M", "c").to_json()
    batch = {"userId": signer.address, "atomic": "yes", "actions": [action], "ts": 1}
    with pytest.raises(ValueError, match="expected a bool"):
        signer.sign("Batch", batch)


def test_the_sdk_imports_nothing_of_the_exchange() -> None:
    code = (
        "import sys, orderbookdex, orderbookdex.cli\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('common', 'services'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def test_an_order_type_the_server_adds_later_is_signed_from_its_published_fields() -> None:
    """OrderV4 (trigger orders) as the trigger-order work publishes it: the client picks it
    for a trigger field, fills the fields not given with blanks, and the signature recovers."""
    from eth_account import Account
    from eth_account.messages import encode_typed_data
    from orderbookdex import Client

    v4 = [*BUILTIN_TYPES["OrderV3"]] + [
        {"name": n, "type": t}
        for n, t in (
            ("triggerPrice", "uint256"),
            ("triggerSource", "string"),
            ("trailingDelta", "uint256"),
            ("trailingUnit", "string"),
            ("closePosition", "bool"),
            ("takeProfitPrice", "uint256"),
            ("stopLossPrice", "uint256"),
        )
    ]
    key = "0x" + "22" * 32
    client = Client("http://127.0.0.1:9", key=key)
    client._info = {
        "domain": {**data_domain(), "chainId": 7},
        "types": {**BUILTIN_TYPES, "OrderV4": v4},
        "markets": [{"symbol": "BTC-PERP", "product": "PERP"}],
    }
    assert client.order_type_for({"clientOrderId", "price"}) == "Order"
    assert client.order_type_for({"timeInForce"}) == "OrderV2"
    body = client.build_order(
        "BTC-PERP", "SELL", 1000, 0, type="STOP_MARKET", reduce_only=True, triggerPrice=2900000
    )
    assert (body["triggerPrice"], body["triggerSource"], body["closePosition"]) == (
        2900000,
        "",
        False,
    )
    assert (body["reduceOnly"], body["selfTradePrevention"], body["product"]) == (True, "", "PERP")
    message = {f["name"]: body[f["name"]] for f in v4}
    signable = encode_typed_data(
        full_message={
            "types": {"EIP712Domain": BUILTIN_TYPES["EIP712Domain"], "OrderV4": v4},
            "primaryType": "OrderV4",
            "domain": client._info["domain"],
            "message": message,
        }
    )
    assert Account.recover_message(signable, signature=body["sig"]) == Account.from_key(key).address
    client.close()


def data_domain() -> dict[str, object]:
    return dict(json.loads((ETHERS / "vectors.json").read_text())["domain"])


def test_the_feed_reconnects_with_exponential_backoff_and_full_jitter(monkeypatch: Any) -> None:
    """Connections refused: each wait is drawn from [0, 0.1 s × 2^n], capped at backoff_max."""
    import asyncio
    import random

    from orderbookdex import stream as stream_module

    ceilings: list[float] = []

    def refuse(*_: object, **__: object) -> Any:
        raise OSError("connection refused")

    def jitter(low: float, high: float) -> float:
        ceilings.append(high)
        return 0.0

    monkeypatch.setattr(stream_module.websockets, "connect", refuse)
    monkeypatch.setattr(random, "uniform", jitter)

    async def run() -> None:
        feed = stream_module.MarketStream("ws://127.0.0.1:9/ws", backoff_max=1.0)
        feed.book("BTC-USDC")
        feed.start()
        while len(ceilings) < 8:
            await asyncio.sleep(0)
        await feed.close()
        assert feed.connects == 0 and not feed.book("BTC-USDC").synced

    asyncio.run(run())
    assert ceilings[:6] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_trigger_helpers_sign_order_v4_bodies_with_the_fields_they_name() -> None:
    """place_stop / place_take_profit / place_trailing_stop / place(take_profit_price=...) and
    closePosition build OrderV4 bodies: the type picked from the price, the trigger fields
    set, every other field blank; build_twap and build_set_leverage sign their own types."""
    from orderbookdex import Client

    key = "0x" + "33" * 32
    client = Client("http://127.0.0.1:9", key=key)
    client._info = {
        "domain": data_domain(),
        "types": BUILTIN_TYPES,
        "markets": [{"symbol": "BTC-PERP", "product": "PERP"}],
    }
    sent: list[dict[str, Any]] = []
    client.send_order = lambda body, wait=False: sent.append(dict(body)) or body  # type: ignore[method-assign]
    client.place_stop("BTC-PERP", "SELL", 1000, 2_900_000)
    client.place_stop("BTC-PERP", "SELL", 1000, 2_900_000, 2_890_000, trigger_source="MARK")
    client.place_take_profit("BTC-PERP", "SELL", 0, 3_100_000, close_position=True)
    client.place_trailing_stop("BTC-PERP", "SELL", 1000, 50, "TICKS")
    client.place("BTC-PERP", "BUY", 1000, 3_000_000, take_profit_price=3_100_000, stop_loss_price=1)
    client.place("BTC-PERP", "BUY", 1000, 3_000_000)
    picked = [
        (b["type"], b.get("triggerPrice"), b.get("triggerSource"), b.get("trailingDelta"))
        for b in sent
    ]
    assert picked == [
        ("STOP_MARKET", 2_900_000, "", 0),
        ("STOP_LIMIT", 2_900_000, "MARK", 0),
        ("TAKE_PROFIT_MARKET", 3_100_000, "", 0),
        ("TRAILING_STOP_MARKET", 0, "", 50),
        ("LIMIT", 0, "", 0),
        ("LIMIT", None, None, None),  # no trigger field: the seed Order, as before
    ]
    assert (sent[2]["closePosition"], sent[2]["qty"], sent[3]["trailingUnit"]) == (True, 0, "TICKS")
    assert (sent[4]["takeProfitPrice"], sent[4]["stopLossPrice"]) == (3_100_000, 1)
    v4 = client.signer.fields("OrderV4")
    for body in sent[:5]:
        assert set(body) == {f["name"] for f in v4} | {"sig"}
        assert body["sig"] == client.signer.sign("OrderV4", body)
    twap = client.build_twap("BTC-PERP", "BUY", 600, 10, client_order_id="t-1")
    assert (twap["slippageBps"], twap["randomize"], twap["reduceOnly"]) == (50, False, False)
    assert twap["sig"] == client.signer.sign("Twap", twap)
    leverage = client.build_set_leverage("BTC-PERP", 2000)
    assert leverage["sig"] == client.signer.sign("SetLeverage", leverage)
    client.close()
