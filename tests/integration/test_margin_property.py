"""Random order sequences by several accounts on a PERP market, through the real gateway (in
process), the real match.lua and the real settler Lua on a real redis-server. After every step,
settled: no account's free collateral at the current mark is below zero unless the mark moved
while the account was exposed to it (or stands against a position's entry: see
``Exchange.free_collateral``), and every auditor invariant holds.

Steps: LIMIT orders of every time in force (some reduce-only) priced across the band, MARKET
orders with and without a protection price, cancels, cancel-alls, and index moves (the mark is
re-computed by the admin oracle push). DEX_FULL_TESTS=1 runs ten times as many examples.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.gateway import ADMIN, gateway_client
from support.redis_server import wait_for
from support.signing import CHAIN_ID, VERIFYING_CONTRACT, Trader

from common import keys, money
from common.audit import audit
from common.eip712 import sign
from common.markets import load_markets
from common.risk import account_margin, initial_margin, parse_positions, parse_prices
from common.settings import DEFAULT_MARKETS_FILE
from services.matcher.consumer import MarketConsumer, write_market_cfg
from services.settler.ledger import Ledger

pytestmark = pytest.mark.integration

PERP = "BTC-PERP"
INDEX = 3_000_000
FULL = os.environ.get("DEX_FULL_TESTS") == "1"
EXAMPLES = 200 if FULL else 20
TRADERS = [Trader() for _ in range(4)]
MARKETS = load_markets(DEFAULT_MARKETS_FILE)

order_step = st.fixed_dictionaries(
    {
        "kind": st.just("order"),
        "trader": st.integers(0, len(TRADERS) - 1),
        "side": st.sampled_from(["BUY", "SELL"]),
        "type": st.sampled_from(["LIMIT"] * 4 + ["MARKET"]),
        # cents away from the index: near it mostly, sometimes far (the band is ±50 %)
        "offset": st.one_of(
            st.integers(-30_000, 30_000), st.sampled_from([-1_500_000, -900_000, 1_200_000])
        ),
        "protect": st.booleans(),
        "qty": st.sampled_from([100, 500, 1_000, 2_500, 10_000]),
        "tif": st.sampled_from(["GTC", "GTC", "IOC", "FOK", "POST_ONLY"]),
        "reduce": st.sampled_from([False] * 4 + [True]),
    }
)
cancel_step = st.fixed_dictionaries(
    {"kind": st.sampled_from(["cancel", "cancel_all"]), "trader": st.integers(0, 3)}
)
# The index walks within ±3 % of the start: with 10 % initial and 5 % maintenance margin,
# an account whose free collateral was never below zero cannot go under water on it.
move_step = st.fixed_dictionaries(
    {"kind": st.just("move"), "index": st.integers(INDEX * 97 // 100, INDEX * 103 // 100)}
)
steps = st.lists(
    st.one_of(order_step, order_step, order_step, cancel_step, move_step), min_size=5, max_size=25
)


class Matcher(threading.Thread):
    """The market's real consumer, polling in the background (cancels wait for its answer)."""

    def __init__(self, redis_url: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(redis_url, decode_responses=True)
        write_market_cfg(self.client, MARKETS.markets[PERP])  # as the matcher process does
        self.consumer = MarketConsumer(self.client, PERP, "property", on_events=lambda _: None)
        self.consumer.ensure_group()
        assert self.consumer.acquire()
        self.running = True

    def run(self) -> None:
        while self.running:
            self.consumer.poll(block_ms=20)

    def stop(self) -> None:
        self.running = False
        self.join(timeout=5)
        self.consumer.release()
        self.client.close()


class Exchange:
    """The gateway in process, the market's matcher in a thread, the settler stepped by hand."""

    def __init__(self, http: Any, client: redis.Redis) -> None:
        self.http = http
        self.client = client
        self.ledger = Ledger(client)
        self.placed: dict[int, list[str]] = {i: [] for i in range(len(TRADERS))}
        self.count = 0

    def settle(self) -> None:
        """Wait until the matcher has applied every command, then settle every event."""

        def matched() -> bool:
            last = self.client.xrevrange(keys.market_in(PERP), count=1)
            applied = self.client.hget(keys.market_state(PERP), "last")
            return not last or applied == last[0][0]

        assert wait_for(matched, 10)
        while not self.ledger.is_settled(PERP):
            self.ledger.settle_market(MARKETS.markets[PERP])

    def run(self, step: dict[str, Any]) -> None:
        trader = TRADERS[step.get("trader", 0)]
        if step["kind"] == "order":
            self.count += 1
            cid = f"p{self.count}"
            price = INDEX + step["offset"]
            if step["type"] == "MARKET" and not step["protect"]:
                price = 0
            body = trader.order(
                PERP,
                step["side"],
                price,
                step["qty"],
                product="PERP",
                type=step["type"],
                cid=cid,
                timeInForce="GTC" if step["type"] == "MARKET" else step["tif"],
                reduceOnly=step["reduce"],
            )
            response = self.http.post("/v1/orders", json=body)
            assert response.status_code in (202, 400, 422), response.text
            if response.status_code == 202:
                self.placed[step["trader"]].append(cid)
        elif step["kind"] == "cancel" and self.placed[step["trader"]]:
            cid = self.placed[step["trader"]][-1]
            body = signed_cancel(trader, "Cancel", market=PERP, clientOrderId=cid)
            assert self.http.post("/v1/orders/cancel", json=body).status_code in (200, 409)
        elif step["kind"] == "cancel_all":
            body = signed_cancel(trader, "CancelAll", market=PERP)
            assert self.http.post("/v1/orders/cancel-all", json=body).status_code == 200
        elif step["kind"] == "move":
            answer = self.http.post(
                "/v1/admin/oracle",
                json={"market": PERP, "indexPrice": step["index"]},
                headers=ADMIN,
            )
            assert answer.status_code == 200, answer.text
        self.settle()

    def free_collateral(self, user: str) -> int:
        """Free collateral at the current mark, plus the fee locked by orders that only close
        (see below) and the growth of the positions' initial
        margin from their entry notional to the mark: an order's margin is reserved at its own
        price (API.md §6), so a short sold below the mark (or a long bought above it and
        marked up) needs a little more margin at the mark than was reserved; that part, and
        only that part, is the mark standing against the position's entry."""
        positions = parse_positions(self.client.hgetall(keys.positions(user)))
        market = MARKETS.markets[PERP]
        prices = {PERP: parse_prices(market, self.client.hgetall(keys.market_prices(PERP)))}
        balances = self.client.hgetall(keys.balances(user))
        free = account_margin(MARKETS, balances, positions, prices)["USDC"].free_collateral
        for position in positions:
            at_mark = initial_margin(market, position, prices[PERP])
            at_entry = money.margin(abs(position.entry_notional), market.spec.initialMarginBps or 0)
            free += max(at_mark - at_entry, 0)
        # A close is judged on cash alone (API.md §6: closing stays possible under water), so
        # the fee it locks may come out of thin free collateral; it only ever lowers the risk.
        for cid, held in self.client.hgetall(keys.reservations(user)).items():
            command = self.client.hget(keys.account_order(user, cid), "cmd") or "{}"
            if orjson.loads(command).get("open") == 0:
                free += int(held)
        return free

    def exposed(self, user: str) -> bool:
        """The account holds a position or an open order: a mark move reaches it."""
        positions = parse_positions(self.client.hgetall(keys.positions(user)))
        return bool(positions) or bool(self.client.hlen(keys.reservations(user)))


def signed_cancel(trader: Trader, primary: str, **message: Any) -> dict[str, Any]:
    message = {"userId": trader.address, **message, "ts": int(time.time() * 1000)}
    return {**message, "sig": sign(trader.key, primary, message, CHAIN_ID, VERIFYING_CONTRACT)}


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=steps)
def test_no_account_is_under_water_unless_the_mark_moved_against_it(
    redis_url: str, sequence: list[dict[str, Any]]
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushall()
    with gateway_client(redis_url) as http:
        for i, trader in enumerate(TRADERS):
            amount = [2_000_000_000, 5_000_000_000, 20_000_000_000, 400_000_000][i]
            body = {"userId": trader.address, "asset": "USDC", "amount": amount}
            assert http.post("/v1/admin/deposits", json=body, headers=ADMIN).status_code == 200
        exchange = Exchange(http, client)
        matcher = Matcher(redis_url)
        matcher.start()
        excused: set[str] = set()
        try:
            run_checked(exchange, client, sequence, excused)
        finally:
            matcher.stop()
    client.close()


def run_checked(
    exchange: Exchange, client: redis.Redis, sequence: list[dict[str, Any]], excused: set[str]
) -> None:
    for step in sequence:
        if step["kind"] == "move":
            excused |= {t.address.lower() for t in TRADERS if exchange.exposed(t.address.lower())}
        exchange.run(step)
        for trader in TRADERS:
            user = trader.address.lower()
            free = exchange.free_collateral(user)
            if user not in excused:
                assert free >= 0, (step, user, free)
        report = audit(client, MARKETS)
        assert report["ok"], (step, report["invariants"])
