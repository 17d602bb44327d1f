"""Drive settlement without the matcher: what the gateway and the matcher would write.

``MarketDriver`` writes exactly the keys the gateway (deposit, reservation, order record) and
the matcher (order records, book entries, fill and done events) write, so settler tests can
exercise derivative fills, liquidation fills and expiry before the matcher supports them.
"""

from __future__ import annotations

import time
from typing import Any

from common import keys, money
from common.events import dumps
from common.markets import Market
from common.types import Product


class MarketDriver:
    def __init__(self, client: Any, market: Market) -> None:
        self.client = client
        self.market = market
        self.symbol = market.symbol

    # -- gateway side --------------------------------------------------------------------
    def deposit(self, user: str, asset: str, amount: int) -> None:
        self.client.hincrby(keys.balances(user), keys.total_field(asset), amount)
        self.client.hincrby(keys.balances(user), keys.deposits_field(asset), amount)
        self.client.sadd(keys.known_accounts(), user)

    def reservation(self, side: str, price: int, qty: int) -> tuple[str, int]:
        market = self.market
        if market.product is Product.SPOT:
            if side == "BUY":
                return market.quote.symbol, money.spot_buy_reservation(market, price, qty)
            return market.base.symbol, money.base_units(market, qty)
        return market.quote.symbol, money.derivative_reservation(market, price, qty)

    def order(self, user: str, cid: str, side: str, price: int, qty: int) -> int:
        """Accept and rest an order (reservation locked, record NEW, in the book)."""
        asset, amount = self.reservation(side, price, qty)
        command = {
            "op": "order",
            "user": user,
            "cid": cid,
            "side": side,
            "type": "LIMIT",
            "price": price,
            "qty": qty,
            "tif": "GTC",
            "reduceOnly": False,
            "expiresAt": 0,
            "ts": _now(),
            "reserved": amount,
            "acceptedAt": _now(),
        }
        self.client.hset(keys.account_cids(user), cid, self.symbol)
        self.client.hincrby(keys.balances(user), keys.locked_field(asset), amount)
        self.client.hset(keys.reservations(user), cid, amount)
        self.client.hset(
            keys.account_order(user, cid),
            mapping={
                "market": self.symbol,
                "asset": asset,
                "reserved": amount,
                "acceptedAt": _now(),
                "cmd": dumps(command),
            },
        )
        aseq = self.client.hincrby(keys.market_state(self.symbol), "aseq", 1)
        self.client.hset(
            keys.market_order(self.symbol, user, cid),
            mapping={
                "clientOrderId": cid,
                "userId": user,
                "market": self.symbol,
                "side": side,
                "type": "LIMIT",
                "price": price,
                "qty": qty,
                "filled": 0,
                "status": "NEW",
                "aseq": aseq,
            },
        )
        book = keys.book_bids(self.symbol) if side == "BUY" else keys.book_asks(self.symbol)
        self.client.zadd(book, {self._member(user, cid): -price if side == "BUY" else price})
        return amount

    # -- matcher side --------------------------------------------------------------------
    def fill(
        self,
        buyer: tuple[str, str],
        seller: tuple[str, str],
        price: int,
        qty: int,
        taker: str = "BUY",
        liquidation: bool = False,
    ) -> None:
        """One fill between two resting records; finished orders get their done event."""
        tseq = self.client.hincrby(keys.market_state(self.symbol), "tseq", 1)
        event: dict[str, Any] = {
            "k": "fill",
            "tradeId": f"{self.symbol}:{tseq}",
            "tseq": tseq,
            "price": price,
            "qty": qty,
            "takerSide": taker,
            "buyer": buyer[0],
            "seller": seller[0],
            "buyCid": buyer[1],
            "sellCid": seller[1],
            "ts": _now(),
        }
        if liquidation:
            event["liquidation"] = True
        self.event(event)
        for user, cid in (buyer, seller):
            record = keys.market_order(self.symbol, user, cid)
            if not self.client.exists(record):
                continue
            filled = self.client.hincrby(record, "filled", qty)
            if filled >= int(self.client.hget(record, "qty")):
                self.finish(user, cid, "FILLED", None)
            else:
                self.client.hset(record, "status", "PARTIAL")

    def finish(self, user: str, cid: str, status: str, reason: str | None) -> None:
        record = keys.market_order(self.symbol, user, cid)
        side = self.client.hget(record, "side")
        self.client.hset(record, mapping={"status": status, "reason": reason or ""})
        for book in (keys.book_bids(self.symbol), keys.book_asks(self.symbol)):
            self.client.zrem(book, self._member(user, cid))
        self.event(
            {
                "k": "done",
                "user": user,
                "cid": cid,
                "side": side,
                "status": status,
                "reason": reason,
                "filled": int(self.client.hget(record, "filled")),
                "ts": _now(),
            }
        )

    def event(self, event: dict[str, Any]) -> None:
        event["eseq"] = self.client.hincrby(keys.market_state(self.symbol), "eseq", 1)
        self.client.xadd(keys.market_events(self.symbol), {"e": dumps(event)})

    def _member(self, user: str, cid: str) -> str:
        aseq = int(self.client.hget(keys.market_order(self.symbol, user, cid), "aseq") or 0)
        return f"{aseq:016d}|{user}|{cid}"


