"""The markets file (API.md §3): assets and markets, validated once at start-up.

A bad file stops start-up with :class:`MarketsFileError` naming the market and the field, so
an operator never runs an exchange whose money math is fractional or whose margins are unset.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from common.types import OptionType, Product, SelfTradePrevention

SYMBOL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
BELOW_2_53 = 2**53
DEFAULT_PRICE_BAND_BPS = 5000

_Model = TypeVar("_Model", bound=BaseModel)


class MarketsFileError(ValueError):
    """The markets file cannot be used; the message names the market and field."""


class AssetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decimals: StrictInt = Field(ge=0, le=36)
    quantum: StrictInt | None = Field(default=None, gt=0)
    # The asset's ERC-20 on the vault's chain (the zero address: the chain's coin); an asset
    # without one is deposited by the operator only (docs/operations.md "The chain").
    token: str | None = Field(default=None, pattern=r"^0x[0-9a-fA-F]{40}$")


class MarketSpec(BaseModel):
    """One market as written in the file; field names are the file's (camelCase)."""

    model_config = ConfigDict(extra="forbid")

    product: Product
    base: str
    quote: str
    priceScale: StrictInt = Field(ge=0, le=30)
    qtyScale: StrictInt = Field(ge=0, le=30)
    tickSize: StrictInt = Field(gt=0, lt=BELOW_2_53)
    lotSize: StrictInt = Field(gt=0, lt=BELOW_2_53)
    minQty: StrictInt = Field(gt=0, lt=BELOW_2_53)
    makerFeeBps: StrictInt = Field(ge=0, le=10_000)
    takerFeeBps: StrictInt = Field(ge=0, le=10_000)
    indexPrice: StrictInt = Field(gt=0, lt=BELOW_2_53)
    initialMarginBps: StrictInt | None = Field(default=None, gt=0, le=10_000)
    maintenanceMarginBps: StrictInt | None = Field(default=None, gt=0, le=10_000)
    fundingCapBps: StrictInt | None = Field(default=None, ge=0, le=10_000)
    fundingInterestBps: StrictInt | None = Field(default=None, ge=-10_000, le=10_000)
    expiryTs: StrictInt | None = Field(default=None, gt=0)
    optionType: OptionType | None = None
    strike: StrictInt | None = Field(default=None, gt=0, lt=BELOW_2_53)
    priceBandBps: StrictInt | None = Field(default=None, gt=0, le=10_000)
    selfTradePrevention: SelfTradePrevention = SelfTradePrevention.EXPIRE_MAKER


@dataclass(frozen=True, slots=True)
class Asset:
    """An asset: ``decimals`` on the wire, counted inside in whole ``quantum`` steps.

    Every amount the exchange stores or computes (balances, locks, reservations, notionals,
    PnL, funding, fees, audit sums) is in quanta; the wire carries atomic units
    (``quanta × quantum``). See :mod:`common.money` for the conversions.
    """

    symbol: str
    decimals: int
    quantum: int = 1
    """A power of ten in atomic units (API.md §2); default ``10^max(0, decimals − 9)``."""
    token: str | None = None
    """Its token's address on the vault's chain, lower-case (the zero address: the coin)."""

    @property
    def quantum_exponent(self) -> int:
        """``log10(quantum)``."""
        return len(str(self.quantum)) - 1

    @property
    def internal_decimals(self) -> int:
        """The decimals the exchange counts in: ``decimals − log10(quantum)``."""
        return self.decimals - self.quantum_exponent

    def public(self) -> dict[str, int | str]:
        shown: dict[str, int | str] = {"decimals": self.decimals, "quantum": self.quantum}
        if self.token is not None:
            shown["token"] = self.token
        return shown


