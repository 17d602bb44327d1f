"""The oracle's three sources against a real redis-server (and a local HTTP price server)."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from common import keys
from common.events import loads
from common.market_reads import read_ticker_sync
from common.markets import load_markets
from services.settler.oracle import run_oracle

pytestmark = pytest.mark.integration

MARKETS = load_markets(Path(__file__).resolve().parents[2] / "deploy" / "markets.yaml")
PERP, OPTION, SPOT = "BTC-PERP", "BTC-C-40000-20270326", "BTC-USDC"
INTERVAL_MS = 3_600_000


def rest(client: Any, symbol: str, side: str, price: int) -> None:
    book = keys.book_bids(symbol) if side == "BUY" else keys.book_asks(symbol)
    client.zadd(book, {f"{client.incr('aseq'):016d}|0xu|c": -price if side == "BUY" else price})


def px(client: Any, symbol: str) -> dict[str, str]:
    return client.hgetall(keys.market_prices(symbol))


def test_static_source_uses_the_admin_push_and_the_median_mark(client: Any) -> None:
    client.hset(keys.market_prices(PERP), "static", 3_100_000)
    rest(client, PERP, "BUY", 3_050_000)
    rest(client, PERP, "SELL", 3_060_000)
    pubsub = client.pubsub()
    pubsub.subscribe(keys.channel(keys.ticker_topic(PERP)))
    pubsub.get_message(timeout=1)
    run_oracle(client, MARKETS, "static", 1_000_000, INTERVAL_MS)
    assert px(client, PERP)["index"] == "3100000"
    assert px(client, PERP)["mark"] == "3060000"  # median(3,100,000, 3,050,000, 3,060,000)
    assert px(client, PERP)["nextFundingTs"] == str(INTERVAL_MS)
    assert px(client, SPOT)["index"] == "3000000"  # the markets file's indexPrice
    assert px(client, OPTION)["index"] == "3100000"  # the underlying's index
    message = pubsub.get_message(timeout=5)
    assert message is not None
    data = loads(message["data"])["data"]
    assert data["indexPrice"] == 3_100_000 and data["markPrice"] == 3_060_000
    samples = client.zrange(keys.market_premiums(PERP), 0, -1)
    assert samples == ["1000000:3060000:3100000"]
    pubsub.close()


def test_book_source_takes_the_mid_and_options_follow_the_underlying(client: Any) -> None:
    rest(client, PERP, "BUY", 4_100_001)
    rest(client, PERP, "SELL", 4_100_004)
    run_oracle(client, MARKETS, "book", 5_000, INTERVAL_MS)
    assert px(client, PERP)["index"] == "4100002"  # (bid + ask) // 2
    assert px(client, PERP)["mark"] == "4100002"
    # The option's index is the PERP's; its mark is its intrinsic value with an empty book.
    assert px(client, OPTION)["index"] == "4100002"
    assert px(client, OPTION)["mark"] == "100002"
    assert px(client, SPOT)["index"] == "3000000"  # an empty book keeps the static price


def test_http_source_reads_prices_from_a_url(client: Any) -> None:
    body = json.dumps(
        {
            "markets": [
                {"symbol": PERP, "price": 2_900_000, "expiry": None},
                {"symbol": OPTION, "price": 4_500_000, "expiry": 1806048000000},
            ]
        }
    ).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/prices"
        run_oracle(client, MARKETS, url, 5_000, INTERVAL_MS)
    finally:
        server.shutdown()
        server.server_close()
    assert px(client, PERP)["index"] == "2900000"
    assert px(client, OPTION)["index"] == "4500000"
    assert px(client, OPTION)["mark"] == "500000"
    assert px(client, SPOT)["index"] == "3000000"  # not in the answer: keeps its price


def test_unreachable_url_keeps_the_last_index(client: Any) -> None:
    client.hset(keys.market_prices(PERP), "index", 3_333_300)
    run_oracle(client, MARKETS, "http://127.0.0.1:9/none", 5_000, INTERVAL_MS)
    assert px(client, PERP)["index"] == "3333300"


def test_ticker_publication_is_the_full_rest_ticker(client: Any) -> None:
    pubsub = client.pubsub()
    pubsub.subscribe(keys.channel(keys.ticker_topic(PERP)))
    pubsub.get_message(timeout=1)
    run_oracle(client, MARKETS, "static", 5_000, INTERVAL_MS, ticker=read_ticker_sync)
    message = pubsub.get_message(timeout=5)
    assert message is not None
    data = loads(message["data"])["data"]
    assert data["indexPrice"] == 3_000_000 and data["markPrice"] == 3_000_000
    assert data["nextFundingTs"] == INTERVAL_MS and data["openInterest"] == 0
    assert {"last", "bestBid", "bestAsk", "volume24h", "fundingRate"} <= set(data)
    pubsub.close()
