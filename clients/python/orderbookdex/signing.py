"""EIP-712 signing of the exchange's primary types (API.md §4), with eth-account.

The types are data, not code: ``Signer`` signs any primary type of a type table in the shape
``GET /v1/info`` publishes (``{name: [{"name", "type"}, ...]}``), flat or holding an array of
one member struct. ``Client`` hands it the table the server publishes, so a type the server
adds later (an ``OrderV4``, say) is signable without a new release; ``BUILTIN_TYPES`` is a copy
of today's table for signing offline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["BUILTIN_TYPES", "DEFAULT_DOMAIN", "Signer", "blank_value"]

TypeTable = Mapping[str, list[dict[str, str]]]

DEFAULT_DOMAIN: dict[str, Any] = {
    "name": "OrderBookDEX",
    "version": "1",
    "chainId": 1,
    "verifyingContract": "0x0000000000000000000000000000000000000000",
}


def _fields(spec: str) -> list[dict[str, str]]:
    """``"a string, b uint256"`` -> ``[{"name": "a", "type": "string"}, ...]``."""
    out = []
    for part in spec.split(","):
        name, type_ = part.split()
        out.append({"name": name, "type": type_})
    return out


_ORDER = (
    "clientOrderId string, userId string, market string, side string, type string, "
    "price uint256, qty uint256, product string, ts uint256"
)
_V2 = _ORDER + ", timeInForce string, reduceOnly bool, expiresAt uint256"

BUILTIN_TYPES: dict[str, list[dict[str, str]]] = {
    "EIP712Domain": _fields(
        "name string, version string, chainId uint256, verifyingContract address"
    ),
    "Order": _fields(_ORDER),
    "OrderV2": _fields(_V2),
    "Cancel": _fields("userId string, market string, clientOrderId string, ts uint256"),
    "CancelAll": _fields("userId string, market string, ts uint256"),
    "Withdraw": _fields("userId string, asset string, amount uint256, ts uint256"),
    "ApproveAgent": _fields(
        "userId string, agent string, name string, scope string, markets string, "
        "expiresAt uint256, ts uint256"
    ),
    "RevokeAgent": _fields("userId string, agent string, ts uint256"),
    "ScheduleCancel": _fields("userId string, market string, deadline uint256, ts uint256"),
    "CancelReplace": _fields(_V2 + ", cancelClientOrderId string"),
    "Amend": _fields(
        "userId string, market string, clientOrderId string, price uint256, qty uint256, "
        "expectedFilled int256, ts uint256"
    ),
    "OrderV3": _fields(_V2 + ", selfTradePrevention string"),
    "OrderV4": _fields(
        _V2 + ", selfTradePrevention string, triggerPrice uint256, triggerSource string, "
        "trailingDelta uint256, trailingUnit string, closePosition bool, "
        "takeProfitPrice uint256, stopLossPrice uint256"
    ),
    "SetLeverage": _fields("userId string, market string, initialMarginBps uint256, ts uint256"),
    "Twap": _fields(
        "userId string, market string, clientOrderId string, side string, qty uint256, "
        "durationMinutes uint256, randomize bool, slippageBps uint256, reduceOnly bool, ts uint256"
    ),
    "Batch": _fields("userId string, atomic bool, actions BatchAction[], ts uint256"),
    "BatchAction": _fields(
        "kind string, market string, clientOrderId string, side string, type string, "
        "price uint256, qty uint256, timeInForce string, reduceOnly bool, expiresAt uint256, "
        "expectedFilled int256"
    ),
}


def blank_value(type_: str) -> Any:
    """The value a field of ``type_`` holds when unused: ``""``, ``0`` or ``False``."""
    if type_ == "string":
        return ""
    if type_ == "bool":
        return False
    if type_.startswith(("uint", "int")):
        return 0
    raise ValueError(f"no blank value for EIP-712 type {type_!r}")


class Signer:
    """Signs messages of a type table for one domain with one private key."""

    def __init__(
        self,
        private_key: str | bytes,
        domain: Mapping[str, Any] | None = None,
        types: TypeTable | None = None,
    ) -> None:
        from eth_account import Account  # imported here: a read-only client never pays for it

        self._account = Account.from_key(private_key)
        self.domain: dict[str, Any] = dict(domain or DEFAULT_DOMAIN)
        self.types: dict[str, list[dict[str, str]]] = {
            name: list(fields) for name, fields in (types or BUILTIN_TYPES).items()
        }

    @property
    def address(self) -> str:
        """The EIP-55 address of the key."""
        return str(self._account.address)

    def fields(self, primary_type: str) -> list[dict[str, str]]:
        """The fields of ``primary_type``, in signing order."""
        try:
            return self.types[primary_type]
        except KeyError:
            known = ", ".join(sorted(n for n in self.types if n != "EIP712Domain"))
            raise ValueError(f"unknown primary type {primary_type!r}; known: {known}") from None

    def _types_for(self, primary_type: str) -> dict[str, list[dict[str, str]]]:
        """The primary type and every struct it references, with the domain's type."""
        out = {"EIP712Domain": self.types["EIP712Domain"]}
        todo = [primary_type]
        while todo:
            name = todo.pop()
            if name in out:
                continue
            out[name] = self.fields(name)
            for field in out[name]:
                member = field["type"].removesuffix("[]")
                if member in self.types and member not in out:
                    todo.append(member)
        return out

    def _normalised(self, primary_type: str, message: Mapping[str, Any]) -> dict[str, Any]:
        """``message`` restricted to the type's fields, numbers as ints, arrays item by item."""
        data: dict[str, Any] = {}
        for field in self.fields(primary_type):
            name, type_ = field["name"], field["type"]
            if name not in message:
                raise ValueError(f"{primary_type}: missing field {name!r}")
            value = message[name]
            if type_.endswith("[]"):
                data[name] = [self._normalised(type_[:-2], item) for item in value]
            elif type_.startswith(("uint", "int")):
                if isinstance(value, bool) or not isinstance(value, int | str):
                    raise ValueError(f"{primary_type}.{name}: expected an integer, got {value!r}")
                data[name] = int(value)
            elif type_ == "bool":
                if not isinstance(value, bool):
                    raise ValueError(f"{primary_type}.{name}: expected a bool, got {value!r}")
                data[name] = value
            else:
                data[name] = value
        return data

    def sign(self, primary_type: str, message: Mapping[str, Any]) -> str:
        """``0x`` + 130 hex digits: the signature of ``message`` as ``primary_type``."""
        from eth_account.messages import encode_typed_data

        signable = encode_typed_data(
            full_message={
                "types": self._types_for(primary_type),
                "primaryType": primary_type,
                "domain": self.domain,
                "message": self._normalised(primary_type, message),
            }
        )
        signed = self._account.sign_message(signable)
        return "0x" + bytes(signed.signature).hex()

    def signed(self, primary_type: str, message: Mapping[str, Any]) -> dict[str, Any]:
        """``message`` with its ``sig``: a body ready to send."""
        return {**message, "sig": self.sign(primary_type, message)}
