"""The ``stream-200k`` order stream (``../shared/data/bench``) and the markets it is replayed on.

Every order is a GTC limit order of its own user (the stream's reference figures assume no
self-trade rules), sent as the matcher's ``order`` command on a zero-fee, unit-scaled market.
"""

from __future__ import annotations

import csv

import orjson

from lib import REPO_ROOT

STREAM = REPO_ROOT.parent / "shared" / "data" / "bench" / "stream-200k.csv"
MARKET = "BENCH-SPOT"
LATENCY_MARKET = "LAT-SPOT"
MARKETS_YAML = """
assets:
  USD: {decimals: 0}
  XYZ: {decimals: 0}
markets:
  BENCH-SPOT:
    {product: SPOT, base: XYZ, quote: USD, priceScale: 0, qtyScale: 0,
     tickSize: 1, lotSize: 1, minQty: 1, makerFeeBps: 0, takerFeeBps: 0, indexPrice: 100}
  LAT-SPOT:
    {product: SPOT, base: XYZ, quote: USD, priceScale: 0, qtyScale: 0,
     tickSize: 1, lotSize: 1, minQty: 1, makerFeeBps: 0, takerFeeBps: 0, indexPrice: 100}
"""


def load_stream(limit: int) -> list[tuple[str, str, int, int]]:
    """The first ``limit`` orders as (id, side, price, qty)."""
    with STREAM.open() as handle:
        rows = list(csv.DictReader(handle))[:limit]
    return [
        (r["id"], "BUY" if r["side"] == "B" else "SELL", int(r["price"]), int(r["qty"]))
        for r in rows
    ]


def command(order_id: str, side: str, price: int, qty: int) -> bytes:
    """The matcher's ``order`` command for one order of the stream."""
    # one user per order: the reference figures assume no self-trade rules
    return orjson.dumps({
        "op": "order", "user": f"u{order_id}", "cid": order_id, "side": side, "type": "LIMIT",
        "price": price, "qty": qty, "tif": "GTC", "reduceOnly": False, "expiresAt": 0, "ts": 1,
        "reserved": 0, "acceptedAt": 1,
    })  # fmt: skip
