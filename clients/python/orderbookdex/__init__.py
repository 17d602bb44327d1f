"""OrderBookDEX's Python client: signing, REST, WebSocket order entry and a synced book.

- ``Client``: every REST endpoint, typed results (``models``), typed errors (``errors``).
- ``Signer``: EIP-712 signing of any published primary type, with eth-account.
- ``MarketStream`` / ``OrderBook``: the broadcaster's feed, reconnecting, a book kept by seq.
- ``OrderEntry``: the gateway's WebSocket order entry.
- The ``dex`` command line (``orderbookdex.cli``).

It imports nothing of the exchange's own code: the contract (API.md, docs/api.md) is the
interface.
"""

from orderbookdex import models
from orderbookdex.client import BatchAction, Client, new_client_order_id, now_ms
from orderbookdex.entry import OrderEntry
from orderbookdex.errors import DexError
from orderbookdex.models import *  # noqa: F403 (the result types: models.__all__, once)
from orderbookdex.signing import BUILTIN_TYPES, Signer
from orderbookdex.stream import MarketStream, OrderBook

__all__ = [
    "BUILTIN_TYPES",
    "BatchAction",
    "Client",
    "DexError",
    "MarketStream",
    "OrderBook",
    "OrderEntry",
    "Signer",
    "new_client_order_id",
    "now_ms",
]
__all__ += models.__all__
