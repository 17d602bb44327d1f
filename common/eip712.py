"""EIP-712 typed-data hashing and signature recovery (API.md section 4).

Two encoders live here, on purpose:

* ``Verifier`` is the hot path of the gateway: our five primary types are flat, so their type
  hashes and the domain separator are computed once and each field is encoded directly. Strings
  of low-cardinality fields (userId, market, side, ...) are hashed once and remembered, because a
  keccak call through pycryptodome costs several microseconds.
* ``encode_typed_data_digest`` (with ``encode_type``, ``encode_data``, ``hash_struct``,
  ``domain_separator``) is a general EIP-712 encoder (nested structs, arrays, every atomic type).
  It is slower, and exists so the public EIP-712 vectors can prove the encoding rules that the
  fast path relies on; ``Verifier`` builds its precomputed hashes with it.

``sign`` uses eth-account, the reference implementation, so tests and benches sign exactly as a
client would. Recovery uses coincurve (libsecp256k1) directly: it accepts what eth-account's
``Account.recover_message`` accepts (v 0/1/27/28, high or low s), except EIP-155 style
``v >= 35``, which eth-account tolerates but no EIP-712 signer produces.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Final

from coincurve import PublicKey
from Crypto.Hash import keccak as _keccak

__all__ = [
    "DOMAIN_NAME",
    "DOMAIN_VERSION",
    "EIP712_DOMAIN_FIELDS",
    "PRIMARY_TYPES",
    "SECP256K1_N",
    "SignatureError",
    "Verifier",
    "domain_for_info",
    "domain_separator",
    "encode_data",
    "encode_type",
    "encode_typed_data_digest",
    "hash_struct",
    "keccak256",
    "recover_digest",
    "sign",
    "to_checksum_address",
    "type_hash",
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
}

# Fields whose values repeat across requests (a user's id, a market, an enum); their string
# hashes are worth remembering. clientOrderId is unique per order, so caching it would only churn.
_CACHED_STRING_FIELDS: Final = frozenset(
    {"userId", "market", "side", "type", "product", "timeInForce", "asset"}
)

SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_UINT256_LIMIT: Final = 1 << 256
_UINT256_MAX_DIGITS: Final = 78  # len(str(2**256 - 1))
_ZERO32: Final = bytes(32)
_ONE32: Final = (1).to_bytes(32, "big")
_HEX40 = re.compile(r"0x[0-9a-fA-F]{40}")
_HEXSTR = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
_INT_TYPE = re.compile(r"(u?)int([0-9]*)")
_BYTES_N_TYPE = re.compile(r"bytes([0-9]+)")
_ARRAY_SUFFIX = re.compile(r"(.*)\[([0-9]*)\]")
# eth-account's order of domain fields; used when typed data omits types.EIP712Domain.
_STANDARD_DOMAIN_FIELDS: Final = {
    "name": "string",
    "version": "string",
    "chainId": "uint256",
    "verifyingContract": "address",
    "salt": "bytes32",
}

TypesDict = Mapping[str, Sequence[Mapping[str, str]]]

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
# Atomic value encoders shared by the fast path and the general encoder.
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


def _address_bytes(value: Any) -> bytes:
    if isinstance(value, str) and _HEX40.fullmatch(value):
        return bytes.fromhex(value[2:])
    if isinstance(value, bytes | bytearray) and len(value) == 20:
        return bytes(value)
    raise ValueError(f"expected an address (0x + 40 hex digits), got {value!r:.80}")


def _enc_address(value: Any) -> bytes:
    return bytes(12) + _address_bytes(value)


def _bytes_value(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str) and _HEXSTR.fullmatch(value):
        return bytes.fromhex(value[2:])
    raise ValueError(f"expected bytes or a 0x hex string, got {value!r:.80}")


def _int_value(value: Any) -> int:
    """General-encoder integers: int, decimal string (optionally negative) or 0x hex string."""
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.isascii():
        if re.fullmatch(r"-?[0-9]{1,80}", value):
            return int(value)
        if re.fullmatch(r"0x[0-9a-fA-F]{1,64}", value):
            return int(value, 16)
    raise ValueError(f"expected an integer, got {value!r:.80}")


@lru_cache(maxsize=256)
def _atomic_encoder(type_: str) -> Callable[[Any], bytes] | None:
    """The 32-byte encoder of an atomic EIP-712 type, or None if ``type_`` is not atomic."""
    if type_ == "string":
        return _enc_string
    if type_ == "bool":
        return _enc_bool
    if type_ == "address":
        return _enc_address
    if type_ == "bytes":
        return lambda v: keccak256(_bytes_value(v))
    m = _INT_TYPE.fullmatch(type_)
    if m:
        bits = int(m.group(2) or "256")
        if bits % 8 or not 8 <= bits <= 256 or m.group(2).startswith("0"):
            return None
        if m.group(1):
            lo, hi = 0, 1 << bits
        else:
            lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)

        def enc_int(v: Any) -> bytes:
            n = _int_value(v)
            if not lo <= n < hi:
                raise ValueError(f"{type_} out of range")
            return (n % _UINT256_LIMIT).to_bytes(32, "big")  # two's complement for intN

        return enc_int
    m = _BYTES_N_TYPE.fullmatch(type_)
    if m:
        size = int(m.group(1))
        if not 1 <= size <= 32 or m.group(1).startswith("0"):
            return None

        def enc_bytes_n(v: Any) -> bytes:
            raw = _bytes_value(v)
            if len(raw) > size:
                raise ValueError(f"{type_} value is {len(raw)} bytes")
            return raw.ljust(32, b"\x00")

        return enc_bytes_n
    return None


# ---------------------------------------------------------------------------------------------
# General EIP-712 encoder.
# ---------------------------------------------------------------------------------------------


def _base_type(type_: str) -> str:
    """``Person[2][]`` -> ``Person``."""
    i = type_.find("[")
    return type_ if i < 0 else type_[:i]


def _collect_deps(type_: str, types: TypesDict, found: list[str]) -> None:
    base = _base_type(type_)
    if base in found:
        return
    if base not in types:
        if _atomic_encoder(base) is None:
            raise ValueError(f"undefined EIP-712 type {base!r}")
        return
    found.append(base)
    for field in types[base]:
        _collect_deps(field["type"], types, found)


def encode_type(primary_type: str, types: TypesDict) -> str:
    """``Mail(Person from,...)Person(...)``: the primary type, then its dependencies sorted."""
    found: list[str] = []
    _collect_deps(primary_type, types, found)
    if not found or found[0] != primary_type:
        raise ValueError(f"{primary_type!r} is not a struct type")
    ordered = [primary_type, *sorted(found[1:])]
    return "".join(_encode_one_type(name, types[name]) for name in ordered)


def _encode_one_type(name: str, fields: Sequence[Mapping[str, str]]) -> str:
    members = ",".join(f"{field['type']} {field['name']}" for field in fields)
    return f"{name}({members})"


def type_hash(primary_type: str, types: TypesDict) -> bytes:
    return keccak256(encode_type(primary_type, types).encode("utf-8"))


def _encode_value(type_: str, value: Any, types: TypesDict) -> bytes:
    if type_.endswith("]"):
        m = _ARRAY_SUFFIX.fullmatch(type_)
        if m is None:
            raise ValueError(f"bad array type {type_!r}")
        inner, size = m.group(1), m.group(2)
        if not isinstance(value, list | tuple):
            raise ValueError(f"{type_} expects an array, got {type(value).__name__}")
        if size and len(value) != int(size):
            raise ValueError(f"{type_} expects {size} items, got {len(value)}")
        return keccak256(b"".join(_encode_value(inner, item, types) for item in value))
    if type_ in types:
        if value is None:  # signTypedData V4 (and eth-account): a missing struct is bytes32(0)
            return _ZERO32
        if not isinstance(value, Mapping):
            raise ValueError(f"{type_} expects an object, got {type(value).__name__}")
        return hash_struct(type_, value, types)
    encoder = _atomic_encoder(type_)
    if encoder is None:
        raise ValueError(f"undefined EIP-712 type {type_!r}")
    if value is None:
        raise ValueError(f"missing value of type {type_}")
    return encoder(value)


def encode_data(primary_type: str, data: Mapping[str, Any], types: TypesDict) -> bytes:
    """``typeHash || enc(field_1) || ... || enc(field_n)``."""
    parts = [type_hash(primary_type, types)]
    for field in types[primary_type]:
        try:
            parts.append(_encode_value(field["type"], data.get(field["name"]), types))
        except ValueError as exc:
            raise ValueError(f"{primary_type}.{field['name']}: {exc}") from exc
    return b"".join(parts)


def hash_struct(primary_type: str, data: Mapping[str, Any], types: TypesDict) -> bytes:
    return keccak256(encode_data(primary_type, data, types))


def domain_separator(domain: Mapping[str, Any], types: TypesDict | None = None) -> bytes:
    """hashStruct of the domain; without ``types["EIP712Domain"]`` the fields are inferred from
    the domain's keys in the standard order, as eth-account and ethers do."""
    if types is not None and "EIP712Domain" in types:
        return hash_struct("EIP712Domain", domain, types)
    unknown = set(domain) - set(_STANDARD_DOMAIN_FIELDS)
    if unknown:
        raise ValueError(f"unknown domain fields {sorted(unknown)} without types.EIP712Domain")
    fields = [{"name": k, "type": t} for k, t in _STANDARD_DOMAIN_FIELDS.items() if k in domain]
    return hash_struct("EIP712Domain", domain, {**(types or {}), "EIP712Domain": fields})


