"""The benchmarks' traders: deterministic keys, and orders signed the way a fast client signs.

Both load generators pre-sign their orders, so signing speed decides how long a run takes to
prepare; ``sign_fast`` signs the EIP-712 digest with coincurve directly, the same bytes
eth-account would produce.
"""

from __future__ import annotations

import random
from typing import Any, NamedTuple

from coincurve import PrivateKey

from common.eip712 import Verifier


class Trader(NamedTuple):
    key: PrivateKey
    address: str


def make_traders(count: int, rng: random.Random) -> list[Trader]:
    """``count`` traders whose keys come from ``rng`` (the same seed, the same traders)."""
    from eth_account import Account

    traders = []
    for _ in range(count):
        secret = rng.randbytes(32)
        traders.append(Trader(PrivateKey(secret), Account.from_key(secret).address))
    return traders


def sign_fast(verifier: Verifier, key: PrivateKey, primary: str, message: dict[str, Any]) -> str:
    """The 65-byte signature of ``message`` as 0x-hex, v = 27/28."""
    signature = key.sign_recoverable(verifier.digest(primary, message), hasher=None)
    return "0x" + signature[:64].hex() + format(signature[64] + 27, "02x")
