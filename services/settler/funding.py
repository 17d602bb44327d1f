"""Funding of PERP markets (API.md §8 ``dex.funding``), each finished period paid once.

Periods are aligned to the epoch: period k is [k·I, (k+1)·I) ms. A run pays every finished
period after the last one paid (the first run of a market only marks where it starts). For a
period the rate (parts per million) is clamp(premium + interest·100, ±cap·100), premium the
time-weighted mean of (mark − index)/index over the oracle's samples (each sample holds until
the next; its ppm and the mean both rounded toward zero; 0 with no sample). Each open position
pays notional(index, |size|) × rate / 10^6: longs pay shorts when the rate is positive; payers
round up, receivers down, and the residue goes to the insurance fund.

Exactly once: the period's payments are frozen in ``dex:{m}:funding`` (``plan:<k>``) before any
is applied, each account's share is one ``account_step`` keyed ``<m>:funding`` = k, and the
period is marked paid last.
"""

from __future__ import annotations

from typing import Any

from common import keys, money, risk
from common.events import dumps, loads
from common.markets import Market, MarketSet
from common.types import Product
from services.settler.accounts import AccountSteps

MAX_PERIODS_PER_RUN = 100
PPM = 1_000_000


def premium_ppm(client: Any, symbol: str, start: int, end: int) -> int:
    """Time-weighted mean premium over [start, end) in ppm, rounded toward zero."""
    premiums = keys.market_premiums(symbol)
    before = client.zrevrangebyscore(premiums, f"({start}", "-inf", start=0, num=1)
    inside = client.zrangebyscore(premiums, start, f"({end}")
    samples = [_sample(raw) for raw in before + inside]
    weighted = covered = 0
    for i, (ts, ppm) in enumerate(samples):
        begin = max(ts, start)
        finish = samples[i + 1][0] if i + 1 < len(samples) else end
        finish = min(finish, end)
        if finish > begin:
            weighted += ppm * (finish - begin)
            covered += finish - begin
    return _div_toward_zero(weighted, covered) if covered else 0


def _sample(raw: str) -> tuple[int, int]:
    ts, mark, index = (int(part) for part in raw.split(":"))
    return ts, _div_toward_zero((mark - index) * PPM, index)


def _div_toward_zero(numerator: int, denominator: int) -> int:
    quotient = abs(numerator) // abs(denominator)
    return quotient if (numerator >= 0) == (denominator > 0) else -quotient


def funding_rate(market: Market, premium: int) -> int:
    cap = (market.spec.fundingCapBps or 0) * 100
    rate = premium + (market.spec.fundingInterestBps or 0) * 100
    return max(-cap, min(cap, rate))


def payments(
    market: Market, sizes: dict[str, int], index: int, rate: int
) -> tuple[dict[str, int], int]:
    """Signed amount per account (+ received) and the residue for the insurance fund."""
    amounts: dict[str, int] = {}
    for user, size in sorted(sizes.items()):
        if size == 0 or rate == 0:
            continue
        owed = money.notional(market, index, abs(size)) * abs(rate)
        pays = (size > 0) == (rate > 0)
        amounts[user] = -money.ceil_div(owed, PPM) if pays else owed // PPM
    return amounts, -sum(amounts.values())


def run_funding(
    client: Any, markets: MarketSet, steps: AccountSteps, now_ms: int, interval_ms: int
) -> list[tuple[str, int]]:
    """Pay every finished unpaid period of every PERP market; return (market, period) paid."""
    paid: list[tuple[str, int]] = []
    for market in markets.markets.values():
        if market.product is not Product.PERP:
            continue
        with steps.lock(keys.market_funding(market.symbol) + ":lock") as held:
            if held:
                paid += _run_market(client, market, steps, now_ms, interval_ms)
    return paid


def _run_market(
    client: Any, market: Market, steps: AccountSteps, now_ms: int, interval_ms: int
) -> list[tuple[str, int]]:
    paid: list[tuple[str, int]] = []
    current = now_ms // interval_ms
    state_key = keys.market_funding(market.symbol)
    last = client.hget(state_key, "paid")
    if last is None:
        client.hsetnx(state_key, "paid", current - 1)
        last = client.hget(state_key, "paid")
    for period in range(int(last) + 1, min(current, int(last) + 1 + MAX_PERIODS_PER_RUN)):
        pay_period(client, market, steps, period, interval_ms, now_ms)
        paid.append((market.symbol, period))
    px = {"nextFundingTs": (current + 1) * interval_ms}
    client.hset(keys.market_prices(market.symbol), mapping=px)
    return paid


def pay_period(
    client: Any, market: Market, steps: AccountSteps, period: int, interval_ms: int, now_ms: int
) -> None:
    symbol = market.symbol
    state_key = keys.market_funding(symbol)
    frozen = client.hget(state_key, f"plan:{period}")
    if frozen is None:
        start, end = period * interval_ms, (period + 1) * interval_ms
        rate = funding_rate(market, premium_ppm(client, symbol, start, end))
        prices = risk.parse_prices(market, client.hgetall(keys.market_prices(symbol)))
        holders = sorted(client.smembers(keys.market_holders(symbol)))
        pipe = client.pipeline(transaction=False)
        for user in holders:
            pipe.hget(keys.positions(user), f"{symbol}:size")
        sizes = {u: int(s or 0) for u, s in zip(holders, pipe.execute(), strict=True)}
        amounts, residue = payments(market, sizes, prices.index, rate)
        plan = {
            "period": period,
            "rate": rate,
            "index": prices.index,
            "ts": now_ms,
            "amounts": {u: str(a) for u, a in amounts.items()},
            "residue": str(residue),
            "sizes": {u: s for u, s in sizes.items() if u in amounts},
        }
        client.hsetnx(state_key, f"plan:{period}", dumps(plan))
        frozen = client.hget(state_key, f"plan:{period}")
    plan = loads(frozen)
    asset = market.quote.symbol
    field = f"{symbol}:funding"
    shares = {u: int(a) for u, a in plan["amounts"].items()}
    shares[keys.INSURANCE_ACCOUNT] = shares.get(keys.INSURANCE_ACCOUNT, 0) + int(plan["residue"])
    for user, amount in shares.items():
        ops = [["credit", asset, str(amount)]]
        if user in plan["amounts"]:
            ops.append(["posincr", symbol, "funding", plan["amounts"][user]])
            ops.append(
                [
                    "hist",
                    dumps(
                        {
                            "market": symbol,
                            "period": period,
                            "rate": plan["rate"],
                            "size": plan["sizes"][user],
                            "amount": plan["amounts"][user],
                            "ts": plan["ts"],
                        }
                    ),
                ]
            )
        steps.step(user, field, period, ops)
    for user in shares:
        steps.cover(user, asset)
    pipe = client.pipeline(transaction=True)  # one slot: history and "paid" move together
    pipe.xadd(
        keys.market_funding_history(symbol),
        {
            "f": dumps(
                {
                    "period": period,
                    "rate": plan["rate"],
                    "index": plan["index"],
                    "ts": plan["ts"],
                    "residue": plan["residue"],
                    "positions": len(plan["amounts"]),
                }
            )
        },
        maxlen=10_000,
        approximate=True,
    )
    pipe.hset(keys.market_prices(symbol), "fundingRate", plan["rate"])
    pipe.hset(state_key, "paid", period)
    pipe.hdel(state_key, f"plan:{period - 1}")
    pipe.execute()
    steps.notify(set(plan["amounts"]), [symbol])
