"""The oracle (API.md §8 ``dex.oracle``): index and mark prices, premium samples, ticker.

Sources: ``static`` (the last ``/v1/admin/oracle`` push in ``dex:{m}:px.static``, else the
markets file), ``book`` (mid of best bid and ask, rounded down; the static price while a side
is empty) or an ``http(s)://`` URL answering ``{"markets": [{"symbol", "price", "expiry"}]}``.
An OPTION's index is its underlying's: the URL's price (or with ``static`` an admin push) for
the option's own symbol if given, else this run's index of the market with the same base and
quote (PERP first, then FUTURE, SPOT).
"""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

from common import keys, risk
from common.events import dumps
from common.markets import Market, MarketSet
from common.types import Product

log = logging.getLogger(__name__)

PREMIUM_KEEP_PERIODS = 3
UNDERLYING_ORDER = (Product.PERP, Product.FUTURE, Product.SPOT)


def fetch_prices(url: str, timeout: float = 3.0) -> dict[str, int]:
    """``symbol -> price`` from an oracle URL; ``{}`` (logged) if it does not answer well."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            document = json.loads(response.read())
        return {
            str(item["symbol"]): int(item["price"])
            for item in document.get("markets", [])
            if isinstance(item.get("price"), int | str) and int(item["price"]) > 0
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("oracle: %s did not answer with prices: %s", url, exc)
        return {}


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
) -> dict[str, tuple[int, int]]:
    """Write index and mark for every market; return ``symbol -> (index, mark)``."""
    remote = fetch_prices(source) if source.startswith(("http://", "https://")) else {}
    ordered = sorted(markets.markets.values(), key=lambda m: m.product is Product.OPTION)
    result: dict[str, tuple[int, int]] = {}
    for market in ordered:
        symbol = market.symbol
        px = client.hgetall(keys.market_prices(symbol))
        static = int(px.get("static") or market.spec.indexPrice)
        bid, ask = best_prices(client, symbol)
        if market.product is Product.OPTION:
            base = underlying(markets, market)
            if symbol in remote:
                index = remote[symbol]
            elif source == "static" and px.get("static"):
                index = static  # an admin push for the option itself
            elif base is not None and base.symbol in result:
                index = result[base.symbol][0]
            else:
                index = static
        elif source == "book":
            index = (bid + ask) // 2 if bid is not None and ask is not None else static
        elif source.startswith(("http://", "https://")):
            index = remote.get(symbol, int(px.get("index") or static))
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
        publish_ticker(client, market, ticker)
    return result


def publish_ticker(client: Any, market: Market, ticker: Any = None) -> None:
    """Publish the REST ticker on ``ticker:<m>`` (``ticker``: a reader of the full ticker)."""
    symbol = market.symbol
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
    seq = client.hincrby(keys.market_prices(symbol), "tickerSeq", 1)
    client.publish(keys.channel(keys.ticker_topic(symbol)), dumps({"seq": seq, "data": data}))
