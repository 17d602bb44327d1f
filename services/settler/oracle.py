"""The oracle (API.md §8 ``dex.oracle``): index and mark prices, premium samples, ticker.

Sources: ``static`` (the last ``/v1/admin/oracle`` push in ``dex:{m}:px.static``, else the
markets file), ``book`` (mid of best bid and ask, rounded down; the static price while a side
is empty) or an ``http(s)://`` URL answering ``{"markets": [{"symbol", "price", "expiry"}]}``.
An OPTION's index is its underlying's: the URL's price (or with ``static`` an admin push) for
the option's own symbol if given, else this run's index of the market with the same base and
quote (PERP first, then FUTURE, SPOT).

What a URL answers is checked before any of it is used (docs/api.md "Oracle"): the body is
read up to 1 MiB and no further; a price must be a positive integer below 2^53; a price
further than ``DEX_ORACLE_MAX_MOVE_BPS`` from the market's last accepted index is not taken.
A market whose price is ignored keeps its index. Every ignored value and every fetch that
gives nothing is counted in ``keys.oracle_health()`` (common/oracle_health.py) and logged on
its first occurrence and every ``WARN_EVERY``-th after it, never once a run forever.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import reprlib
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import orjson

from common import keys, oracle_health, pubsub, risk
from common.events import COMMAND_FIELD, AdminCommand, PriceTicker, Ticker, TickerPublication, dumps
from common.markets import Market, MarketSet
from common.types import Product
from services.settler.settings import DEFAULT_ORACLE_MAX_MOVE_BPS

log = logging.getLogger(__name__)

PREMIUM_KEEP_PERIODS = 3
UNDERLYING_ORDER = (Product.PERP, Product.FUTURE, Product.SPOT)

MAX_BODY_BYTES = 1 << 20
"""The most of a response body the oracle reads; a longer body is ignored whole."""
READ_CHUNK = 64 * 1024
FETCH_TIMEOUT_S = 3.0
"""Per socket operation, and for the whole body: a source that drips bytes is cut off."""
BELOW_2_53 = 1 << 53
PRICE_DIGITS = re.compile(r"[1-9][0-9]{0,15}")
"""A price given as a string: plain ASCII decimal digits, no sign, no leading zero."""
LONGEST_JSON_INT = 20
"""Longer JSON integers are not converted at all (they could only be refused, slowly)."""
WARN_EVERY = 60
"""A repeated failure or ignored value is logged on its 1st, 60th, 120th… occurrence
(the oracle runs every 5 s: about every 5 minutes while it lasts)."""
SHOWN_CHARS = 120


class SourceError(Exception):
    """A fetch that gave no prices; ``reason`` is one of ``oracle_health.FAILURE_REASONS``."""

    def __init__(self, reason: str, received: str) -> None:
        super().__init__(received)
        self.reason = reason
        self.received = received


class _TooLongInt:
    """Stands for a JSON integer of more than ``LONGEST_JSON_INT`` digits."""

    def __init__(self, digits: str) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"an integer of {len(self.digits)} digits"


def _json_int(text: str) -> int | _TooLongInt:
    return int(text) if len(text) <= LONGEST_JSON_INT else _TooLongInt(text)


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict = 3, 4, 4
_SHORT.maxstring, _SHORT.maxother = 60, 60


def shown(value: Any) -> str:
    """A received value for a log line: short whatever its size or depth (``reprlib``)."""
    text = _SHORT.repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (``an array``, ``a string``...)."""
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return "a string" if isinstance(value, str) else "a number"


def parse_price(value: Any) -> int | None:
    """The price if ``value`` is a positive integer below 2^53, else ``None``.

    A JSON integer (never a boolean or a float, even ``1.0``) or a string of plain ASCII
    decimal digits without sign or leading zero (``"3000000"``).
    """
    if type(value) is int:
        return value if 0 < value < BELOW_2_53 else None
    if isinstance(value, str) and PRICE_DIGITS.fullmatch(value):
        price = int(value)
        return price if price < BELOW_2_53 else None
    return None