@dataclass(frozen=True, slots=True)
class Market:
    """A validated market with the integer multipliers its money math needs."""

    symbol: str
    spec: MarketSpec
    base: Asset
    quote: Asset
    notional_multiplier: int
    """``10^(quote.decimals − log10(quote.quantum) − priceScale − qtyScale)``: price × qty × this
    = quote quanta (quote atomic units when the quantum is 1)."""
    base_multiplier: int
    """``10^(base.decimals − log10(base.quantum) − qtyScale)``: qty × this = base quanta
    (SPOT delivery)."""

    @property
    def product(self) -> Product:
        return self.spec.product

    @property
    def price_band_bps(self) -> int | None:
        """How far (bps of the mark) a PERP or FUTURE order may be priced from the mark
        (API.md §6); ``None`` for products without a band."""
        if self.spec.product in (Product.PERP, Product.FUTURE):
            return self.spec.priceBandBps or DEFAULT_PRICE_BAND_BPS
        return None

    def public(self) -> dict[str, Any]:
        """Every markets-file field of this market, as the file names them (API.md §5)."""
        fields = self.spec.model_dump(mode="json", exclude_none=True)
        return {"symbol": self.symbol, **fields}


@dataclass(frozen=True, slots=True)
class MarketSet:
    assets: Mapping[str, Asset]
    markets: Mapping[str, Market]

    def market(self, symbol: str) -> Market | None:
        return self.markets.get(symbol)


_DERIVATIVE_FIELDS: dict[Product, tuple[str, ...]] = {
    Product.SPOT: (),
    Product.PERP: (
        "initialMarginBps",
        "maintenanceMarginBps",
        "fundingCapBps",
        "fundingInterestBps",
    ),
    Product.FUTURE: ("initialMarginBps", "maintenanceMarginBps", "expiryTs"),
    Product.OPTION: (
        "initialMarginBps",
        "maintenanceMarginBps",
        "expiryTs",
        "optionType",
        "strike",
    ),
}


def parse_markets(document: Any, source: str = "markets file") -> MarketSet:
    """Validate a parsed markets document; raise :class:`MarketsFileError` on the first fault."""
    if not isinstance(document, Mapping):
        raise MarketsFileError(f"{source}: expected a mapping with 'assets' and 'markets'")
    raw_assets = document.get("assets")
    raw_markets = document.get("markets")
    if not isinstance(raw_assets, Mapping) or not raw_assets:
        raise MarketsFileError(f"{source}: 'assets' must be a non-empty mapping")
    if not isinstance(raw_markets, Mapping) or not raw_markets:
        raise MarketsFileError(f"{source}: 'markets' must be a non-empty mapping")

    assets: dict[str, Asset] = {}
    for symbol, raw in raw_assets.items():
        where = f"{source}: asset {symbol}"
        if not isinstance(symbol, str) or not SYMBOL_PATTERN.match(symbol):
            raise MarketsFileError(f"{where}: symbol must match {SYMBOL_PATTERN.pattern}")
        asset_spec = _validate(AssetSpec, raw, where)
        token = asset_spec.token.lower() if asset_spec.token is not None else None
        if token is not None and token in (a.token for a in assets.values()):
            raise MarketsFileError(f"{where}: token {token} already names another asset")
        assets[symbol] = Asset(symbol, asset_spec.decimals, _quantum(asset_spec, where), token)

    markets: dict[str, Market] = {}
    for symbol, raw in raw_markets.items():
        where = f"{source}: market {symbol}"
        if not isinstance(symbol, str) or not SYMBOL_PATTERN.match(symbol):
            raise MarketsFileError(f"{where}: symbol must match {SYMBOL_PATTERN.pattern}")
        spec = _validate(MarketSpec, raw, where)
        markets[symbol] = _build_market(symbol, spec, assets, where)
    return MarketSet(assets=assets, markets=markets)


def _validate(model: type[_Model], raw: Any, where: str) -> _Model:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(whole entry)"
        raise MarketsFileError(f"{where}: field {field}: {first['msg']}") from None


def default_quantum(decimals: int) -> int:
    """The quantum of an asset whose file gives none: ``10^max(0, decimals − 9)``."""
    return 10 ** max(0, decimals - 9)


def _quantum(spec: AssetSpec, where: str) -> int:
    if spec.quantum is None:
        return default_quantum(spec.decimals)
    quantum = spec.quantum
    if quantum > 10**spec.decimals or 10 ** (len(str(quantum)) - 1) != quantum:
        raise MarketsFileError(
            f"{where}: field quantum: {quantum} is not a power of ten between 1 and "
            f"10^decimals = {10**spec.decimals}"
        )
    return quantum


