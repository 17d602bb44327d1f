"""The matcher's order record in its compact shape (fields ``d``, ``a``, ``u``, ``c``), the
earlier packed one (field ``d`` alone) and the earlier flat one."""

from __future__ import annotations

from common.order_reads import order_view, record_fields

FLAT = {
    "clientOrderId": "c|1", "userId": "0xab", "market": "BTC-USDC", "side": "BUY",
    "type": "LIMIT", "timeInForce": "GTC", "reduceOnly": "1", "expiresAt": "0",
    "price": "3000000", "qty": "5", "filled": "2", "status": "PARTIAL", "reason": "",
    "ts": "11", "updatedTs": "12", "aseq": "7", "reserved": "99",
}  # fmt: skip
PACKED = {
    "d": "BUY|LIMIT|GTC|1|0|3000000|11|7|99|0|BTC-USDC|0xab|c|1",
    "qty": "5", "filled": "2", "status": "PARTIAL", "reason": "", "updatedTs": "12",
}  # fmt: skip

COMPACT = {
    "d": "BUY|LIMIT|GTC|1|0|3000000|11", "a": "7|99|0|BTC-USDC", "u": "0xab", "c": "c|1",
    "qty": "5", "filled": "2", "status": "PARTIAL", "reason": "", "updatedTs": "12",
}  # fmt: skip


def test_every_shape_gives_the_same_rest_order() -> None:
    view = order_view(PACKED)
    assert view == order_view(FLAT) == order_view(COMPACT)
    assert record_fields(COMPACT) == record_fields(PACKED)
    assert view["clientOrderId"] == "c|1" and view["reduceOnly"] is True
    assert (view["price"], view["qty"], view["filled"], view["updatedTs"]) == (3000000, 5, 2, 12)


def test_packed_fields_expand_and_mutable_fields_win() -> None:
    flat = record_fields(PACKED)
    assert {k: flat[k] for k in FLAT} == FLAT
    assert flat["liquidation"] == "0"
    # an HMGET of some fields: the ones not asked for are None and do not hide the packed ones
    partial = record_fields({"status": "NEW", "side": None, "d": PACKED["d"]})
    assert (partial["status"], partial["side"], partial["aseq"]) == ("NEW", "BUY", "7")
    assert record_fields({"status": "NEW", "side": "SELL", "d": None})["side"] == "SELL"