def _now() -> int:
    return int(time.time() * 1000)


def bulk_fills(
    client: Any, market: Market, users: list[str], count: int, price: int, qty: int
) -> int:
    """Write ``count`` fills between pairs of fresh orders that fill each other completely,
    as the gateway and the matcher would (reservations, records, fill and done events).

    Users are funded generously first. Returns the number of events written.
    """
    symbol = market.symbol
    driver = MarketDriver(client, market)
    for user in users:
        for asset in {market.quote.symbol, market.base.symbol}:
            driver.deposit(user, asset, 10**15)
    state = client.hgetall(keys.market_state(symbol))
    eseq, tseq = int(state.get("eseq", 0)), int(state.get("tseq", 0))
    now = _now()
    pipe = client.pipeline(transaction=False)
    written = 0
    for i in range(count):
        buyer, seller = users[i % len(users)], users[(i * 7 + 1) % len(users)]
        if buyer == seller:
            seller = users[(users.index(buyer) + 1) % len(users)]
        taker = "BUY" if i % 2 else "SELL"
        cids = {"BUY": f"{symbol}-b{tseq + 1}", "SELL": f"{symbol}-s{tseq + 1}"}
        for user, side in ((buyer, "BUY"), (seller, "SELL")):
            asset, amount = driver.reservation(side, price, qty)
            cid = cids[side]
            command = {
                "op": "order",
                "user": user,
                "cid": cid,
                "side": side,
                "type": "LIMIT",
                "price": price,
                "qty": qty,
                "tif": "GTC",
                "reduceOnly": False,
                "expiresAt": 0,
                "ts": now,
                "reserved": amount,
                "acceptedAt": now,
            }
            pipe.hset(keys.account_cids(user), cid, symbol)
            pipe.hincrby(keys.balances(user), keys.locked_field(asset), amount)
            pipe.hset(keys.reservations(user), cid, amount)
            pipe.hset(
                keys.account_order(user, cid),
                mapping={
                    "market": symbol,
                    "asset": asset,
                    "reserved": amount,
                    "acceptedAt": now,
                    "cmd": dumps(command),
                },
            )
            pipe.hset(
                keys.market_order(symbol, user, cid),
                mapping={
                    "clientOrderId": cid,
                    "userId": user,
                    "market": symbol,
                    "side": side,
                    "type": "LIMIT",
                    "price": price,
                    "qty": qty,
                    "filled": qty,
                    "status": "FILLED",
                    "aseq": 0,
                },
            )
        tseq += 1
        events: list[dict[str, Any]] = [
            {
                "k": "fill",
                "tradeId": f"{symbol}:{tseq}",
                "tseq": tseq,
                "price": price,
                "qty": qty,
                "takerSide": taker,
                "buyer": buyer,
                "seller": seller,
                "buyCid": cids["BUY"],
                "sellCid": cids["SELL"],
                "ts": now,
            },
            {
                "k": "done",
                "user": buyer,
                "cid": cids["BUY"],
                "side": "BUY",
                "status": "FILLED",
                "reason": None,
                "filled": qty,
                "ts": now,
            },
            {
                "k": "done",
                "user": seller,
                "cid": cids["SELL"],
                "side": "SELL",
                "status": "FILLED",
                "reason": None,
                "filled": qty,
                "ts": now,
            },
        ]
        for event in events:
            eseq += 1
            event["eseq"] = eseq
            pipe.xadd(keys.market_events(symbol), {"e": dumps(event)})
            written += 1
        if i % 200 == 199:
            pipe.execute()
    pipe.hset(keys.market_state(symbol), mapping={"eseq": eseq, "tseq": tseq})
    pipe.execute()
    return written
