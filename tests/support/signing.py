"""Build and sign orders the way a client would (eip712.sign is eth-account underneath)."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account

from common.eip712 import sign

CHAIN_ID = 1
VERIFYING_CONTRACT = "0x0000000000000000000000000000000000000000"
_counter = itertools.count(1)


@dataclass
class Trader:
    """A key pair that signs orders for the default test domain."""

    key: str = field(default_factory=lambda: Account.create().key.hex())

    @property
    def address(self) -> str:
        return Account.from_key(self.key).address

    def order(
        self,
        market: str,
        side: str,
        price: int,
        qty: int,
        *,
        product: str = "SPOT",
        type: str = "LIMIT",
        cid: str | None = None,
        **v2: Any,
    ) -> dict[str, Any]:
        """A signed order body: the seed ``Order`` type, or ``OrderV2`` if v2 fields are given."""
        message: dict[str, Any] = {
            "clientOrderId": cid or f"c{next(_counter)}-{time.time_ns()}",
            "userId": self.address,
            "market": market,
            "side": side,
            "type": type,
            "price": price,
            "qty": qty,
            "product": product,
            "ts": int(time.time() * 1000),
        }
        primary = "Order"
        if v2:
            primary = "OrderV2"
            message |= {
                "timeInForce": v2.get("timeInForce", "GTC"),
                "reduceOnly": v2.get("reduceOnly", False),
                "expiresAt": v2.get("expiresAt", 0),
            }
        message["sig"] = sign(self.key, primary, message, CHAIN_ID, VERIFYING_CONTRACT)
        return message
