"""Request bodies, each declared once: its fields and its value checks, in the contract's order.

One :class:`Shape` per body is both the parser the handlers call and the JSON schema of the
OpenAPI document (:meth:`Shape.json_schema`), so the two cannot drift apart. A shape is read
in three steps, the first failure answering (API.md §5):

1. the field set: every required field present (else ``missing field(s): ...``), none other
   (``unexpected field(s): ...``); an optional field may be absent;
2. each required field's type, in declaration order (400 ``INVALID_REQUEST``): a ``string``,
   a ``bool``, or a ``uint256`` given as a JSON integer or a string of decimal digits;
3. the value checks, in the order listed, each with its own code (``INVALID_USER``,
   ``UNKNOWN_MARKET``, ``INVALID_PRICE``...). An optional field is checked, type and value,
   by its check, at its place in that list.

A signed body's fields are its EIP-712 type's (``common.eip712.PRIMARY_TYPES``), in the same
order, then ``sig``; the table here adds what the wire needs beside the type: a description,
an example and the checks.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from common.eip712 import NESTED_TYPES, PRIMARY_TYPES
from common.events import MAX_SAFE_INTEGER
from common.keys import SYSTEM_ACCOUNTS
from common.markets import MarketSet
from common.money import OffQuantum, to_quanta
from common.types import (
    OrderType,
    Product,
    SelfTradePrevention,
    Side,
    TimeInForce,
    TrailingUnit,
    TriggerSource,
    TriggerType,
)
from services.gateway.errors import ApiError, ErrorCode
from services.gateway.parsing import (
    ADDRESS,
    CLIENT_ORDER_ID,
    DEPOSIT_ID,
    DIGITS,
    SIGNATURE,
    UINT256_LIMIT,
)

Values = dict[str, Any]
Test = Callable[[Values, MarketSet], str | None]
"""A value check: the refusal message, or None when the value passes."""


class Kind(Enum):
    """A field's wire type; the EIP-712 type names are the values."""

    STRING = "string"
    BOOL = "bool"
    UINT = "uint256"
    SIGNATURE = "signature"
    INT = "int256"
    ACTIONS = "BatchAction[]"


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: Kind
    doc: str
    example: Any
    optional: bool = False


@dataclass(frozen=True, slots=True)
class Check:
    """One value rule of one field: ``rule`` says it in words (the schema's description),
    ``schema`` holds the JSON-schema keywords that express it where there are any."""

    field: str
    code: ErrorCode
    rule: str
    test: Test
    schema: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _convert_string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ApiError(ErrorCode.INVALID_REQUEST, f"{name} must be a string")
    return value


def _convert_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ApiError(ErrorCode.INVALID_REQUEST, f"{name} must be true or false")
    return value