def _infer_primary_type(types: TypesDict) -> str:
    """The one struct no other struct refers to, as eth-account infers it."""
    names = set(types) - {"EIP712Domain"}
    referenced = {
        _base_type(f["type"]) for n in names for f in types[n] if _base_type(f["type"]) != n
    }
    roots = sorted(names - referenced)
    if len(roots) != 1:
        raise ValueError(f"primaryType missing and not inferable (roots: {roots})")
    return roots[0]


def encode_typed_data_digest(typed_data: Mapping[str, Any]) -> bytes:
    """keccak256(0x1901 || domainSeparator || hashStruct(message)) of a full typed-data dict
    ``{types, primaryType, domain, message}``; for primaryType EIP712Domain the message hash is
    left out, as signTypedData V4 does."""
    types: TypesDict = typed_data["types"]
    primary = typed_data.get("primaryType") or _infer_primary_type(types)
    separator = domain_separator(typed_data.get("domain") or {}, types)
    if primary == "EIP712Domain":
        return keccak256(b"\x19\x01" + separator)
    return keccak256(b"\x19\x01" + separator + hash_struct(primary, typed_data["message"], types))


# ---------------------------------------------------------------------------------------------
# Domain and types as published by GET /v1/info.
# ---------------------------------------------------------------------------------------------


