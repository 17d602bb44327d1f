"""Tests for common.eip712: eth-account (the reference a client signs with, whose domain
separator and type hashes the verifier takes) against public EIP-712 vectors, the fast verifier
against eth-account and ethers.js, and tampering/malformed input.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account._utils.encode_typed_data import encoding_and_hashing as ref
from eth_account.messages import encode_typed_data
from eth_utils import keccak as ref_keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.eip712 import (
    NESTED_TYPES,
    PRIMARY_TYPES,
    SECP256K1_N,
    SignatureError,
    Verifier,
    domain_for_info,
    recover_digest,
    sign,
    to_checksum_address,
    types_for_info,
)

VECTORS_PATH = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "eip712_vectors.json"
)
ETHERS_VECTORS_PATH = Path(__file__).resolve().parents[1] / "fixtures" / "ethers" / "vectors.json"

CONTRACT = "0x" + "cc" * 20
CHAIN_ID = 1

# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _fields(primary_type: str) -> list[dict[str, str]]:
    return [{"name": n, "type": t} for n, t in PRIMARY_TYPES[primary_type]]


def _as_ref_int(type_: str, value: Any) -> Any:
    return int(value) if type_ in ("uint256", "int256") else value


def _ref_signable(primary_type: str, message: dict[str, Any], chain_id: int, contract: str) -> Any:
    """eth-account's SignableMessage for one of our types, signed with only its own type."""
    return encode_typed_data(
        domain_data=domain_for_info(chain_id, contract),
        message_types={primary_type: _fields(primary_type)},
        message_data=message,
    )


def _ref_digest(signable: Any) -> bytes:
    """EIP-191 v1 hash computed independently of common.eip712 (eth_utils' keccak)."""
    return bytes(ref_keccak(b"\x19" + signable.version + signable.header + signable.body))


def _ref_domain_separator(typed_data: dict[str, Any]) -> bytes:
    """eth-account's hashStruct of the domain under the typed data's own EIP712Domain type
    (``hash_domain`` knows only the five standard fields; one vector has ``httpOrigin``)."""
    domain_type = {"EIP712Domain": typed_data["types"]["EIP712Domain"]}
    return bytes(ref.hash_struct("EIP712Domain", domain_type, typed_data["domain"]))


def _ref_typed_digest(typed_data: dict[str, Any]) -> bytes:
    """keccak256(0x1901 || domainSeparator || hashStruct(message)) by eth-account's encoder,
    with the primary type given (``encode_typed_data`` refuses types with two roots)."""
    types = {k: v for k, v in typed_data["types"].items() if k != "EIP712Domain"}
    body = ref.hash_struct(typed_data["primaryType"], types, typed_data["message"])
    return bytes(ref_keccak(b"\x19\x01" + _ref_domain_separator(typed_data) + body))


# Strings that exercise UTF-8: Latin-1, Greek, CJK, RTL, combining marks, astral-plane emoji,
# NUL and other controls. No lone surrogates: they are not encodable (JSON parsers refuse them).
_ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:",
    "\u00e9\u00fc\u00df\u00f1\u00e5\u00f8\u00e6",
    "\u03b1\u03b2\u03b3\u03b4\u03a9",
    "\u4e2d\u6587\u5e02\u573a\u8ba2\u5355",
    "\u05e9\u05dc\u05d5\u05dd\u0627\u0644\u0633\u0648\u0642",
    "e\u0301a\u0300o\u0308",
    "\U0001f600\U0001f680\U0001f4b0\U00010348",
    "\x00\x01\t\n\x7f\u200b\ufeff",
]