def _convert_uint(value: Any, name: str) -> int:
    """A uint256 given as a JSON integer or a string of decimal digits."""
    if isinstance(value, bool):
        raise ApiError(ErrorCode.INVALID_REQUEST, f"{name} must be an integer, got a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and DIGITS.fullmatch(value):
        number = int(value)
    else:
        raise ApiError(
            ErrorCode.INVALID_REQUEST, f"{name} must be a non-negative integer or digit string"
        )
    if number < 0 or number >= UINT256_LIMIT:
        raise ApiError(ErrorCode.INVALID_REQUEST, f"{name} is outside the uint256 range")
    return number


def _convert_int(value: Any, name: str) -> int:
    """An int256 given as a JSON integer or a decimal string with an optional minus sign."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and DIGITS.fullmatch(value.removeprefix("-")):
        number = int(value)
    else:
        raise ApiError(ErrorCode.INVALID_REQUEST, f"{name} must be an integer or digit string")
    if not -(UINT256_LIMIT >> 1) <= number < UINT256_LIMIT >> 1:
        raise ApiError(ErrorCode.INVALID_REQUEST, f"{name} is outside the int256 range")
    return number


def _convert_signature(value: Any, name: str) -> str:
    if not isinstance(value, str) or not SIGNATURE.fullmatch(value):
        raise ApiError(ErrorCode.INVALID_REQUEST, f"{name} must be 0x followed by 130 hex digits")
    return value


_CONVERTERS: dict[Kind, Callable[[Any, str], Any]] = {
    Kind.STRING: _convert_string,
    Kind.BOOL: _convert_bool,
    Kind.UINT: _convert_uint,
    Kind.SIGNATURE: _convert_signature,
    Kind.INT: _convert_int,
}

_KIND_SCHEMAS: dict[Kind, dict[str, Any]] = {
    Kind.STRING: {"type": "string"},
    Kind.BOOL: {"type": "boolean"},
    # A uint256: the document's model holds numbers as floats, so 2^256 - 1 is no "maximum" here.
    Kind.UINT: {
        "anyOf": [
            {"type": "integer", "minimum": 0},
            {"type": "string", "pattern": f"^{DIGITS.pattern}$"},
        ]
    },
    Kind.SIGNATURE: {"type": "string", "pattern": f"^{SIGNATURE.pattern}$"},
    Kind.INT: {
        "anyOf": [{"type": "integer"}, {"type": "string", "pattern": f"^-?{DIGITS.pattern}$"}]
    },
}


class Shape:
    """A request body: its fields and value checks, read as the module docstring says."""

    def __init__(
        self, title: str, doc: str, fields: Sequence[Field], checks: Sequence[Check] = ()
    ) -> None:
        names = [f.name for f in fields]
        unknown = {c.field for c in checks} - set(names)
        if len(set(names)) != len(names) or unknown:
            raise ValueError(f"shape {title}: repeated fields, or checks of no field {unknown}")
        self.title = title
        self.doc = doc
        self.fields = tuple(fields)
        self.checks = tuple(checks)
        self.required = frozenset(f.name for f in fields if not f.optional)
        self.allowed = frozenset(names)
        self.optional = tuple(f.name for f in fields if f.optional)
        self._converters = tuple((f.name, _CONVERTERS[f.kind]) for f in fields if not f.optional)
        self._tests = tuple((c.code, c.test) for c in checks)

    def parse(self, body: Mapping[str, Any], markets: MarketSet) -> Values:
        """The body's values (uint256 fields as ``int``); :class:`ApiError` at the first
        failing step, in the order the module docstring gives."""
        if body.keys() != self.required:
            self._check_field_set(body)
        values = {name: convert(body[name], name) for name, convert in self._converters}
        for name in self.optional:
            if name in body:
                values[name] = body[name]
        for code, test in self._tests:
            message = test(values, markets)
            if message is not None:
                raise ApiError(code, message)
        return values

    def parse_signed(self, body: Mapping[str, Any], markets: MarketSet) -> tuple[Values, str]:
        """``(signed message, sig)`` of a signed body (:func:`signed_shape`)."""
        values = self.parse(body, markets)
        return values, values.pop("sig")

    def _check_field_set(self, body: Mapping[str, Any]) -> None:
        missing = sorted(self.required - body.keys())
        if missing:
            raise ApiError(ErrorCode.INVALID_REQUEST, f"missing field(s): {', '.join(missing)}")
        extra = sorted(body.keys() - self.allowed)
        if extra:
            raise ApiError(ErrorCode.INVALID_REQUEST, f"unexpected field(s): {', '.join(extra)}")

    def example(self) -> dict[str, Any]:
        return {f.name: f.example for f in self.fields}

    def json_schema(self) -> dict[str, Any]:
        """This shape as a JSON schema (the OpenAPI document's request body)."""
        rules: dict[str, list[Check]] = {}
        for check in self.checks:
            rules.setdefault(check.field, []).append(check)
        properties: dict[str, Any] = {}
        for f in self.fields:
            schema = dict(_KIND_SCHEMAS[f.kind])
            words = [f.doc] if f.doc else []
            for check in rules.get(f.name, ()):
                schema.update(check.schema)
                words.append(f"{check.rule} (else {check.code.status} {check.code})")
            description = "; ".join(words)
            if f.kind is Kind.SIGNATURE:
                description += f" (else {ErrorCode.INVALID_REQUEST.status} INVALID_REQUEST)"
            properties[f.name] = {**schema, "description": description}
        return {
            "title": self.title,
            "description": self.doc,
            "type": "object",
            "properties": properties,
            "required": [f.name for f in self.fields if not f.optional],
            "additionalProperties": False,
            "examples": [self.example()],
        }


def openapi_body(*shapes: Shape) -> dict[str, Any]:
    """``openapi_extra`` for a route whose JSON body is one of ``shapes``."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": body_schema(*shapes)}},
        }
    }


def body_schema(*shapes: Shape) -> dict[str, Any]:
    """One shape's schema, or ``oneOf`` several (with the last one's example)."""
    if len(shapes) == 1:
        return shapes[0].json_schema()
    return {
        "oneOf": [s.json_schema() for s in shapes],
        "examples": [shapes[-1].example()],
    }


# -- the checks ------------------------------------------------------------------------------


def _address(values: Values, _: MarketSet) -> str | None:
    value = values["userId"]
    if ADDRESS.fullmatch(value):
        return None
    return f"userId must be a 0x-prefixed 20-byte address, got {value!r}"


def _account(values: Values, markets: MarketSet) -> str | None:
    return None if values["userId"] in SYSTEM_ACCOUNTS else _address(values, markets)


def _market_known(values: Values, markets: MarketSet) -> str | None:
    symbol = values["market"]
    return None if symbol in markets.markets else f"no market named {symbol!r}"


def _market_known_or_every(values: Values, markets: MarketSet) -> str | None:
    return _market_known(values, markets) if values["market"] else None


def _asset_known(values: Values, markets: MarketSet) -> str | None:
    asset = values["asset"]
    return None if asset in markets.assets else f"no asset named {asset!r}"


def _positive_amount(values: Values, _: MarketSet) -> str | None:
    if values["amount"] > 0:
        return None
    return "amount must be a positive integer of atomic units"


def _whole_quanta(values: Values, markets: MarketSet) -> str | None:
    try:
        to_quanta(markets.assets[values["asset"]], values["amount"])
    except OffQuantum as exc:
        return f"amount {exc}"
    return None


def _price_on_tick(values: Values, markets: MarketSet) -> str | None:
    spec = markets.markets[values["market"]].spec
    price = values["price"]
    is_market = values["type"] == "MARKET"
    if price < 2**53 and (is_market or price != 0) and not price % spec.tickSize:
        return None
    return f"price {price} must be a positive multiple of tickSize {spec.tickSize} below 2^53" + (
        " (or 0 for a MARKET order)" if is_market else ""
    )


def _qty_on_lot(values: Values, markets: MarketSet) -> str | None:
    spec = markets.markets[values["market"]].spec
    qty = values["qty"]
    if 0 < qty < 2**53 and not qty % spec.lotSize and qty >= spec.minQty:
        return None
    return (
        f"qty {qty} must be a multiple of lotSize {spec.lotSize}, at least minQty "
        f"{spec.minQty} and below 2^53"
    )


def _one_of(name: str, enum: type[Enum]) -> Check:
    members = frozenset(enum.__members__)
    allowed = "/".join(enum.__members__)

    def test(values: Values, _: MarketSet) -> str | None:
        return None if values[name] in members else f"{name} must be one of {allowed}"

    return Check(
        name, ErrorCode.INVALID_ORDER, f"one of {allowed}", test, {"enum": list(enum.__members__)}
    )


def _stp_mode(values: Values, _: MarketSet) -> str | None:
    mode = values["selfTradePrevention"]
    if mode == "" or mode in SelfTradePrevention.__members__:
        return None
    return 'selfTradePrevention must be "" or one of ' + "/".join(SelfTradePrevention)


def _client_order_id(values: Values, _: MarketSet) -> str | None:
    if CLIENT_ORDER_ID.fullmatch(values["clientOrderId"]):
        return None
    return "clientOrderId must be 1-64 of A-Z a-z 0-9 . _ : -"


def _product_matches(values: Values, markets: MarketSet) -> str | None:
    product = markets.markets[values["market"]].spec.product
    if values["product"] == product:
        return None
    return f"product {values['product']} does not match {product}"


def _market_not_post_only(values: Values, _: MarketSet) -> str | None:
    if values["type"] == "MARKET" and values["timeInForce"] == "POST_ONLY":
        return "a MARKET order cannot be POST_ONLY"
    return None


def _zero_or_ahead(field: str, note: str = "") -> Test:
    """A time in ms that must be 0 or still ahead of the server clock."""

    def test(values: Values, _: MarketSet) -> str | None:
        value = values[field]
        if value and value <= int(time.time() * 1000):
            return f"{field} {value} is already past{note}"
        return None

    return test


_expires_ahead = _zero_or_ahead("expiresAt")


def _expires_below_2_53(values: Values, _: MarketSet) -> str | None:
    return None if values["expiresAt"] < 2**53 else "expiresAt must be below 2^53"


def _deposit_id(values: Values, _: MarketSet) -> str | None:
    if "depositId" not in values:
        return None
    value = values["depositId"]
    if not isinstance(value, str):
        return "depositId must be a string"
    if not DEPOSIT_ID.fullmatch(value):
        return "depositId must be 1-128 of A-Z a-z 0-9 . _ : -"
    return None


def _index_price(values: Values, _: MarketSet) -> str | None:
    if 0 < values["indexPrice"] <= MAX_SAFE_INTEGER:
        return None
    return f"indexPrice must be between 1 and {MAX_SAFE_INTEGER}"


ADDRESS_EXAMPLE = "0x8ba1f109551bD432803012645Ac136ddd64DBA72"
SIG_EXAMPLE = "0x" + "ab" * 65
TS_EXAMPLE = 1764590000000

USER_IS_ADDRESS = Check(
    "userId",
    ErrorCode.INVALID_USER,
    "a 0x-prefixed 20-byte address, any letter case",
    _address,
    {"pattern": f"^{ADDRESS.pattern}$"},
)
MARKET_KNOWN = Check("market", ErrorCode.UNKNOWN_MARKET, "a listed market", _market_known)
ASSET_KNOWN = Check("asset", ErrorCode.UNKNOWN_ASSET, "a listed asset", _asset_known)
AMOUNT_POSITIVE = Check(
    "amount", ErrorCode.INVALID_REQUEST, "positive", _positive_amount, {"minimum": 1}
)
AMOUNT_WHOLE_QUANTA = Check(
    "amount", ErrorCode.INVALID_REQUEST, "a whole number of the asset's quanta", _whole_quanta
)

# What the wire says of each signed field beside its EIP-712 type: (description, example).
SIGNED_FIELD_DOCS: dict[str, tuple[str, Any]] = {
    "clientOrderId": ("your id for the order, once only per user", "c-1"),
    "userId": ("the signer's address", ADDRESS_EXAMPLE),
    "market": ("a market symbol", "BTC-USDC"),
    "side": ("", "BUY"),
    "type": ("", "LIMIT"),
    "price": ("0 for a MARKET order (or a protection price)", 3000000),
    "qty": ("", 1000),
    "product": ("the market's product", "SPOT"),
    "ts": ("ms since epoch, within DEX_SIGNATURE_MAX_AGE_MS of the server clock", TS_EXAMPLE),
    "timeInForce": ("OrderV2 only (its presence makes the body an OrderV2)", "GTC"),
    "reduceOnly": ("OrderV2 only", False),
    "expiresAt": ("OrderV2 and ApproveAgent only: ms since epoch, 0 = never", 0),
    "asset": ("an asset symbol", "USDC"),
    "amount": ("atomic units of the asset", "1000000"),
    "deadline": ("ScheduleCancel only: ms since epoch, 0 = switch off", TS_EXAMPLE + 60_000),
    "expectedFilled": ("Amend only: -1 = no guard, else the qty the order must have filled", -1),
    "selfTradePrevention": (
        "OrderV3 only (its presence makes the body an OrderV3): EXPIRE_MAKER, EXPIRE_TAKER, "
        'EXPIRE_BOTH, DECREMENT, or "" for the market\'s mode',
        "EXPIRE_TAKER",
    ),
}
SIG_FIELD = Field("sig", Kind.SIGNATURE, "the EIP-712 signature: 0x + 130 hex digits", SIG_EXAMPLE)


def signed_shape(
    primary_type: str,
    doc: str,
    checks: Sequence[Check],
    examples: Mapping[str, Any] | None = None,
) -> Shape:
    """The body of a signed ``primary_type``: its EIP-712 fields in order, then ``sig``."""
    fields = []
    for name, kind in PRIMARY_TYPES[primary_type]:
        description, example = SIGNED_FIELD_DOCS[name]
        example = (examples or {}).get(name, example)
        fields.append(Field(name, Kind(kind), description, example))
    return Shape(f"{primary_type}Body", doc, [*fields, SIG_FIELD], checks)


_ORDER_CHECKS = [
    USER_IS_ADDRESS,
    MARKET_KNOWN,
    Check(
        "price",
        ErrorCode.INVALID_PRICE,
        "a positive multiple of the market's tickSize, below 2^53 (0 only for a MARKET order)",
        _price_on_tick,
    ),
    Check(
        "qty",
        ErrorCode.INVALID_QTY,
        "a positive multiple of the market's lotSize, at least its minQty, below 2^53",
        _qty_on_lot,
    ),
    _one_of("side", Side),
    _one_of("type", OrderType),
    _one_of("product", Product),
]
_ORDER_TAIL = [
    Check(
        "clientOrderId",
        ErrorCode.INVALID_ORDER,
        "1-64 of A-Z a-z 0-9 . _ : -",
        _client_order_id,
        {"pattern": f"^{CLIENT_ORDER_ID.pattern}$"},
    ),
    Check("product", ErrorCode.INVALID_ORDER, "the market's own product", _product_matches),
]

ORDER = signed_shape(
    "Order",
    "A signed Order (GTC, not reduce-only, no expiry) plus sig.",
    [*_ORDER_CHECKS, *_ORDER_TAIL],
)
ORDER_V2 = signed_shape(
    "OrderV2",
    "A signed OrderV2 plus sig: a body that carries timeInForce is one.",
    [
        *_ORDER_CHECKS,
        _one_of("timeInForce", TimeInForce),
        *_ORDER_TAIL,
        Check(
            "timeInForce",
            ErrorCode.INVALID_ORDER,
            "not POST_ONLY for a MARKET order",
            _market_not_post_only,
        ),
        Check("expiresAt", ErrorCode.INVALID_ORDER, "0 or in the future", _expires_ahead),
        Check(
            "expiresAt",
            ErrorCode.INVALID_ORDER,
            "below 2^53",
            _expires_below_2_53,
            {"maximum": 2**53 - 1},
        ),
    ],
)
ORDER_V3 = signed_shape(
    "OrderV3",
    "A signed OrderV3 plus sig: an OrderV2 with its own self-trade prevention mode; a body "
    "that carries selfTradePrevention is one.",
    [
        *ORDER_V2.checks,
        Check(
            "selfTradePrevention",
            ErrorCode.INVALID_ORDER,
            '"", EXPIRE_MAKER, EXPIRE_TAKER, EXPIRE_BOTH or DECREMENT',
            _stp_mode,
            {"enum": ["", *SelfTradePrevention.__members__]},
        ),
    ],
)

# -- trigger orders (docs/api.md "Trigger orders") ---------------------------------------------

MAX_TRAILING_BPS = 5000
"""The widest trailing distance in bps (50 %)."""
ORDER_V4_TYPES = (*OrderType.__members__, *TriggerType.__members__)

SIGNED_FIELD_DOCS.update(
    {
        "triggerPrice": (
            "OrderV4 only (its presence makes the body an OrderV4): the price its source must "
            "reach (STOP_* and TAKE_PROFIT_* types), else 0",
            3100000,
        ),
        "triggerSource": ('MARK, LAST, INDEX, or "" (MARK on derivatives, LAST on SPOT)', ""),
        "trailingDelta": ("TRAILING_STOP_MARKET only (else 0): its distance", 0),
        "trailingUnit": ('TRAILING_STOP_MARKET only: TICKS or BPS (else "")', ""),
        "closePosition": (
            "STOP_MARKET / TAKE_PROFIT_MARKET on PERP or FUTURE, qty 0: a position TP/SL that "
            "closes the whole position when it fires",
            False,
        ),
        "takeProfitPrice": (
            "a LIMIT or MARKET order on PERP, FUTURE or SPOT: the attached take-profit's "
            "trigger, else 0",
            0,
        ),
        "stopLossPrice": (
            "a LIMIT or MARKET order on PERP, FUTURE or SPOT: the attached stop-loss's "
            "trigger, else 0",
            0,
        ),
    }
)


def _is_market_like(order_type: str) -> bool:
    return order_type == "MARKET" or order_type.endswith("_MARKET")


def _v4_type(values: Values, _: MarketSet) -> str | None:
    if values["type"] in ORDER_V4_TYPES:
        return None
    return f"type must be one of {'/'.join(ORDER_V4_TYPES)}"


def _v4_price_on_tick(values: Values, markets: MarketSet) -> str | None:
    spec = markets.markets[values["market"]].spec
    price = values["price"]
    is_market = _is_market_like(values["type"])
    if price < 2**53 and (is_market or price != 0) and not price % spec.tickSize:
        return None
    return f"price {price} must be a positive multiple of tickSize {spec.tickSize} below 2^53" + (
        " (or 0 for a *MARKET order)" if is_market else ""
    )


def _v4_not_post_only(values: Values, _: MarketSet) -> str | None:
    if _is_market_like(values["type"]) and values["timeInForce"] == "POST_ONLY":
        return f"a {values['type']} order cannot be POST_ONLY"
    return None


def _trigger_source(values: Values, _: MarketSet) -> str | None:
    if values["triggerSource"] in ("", *TriggerSource.__members__):
        return None
    return 'triggerSource must be "" or one of ' + "/".join(TriggerSource)


_PRICE_TRIGGERED = ("STOP_MARKET", "STOP_LIMIT", "TAKE_PROFIT_MARKET", "TAKE_PROFIT_LIMIT")


def _trigger_price_taken(values: Values, _: MarketSet) -> str | None:
    order_type, price = values["type"], values["triggerPrice"]
    if price and order_type not in _PRICE_TRIGGERED:
        return f"a {order_type} order takes no triggerPrice (0), got {price}"
    return None


def _trigger_price(values: Values, markets: MarketSet) -> str | None:
    order_type, price = values["type"], values["triggerPrice"]
    if order_type not in _PRICE_TRIGGERED:
        return None
    tick = markets.markets[values["market"]].spec.tickSize
    if 0 < price < 2**53 and not price % tick:
        return None
    return (
        f"triggerPrice {price} of a {order_type} order must be a positive multiple of "
        f"tickSize {tick} below 2^53"
    )


def _trailing(values: Values, markets: MarketSet) -> str | None:
    order_type, delta, unit = values["type"], values["trailingDelta"], values["trailingUnit"]
    if order_type != "TRAILING_STOP_MARKET":
        if delta or unit:
            return f'a {order_type} order takes no trailingDelta (0) or trailingUnit ("")'
        return None
    if unit == TrailingUnit.BPS:
        if 0 < delta <= MAX_TRAILING_BPS:
            return None
        return f"trailingDelta {delta} BPS must be between 1 and {MAX_TRAILING_BPS}"
    if unit == TrailingUnit.TICKS:
        tick = markets.markets[values["market"]].spec.tickSize
        if delta > 0 and delta * tick < 2**53:
            return None
        return f"trailingDelta {delta} TICKS must be positive, and times tickSize below 2^53"
    return "trailingUnit of a TRAILING_STOP_MARKET order must be TICKS or BPS"


# -- attached TP/SL and position TP/SL (docs/api.md "Attached TP/SL and position TP/SL") ------

ATTACHED_SUFFIXES = (".tp", ".sl")
"""The clientOrderId of a parent's take-profit and stop-loss children: <cid>.tp, <cid>.sl."""
MAX_PARENT_CID = 64 - 3
"""A parent's clientOrderId is at most this long, so its children's ids are at most 64."""
_CLOSING_TYPES = ("STOP_MARKET", "TAKE_PROFIT_MARKET")
_MARGINED = (Product.PERP, Product.FUTURE)


def _v4_qty(values: Values, markets: MarketSet) -> str | None:
    if not values["closePosition"] or values["type"] not in _CLOSING_TYPES:
        return _qty_on_lot(values, markets)
    if values["qty"] == 0:
        return None
    return f"a closePosition order takes qty 0 (it closes the whole position), got {values['qty']}"


def _close_position(values: Values, markets: MarketSet) -> str | None:
    if not values["closePosition"]:
        return None
    product = markets.markets[values["market"]].spec.product
    if values["type"] not in _CLOSING_TYPES or product not in _MARGINED:
        return (
            "closePosition is for a STOP_MARKET or TAKE_PROFIT_MARKET order on a PERP or FUTURE "
            f"market, not a {values['type']} order on {product}"
        )
    if values["takeProfitPrice"] or values["stopLossPrice"]:
        return "a closePosition order takes no takeProfitPrice or stopLossPrice (0)"
    return None


def _attached_taken(values: Values, markets: MarketSet) -> str | None:
    if not (values["takeProfitPrice"] or values["stopLossPrice"]):
        return None
    product = markets.markets[values["market"]].spec.product
    if values["type"] not in OrderType.__members__ or product not in (*_MARGINED, Product.SPOT):
        return (
            "takeProfitPrice and stopLossPrice are for a LIMIT or MARKET order on a PERP, "
            f"FUTURE or SPOT market, not a {values['type']} order on {product}"
        )
    if len(values["clientOrderId"]) > MAX_PARENT_CID:
        return (
            f"the clientOrderId of an order with takeProfitPrice or stopLossPrice is at most "
            f"{MAX_PARENT_CID} characters (its children are <cid>.tp and <cid>.sl)"
        )
    return None


def _attached_prices(values: Values, markets: MarketSet) -> str | None:
    tick = markets.markets[values["market"]].spec.tickSize
    tp, sl, price = values["takeProfitPrice"], values["stopLossPrice"], values["price"]
    for name, value in (("takeProfitPrice", tp), ("stopLossPrice", sl)):
        if value and (value >= 2**53 or value % tick):
            return f"{name} {value} must be 0 or a positive multiple of tickSize {tick} below 2^53"
    # a BUY's take-profit sells above, its stop-loss below (a SELL's mirrored), and above or
    # below the order's own price when it has one
    sign = 1 if values["side"] == Side.BUY else -1
    bounds = [("takeProfitPrice", tp, 1), ("stopLossPrice", sl, -1)]
    for name, value, above in bounds:
        if value and price and (value - price) * sign * above <= 0:
            where = "above" if sign * above > 0 else "below"
            return f"{name} {value} of a {values['side']} order must be {where} its price {price}"
    if tp and sl and (tp - sl) * sign <= 0:
        where = "above" if sign > 0 else "below"
        return (
            f"takeProfitPrice {tp} of a {values['side']} order must be {where} stopLossPrice {sl}"
        )
    return None


def _v4_check(check: Check) -> Check:
    """An OrderV3 check as an OrderV4 judges it (the trigger types are *MARKET or *LIMIT)."""
    if check.field == "type" and check.code is ErrorCode.INVALID_ORDER and check.schema:
        return Check(
            "type", ErrorCode.INVALID_ORDER, f"one of {'/'.join(ORDER_V4_TYPES)}", _v4_type,
            {"enum": list(ORDER_V4_TYPES)},
        )  # fmt: skip
    if check.test is _price_on_tick:
        return Check(
            "price", ErrorCode.INVALID_PRICE,
            "a positive multiple of the market's tickSize, below 2^53 (0 only for a *MARKET type)",
            _v4_price_on_tick,
        )  # fmt: skip
    if check.test is _qty_on_lot:
        return Check(
            "qty", ErrorCode.INVALID_QTY,
            "a positive multiple of the market's lotSize, at least its minQty, below 2^53; 0 "
            "with closePosition",
            _v4_qty,
        )  # fmt: skip
    if check.test is _market_not_post_only:
        return Check(
            "timeInForce", ErrorCode.INVALID_ORDER, "not POST_ONLY for a *MARKET type",
            _v4_not_post_only,
        )  # fmt: skip
    return check


ORDER_V4 = signed_shape(
    "OrderV4",
    'A signed OrderV4 plus sig: an OrderV3 with a trigger (docs/api.md "Trigger orders"); a '
    "body that carries triggerPrice is one.",
    [
        *(_v4_check(c) for c in ORDER_V3.checks),
        Check(
            "triggerSource",
            ErrorCode.INVALID_ORDER,
            '"", MARK, LAST or INDEX',
            _trigger_source,
            {"enum": ["", *TriggerSource.__members__]},
        ),
        Check(
            "triggerPrice",
            ErrorCode.INVALID_ORDER,
            "0 unless STOP_* or TAKE_PROFIT_*",
            _trigger_price_taken,
        ),
        Check(
            "triggerPrice",
            ErrorCode.INVALID_PRICE,
            "STOP_* and TAKE_PROFIT_*: a positive multiple of the market's tickSize below 2^53; "
            "else 0",
            _trigger_price,
        ),
        Check(
            "trailingDelta",
            ErrorCode.INVALID_ORDER,
            f"TRAILING_STOP_MARKET: TICKS (times tickSize below 2^53) or 1-{MAX_TRAILING_BPS} "
            'BPS; else 0 and ""',
            _trailing,
        ),
        Check(
            "closePosition",
            ErrorCode.INVALID_ORDER,
            "true only for STOP_MARKET / TAKE_PROFIT_MARKET on PERP or FUTURE, without "
            "takeProfitPrice or stopLossPrice",
            _close_position,
        ),
        Check(
            "takeProfitPrice",
            ErrorCode.INVALID_ORDER,
            "with stopLossPrice: 0, or for a LIMIT or MARKET order on PERP, FUTURE or SPOT, "
            f"whose clientOrderId is at most {MAX_PARENT_CID} characters",
            _attached_taken,
        ),
        Check(
            "takeProfitPrice",
            ErrorCode.INVALID_PRICE,
            "with stopLossPrice: 0 or multiples of tickSize below 2^53; a BUY's take-profit "
            "above its price and its stop-loss, its stop-loss below its price (a SELL mirrored)",
            _attached_prices,
        ),
    ],
    {"type": "STOP_LIMIT", "triggerSource": "LAST"},
)
MARKET_KNOWN_OR_EVERY = Check(
    "market", ErrorCode.UNKNOWN_MARKET, '"" for every market, else a listed market',
    _market_known_or_every,
)  # fmt: skip
CANCEL = signed_shape("Cancel", "A signed Cancel plus sig.", [USER_IS_ADDRESS, MARKET_KNOWN])
CANCEL_ALL = signed_shape(
    "CancelAll",
    "A signed CancelAll plus sig.",
    [
        USER_IS_ADDRESS,
        MARKET_KNOWN_OR_EVERY,
    ],
    {"market": ""},
)
WITHDRAW = signed_shape(
    "Withdraw",
    "A signed Withdraw plus sig.",
    [AMOUNT_POSITIVE, USER_IS_ADDRESS, ASSET_KNOWN, AMOUNT_WHOLE_QUANTA],
)
DEPOSIT = Shape(
    "DepositBody",
    "An operator's credit to an account (admin token).",
    [
        Field("userId", Kind.STRING, 'an address, or "fees" / "insurance"', ADDRESS_EXAMPLE),
        Field("asset", Kind.STRING, "an asset symbol", "USDC"),
        Field("amount", Kind.UINT, "atomic units of the asset", "5000000000"),
        Field(
            "depositId",
            Kind.STRING,
            "optional: credits once only, exchange-wide (the same id again is 409 DUPLICATE)",
            "0x5e1f:7",
            optional=True,
        ),
    ],
    [
        AMOUNT_POSITIVE,
        Check(
            "userId",
            ErrorCode.INVALID_USER,
            'a 0x-prefixed 20-byte address, or "fees" or "insurance"',
            _account,
        ),
        ASSET_KNOWN,
        AMOUNT_WHOLE_QUANTA,
        Check(
            "depositId",
            ErrorCode.INVALID_REQUEST,
            "1-128 of A-Z a-z 0-9 . _ : -",
            _deposit_id,
            {"pattern": f"^{DEPOSIT_ID.pattern}$"},
        ),
    ],
)
ORACLE = Shape(
    "OracleBody",
    "An operator's index price for a market (admin token).",
    [
        Field("market", Kind.STRING, "a market symbol", "BTC-PERP"),
        Field("indexPrice", Kind.UINT, "in the market's price units", 3000000),
    ],
    [
        Check(
            "indexPrice",
            ErrorCode.INVALID_REQUEST,
            f"between 1 and {MAX_SAFE_INTEGER}",
            _index_price,
            {"minimum": 1, "maximum": MAX_SAFE_INTEGER},
        ),
        MARKET_KNOWN,
    ],
)

SETTABLE_STATUSES = ("OPEN", "HALTED", "CANCEL_ONLY", "POST_ONLY", "REDUCE_ONLY")


def _settable_status(values: Values, _: MarketSet) -> str | None:
    if values["status"] in SETTABLE_STATUSES:
        return None
    return f"status must be one of {'/'.join(SETTABLE_STATUSES)}"


MARKET_STATUS = Shape(
    "MarketStatusBody",
    'The status an operator sets on a market (admin token; docs/api.md "Market states").',
    [Field("status", Kind.STRING, "the market's new status", "CANCEL_ONLY")],
    [
        Check(
            "status",
            ErrorCode.INVALID_REQUEST,
            f"one of {'/'.join(SETTABLE_STATUSES)}",
            _settable_status,
            {"enum": list(SETTABLE_STATUSES)},
        ),
    ],
)


MAX_DEADLINE_AHEAD_MS = 24 * 3600 * 1000


_deadline_ahead = _zero_or_ahead("deadline", " (0 turns the switch off)")


def _deadline_near(values: Values, _: MarketSet) -> str | None:
    limit = int(time.time() * 1000) + MAX_DEADLINE_AHEAD_MS
    if values["deadline"] > limit:
        return f"deadline {values['deadline']} is more than 24 h ahead (at most {limit})"
    return None


SCHEDULE_CANCEL = signed_shape(
    "ScheduleCancel",
    "A signed ScheduleCancel plus sig: the dead-man's switch.",
    [
        USER_IS_ADDRESS,
        MARKET_KNOWN_OR_EVERY,
        Check("deadline", ErrorCode.INVALID_REQUEST, "0 or in the future", _deadline_ahead),
        Check(
            "deadline",
            ErrorCode.INVALID_REQUEST,
            "at most 24 h ahead",
            _deadline_near,
            {"maximum": 2**53 - 1},
        ),
    ],
    {"market": ""},
)


def parse_order_body(body: Mapping[str, Any], markets: MarketSet) -> tuple[str, Values, str]:
    """``(primary type, signed message, sig)`` of an order body: an ``OrderV2`` when it
    carries ``timeInForce``, else an ``Order``."""
    if "triggerPrice" in body:
        values, sig = ORDER_V4.parse_signed(body, markets)
        return "OrderV4", values, sig
    if "selfTradePrevention" in body:
        values, sig = ORDER_V3.parse_signed(body, markets)
        return "OrderV3", values, sig
    is_v2 = "timeInForce" in body
    shape = ORDER_V2 if is_v2 else ORDER
    values, sig = shape.parse_signed(body, markets)
    return ("OrderV2" if is_v2 else "Order"), values, sig


# -- agent keys (API.md "Agent keys") ---------------------------------------------------------

AGENT_SCOPES = ("TRADE", "CANCEL_ONLY")
AGENT_NAME_MAX = 32
AGENT_MARKETS_MAX = 16
AGENT_EXAMPLE = "0x2546BcD3c84621e976D8185a91A922aE77ECEc30"

SIGNED_FIELD_DOCS.update(
    {
        "agent": ("the agent key's address (not userId)", AGENT_EXAMPLE),
        "name": (f"a label for the key, 0-{AGENT_NAME_MAX} printable ASCII characters", "bot-1"),
        "scope": ("TRADE (orders and cancels) or CANCEL_ONLY", "TRADE"),
        "markets": (
            f'"" for every market, else up to {AGENT_MARKETS_MAX} listed markets joined by ","',
            "BTC-USDC,ETH-USDC",
        ),
    }
)


def _agent_address(values: Values, _: MarketSet) -> str | None:
    agent = values["agent"]
    if not ADDRESS.fullmatch(agent):
        return f"agent must be a 0x-prefixed 20-byte address, got {agent[:80]!r}"
    if agent.lower() == values["userId"].lower():
        return "agent must be another address than userId"
    return None


def _agent_name(values: Values, _: MarketSet) -> str | None:
    name = values["name"]
    if len(name) <= AGENT_NAME_MAX and name.isascii() and (name.isprintable()):
        return None
    return f"name must be 0-{AGENT_NAME_MAX} printable ASCII characters"


def _agent_scope(values: Values, _: MarketSet) -> str | None:
    scope = values["scope"]
    return None if scope in AGENT_SCOPES else f"scope must be one of {'/'.join(AGENT_SCOPES)}"


def _agent_markets(values: Values, markets: MarketSet) -> str | None:
    text = values["markets"]
    if not text:
        return None
    names = text.split(",")
    if len(names) > AGENT_MARKETS_MAX or len(set(names)) != len(names):
        return f"markets must name at most {AGENT_MARKETS_MAX} markets, each once"
    unknown = [name for name in names if name not in markets.markets]
    return f"no market named {unknown[0][:80]!r}" if unknown else None


AGENT_IS_ADDRESS = Check(
    "agent",
    ErrorCode.INVALID_REQUEST,
    "a 0x-prefixed 20-byte address other than userId",
    _agent_address,
    {"pattern": f"^{ADDRESS.pattern}$"},
)
APPROVE_AGENT = signed_shape(
    "ApproveAgent",
    "A signed ApproveAgent plus sig: the owner lets an agent key sign orders and cancels.",
    [
        USER_IS_ADDRESS,
        AGENT_IS_ADDRESS,
        Check(
            "name",
            ErrorCode.INVALID_REQUEST,
            f"0-{AGENT_NAME_MAX} printable ASCII characters",
            _agent_name,
            {"maxLength": AGENT_NAME_MAX},
        ),
        Check(
            "scope",
            ErrorCode.INVALID_REQUEST,
            "TRADE or CANCEL_ONLY",
            _agent_scope,
            {"enum": list(AGENT_SCOPES)},
        ),
        Check(
            "markets",
            ErrorCode.UNKNOWN_MARKET,
            '"" or listed markets joined by ","',
            _agent_markets,
        ),
        Check("expiresAt", ErrorCode.INVALID_REQUEST, "0 or in the future", _expires_ahead),
        Check(
            "expiresAt",
            ErrorCode.INVALID_REQUEST,
            "below 2^53",
            _expires_below_2_53,
            {"maximum": 2**53 - 1},
        ),
    ],
    {"expiresAt": 1767225600000},
)
REVOKE_AGENT = signed_shape(
    "RevokeAgent",
    "A signed RevokeAgent plus sig: the owner withdraws an agent key's approval.",
    [USER_IS_ADDRESS, AGENT_IS_ADDRESS],
)


# -- cancel-replace (docs/api.md "Cancel-replace") -------------------------------------------

SIGNED_FIELD_DOCS["cancelClientOrderId"] = (
    "CancelReplace only: the clientOrderId of your open order in the same market to cancel",
    "c-0",
)


def _cancel_client_order_id(values: Values, _: MarketSet) -> str | None:
    old = values["cancelClientOrderId"]
    if not CLIENT_ORDER_ID.fullmatch(old):
        return "cancelClientOrderId must be 1-64 of A-Z a-z 0-9 . _ : -"
    if old == values["clientOrderId"]:
        return "cancelClientOrderId must name another order than clientOrderId"
    return None


CANCEL_REPLACE = signed_shape(
    "CancelReplace",
    "A signed CancelReplace plus sig: an OrderV2 placed only if cancelClientOrderId is cancelled.",
    [
        *ORDER_V2.checks,
        Check(
            "cancelClientOrderId",
            ErrorCode.INVALID_ORDER,
            "1-64 of A-Z a-z 0-9 . _ : -, not clientOrderId",
            _cancel_client_order_id,
            {"pattern": f"^{CLIENT_ORDER_ID.pattern}$"},
        ),
    ],
)


def _amend_price_on_tick(values: Values, markets: MarketSet) -> str | None:
    spec = markets.markets[values["market"]].spec
    price = values["price"]
    if 0 < price < 2**53 and not price % spec.tickSize:
        return None
    return f"price {price} must be a positive multiple of tickSize {spec.tickSize} below 2^53"


def _expected_filled(values: Values, _: MarketSet) -> str | None:
    if -1 <= values["expectedFilled"] < 2**53:
        return None
    return f"expectedFilled {values['expectedFilled']} must be -1 (no guard) or 0 to 2^53 - 1"


AMEND = signed_shape(
    "Amend",
    "A signed Amend plus sig: a resting LIMIT order's new price and new total qty.",
    [
        USER_IS_ADDRESS,
        MARKET_KNOWN,
        Check(
            "price",
            ErrorCode.INVALID_PRICE,
            "a positive multiple of the market's tickSize, below 2^53",
            _amend_price_on_tick,
        ),
        Check(
            "qty",
            ErrorCode.INVALID_QTY,
            "a positive multiple of the market's lotSize, at least its minQty, below 2^53",
            _qty_on_lot,
        ),
        Check(
            "expectedFilled",
            ErrorCode.INVALID_QTY,
            "-1, or 0 to 2^53 - 1",
            _expected_filled,
            {"minimum": -1},
        ),
        Check(
            "clientOrderId",
            ErrorCode.INVALID_ORDER,
            "1-64 of A-Z a-z 0-9 . _ : -",
            _client_order_id,
            {"pattern": f"^{CLIENT_ORDER_ID.pattern}$"},
        ),
    ],
)
AMEND_ITEM = Shape(
    "AmendItem",
    "An Amend's fields where one signature stands for several (a signed batch): no sig.",
    [f for f in AMEND.fields if f.name != "sig"],
    AMEND.checks,
)


# -- signed batches (docs/api.md "Signed batches") --------------------------------------------

BATCH_MAX_ACTIONS = 50
BATCH_KINDS = ("PLACE", "CANCEL", "AMEND")

# What the wire says of a Batch's and a BatchAction's fields, where it differs from
# SIGNED_FIELD_DOCS: (description, example).
BATCH_FIELD_DOCS: dict[str, tuple[str, Any]] = {
    "atomic": ("true: every action is applied or none; false: each answers for itself", False),
    "actions": (f"1-{BATCH_MAX_ACTIONS} actions, applied in this order", None),
    "kind": ('PLACE, CANCEL or AMEND; the fields a kind does not use are 0, "" or false', "PLACE"),
    "clientOrderId": ("the order placed, cancelled or amended", "c-1"),
    "side": ("PLACE only", "BUY"),
    "type": ("PLACE only", "LIMIT"),
    "price": ("PLACE and AMEND (the new price)", 3000000),
    "qty": ("PLACE and AMEND (the new total qty)", 1000),
    "timeInForce": ("PLACE only", "GTC"),
    "reduceOnly": ("PLACE only", False),
    "expiresAt": ("PLACE only: ms since epoch, 0 = never", 0),
    "expectedFilled": ("AMEND only: the filled qty it expects, -1 = any; else 0", 0),
}


def _nested_shape(name: str, doc: str, checks: Sequence[Check] = (), signed: bool = False) -> Shape:
    fields = []
    for field_name, kind in NESTED_TYPES[name]:
        description, example = BATCH_FIELD_DOCS.get(field_name) or SIGNED_FIELD_DOCS[field_name]
        fields.append(Field(field_name, Kind(kind), description, example))
    if signed:
        return Shape(f"{name}Body", doc, [*fields, SIG_FIELD], checks)
    return Shape(name, doc, fields, checks)


BATCH_ACTION = _nested_shape("BatchAction", "One action of a signed Batch.")


def _convert_actions(value: Any, name: str) -> list[Values]:
    """The actions array: 1-50 objects, each with BatchAction's fields and types (a type error
    anywhere is the whole batch's 400: the signature covers every action)."""
    if not isinstance(value, list) or not 1 <= len(value) <= BATCH_MAX_ACTIONS:
        raise ApiError(
            ErrorCode.INVALID_REQUEST, f"{name} must be an array of 1-{BATCH_MAX_ACTIONS} actions"
        )
    actions = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise ApiError(ErrorCode.INVALID_REQUEST, f"{name}[{index}] must be an object")
        try:
            actions.append(BATCH_ACTION.parse(item, _NO_MARKETS))
        except ApiError as exc:
            raise ApiError(exc.code, f"{name}[{index}]: {exc.message}") from None
    return actions


_NO_MARKETS = MarketSet(markets={}, assets={})
_CONVERTERS[Kind.ACTIONS] = _convert_actions
_KIND_SCHEMAS[Kind.ACTIONS] = {
    "type": "array",
    "minItems": 1,
    "maxItems": BATCH_MAX_ACTIONS,
    "items": BATCH_ACTION.json_schema(),
}

BATCH_FIELD_DOCS["actions"] = (BATCH_FIELD_DOCS["actions"][0], [BATCH_ACTION.example()])
BATCH = _nested_shape(
    "Batch",
    "A signed Batch plus sig: up to 50 places, cancels and amends of one account.",
    [USER_IS_ADDRESS],
    signed=True,
)

BATCH_PLACE = Shape(
    "BatchPlace",
    "A batch's PLACE action read as the OrderV2 it stands for (the batch's userId and ts, the "
    "market's product), checked as a single OrderV2 is.",
    [f for f in ORDER_V2.fields if f.name != "sig"],
    ORDER_V2.checks,
)

_CANCEL_UNUSED = {
    "side": "",
    "type": "",
    "price": 0,
    "qty": 0,
    "timeInForce": "",
    "reduceOnly": False,
    "expiresAt": 0,
    "expectedFilled": 0,
}


def _unused_blank(unused: Mapping[str, Any], kind: str) -> Test:
    def test(values: Values, _: MarketSet) -> str | None:
        wrong = [name for name, blank in unused.items() if values[name] != blank]
        if wrong:
            return f'{kind} actions leave {", ".join(wrong)} at 0, "" or false'
        return None

    return test


BATCH_CANCEL = Shape(
    "BatchCancel",
    "A batch's CANCEL action, checked as a single Cancel is (the batch's userId and ts).",
    BATCH_ACTION.fields,
    [
        MARKET_KNOWN,
        Check(
            "side",
            ErrorCode.INVALID_REQUEST,
            "the fields a CANCEL does not use are blank",
            _unused_blank(_CANCEL_UNUSED, "CANCEL"),
        ),
    ],
)
PLACE_UNUSED = _unused_blank({"expectedFilled": 0}, "PLACE")
AMEND_UNUSED = _unused_blank(
    {"side": "", "type": "", "timeInForce": "", "reduceOnly": False, "expiresAt": 0}, "AMEND"
)


# -- leverage (docs/api.md "Leverage") -------------------------------------------------------

SIGNED_FIELD_DOCS["initialMarginBps"] = (
    "SetLeverage only: the initial margin in bps the account uses in the market, from the "
    "market's initialMarginBps to 10000 (leverage = 10000 / it); 0 = the market's again",
    2000,
)
MAX_INITIAL_MARGIN_BPS = 10_000


def _margined_market(values: Values, markets: MarketSet) -> str | None:
    market = markets.markets[values["market"]]
    if market.product.is_derivative:
        return None
    return f"market {market.symbol} is {market.product.value}: it has no margin to set"


def _initial_margin_in_range(values: Values, markets: MarketSet) -> str | None:
    bps = values["initialMarginBps"]
    floor = markets.markets[values["market"]].spec.initialMarginBps or 0
    if bps == 0 or floor <= bps <= MAX_INITIAL_MARGIN_BPS:
        return None
    return (
        f"initialMarginBps must be 0 (the market's) or from {values['market']}'s "
        f"initialMarginBps {floor} to {MAX_INITIAL_MARGIN_BPS}, got {bps}"
    )


SET_LEVERAGE = signed_shape(
    "SetLeverage",
    "A signed SetLeverage plus sig: the initial margin the account uses in a derivative market.",
    [
        USER_IS_ADDRESS,
        MARKET_KNOWN,
        Check("market", ErrorCode.INVALID_REQUEST, "a derivative market", _margined_market),
        Check(
            "initialMarginBps",
            ErrorCode.INVALID_REQUEST,
            f"0, or from the market's initialMarginBps to {MAX_INITIAL_MARGIN_BPS}",
            _initial_margin_in_range,
            {"maximum": MAX_INITIAL_MARGIN_BPS},
        ),
    ],
    {"market": "BTC-PERP"},
)


# -- TWAP orders (docs/api.md "TWAP orders") ---------------------------------------------------

TWAP_MIN_MINUTES = 5
TWAP_MAX_MINUTES = 1440
TWAP_MAX_SLIPPAGE_BPS = 5000
TWAP_ID_MAX = 59  # a slice's id is "<clientOrderId>.<k>", k < 2880: at most 64 characters

TWAP_FIELD_DOCS: dict[str, tuple[str, Any]] = {
    "clientOrderId": ("the TWAP's id; slice k is the order <clientOrderId>.<k>", "twap-1"),
    "qty": ("the whole quantity, sent in slices", 600),
    "durationMinutes": (f"{TWAP_MIN_MINUTES} to {TWAP_MAX_MINUTES}", 10),
    "randomize": ("vary each slice by up to 20 %", False),
    "slippageBps": ("how far past the best opposite price a slice may trade, in bps", 50),
    "reduceOnly": ("every slice reduce-only", False),
}


def _twap_id(values: Values, _: MarketSet) -> str | None:
    cid = values["clientOrderId"]
    if CLIENT_ORDER_ID.fullmatch(cid) and len(cid) <= TWAP_ID_MAX:
        return None
    return f"clientOrderId must be 1-{TWAP_ID_MAX} of A-Z a-z 0-9 . _ : -"


def _twap_minutes(values: Values, _: MarketSet) -> str | None:
    minutes = values["durationMinutes"]
    if TWAP_MIN_MINUTES <= minutes <= TWAP_MAX_MINUTES:
        return None
    return f"durationMinutes {minutes} must be {TWAP_MIN_MINUTES} to {TWAP_MAX_MINUTES}"


def _twap_slippage(values: Values, _: MarketSet) -> str | None:
    bps = values["slippageBps"]
    if 1 <= bps <= TWAP_MAX_SLIPPAGE_BPS:
        return None
    return f"slippageBps {bps} must be 1 to {TWAP_MAX_SLIPPAGE_BPS}"


def _twap_fields() -> list[Field]:
    fields = []
    for name, kind in PRIMARY_TYPES["Twap"]:
        description, example = TWAP_FIELD_DOCS.get(name) or SIGNED_FIELD_DOCS[name]
        fields.append(Field(name, Kind(kind), description, example))
    return [*fields, SIG_FIELD]


TWAP = Shape(
    "TwapBody",
    'A signed Twap plus sig (docs/api.md "TWAP orders").',
    _twap_fields(),
    [
        USER_IS_ADDRESS,
        MARKET_KNOWN,
        Check(
            "qty",
            ErrorCode.INVALID_QTY,
            "a positive multiple of the market's lotSize, at least its minQty, below 2^53",
            _qty_on_lot,
        ),
        _one_of("side", Side),
        Check(
            "clientOrderId",
            ErrorCode.INVALID_ORDER,
            f"1-{TWAP_ID_MAX} of A-Z a-z 0-9 . _ : -",
            _twap_id,
            {"pattern": f"^{CLIENT_ORDER_ID.pattern}$", "maxLength": TWAP_ID_MAX},
        ),
        Check(
            "durationMinutes",
            ErrorCode.INVALID_ORDER,
            f"{TWAP_MIN_MINUTES} to {TWAP_MAX_MINUTES}",
            _twap_minutes,
            {"minimum": TWAP_MIN_MINUTES, "maximum": TWAP_MAX_MINUTES},
        ),
        Check(
            "slippageBps",
            ErrorCode.INVALID_ORDER,
            f"1 to {TWAP_MAX_SLIPPAGE_BPS}",
            _twap_slippage,
            {"minimum": 1, "maximum": TWAP_MAX_SLIPPAGE_BPS},
        ),
    ],
)