def to_checksum_address(address: str) -> str:
    """EIP-55 form; a mixed-case input must already be correctly checksummed (catches typos)."""
    if not isinstance(address, str) or not _HEX40.fullmatch(address):
        raise ValueError(f"not an address (0x + 40 hex digits): {address!r:.80}")
    lower = address[2:].lower()
    digest = keccak256(lower.encode("ascii")).hex()
    checksummed = "0x" + "".join(
        c.upper() if int(d, 16) >= 8 else c for c, d in zip(lower, digest, strict=False)
    )
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
    return out


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


def _fast_encoder(name: str, type_: str) -> Callable[[Any], bytes]:
    if type_ == "string":
        return _enc_string_cached if name in _CACHED_STRING_FIELDS else _enc_string
    if type_ == "uint256":
        return _enc_uint256
    if type_ == "bool":
        return _enc_bool
    if type_ == "address":
        return _enc_address
    raise ValueError(f"no fast encoder for {type_}")


class Verifier:
    """Fast verifier: domain separator and type hashes precomputed once.

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
        "verifying_contract",
    )

    def __init__(self, chain_id: int, verifying_contract: str) -> None:
        self.domain = domain_for_info(chain_id, verifying_contract)
        self.chain_id: int = self.domain["chainId"]
        self.verifying_contract: str = self.domain["verifyingContract"]
        self.domain_separator = hash_struct(
            "EIP712Domain", self.domain, {"EIP712Domain": _fields_as_dicts(EIP712_DOMAIN_FIELDS)}
        )
        self._prefix = b"\x19\x01" + self.domain_separator
        self._plans: dict[str, tuple[bytes, _FieldPlan]] = {
            name: (
                type_hash(name, {name: _fields_as_dicts(fields)}),
                tuple((f, _fast_encoder(f, t)) for f, t in fields),
            )
            for name, fields in PRIMARY_TYPES.items()
        }

    def digest(self, primary_type: str, message: Mapping[str, Any]) -> bytes:
        """keccak256(0x1901 || domainSeparator || hashStruct(message))."""
        try:
            th, plan = self._plans[primary_type]
        except KeyError:
            raise ValueError(f"unknown primary type {primary_type!r}") from None
        parts = [th]
        name = ""
        try:
            for name, encode in plan:
                parts.append(encode(message[name]))
        except KeyError:
            raise ValueError(f"{primary_type}: missing field {name!r}") from None
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{primary_type}.{name}: {exc}") from None
        return keccak256(self._prefix + keccak256(b"".join(parts)))

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
    gateway would refuse, and uint256 strings become ints. eth-account is imported here, not at
    module load, because the gateway only verifies and the import is slow.
    """
    from eth_account import Account

    try:
        fields = PRIMARY_TYPES[primary_type]
    except KeyError:
        raise ValueError(f"unknown primary type {primary_type!r}") from None
    data: dict[str, Any] = {}
    for name, type_ in fields:
        if name not in message:
            raise ValueError(f"{primary_type}: missing field {name!r}")
        value = message[name]
        _fast_encoder(name, type_)(value)
        data[name] = _uint256_value(value) if type_ == "uint256" else value
    signed = Account.sign_typed_data(
        private_key,
        domain_data=domain_for_info(chain_id, verifying_contract),
        message_types={primary_type: _fields_as_dicts(fields)},
        message_data=data,
    )
    return "0x" + bytes(signed.signature).hex()
