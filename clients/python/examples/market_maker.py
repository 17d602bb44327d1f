"""A market maker: quote both sides of a market, requote a side each time its quote fills.

    python clients/python/examples/market_maker.py --key 0x... --market BTC-USDC \
        --mid 3000000 --spread 100 --qty 1000 --seconds 60 [--fills N]

Quotes are POST_ONLY limit orders sent over the gateway's WebSocket order entry, with
cancel-on-disconnect on (if this process dies its quotes are cancelled). The account's
``orders:`` feed says when a quote fills; the side that filled is quoted again around the last
trade's price. At the end every open order of the account in the market is cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from orderbookdex import Client, MarketStream, OrderEntry, errors


class MarketMaker:
    def __init__(self, client: Client, entry: OrderEntry, market: str, spread: int, qty: int):
        self.client, self.entry, self.market = client, entry, market
        self.spread, self.qty = spread, qty
        self.quotes: dict[str, str] = {}  # clientOrderId -> side, for the quotes live now
        self.requotes = 0

    async def quote(self, side: str, mid: int) -> None:
        price = mid - self.spread if side == "BUY" else mid + self.spread
        try:
            answer = await self.entry.place(
                self.market, side, self.qty, price, time_in_force="POST_ONLY", wait=True
            )
        except errors.DexError as exc:  # e.g. the quote would cross: wait for the next fill
            print(f"quote {side} {price} refused: {exc.code}", flush=True)
            return
        if answer["status"] in ("NEW", "PARTIAL"):
            self.quotes[answer["clientOrderId"]] = side
            print(f"quote {side} {self.qty} @ {price} {answer['clientOrderId']}", flush=True)

    async def on_order(self, order: dict[str, Any]) -> None:
        side = self.quotes.get(order.get("clientOrderId", ""))
        if side is None or order.get("status") != "FILLED":
            return
        del self.quotes[order["clientOrderId"]]
        trades = self.client.trades(self.market, limit=1)
        mid = trades[0].price if trades else int(order["price"])
        print(f"filled {side} {order['qty']} @ {order['price']}; requoting", flush=True)
        self.requotes += 1
        await self.quote(side, mid)


async def run(args: argparse.Namespace) -> None:
    client = Client(args.url, key=args.key)
    async with MarketStream(args.ws_url) as stream, OrderEntry(client) as entry:
        await entry.cancel_on_disconnect(True)
        orders = stream.orders(client.address)
        await orders.__anext__()  # the snapshot: from here on every change is seen
        maker = MarketMaker(client, entry, args.market, args.spread, args.qty)
        book = stream.book(args.market)
        await book.wait_synced()
        bid, ask = book.best_bid(), book.best_ask()
        mid = args.mid or (
            (bid + ask) // 2 if bid and ask else client.ticker(args.market).index_price
        )
        if mid is None:
            raise SystemExit(f"no reference price for {args.market}: pass --mid")
        await maker.quote("BUY", mid)
        await maker.quote("SELL", mid)
        deadline = time.monotonic() + args.seconds
        try:
            while (left := deadline - time.monotonic()) > 0 and maker.requotes < args.fills:
                try:
                    message = await asyncio.wait_for(orders.__anext__(), left)
                except TimeoutError:
                    break
                if message.get("type") == "update":
                    await maker.on_order(message["data"])
        finally:
            cancelled = await entry.cancel_all(args.market)
            print(
                f"done: {maker.requotes} requotes, {cancelled['cancelled']} cancelled", flush=True
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--ws-url", default="ws://127.0.0.1:8001/ws")
    parser.add_argument("--key", required=True, help="the account's private key (0x...)")
    parser.add_argument("--market", default="BTC-USDC")
    parser.add_argument("--mid", type=int, default=0, help="reference price (default: the book)")
    parser.add_argument("--spread", type=int, default=100, help="price units each side of mid")
    parser.add_argument("--qty", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0, help="stop after this long")
    parser.add_argument("--fills", type=int, default=10**9, help="stop after this many requotes")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
