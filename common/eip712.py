"""EIP-712 signing and signature recovery for our flat primary types (API.md section 4).

The encoding rules are eth-account's, the reference a client signs with: a ``Verifier`` asks it
once, at start-up, for the domain separator and each primary type's type hash. Per message the
verifier encodes the flat struct itself (every field is a string, a uint256 or a bool, one
32-byte word each) and recovers the signer with coincurve (libsecp256k1), several times faster
than eth-account's general encoder. Strings of low-cardinality fields (userId, market, side, ...)
are hashed once and remembered, because a keccak call costs a few microseconds.
tests/unit/test_eip712.py holds this digest equal to eth-account's on random messages.

Wire values are checked more strictly than eth-account does (it reads ``"no"`` as a true bool
and ``"0x10"`` as a uint256): see ``_uint256_value`` and ``_enc_bool``. Recovery accepts what
eth-account's ``Account.recover_message`` accepts (v 0/1/27/28, high or low s), except EIP-155
style ``v >= 35``, which eth-account tolerates but no EIP-712 signer produces.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import eth_utils
from coincurve import PublicKey
from Crypto.Hash import keccak as _keccak
from eth_account import Account

# The helpers encode_typed_data is built on; eth-account exports no type-hash function.
from eth_account._utils.encode_typed_data.encoding_and_hashing import hash_domain, hash_type

__all__ = [
    "DOMAIN_NAME",
    "DOMAIN_VERSION",
    "EIP712_DOMAIN_FIELDS",
    "NESTED_TYPES",
    "PRIMARY_TYPES",
    "SECP256K1_N",
    "SignatureError",
    "Verifier",
    "domain_for_info",
    "keccak256",
    "recover_digest",
    "sign",
    "to_checksum_address",
    "types_for_info",
]

DOMAIN_NAME: Final = "OrderBookDEX"
DOMAIN_VERSION: Final = "1"

EIP712_DOMAIN_FIELDS: list[tuple[str, str]] = [
    ("name", "string"),
    ("version", "string"),
    ("chainId", "uint256"),
    ("verifyingContract", "address"),
]

_ORDER_FIELDS: list[tuple[str, str]] = [
    ("clientOrderId", "string"),
    ("userId", "string"),
    ("market", "string"),
    ("side", "string"),
    ("type", "string"),
    ("price", "uint256"),
    ("qty", "uint256"),
    ("product", "string"),
    ("ts", "uint256"),
]

PRIMARY_TYPES: dict[str, list[tuple[str, str]]] = {
    "Order": list(_ORDER_FIELDS),
    "OrderV2": [
        *_ORDER_FIELDS,
        ("timeInForce", "string"),
        ("reduceOnly", "bool"),
        ("expiresAt", "uint256"),
    ],
    "Cancel": [
        ("userId", "string"),
        ("market", "string"),
        ("clientOrderId", "string"),
        ("ts", "uint256"),
    ],
    "CancelAll": [
        ("userId", "string"),
        ("market", "string"),
        ("ts", "uint256"),
    ],
    "Withdraw": [
        ("userId", "string"),
        ("asset", "string"),
        ("amount", "uint256"),
        ("ts", "uint256"),
    ],
    # Agent keys (docs/api.md "Agent keys"): the owner approves another address to sign for
    # the account within a scope, a market list ("" = every market; types are flat, so a
    # comma-separated string) and an expiry (ms since epoch, 0 = never); RevokeAgent ends that.
    "ApproveAgent": [
        ("userId", "string"),
        ("agent", "string"),
        ("name", "string"),
        ("scope", "string"),
        ("markets", "string"),
        ("expiresAt", "uint256"),
        ("ts", "uint256"),
    ],
    "RevokeAgent": [
        ("userId", "string"),
        ("agent", "string"),
        ("ts", "uint256"),
    ],
    # The dead-man's switch: cancel the account's orders in market ("" = all) unless renewed
    # before deadline (ms since epoch; 0 turns the switch off).
    "ScheduleCancel": [
        ("userId", "string"),
        ("market", "string"),
        ("deadline", "uint256"),
        ("ts", "uint256"),
    ],
    # Cancel-replace: an OrderV2 placed only if the same user's order cancelClientOrderId (in
    # the same market) was open and is cancelled first.
    "CancelReplace": [
        *_ORDER_FIELDS,
        ("timeInForce", "string"),
        ("reduceOnly", "bool"),
        ("expiresAt", "uint256"),
        ("cancelClientOrderId", "string"),
    ],
    # Amend a resting order (docs/api.md "Amend"): its new limit price and new total qty
    # (filled part included); expectedFilled -1 = no guard, else the filled qty it must have.
    "Amend": [
        ("userId", "string"),
        ("market", "string"),
        ("clientOrderId", "string"),
        ("price", "uint256"),
        ("qty", "uint256"),
        ("expectedFilled", "int256"),
        ("ts", "uint256"),
    ],
    # An OrderV2 with its own self-trade prevention mode (docs/api.md "Self-trade
    # prevention"): EXPIRE_MAKER, EXPIRE_TAKER, EXPIRE_BOTH, DECREMENT, or "" for the market's.
    "OrderV3": [
        *_ORDER_FIELDS,
        ("timeInForce", "string"),
        ("reduceOnly", "bool"),
        ("expiresAt", "uint256"),
        ("selfTradePrevention", "string"),
    ],
    # Leverage (docs/api.md "Leverage"): the initial margin bps the account uses in a
    # derivative market, from the market's initialMarginBps to 10000; 0 = back to the market's.
    "SetLeverage": [
        ("userId", "string"),
        ("market", "string"),
        ("initialMarginBps", "uint256"),
        ("ts", "uint256"),
    ],
    # A TWAP (docs/api.md "TWAP orders"): qty sent as LIMIT IOC slices every
    # DEX_TWAP_INTERVAL_MS over durationMinutes (5..1440), each priced at most slippageBps
    # past the best opposite price; randomize varies each slice by up to 20 %.
    "Twap": [
        ("userId", "string"),
        ("market", "string"),
        ("clientOrderId", "string"),
        ("side", "string"),
        ("qty", "uint256"),
        ("durationMinutes", "uint256"),
        ("randomize", "bool"),
        ("slippageBps", "uint256"),
        ("reduceOnly", "bool"),
        ("ts", "uint256"),
    ],
    # An OrderV3 with a trigger (docs/api.md "Trigger orders"): type STOP_MARKET, STOP_LIMIT,
    # TAKE_PROFIT_MARKET, TAKE_PROFIT_LIMIT or TRAILING_STOP_MARKET; triggerSource "" (the
    # market's default), MARK, LAST or INDEX; trailingUnit "", TICKS or BPS. closePosition,
    # takeProfitPrice and stopLossPrice are defined for attached TP/SL (false / 0 until then).
    "OrderV4": [
        *_ORDER_FIELDS,
        ("timeInForce", "string"),
        ("reduceOnly", "bool"),
        ("expiresAt", "uint256"),
        ("selfTradePrevention", "string"),
        ("triggerPrice", "uint256"),
        ("triggerSource", "string"),
        ("trailingDelta", "uint256"),
        ("trailingUnit", "string"),
        ("closePosition", "bool"),
        ("takeProfitPrice", "uint256"),
        ("stopLossPrice", "uint256"),
    ],
}

# Primary types that hold an array of one member struct (one level of nesting), each followed
# by that struct: a signed batch (docs/api.md "Signed batches") is one signature over up to 50
# actions. kind PLACE, CANCEL or AMEND; the fields an action's kind does not use are 0 or "".
NESTED_TYPES: dict[str, list[tuple[str, str]]] = {
    "Batch": [
        ("userId", "string"),
        ("atomic", "bool"),
        ("actions", "BatchAction[]"),
        ("ts", "uint256"),
    ],
    "BatchAction": [
        ("kind", "string"),
        ("market", "string"),
        ("clientOrderId", "string"),
        ("side", "string"),
        ("type", "string"),
        ("price", "uint256"),
        ("qty", "uint256"),
        ("timeInForce", "string"),
        ("reduceOnly", "bool"),
        ("expiresAt", "uint256"),
        ("expectedFilled", "int256"),
    ],
}

# Fields whose values repeat across requests (a user's id, a market, an enum); their string
# hashes are worth remembering. clientOrderId is unique per order, so caching it would only churn.
_CACHED_STRING_FIELDS: Final = frozenset(
    {"userId", "market", "side", "type", "product", "timeInForce", "asset", "kind"}
)

SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_UINT256_LIMIT: Final = 1 << 256
_UINT256_MAX_DIGITS: Final = 78  # len(str(2**256 - 1))
_ZERO32: Final = bytes(32)
_ONE32: Final = (1).to_bytes(32, "big")
_HEX40 = re.compile(r"0x[0-9a-fA-F]{40}")

_keccak_new = _keccak.new

try:  # safe-pysha3's C Keccak is several times faster than pycryptodome's ctypes call
    from sha3 import keccak_256 as _fast_keccak
except ImportError:  # pragma: no cover - optional speed-up
    _fast_keccak = None


def keccak256(data: bytes) -> bytes:
    """Keccak-256 (Ethereum's, not SHA3-256) of ``data``."""
    if _fast_keccak is not None:
        return _fast_keccak(data).digest()
    return _keccak_new(data=data, digest_bits=256).digest()


class SignatureError(ValueError):
    """The signature is malformed: not ``0x`` + 130 hex digits, a bad v, r/s out of range, or no
    public key recovers from it. A ValueError so callers may map it to 400 with other bad input."""


# ---------------------------------------------------------------------------------------------
# Field encoders of the fast path: string, uint256, int256 and bool, the types our structs use.
# ---------------------------------------------------------------------------------------------


def _uint256_value(value: Any) -> int:
    """The wire allows uint256 as a JSON number or a decimal string; anything else is refused
    (no sign, spaces, underscores, exponents, hex or non-ASCII digits: ``int()`` alone is too
    lenient for signed data)."""
    if type(value) is int:
        n = value
    elif isinstance(value, str):
        if not (0 < len(value) <= _UINT256_MAX_DIGITS and value.isascii() and value.isdigit()):
            raise ValueError(f"uint256 must be decimal digits, got {value[:80]!r}")
        n = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        n = int(value)
    else:
        raise ValueError(
            f"uint256 must be an integer or a decimal string, got {type(value).__name__}"
        )
    if not 0 <= n < _UINT256_LIMIT:
        raise ValueError("uint256 out of range")
    return n


def _enc_uint256(value: Any) -> bytes:
    if type(value) is int and 0 <= value < _UINT256_LIMIT:  # the common case, kept cheap
        return value.to_bytes(32, "big")
    return _uint256_value(value).to_bytes(32, "big")


_INT256_HALF: Final = 1 << 255


def _enc_int256(value: Any) -> bytes:
    """A signed int256, two's complement: a JSON integer or an optionally signed decimal
    string (the same strictness as uint256 otherwise)."""
    if isinstance(value, str) and value.startswith("-"):
        n = -_uint256_value(value[1:])
    elif isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        n = _uint256_value(value) if isinstance(value, str) or value >= 0 else int(value)
    else:
        raise ValueError(
            f"int256 must be an integer or a decimal string, got {type(value).__name__}"
        )
    if not -_INT256_HALF <= n < _INT256_HALF:
        raise ValueError("int256 out of range")
    return (n % _UINT256_LIMIT).to_bytes(32, "big")


def _enc_string(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return keccak256(value.encode("utf-8"))  # a lone surrogate raises UnicodeEncodeError


_STRING_CACHE: dict[str, bytes] = {}
_STRING_CACHE_MAX: Final = 16384
_STRING_CACHE_MAX_LEN: Final = 128


def _enc_string_cached(value: Any) -> bytes:
    """keccak of a repeating string, remembered; the cache is bounded by being dropped whole."""
    if type(value) is str:
        h = _STRING_CACHE.get(value)
        if h is not None:
            return h
    h = _enc_string(value)
    if type(value) is str and len(value) <= _STRING_CACHE_MAX_LEN:
        if len(_STRING_CACHE) >= _STRING_CACHE_MAX:
            _STRING_CACHE.clear()
        _STRING_CACHE[value] = h
    return h


def _enc_bool(value: Any) -> bytes:
    """Only real booleans: eth-account would read "false" as False but "no" as True."""
    if value is True:
        return _ONE32
    if value is False:
        return _ZERO32
    raise ValueError(f"expected a boolean, got {type(value).__name__}")


def _field_encoder(name: str, type_: str) -> Callable[[Any], bytes]:
    if type_ == "string":
        return _enc_string_cached if name in _CACHED_STRING_FIELDS else _enc_string
    if type_ == "uint256":
        return _enc_uint256
    if type_ == "bool":
        return _enc_bool
    if type_ == "int256":
        return _enc_int256
    raise ValueError(f"no fast encoder for {type_}")


# ---------------------------------------------------------------------------------------------
# Domain and types as published by GET /v1/info.
# ---------------------------------------------------------------------------------------------


def to_checksum_address(address: str) -> str:
    """EIP-55 form; a mixed-case input must already be correctly checksummed (catches typos)."""
    if not isinstance(address, str) or not _HEX40.fullmatch(address):
        raise ValueError(f"not an address (0x + 40 hex digits): {address!r:.80}")
    checksummed = str(eth_utils.to_checksum_address(address))
    body = address[2:]
    if body != body.lower() and body != body.upper() and address != checksummed:
        raise ValueError(f"bad EIP-55 checksum: {address}")
    return checksummed


def _fields_as_dicts(fields: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"name": name, "type": type_} for name, type_ in fields]


def types_for_info() -> dict[str, list[dict[str, str]]]:
    """A fresh copy, so a caller may mutate it (e.g. serialise) without touching ours."""
    out = {"EIP712Domain": _fields_as_dicts(EIP712_DOMAIN_FIELDS)}
    out.update({name: _fields_as_dicts(fields) for name, fields in PRIMARY_TYPES.items()})
    out.update({name: _fields_as_dicts(fields) for name, fields in NESTED_TYPES.items()})
    return out


def _nested_types(primary_type: str) -> dict[str, list[dict[str, str]]]:
    """A nested primary type and the member struct its array holds, as eth-account takes them."""
    names = [primary_type]
    for _, type_ in NESTED_TYPES[primary_type]:
        if type_.endswith("[]"):
            names.append(type_[:-2])
    return {name: _fields_as_dicts(NESTED_TYPES[name]) for name in names}


def domain_for_info(chain_id: int, verifying_contract: str) -> dict[str, Any]:
    return {
        "name": DOMAIN_NAME,
        "version": DOMAIN_VERSION,
        "chainId": _uint256_value(chain_id),
        "verifyingContract": to_checksum_address(verifying_contract),
    }


# ---------------------------------------------------------------------------------------------
# Signature recovery and the fast verifier.
# ---------------------------------------------------------------------------------------------


def _parse_signature(signature: Any) -> bytes:
    """``0x`` + r(32) s(32) v(1) in hex -> 65 bytes in coincurve's r||s||recid form."""
    if not isinstance(signature, str) or len(signature) != 132 or signature[:2] != "0x":
        raise SignatureError("signature must be 0x followed by 130 hex digits")
    try:
        raw = bytes.fromhex(signature[2:])
    except ValueError:
        raise SignatureError("signature must be 0x followed by 130 hex digits") from None
    if len(raw) != 65:  # bytes.fromhex skips whitespace between bytes
        raise SignatureError("signature must be 0x followed by 130 hex digits")
    v = raw[64]
    if v == 27 or v == 28:
        recid = v - 27
    elif v == 0 or v == 1:
        recid = v
    else:
        raise SignatureError(f"bad signature v {v}: must be 27, 28, 0 or 1")
    r = int.from_bytes(raw[:32], "big")
    s = int.from_bytes(raw[32:64], "big")
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        raise SignatureError("signature r or s out of range")
    return raw[:64] + bytes((recid,))


def recover_digest(digest: bytes, signature: str) -> str:
    """Lowercase 0x address whose key signed the 32-byte ``digest``; SignatureError otherwise."""
    return _recover(_parse_signature(signature), digest)


def _recover(sig65: bytes, digest: bytes) -> str:
    try:
        public_key = PublicKey.from_signature_and_message(sig65, digest, hasher=None)
    except Exception as exc:  # coincurve raises plain Exception on an unrecoverable signature
        raise SignatureError("no public key recovers from this signature") from exc
    return "0x" + keccak256(public_key.format(compressed=False)[1:])[12:].hex()


_FieldPlan = tuple[tuple[str, Callable[[Any], bytes]], ...]


class Verifier:
    """Fast verifier: domain separator and type hashes computed once, by eth-account.

    Messages are mappings of the wire body: extra keys (``sig``, ...) are ignored, a missing or
    ill-typed field raises ValueError (not SignatureError: it is a bad request, not a bad
    signature), uint256 may be an int or a decimal string.
    """

    __slots__ = (
        "_plans",
        "_prefix",
        "chain_id",
        "domain",
        "domain_separator",
        "type_hashes",
        "verifying_contract",
    )

    def __init__(self, chain_id: int, verifying_contract: str) -> None:
        self.domain = domain_for_info(chain_id, verifying_contract)
        self.chain_id: int = self.domain["chainId"]
        self.verifying_contract: str = self.domain["verifyingContract"]
        self.domain_separator: bytes = bytes(hash_domain(self.domain))
        self.type_hashes: dict[str, bytes] = {
            name: bytes(hash_type(name, {name: _fields_as_dicts(fields)}))
            for name, fields in PRIMARY_TYPES.items()
        }
        self._prefix = b"\x19\x01" + self.domain_separator
        self._plans: dict[str, tuple[bytes, _FieldPlan]] = {
            name: (self.type_hashes[name], tuple((f, _field_encoder(f, t)) for f, t in fields))
            for name, fields in PRIMARY_TYPES.items()
        }
        for name in NESTED_TYPES:
            self.type_hashes[name] = bytes(hash_type(name, _nested_types(name)))
        for name, fields in NESTED_TYPES.items():
            plan = tuple((f, self._nested_encoder(f, t)) for f, t in fields)
            self._plans[name] = (self.type_hashes[name], plan)

    def _nested_encoder(self, name: str, type_: str) -> Callable[[Any], bytes]:
        """A flat field's encoder, or for ``Member[]`` the keccak of its items' hashStructs."""
        if not type_.endswith("[]"):
            return _field_encoder(name, type_)
        member = type_[:-2]

        def encode(items: Any) -> bytes:
            if not isinstance(items, list):
                raise ValueError(f"expected an array of {member}, got {type(items).__name__}")
            return keccak256(b"".join(self._hash_struct(member, item) for item in items))

        return encode

    def _hash_struct(self, primary_type: str, message: Mapping[str, Any]) -> bytes:
        try:
            th, plan = self._plans[primary_type]
        except KeyError:
            raise ValueError(f"unknown primary type {primary_type!r}") from None
        if not isinstance(message, Mapping):
            raise ValueError(f"{primary_type} must be an object, got {type(message).__name__}")
        parts = [th]
        name = ""
        try:
            for name, encode in plan:
                parts.append(encode(message[name]))
        except KeyError:
            raise ValueError(f"{primary_type}: missing field {name!r}") from None
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{primary_type}.{name}: {exc}") from None
        return keccak256(b"".join(parts))

    def digest(self, primary_type: str, message: Mapping[str, Any]) -> bytes:
        """keccak256(0x1901 || domainSeparator || hashStruct(message))."""
        return keccak256(self._prefix + self._hash_struct(primary_type, message))

    def recover(self, primary_type: str, message: Mapping[str, Any], signature: str) -> str:
        """Lowercase 0x address of the signer; SignatureError for a malformed signature."""
        sig65 = _parse_signature(signature)  # reject a bad signature before hashing
        return _recover(sig65, self.digest(primary_type, message))

    def verify(
        self, primary_type: str, message: Mapping[str, Any], signature: str, address: str
    ) -> bool:
        """True if ``address`` (any letter case) signed ``message``; False on SignatureError."""
        try:
            recovered = self.recover(primary_type, message, signature)
        except SignatureError:
            return False
        return isinstance(address, str) and recovered == address.lower()


def sign(
    private_key: str | bytes,
    primary_type: str,
    message: Mapping[str, Any],
    chain_id: int,
    verifying_contract: str,
) -> str:
    """``0x`` + 130 hex, made by eth-account's ``sign_typed_data`` (the reference a client uses).

    The message is checked with the verifier's rules first, so nothing is signed that the
    gateway would refuse, and uint256 strings become ints.
    """
    if primary_type in NESTED_TYPES:
        types = _nested_types(primary_type)
        data = _signable(primary_type, NESTED_TYPES, message)
    elif primary_type in PRIMARY_TYPES:
        types = {primary_type: _fields_as_dicts(PRIMARY_TYPES[primary_type])}
        data = _signable(primary_type, PRIMARY_TYPES, message)
    else:
        raise ValueError(f"unknown primary type {primary_type!r}")
    signed = Account.sign_typed_data(
        private_key,
        domain_data=domain_for_info(chain_id, verifying_contract),
        message_types=types,
        message_data=data,
    )
    return "0x" + bytes(signed.signature).hex()


def _signable(
    primary_type: str, table: Mapping[str, list[tuple[str, str]]], message: Mapping[str, Any]
) -> dict[str, Any]:
    """``message`` checked by the verifier's rules, numbers as ints, arrays item by item."""
    data: dict[str, Any] = {}
    for name, type_ in table[primary_type]:
        if name not in message:
            raise ValueError(f"{primary_type}: missing field {name!r}")
        value = message[name]
        if type_.endswith("[]"):
            data[name] = [_signable(type_[:-2], table, item) for item in value]
            continue
        _field_encoder(name, type_)(value)
        data[name] = int(value) if type_ in ("uint256", "int256") else value
    return data