def _build_market(symbol: str, spec: MarketSpec, assets: Mapping[str, Asset], where: str) -> Market:
    for role in ("base", "quote"):
        name = getattr(spec, role)
        if name not in assets:
            raise MarketsFileError(f"{where}: field {role}: unknown asset {name!r}")
    for field in _DERIVATIVE_FIELDS[spec.product]:
        if getattr(spec, field) is None:
            raise MarketsFileError(f"{where}: field {field}: required for {spec.product}")
    if (
        spec.initialMarginBps is not None
        and spec.maintenanceMarginBps is not None
        and spec.maintenanceMarginBps > spec.initialMarginBps
    ):
        raise MarketsFileError(
            f"{where}: field maintenanceMarginBps: must not exceed initialMarginBps"
        )
    base, quote = assets[spec.base], assets[spec.quote]
    notional_exponent = quote.decimals - spec.priceScale - spec.qtyScale
    if notional_exponent < 0:
        raise MarketsFileError(
            f"{where}: field priceScale: quote decimals {quote.decimals} minus priceScale "
            f"{spec.priceScale} minus qtyScale {spec.qtyScale} is negative, so notionals "
            "would be fractional"
        )
    base_exponent = base.decimals - spec.qtyScale
    if spec.product is Product.SPOT and base_exponent < 0:
        raise MarketsFileError(
            f"{where}: field qtyScale: {spec.qtyScale} exceeds base decimals {base.decimals}"
        )
    _check_quanta(spec, base, quote, where)
    for field in ("indexPrice", "strike"):
        value = getattr(spec, field)
        if value is not None and value % spec.tickSize:
            raise MarketsFileError(f"{where}: field {field}: not a multiple of tickSize")
    if spec.minQty % spec.lotSize:
        raise MarketsFileError(f"{where}: field minQty: not a multiple of lotSize")
    return Market(
        symbol=symbol,
        spec=spec,
        base=base,
        quote=quote,
        notional_multiplier=10 ** (notional_exponent - quote.quantum_exponent),
        base_multiplier=10 ** max(base_exponent - base.quantum_exponent, 0),
    )


def _check_quanta(spec: MarketSpec, base: Asset, quote: Asset, where: str) -> None:
    """Refuse a market whose lot or smallest notional is a fraction of its asset's quantum,
    or whose scales would make the exchange's per-unit multipliers fractional in quanta."""
    if spec.product is Product.SPOT:
        lot = spec.lotSize * 10 ** (base.decimals - spec.qtyScale)
        if lot % base.quantum:
            raise MarketsFileError(
                f"{where}: field lotSize: a lot delivers {lot} atomic units of {base.symbol}, "
                f"not a multiple of its quantum {base.quantum}"
            )
        if base.decimals - base.quantum_exponent < spec.qtyScale:
            raise MarketsFileError(
                f"{where}: field qtyScale: {spec.qtyScale} exceeds {base.symbol}'s decimals "
                f"{base.decimals} less log10(quantum {base.quantum}), so a quantity unit would "
                "be a fraction of a quantum"
            )
    notional_exponent = quote.decimals - spec.priceScale - spec.qtyScale
    smallest = spec.tickSize * spec.lotSize * 10**notional_exponent
    if smallest % quote.quantum:
        raise MarketsFileError(
            f"{where}: field tickSize: the smallest notional (tickSize × lotSize) is {smallest} "
            f"atomic units of {quote.symbol}, not a multiple of its quantum {quote.quantum}"
        )
    if quote.decimals - quote.quantum_exponent < spec.priceScale + spec.qtyScale:
        raise MarketsFileError(
            f"{where}: field priceScale: {quote.symbol}'s decimals {quote.decimals} less "
            f"log10(quantum {quote.quantum}) minus priceScale {spec.priceScale} minus qtyScale "
            f"{spec.qtyScale} is negative, so a notional unit would be a fraction of a quantum"
        )


def load_markets(path: Path | str) -> MarketSet:
    """Read and validate the markets file at ``path``."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise MarketsFileError(f"markets file {path}: cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        raise MarketsFileError(f"markets file {path}: not valid YAML: {exc}") from None
    return parse_markets(document, source=f"markets file {path}")


@lru_cache(maxsize=4)
def cached_markets(path: str) -> MarketSet:
    """The markets of ``path``, loaded once per process."""
    return load_markets(path)