def move_too_large(price: int, last: int, max_move_bps: int) -> bool:
    """True if ``price`` is more than ``max_move_bps`` basis points away from ``last``
    (``max_move_bps`` 0: no bound). Integers only: |price − last| · 10⁴ > bps · last."""
    return max_move_bps > 0 and abs(price - last) * 10_000 > max_move_bps * last


def read_body(url: str, timeout: float = FETCH_TIMEOUT_S, limit: int = MAX_BODY_BYTES) -> bytes:
    """GET ``url``: the body of a 200 answer, read to ``limit`` bytes at most.

    Raises ``SourceError``: ``unreachable``, ``http_status``, ``body_too_large``.
    """
    deadline = time.monotonic() + timeout
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status != 200:
                raise SourceError(oracle_health.HTTP_STATUS, f"HTTP status {response.status}")
            if response.length is not None and response.length > limit:
                raise SourceError(
                    oracle_health.BODY_TOO_LARGE, f"a body of {response.length} bytes"
                )
            body = bytearray()
            while len(body) <= limit:
                if time.monotonic() > deadline:
                    raise SourceError(
                        oracle_health.UNREACHABLE,
                        f"a body still incomplete after {timeout:g} s ({len(body)} bytes)",
                    )
                chunk = response.read1(min(READ_CHUNK, limit + 1 - len(body)))
                if not chunk:
                    return bytes(body)
                body += chunk
            raise SourceError(oracle_health.BODY_TOO_LARGE, f"a body over {limit} bytes")
    except urllib.error.HTTPError as exc:
        raise SourceError(oracle_health.HTTP_STATUS, f"HTTP status {exc.code}") from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise SourceError(oracle_health.UNREACHABLE, f"no answer: {exc}") from exc


def _nesting_within_bounds(body: bytes) -> None:
    """Refuse JSON nested deeper than orjson's bound (1024) before the json module sees it:
    a dependency (py_ecc, under eth-account) raises the recursion limit to 100,000, and the json
    module's C scanner then overflows the C stack on deep nesting instead of raising."""
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):
            raise ValueError(f"nested deeper than 1024: {exc}") from exc


