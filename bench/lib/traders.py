"""The benchmarks' traders: deterministic keys, orders signed the way a fast client signs, and
their deposits.

The load generators pre-sign their orders, so signing speed decides how long a run takes to
prepare; ``sign_fast`` signs the EIP-712 digest with coincurve directly, the same bytes
eth-account would produce, for the test suite's domain (``support.signing``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any, NamedTuple

import httpx
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


def verifier() -> Verifier:
    """The verifier of the test suite's domain (``support.signing``), which the benchmarks
    sign for."""
    # Here, not at the top: it imports eth-account (~0.5 s of CPU), which the sender processes,
    # importing their entry point again, would otherwise spend while the run is measured.
    from support.signing import CHAIN_ID, VERIFYING_CONTRACT

    return Verifier(CHAIN_ID, VERIFYING_CONTRACT)


def sign_fast(verifier: Verifier, key: PrivateKey, primary: str, message: dict[str, Any]) -> str:
    """The 65-byte signature of ``message`` as 0x-hex, v = 27/28."""
    signature = key.sign_recoverable(verifier.digest(primary, message), hasher=None)
    return "0x" + signature[:64].hex() + format(signature[64] + 27, "02x")


def fund(gateway: str, token: str, traders: Iterable[Trader], amounts: dict[str, int]) -> None:
    """Deposit ``amounts`` (asset -> smallest units) for every trader through the admin API."""
    with httpx.Client(base_url=gateway, timeout=30) as client:
        for trader in traders:
            for asset, amount in amounts.items():
                client.post(
                    "/v1/admin/deposits",
                    json={"userId": trader.address, "asset": asset, "amount": str(amount)},
                    headers={"Authorization": f"Bearer {token}"},
                ).raise_for_status()