def _random_string(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.05:
        return ""
    length = rng.choice([1, 3, 8, 16, 64]) if roll < 0.9 else rng.randint(100, 400)
    if rng.random() < 0.5:
        return "".join(rng.choice(_ALPHABETS[0]) for _ in range(length))
    return "".join(rng.choice(rng.choice(_ALPHABETS)) for _ in range(length))


def _random_uint(rng: random.Random) -> int:
    return rng.choice(
        [
            lambda: 0,
            lambda: 1,
            lambda: 2**256 - 1,
            lambda: 2**255,
            lambda: rng.randint(1_600_000_000_000, 2_000_000_000_000),
            lambda: rng.getrandbits(rng.choice([8, 32, 64, 128, 200, 255, 256])),
        ]
    )()


def _random_message(rng: random.Random, primary_type: str, user: str) -> dict[str, Any]:
    """A wire-shaped message: uint256 as int or decimal string at random."""
    msg: dict[str, Any] = {}
    for name, type_ in PRIMARY_TYPES[primary_type]:
        if type_ == "string":
            msg[name] = user if name == "userId" and rng.random() < 0.7 else _random_string(rng)
        elif type_ == "uint256":
            n = _random_uint(rng)
            msg[name] = str(n) if rng.random() < 0.4 else n
        elif type_ == "bool":
            msg[name] = rng.random() < 0.5
        elif type_ == "int256":
            n = _random_uint(rng) % 2**255 * rng.choice([1, -1])
            msg[name] = str(n) if rng.random() < 0.4 else n
        else:  # pragma: no cover - our types only use the four above
            raise AssertionError(type_)
    return msg


def _tampered_values(type_: str, value: Any) -> list[Any]:
    """Changed values of one field that must break the signature."""
    if type_ == "string":
        out = [value + "x", "x" + value]
        if value:
            out.append(value[:-1])
        if value.swapcase() != value:
            out.append(value.swapcase())
        return out
    if type_ == "uint256":
        n = int(value)
        return [n + 1 if n < 2**256 - 1 else n - 1, str(n ^ 1)]
    if type_ == "bool":
        return [not value]
    if type_ == "int256":
        n = int(value)
        return [n + 1, -n - 1, str(n - 1)]
    raise AssertionError(type_)


def _base_message(primary_type: str, user: str) -> dict[str, Any]:
    values: dict[str, Any] = {
        "clientOrderId": "cid-1",
        "userId": user,
        "market": "BTC-USD",
        "side": "BUY",
        "type": "LIMIT",
        "price": 6500000,
        "qty": "1000",
        "product": "SPOT",
        "ts": 1732540000000,
        "timeInForce": "GTC",
        "reduceOnly": False,
        "expiresAt": 0,
        "asset": "USDC",
        "amount": "250000000",
        "agent": "0x2546bcd3c84621e976d8185a91a922ae77ecec30",
        "name": "bot-1",
        "scope": "TRADE",
        "markets": "BTC-USD,ETH-USD",
        "deadline": 1732540060000,
        "cancelClientOrderId": "cid-0",
        "expectedFilled": -1,
        "selfTradePrevention": "EXPIRE_TAKER",
        "triggerPrice": 3050000,
        "triggerSource": "LAST",
        "trailingDelta": 0,
        "trailingUnit": "",
        "closePosition": False,
        "takeProfitPrice": 0,
        "stopLossPrice": 0,
    }
    return {name: values[name] for name, _ in PRIMARY_TYPES[primary_type]}


def _with_sig_bytes(
    sig: str, *, v: int | None = None, r: int | None = None, s: int | None = None
) -> str:
    raw = bytearray(bytes.fromhex(sig[2:]))
    if r is not None:
        raw[:32] = r.to_bytes(32, "big")
    if s is not None:
        raw[32:64] = s.to_bytes(32, "big")
    if v is not None:
        raw[64] = v
    return "0x" + raw.hex()


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    return Verifier(CHAIN_ID, CONTRACT)


@pytest.fixture(scope="module")
def account() -> Any:
    return Account.create()


# --------------------------------------------------------------------------------------------
# (1) Public vectors
# --------------------------------------------------------------------------------------------


def _load_vectors() -> list[Any]:
    if not VECTORS_PATH.is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{VECTORS_PATH} is absent"))]
    vectors = json.loads(VECTORS_PATH.read_text())["vectors"]
    return [pytest.param(v, id=v["id"]) for v in vectors]


VECTORS = _load_vectors()


def _vector_signature(expected: dict[str, Any]) -> str | None:
    if "signature" in expected:
        return str(expected["signature"])
    if {"r", "s", "v"} <= expected.keys():
        return "0x" + expected["r"][2:] + expected["s"][2:] + f"{expected['v']:02x}"
    return None


def _vector_signer(vector: dict[str, Any]) -> str:
    for holder in (vector["expected"], vector):
        if "signer_address" in holder:
            return str(holder["signer_address"]).lower()
    return str(Account.from_key(vector["private_key_hex"]).address).lower()


_SIGNATURE_KEYS = {"signature", "signer_address", "v", "r", "s"}


@pytest.mark.parametrize("vector", VECTORS)
def test_vector_encoding(vector: dict[str, Any]) -> None:
    """Every encoding value the source gives is reproduced by eth-account's encoder, which
    computes the verifier's domain separator and type hashes."""
    td = vector["typed_data"]
    types, primary, message = td["types"], td["primaryType"], td["message"]
    checked = 0
    for key, want in vector["expected"].items():
        if key in _SIGNATURE_KEYS:
            continue
        if key.startswith("encodeType_"):
            got: str = ref.encode_type(key.removeprefix("encodeType_"), types)
        elif key.startswith("typeHash_"):
            got = _hex(ref.hash_type(key.removeprefix("typeHash_"), types))
        elif key == f"encodeData_{primary}":
            got = _hex(ref.encode_data(primary, types, message))
        elif key == "hashStruct_message":
            got = _hex(ref.hash_struct(primary, types, message))
        elif key.startswith("hashStruct_"):
            # hashStruct_<field>[<index>] of a struct member of the message, e.g. to0 = to[0]
            m = re.fullmatch(r"hashStruct_([A-Za-z_]+?)(\d*)", key)
            assert m, key
            field, index = m.group(1), m.group(2)
            field_type = next(f["type"] for f in types[primary] if f["name"] == field)
            value = message[field]
            if index:
                field_type, value = field_type[: field_type.rindex("[")], value[int(index)]
            got = _hex(ref.hash_struct(field_type, types, value))
        elif key == "domainSeparator":
            got = _hex(_ref_domain_separator(td))
        elif key == "digest":
            got = _hex(_ref_typed_digest(td))
        else:
            pytest.fail(f"unhandled expected key {key!r}: extend the test")
        assert got == want, key
        checked += 1
    if checked == 0:
        assert _vector_signature(vector["expected"]) is not None, "vector checks nothing"


@pytest.mark.parametrize(
    "vector",
    [
        p
        for p in VECTORS
        if p.values[0] is None or _vector_signature(p.values[0]["expected"]) is not None
    ],
)
def test_vector_signature(vector: dict[str, Any]) -> None:
    """The vector's signature recovers to its signer over our digest; eth-account agrees; and
    where the key is given, RFC 6979 signing of our digest reproduces the signature exactly."""
    sig = _vector_signature(vector["expected"])
    assert sig is not None
    digest = _ref_typed_digest(vector["typed_data"])
    signer = _vector_signer(vector)
    assert recover_digest(digest, sig) == signer
    assert Account._recover_hash(digest, signature=bytes.fromhex(sig[2:])).lower() == signer
    if "private_key_hex" in vector:
        resigned = Account.unsafe_sign_hash(digest, vector["private_key_hex"])
        assert _hex(bytes(resigned.signature)) == sig.lower()


# --------------------------------------------------------------------------------------------
# (2) Random messages: fast verifier == eth-account
# --------------------------------------------------------------------------------------------

_DOMAINS = [
    (1, CONTRACT),
    (31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3"),
    (2**64 + 7, "0x" + "00" * 20),
]
_RANDOM_PER_TYPE = 300


@pytest.mark.parametrize("primary_type", list(PRIMARY_TYPES))
def test_random_messages_match_eth_account(primary_type: str) -> None:
    rng = random.Random(f"eip712-{primary_type}")
    verifiers = [Verifier(c, a) for c, a in _DOMAINS]
    for i in range(_RANDOM_PER_TYPE):
        acct = Account.create()
        user = acct.address if rng.random() < 0.5 else acct.address.lower()
        chain_id, contract = _DOMAINS[i % len(_DOMAINS)]
        verifier = verifiers[i % len(_DOMAINS)]
        msg = _random_message(rng, primary_type, user)
        context = f"key={acct.key.hex()} type={primary_type} domain={chain_id} msg={msg!r}"

        signable = _ref_signable(primary_type, msg, chain_id, contract)
        assert verifier.domain_separator == bytes(signable.header), context
        assert verifier.digest(primary_type, msg) == _ref_digest(signable), context

        sig = sign(acct.key, primary_type, msg, chain_id, contract)
        assert re.fullmatch(r"0x[0-9a-f]{130}", sig), context
        assert Account.recover_message(signable, signature=sig) == acct.address, context
        assert verifier.recover(primary_type, msg, sig) == acct.address.lower(), context
        assert verifier.verify(primary_type, msg, sig, acct.address), context
        assert verifier.verify(primary_type, msg, sig, acct.address.lower()), context


_text = st.text(max_size=80)
_uint = st.integers(min_value=0, max_value=2**256 - 1)
_int = st.integers(min_value=-(2**255), max_value=2**255 - 1)
_FIELD_STRATEGY = {
    "string": _text,
    "uint256": _uint | _uint.map(str),
    "bool": st.booleans(),
    "int256": _int | _int.map(str),
}


@pytest.mark.parametrize("primary_type", list(PRIMARY_TYPES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_digest_property_matches_eth_account(primary_type: str, data: st.DataObject) -> None:
    """Hypothesis-chosen strings/ints: digest equals eth-account's."""
    msg = {
        name: data.draw(_FIELD_STRATEGY[type_], label=name)
        for name, type_ in PRIMARY_TYPES[primary_type]
    }
    verifier = Verifier(CHAIN_ID, CONTRACT)
    want = _ref_digest(_ref_signable(primary_type, msg, CHAIN_ID, CONTRACT))
    assert verifier.digest(primary_type, msg) == want


@pytest.mark.parametrize(("chain_id", "contract"), _DOMAINS)
def test_start_up_hashes_equal_eth_account(chain_id: int, contract: str) -> None:
    """The verifier's type hash of every primary type is eth-account's and the keccak of the
    encodeType string API.md gives; its domain separator is the header eth-account's
    ``encode_typed_data`` signs and the hashStruct of the domain under the published types."""
    verifier = Verifier(chain_id, contract)
    domain = domain_for_info(chain_id, contract)
    published = types_for_info()
    for name in PRIMARY_TYPES:
        types = {name: _fields(name)}
        assert verifier.type_hashes[name] == bytes(ref.hash_type(name, types)), name
        assert verifier.type_hashes[name] == bytes(ref_keccak(text=_API_ENCODE_TYPES[name])), name
        assert verifier.type_hashes[name] == bytes(ref.hash_type(name, published)), name
        signable = _ref_signable(name, _base_message(name, "0x" + "11" * 20), chain_id, contract)
        assert verifier.domain_separator == bytes(signable.header), name
    assert verifier.domain_separator == bytes(
        ref.hash_struct("EIP712Domain", {"EIP712Domain": published["EIP712Domain"]}, domain)
    )


_uint_wire = _uint | _uint.map(str) | _uint.map(lambda n: str(n).zfill(78))
_WIRE_STRATEGY = {"string": _text, "uint256": _uint_wire, "bool": st.booleans(), "int256": _int}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_domain_and_message_digest_matches_eth_account(data: st.DataObject) -> None:
    """Any domain, any primary type, any valid message in any wire form (uint256 as a number,
    a decimal string or a zero-padded one): the fast digest equals the one eth-account's
    ``encode_typed_data`` makes of the same values, so the two cannot drift apart."""
    primary_type = data.draw(st.sampled_from(list(PRIMARY_TYPES)), label="primaryType")
    chain_id = data.draw(_uint, label="chainId")
    lower = "0x" + data.draw(st.binary(min_size=20, max_size=20), label="contract").hex()
    forms = [lower, "0x" + lower[2:].upper(), to_checksum_address(lower)]
    contract = data.draw(st.sampled_from(forms), label="verifyingContract")
    msg = {
        name: data.draw(_WIRE_STRATEGY[type_], label=name)
        for name, type_ in PRIMARY_TYPES[primary_type]
    }
    values = {
        name: int(msg[name]) if type_ in ("uint256", "int256") else msg[name]
        for name, type_ in PRIMARY_TYPES[primary_type]
    }
    want = _ref_digest(_ref_signable(primary_type, values, chain_id, contract))
    assert Verifier(chain_id, contract).digest(primary_type, msg) == want


def test_ethers_signatures_recover_with_the_verifier() -> None:
    """Messages of every primary type signed by ethers.js v6 ``signTypedData`` (an encoder
    independent of eth-account) recover to their signer."""
    fixture = json.loads(ETHERS_VECTORS_PATH.read_text())
    domain = fixture["domain"]
    verifier = Verifier(domain["chainId"], domain["verifyingContract"])
    assert domain == verifier.domain
    assert {v["primaryType"] for v in fixture["vectors"]} == set(PRIMARY_TYPES) | {"Batch"}
    for vector in fixture["vectors"]:
        primary_type, message = vector["primaryType"], vector["message"]
        recovered = verifier.recover(primary_type, message, vector["sig"])
        assert recovered == vector["address"].lower(), (primary_type, message)


# --------------------------------------------------------------------------------------------
# (3) Tampering and malformed input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("primary_type", list(PRIMARY_TYPES))
def test_tampered_field_does_not_verify(
    verifier: Verifier, account: Any, primary_type: str
) -> None:
    msg = _base_message(primary_type, account.address)
    sig = sign(account.key, primary_type, msg, CHAIN_ID, CONTRACT)
    assert verifier.verify(primary_type, msg, sig, account.address)
    for name, type_ in PRIMARY_TYPES[primary_type]:
        for changed in _tampered_values(type_, msg[name]):
            tampered = {**msg, name: changed}
            assert not verifier.verify(primary_type, tampered, sig, account.address), (
                name,
                changed,
            )
            assert verifier.recover(primary_type, tampered, sig) != account.address.lower()


@pytest.mark.parametrize("primary_type", list(PRIMARY_TYPES))
def test_other_domain_or_type_does_not_verify(account: Any, primary_type: str) -> None:
    msg = _base_message(primary_type, account.address)
    sig = sign(account.key, primary_type, msg, CHAIN_ID, CONTRACT)
    assert Verifier(CHAIN_ID, CONTRACT).verify(primary_type, msg, sig, account.address)
    assert not Verifier(CHAIN_ID + 1, CONTRACT).verify(primary_type, msg, sig, account.address)
    assert not Verifier(CHAIN_ID, "0x" + "cd" * 20).verify(primary_type, msg, sig, account.address)
    # the same values read as another primary type (where they fit) must not verify either
    for other, fields in PRIMARY_TYPES.items():
        if other != primary_type and all(n in msg for n, _ in fields):
            assert not Verifier(CHAIN_ID, CONTRACT).verify(other, msg, sig, account.address)


def test_wire_forms_of_the_same_values_verify(verifier: Verifier, account: Any) -> None:
    """uint256 as int, as decimal string (even zero-padded) is the same value; any letter case of
    the address compares equal; extra body keys are ignored."""
    msg = _base_message("OrderV2", account.address)
    sig = sign(account.key, "OrderV2", msg, CHAIN_ID, CONTRACT)
    as_strings = {k: str(v) if k in ("price", "ts", "expiresAt") else v for k, v in msg.items()}
    as_ints = {**msg, "qty": int(msg["qty"])}
    padded = {**msg, "price": "000" + str(msg["price"])}
    extra = {**msg, "sig": sig, "anything": [1, 2]}
    for variant in (as_strings, as_ints, padded, extra):
        assert verifier.verify("OrderV2", variant, sig, account.address)
    assert verifier.verify("OrderV2", msg, sig, account.address.lower())
    assert verifier.verify("OrderV2", msg, sig, "0x" + account.address[2:].upper())
    assert not verifier.verify("OrderV2", msg, sig, "0x" + "00" * 20)


def test_signature_variants_agree_with_eth_account(verifier: Verifier, account: Any) -> None:
    """v as 0/1 and the high-s twin recover the same signer, as they do in eth-account."""
    msg = _base_message("Cancel", account.address)
    sig = sign(account.key, "Cancel", msg, CHAIN_ID, CONTRACT)
    raw = bytes.fromhex(sig[2:])
    v, s = raw[64], int.from_bytes(raw[32:64], "big")
    assert v in (27, 28)
    signable = _ref_signable("Cancel", msg, CHAIN_ID, CONTRACT)
    variants = [
        _with_sig_bytes(sig, v=v - 27),
        _with_sig_bytes(sig, v=55 - v, s=SECP256K1_N - s),  # high s, other parity
        sig.upper().replace("0X", "0x"),  # upper-case hex digits
    ]
    for variant in variants:
        assert verifier.recover("Cancel", msg, variant) == account.address.lower()
        assert Account.recover_message(signable, signature=variant) == account.address


def test_tampered_signature_does_not_verify(verifier: Verifier, account: Any) -> None:
    msg = _base_message("Order", account.address)
    sig = sign(account.key, "Order", msg, CHAIN_ID, CONTRACT)
    raw = bytes.fromhex(sig[2:])
    rng = random.Random(712)
    positions = sorted({*rng.sample(range(64 * 8), 48), 0, 255, 256, 511})
    for bit in positions:
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert not verifier.verify("Order", msg, "0x" + flipped.hex(), account.address), bit
    other_v = _with_sig_bytes(sig, v=55 - raw[64])
    assert not verifier.verify("Order", msg, other_v, account.address)


def _malformed_signatures(sig: str) -> dict[str, Any]:
    r = int(sig[2:66], 16)
    return {
        "empty": "",
        "prefix only": "0x",
        "no prefix": sig[2:],
        "no prefix, 132 hex": sig[2:] + "00",
        "upper-case prefix": "0X" + sig[2:],
        "too short": sig[:-2],
        "too long": sig + "00",
        "odd length": sig[:-1],
        "non-hex": sig[:10] + "zz" + sig[12:],
        "inner spaces": sig[:10] + " " + sig[11:],
        "v=2": _with_sig_bytes(sig, v=2),
        "v=26": _with_sig_bytes(sig, v=26),
        "v=29": _with_sig_bytes(sig, v=29),
        "v=255": _with_sig_bytes(sig, v=255),
        "r=0": _with_sig_bytes(sig, r=0),
        "s=0": _with_sig_bytes(sig, s=0),
        "r=N": _with_sig_bytes(sig, r=SECP256K1_N),
        "s=N": _with_sig_bytes(sig, s=SECP256K1_N),
        "r=2^256-1": _with_sig_bytes(sig, r=2**256 - 1),
        "s=N+1": _with_sig_bytes(sig, s=SECP256K1_N + 1),
        # x = 5 has no point on secp256k1 (5^3 + 7 = 132 is a non-residue mod p)
        "r off curve": _with_sig_bytes(sig, r=5),
        "bytes": bytes.fromhex(sig[2:]),
        "None": None,
        "int": r,
    }


def test_malformed_signatures_raise(verifier: Verifier, account: Any) -> None:
    msg = _base_message("Withdraw", account.address)
    sig = sign(account.key, "Withdraw", msg, CHAIN_ID, CONTRACT)
    digest = verifier.digest("Withdraw", msg)
    signable = _ref_signable("Withdraw", msg, CHAIN_ID, CONTRACT)
    for label, bad in _malformed_signatures(sig).items():
        with pytest.raises(SignatureError):
            verifier.recover("Withdraw", msg, bad)
        with pytest.raises(SignatureError):
            recover_digest(digest, bad)
        assert verifier.verify("Withdraw", msg, bad, account.address) is False, label
        # eth-account does not recover our signer from any of them either, except v >= 35,
        # which it reads as EIP-155 (see test_eip155_style_v_is_refused_unlike_eth_account)
        if label == "v=255":
            continue
        if isinstance(bad, str) and re.fullmatch(r"0x[0-9a-fA-F]{130}", bad):
            try:
                recovered = Account.recover_message(signable, signature=bad)
            except Exception:
                continue
            assert recovered != account.address, label


def test_eip155_style_v_is_refused_unlike_eth_account(verifier: Verifier, account: Any) -> None:
    """Documented difference: eth-account reads v >= 35 as EIP-155 (v = 35 + 2*chainId + bit);
    no EIP-712 signer produces that, and accepting it would add more malleable twins."""
    msg = _base_message("Cancel", account.address)
    sig = sign(account.key, "Cancel", msg, CHAIN_ID, CONTRACT)
    eip155 = _with_sig_bytes(sig, v=35 + (int(sig[-2:], 16) - 27))
    signable = _ref_signable("Cancel", msg, CHAIN_ID, CONTRACT)
    assert Account.recover_message(signable, signature=eip155) == account.address
    with pytest.raises(SignatureError):
        verifier.recover("Cancel", msg, eip155)


_GOOD_ORDER = _base_message("OrderV2", "0x" + "11" * 20)
_BAD_FIELD_VALUES = [
    ("price", -1),
    ("price", 2**256),
    ("price", str(2**256)),
    ("price", "1" * 79),
    ("price", 1.0),
    ("price", True),
    ("price", None),
    ("price", ""),
    ("price", "-1"),
    ("price", "+1"),
    ("price", " 1"),
    ("price", "1 "),
    ("price", "1_000"),
    ("price", "1e3"),
    ("price", "1.5"),
    ("price", "0x10"),
    ("price", "\u0663"),  # ARABIC-INDIC DIGIT THREE: str.isdigit() and int() accept it
    ("price", "\u00b2"),  # SUPERSCRIPT TWO
    ("price", [1]),
    ("reduceOnly", "false"),
    ("reduceOnly", 0),
    ("reduceOnly", 1),
    ("reduceOnly", None),
    ("market", 5),
    ("market", None),
    ("market", b"BTC-USD"),
    ("market", ["BTC-USD"]),
    ("market", "\ud800"),  # a lone surrogate has no UTF-8 form
]


@pytest.mark.parametrize(("field", "value"), _BAD_FIELD_VALUES)
def test_bad_field_values_raise_value_error(verifier: Verifier, field: str, value: Any) -> None:
    msg = {**_GOOD_ORDER, field: value}
    with pytest.raises(ValueError) as info:
        verifier.digest("OrderV2", msg)
    assert not isinstance(info.value, SignatureError)
    assert field in str(info.value)
    with pytest.raises(ValueError):
        sign("0x" + "42" * 32, "OrderV2", msg, CHAIN_ID, CONTRACT)


def test_missing_field_and_unknown_type_raise(verifier: Verifier) -> None:
    msg = dict(_GOOD_ORDER)
    del msg["expiresAt"]
    with pytest.raises(ValueError, match="expiresAt"):
        verifier.digest("OrderV2", msg)
    sig = sign("0x" + "42" * 32, "OrderV2", _GOOD_ORDER, CHAIN_ID, CONTRACT)
    with pytest.raises(ValueError, match="expiresAt"):  # a bad request, not a False
        verifier.verify("OrderV2", msg, sig, "0x" + "11" * 20)
    with pytest.raises(ValueError, match="Nope"):
        verifier.digest("Nope", _GOOD_ORDER)


# --------------------------------------------------------------------------------------------
# Published domain and types (GET /v1/info)
# --------------------------------------------------------------------------------------------

# API.md section 4, written out by hand so a change to PRIMARY_TYPES shows up here.
_API_ENCODE_TYPES = {
    "Order": "Order(string clientOrderId,string userId,string market,string side,string type,"
    "uint256 price,uint256 qty,string product,uint256 ts)",
    "OrderV2": "OrderV2(string clientOrderId,string userId,string market,string side,"
    "string type,uint256 price,uint256 qty,string product,uint256 ts,string timeInForce,"
    "bool reduceOnly,uint256 expiresAt)",
    "Cancel": "Cancel(string userId,string market,string clientOrderId,uint256 ts)",
    "CancelAll": "CancelAll(string userId,string market,uint256 ts)",
    "Withdraw": "Withdraw(string userId,string asset,uint256 amount,uint256 ts)",
    "ApproveAgent": "ApproveAgent(string userId,string agent,string name,string scope,"
    "string markets,uint256 expiresAt,uint256 ts)",
    "RevokeAgent": "RevokeAgent(string userId,string agent,uint256 ts)",
    "ScheduleCancel": "ScheduleCancel(string userId,string market,uint256 deadline,uint256 ts)",
    "CancelReplace": "CancelReplace(string clientOrderId,string userId,string market,string side,"
    "string type,uint256 price,uint256 qty,string product,uint256 ts,string timeInForce,"
    "bool reduceOnly,uint256 expiresAt,string cancelClientOrderId)",
    "Amend": "Amend(string userId,string market,string clientOrderId,uint256 price,uint256 qty,"
    "int256 expectedFilled,uint256 ts)",
    "OrderV3": "OrderV3(string clientOrderId,string userId,string market,string side,"
    "string type,uint256 price,uint256 qty,string product,uint256 ts,string timeInForce,"
    "bool reduceOnly,uint256 expiresAt,string selfTradePrevention)",
    "OrderV4": "OrderV4(string clientOrderId,string userId,string market,string side,"
    "string type,uint256 price,uint256 qty,string product,uint256 ts,string timeInForce,"
    "bool reduceOnly,uint256 expiresAt,string selfTradePrevention,uint256 triggerPrice,"
    "string triggerSource,uint256 trailingDelta,string trailingUnit,bool closePosition,"
    "uint256 takeProfitPrice,uint256 stopLossPrice)",
    "Batch": "Batch(string userId,bool atomic,BatchAction[] actions,uint256 ts)BatchAction("
    "string kind,string market,string clientOrderId,string side,string type,uint256 price,"
    "uint256 qty,string timeInForce,bool reduceOnly,uint256 expiresAt,int256 expectedFilled)",
    "BatchAction": "BatchAction(string kind,string market,string clientOrderId,string side,"
    "string type,uint256 price,uint256 qty,string timeInForce,bool reduceOnly,uint256 expiresAt,"
    "int256 expectedFilled)",
}


def test_types_for_info_match_api() -> None:
    types = types_for_info()
    assert list(types) == ["EIP712Domain", *_API_ENCODE_TYPES]
    assert ref.encode_type("EIP712Domain", types) == (
        "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    )
    for name, want in _API_ENCODE_TYPES.items():
        assert ref.encode_type(name, types) == want
        assert all(set(f) == {"name", "type"} for f in types[name])
    types["Order"].clear()  # a copy: ours is untouched
    assert types_for_info()["Order"]


def test_domain_for_info() -> None:
    domain = domain_for_info(31337, "0x5fbdb2315678afecb367f032d93f642f64180aa3")
    assert domain == {
        "name": "OrderBookDEX",
        "version": "1",
        "chainId": 31337,
        "verifyingContract": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
    }
    assert type(domain["chainId"]) is int
    assert (
        domain_for_info(1, "0x" + "AB" * 20)["verifyingContract"]
        == domain_for_info(1, "0x" + "ab" * 20)["verifyingContract"]
    )
    for bad in ("0x5FbDB2315678afecb367f032d93F642f64180aA3", "0x1234", "5f" * 20, ""):
        with pytest.raises(ValueError):
            domain_for_info(1, bad)
    with pytest.raises(ValueError):
        domain_for_info(-1, CONTRACT)
    with pytest.raises(ValueError):
        Verifier(1, "0xnotanaddress")


# --------------------------------------------------------------------------------------------
# Nested types: a Batch of BatchAction structs
# --------------------------------------------------------------------------------------------

_int256 = st.integers(min_value=-(2**255), max_value=2**255 - 1)
_ACTION = st.fixed_dictionaries(
    {
        name: {"string": _text, "uint256": _uint, "bool": st.booleans(), "int256": _int256}[type_]
        for name, type_ in NESTED_TYPES["BatchAction"]
    }
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    actions=st.lists(_ACTION, min_size=0, max_size=5),
    atomic=st.booleans(),
    ts=_uint,
    as_strings=st.booleans(),
)
def test_batch_digest_matches_eth_account(
    actions: list[dict[str, Any]], atomic: bool, ts: int, as_strings: bool
) -> None:
    """A Batch (an array of BatchAction structs, int256 among their fields) hashes as
    eth-account's ``encode_typed_data`` does, with numbers as ints or decimal strings, and
    signing then recovering it gives the signer back."""
    acct = Account.create()
    msg = {"userId": acct.address, "atomic": atomic, "actions": actions, "ts": ts}
    wire = {
        **msg,
        "actions": [
            {k: str(v) if as_strings and type(v) is int else v for k, v in a.items()}
            for a in actions
        ],
    }
    types = {name: [{"name": n, "type": t} for n, t in NESTED_TYPES[name]] for name in NESTED_TYPES}
    signable = encode_typed_data(
        domain_data=domain_for_info(CHAIN_ID, CONTRACT),
        message_types=types,
        message_data=msg,
    )
    verifier = Verifier(CHAIN_ID, CONTRACT)
    assert verifier.digest("Batch", wire) == _ref_digest(signable)
    sig = sign(acct.key, "Batch", wire, CHAIN_ID, CONTRACT)
    assert verifier.recover("Batch", wire, sig) == acct.address.lower()
    if actions:
        moved = {**wire, "actions": wire["actions"][1:] + wire["actions"][:1]}
        if moved["actions"] != wire["actions"]:
            assert verifier.recover("Batch", moved, sig) != acct.address.lower()


@pytest.mark.parametrize(
    "bad",
    [
        {"actions": {"kind": "PLACE"}},
        {"actions": ["PLACE"]},
        {"actions": [{"kind": "PLACE"}]},
        {"atomic": "true"},
    ],
)
def test_malformed_batch_is_a_value_error(bad: dict[str, Any]) -> None:
    msg = {"userId": "0x" + "11" * 20, "atomic": True, "actions": [], "ts": 1, **bad}
    with pytest.raises(ValueError):
        Verifier(CHAIN_ID, CONTRACT).digest("Batch", msg)