def parse_document(body: bytes) -> list[Any]:
    """The ``markets`` list of a source's JSON body. Raises ``SourceError``:
    ``invalid_json``, ``invalid_shape``."""
    try:
        _nesting_within_bounds(body)
        document = json.loads(body, parse_int=_json_int)
    except (ValueError, RecursionError) as exc:
        raise SourceError(oracle_health.INVALID_JSON, f"a body that is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        received = f"JSON {json_type(document)}"
    elif "markets" not in document:
        received = f'a JSON object without "markets" (keys {shown(list(document))})'
    else:
        entries = document["markets"]
        if isinstance(entries, list):
            return entries
        received = f'a JSON object whose "markets" is {json_type(entries)}'
    raise SourceError(oracle_health.INVALID_SHAPE, received)


@dataclass
class Sample:
    """One fetch of an HTTP source: raw prices by symbol, and entries that had no symbol."""

    prices: dict[str, Any] = field(default_factory=dict)
    bad_entries: list[Any] = field(default_factory=list)


def split_entries(entries: list[Any]) -> Sample:
    """``symbol -> raw price`` of well-formed entries; a symbol given twice is dropped whole."""
    sample = Sample()
    twice: set[str] = set()
    for entry in entries:
        symbol = entry.get("symbol") if isinstance(entry, dict) else None
        if not isinstance(symbol, str):
            sample.bad_entries.append(entry)
        elif symbol in sample.prices or symbol in twice:
            twice.add(symbol)
            sample.bad_entries.append(entry)
            sample.prices.pop(symbol, None)
        else:
            sample.prices[symbol] = entry.get("price")
    return sample


class SourceHealth:
    """Counts and logs what the HTTP source gives, in ``keys.oracle_health()``."""

    def __init__(self, client: Any, url: str, now_ms: int) -> None:
        self.client = client
        self.url = url
        self.now_ms = now_ms
        self.key = keys.oracle_health()

    def fetch(self) -> Sample | None:
        """The source's sample, or ``None`` (counted, logged) if it gave none."""
        try:
            body = read_body(self.url)
            sample = split_entries(parse_document(body))
        except SourceError as exc:
            if exc.reason == oracle_health.BODY_TOO_LARGE:
                self.ignored(oracle_health.BODY_TOO_LARGE, "", exc.received)
            self.failed(exc)
            return None
        self.succeeded()
        for entry in sample.bad_entries:
            self.ignored(oracle_health.INVALID_ENTRY, "", shown(entry))
        return sample

    def failed(self, exc: SourceError) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(self.key, oracle_health.CONSECUTIVE_FAILURES, 1)
        pipe.hincrby(self.key, oracle_health.failure_field(exc.reason), 1)
        pipe.hset(
            self.key,
            mapping={
                oracle_health.LAST_FAILURE_MS: self.now_ms,
                oracle_health.LAST_FAILURE: f"{exc.reason}: {exc.received}",
            },
        )
        streak = int(pipe.execute()[0])
        if streak == 1 or streak % WARN_EVERY == 0:
            log.warning(
                "oracle: %s gave no prices (%s): received %s; expected a 200 answer of at most "
                '%d bytes with JSON {"markets": [{"symbol", "price"}]}. %d failure(s) '
                "in a row; every index keeps its last value (warned again every %d failures)",
                self.url,
                exc.reason,
                exc.received,
                MAX_BODY_BYTES,
                streak,
                WARN_EVERY,
            )

    def succeeded(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(self.key, oracle_health.CONSECUTIVE_FAILURES)
        pipe.hset(
            self.key,
            mapping={
                oracle_health.CONSECUTIVE_FAILURES: 0,
                oracle_health.LAST_SUCCESS_MS: self.now_ms,
            },
        )
        streak = int(pipe.execute()[0] or 0)
        if streak:
            log.warning("oracle: %s answers again after %d failure(s)", self.url, streak)

    def ignored(self, reason: str, market: str, received: str, expected: str = "") -> None:
        count = int(self.client.hincrby(self.key, oracle_health.ignored_field(reason, market), 1))
        if count == 1 or count % WARN_EVERY == 0:
            log.warning(
                "oracle: ignored %s from %s%s (%s): received %s%s (%d so far; warned again "
                "every %d)",
                reason.replace("_", " "),
                self.url,
                f" for {market}" if market else "",
                reason,
                received,
                f"; expected {expected}" if expected else "",
                count,
                WARN_EVERY,
            )

    def accept(self, market: str, raw: Any, last: int | None, max_move_bps: int) -> int | None:
        """The sample's price for ``market`` if it may become the index, else ``None``."""
        price = parse_price(raw)
        if price is None:
            self.ignored(
                oracle_health.INVALID_PRICE,
                market,
                shown(raw),
                f"a positive integer below 2^53 ({BELOW_2_53})",
            )
            return None
        if last is not None and move_too_large(price, last, max_move_bps):
            self.ignored(
                oracle_health.MOVE_TOO_LARGE,
                market,
                str(price),
                f"at most {max_move_bps} bps from the last index {last}",
            )
            return None
        return price


def best_prices(client: Any, symbol: str) -> tuple[int | None, int | None]:
    pipe = client.pipeline(transaction=False)
    pipe.zrange(keys.book_bids(symbol), 0, 0, withscores=True)
    pipe.zrange(keys.book_asks(symbol), 0, 0, withscores=True)
    bid, ask = pipe.execute()
    return (-int(bid[0][1]) if bid else None, int(ask[0][1]) if ask else None)


def underlying(markets: MarketSet, option: Market) -> Market | None:
    for product in UNDERLYING_ORDER:
        for market in markets.markets.values():
            if (
                market.product is product
                and market.base.symbol == option.base.symbol
                and market.quote.symbol == option.quote.symbol
            ):
                return market
    return None


def run_oracle(
    client: Any,
    markets: MarketSet,
    source: str,
    now_ms: int,
    funding_interval_ms: int,
    ticker: Any = None,
    max_move_bps: int = DEFAULT_ORACLE_MAX_MOVE_BPS,
) -> dict[str, tuple[int, int]]:
    """Write index and mark for every market; return ``symbol -> (index, mark)``.

    With an HTTP source, a market's price is taken only if valid and within ``max_move_bps``
    of its last accepted index (``px.index``; none yet: any valid price); otherwise the
    market keeps its index and the value is counted as ignored.
    """
    http_source = source.startswith(("http://", "https://"))
    health = SourceHealth(client, source, now_ms) if http_source else None
    sample = health.fetch() if health is not None else None
    remote = sample.prices if sample is not None else {}
    ordered = sorted(markets.markets.values(), key=lambda m: m.product is Product.OPTION)
    result: dict[str, tuple[int, int]] = {}
    for market in ordered:
        symbol = market.symbol
        px = client.hgetall(keys.market_prices(symbol))
        static = int(px.get("static") or market.spec.indexPrice)
        last = int(px["index"]) if px.get("index") else None
        accepted = None
        if health is not None and symbol in remote:
            accepted = health.accept(symbol, remote[symbol], last, max_move_bps)
        bid, ask = best_prices(client, symbol)
        if market.product is Product.OPTION:
            base = underlying(markets, market)
            if accepted is not None:
                index = accepted
            elif symbol in remote:
                index = last or static  # its own price was ignored: it keeps its index
            elif source == "static" and px.get("static"):
                index = static  # an admin push for the option itself
            elif base is not None and base.symbol in result:
                index = result[base.symbol][0]
            else:
                index = static
        elif source == "book":
            index = (bid + ask) // 2 if bid is not None and ask is not None else static
        elif http_source:
            index = accepted if accepted is not None else last or static
        else:
            index = static
        mark = risk.mark_price(market, index, bid, ask)
        result[symbol] = (index, mark)
        pipe = client.pipeline(transaction=False)
        fields: dict[str, Any] = {"index": index, "mark": mark}
        if market.product is Product.PERP:
            fields["nextFundingTs"] = (now_ms // funding_interval_ms + 1) * funding_interval_ms
            premiums = keys.market_premiums(symbol)
            pipe.zadd(premiums, {f"{now_ms}:{mark}:{index}": now_ms})
            pipe.zremrangebyscore(
                premiums, "-inf", now_ms - PREMIUM_KEEP_PERIODS * funding_interval_ms
            )
        pipe.hset(keys.market_prices(symbol), mapping=fields)
        pipe.execute()
        wake_triggers(client, symbol, now_ms)
        publish_ticker(client, market, ticker)
    return result


def wake_triggers(client: Any, symbol: str, now_ms: int) -> bool:
    """After new prices: a ``prices`` command on the market's stream, so match.lua fires its
    MARK and INDEX trigger orders (docs/api.md "Trigger orders"), only when it has some.
    A second run, or the command applied twice, fires nothing twice: a fired order has left
    its set. Returns whether the command was sent."""
    if not client.exists(*keys.market_price_triggers(symbol)):
        return False
    command: AdminCommand = {"op": "prices", "ts": now_ms}
    client.xadd(keys.market_in(symbol), {COMMAND_FIELD: dumps(command)})
    return True


def publish_ticker(client: Any, market: Market, ticker: Any = None) -> None:
    """Publish the REST ticker on ``ticker:<m>`` (``ticker``: a reader of the full ticker)."""
    symbol = market.symbol
    data: Ticker | PriceTicker
    if ticker is not None:
        data = ticker(client, market)
    else:
        px = client.hgetall(keys.market_prices(symbol))
        data = {
            "indexPrice": int(px["index"]) if "index" in px else None,
            "markPrice": int(px["mark"]) if "mark" in px else None,
            "fundingRate": int(px["fundingRate"]) if "fundingRate" in px else None,
            "nextFundingTs": int(px["nextFundingTs"]) if "nextFundingTs" in px else None,
        }
    publication: TickerPublication = {
        "seq": client.hincrby(keys.market_prices(symbol), "tickerSeq", 1),
        "data": data,
    }
    pubsub.publish(client, keys.ticker_topic(symbol), dumps(publication))
