"""The settler's operations for a SPOT attached TP/SL pair's hold (docs/api.md "Attached TP/SL
and position TP/SL", "On SPOT"): a parent's fill naming the hold, a child's take, its fill and
its done, and a last child ending unfired, as settlement.plan turns them into account steps."""

from __future__ import annotations

from typing import cast

from common import keys, money
from common.events import DoneEvent, FillEvent, SettlementEvent, TakeEvent
from common.markets import load_markets
from common.reservations import PAIR_HOLD
from common.settings import DEFAULT_MARKETS_FILE
from services.settler.settlement import plan

SPOT = load_markets(DEFAULT_MARKETS_FILE).markets["BTC-USDC"]
P, Q = 3_000_000, 1_000


def fill(eseq: int, buyer: str, buy_cid: str, seller: str, sell_cid: str) -> FillEvent:
    return {"k": "fill", "eseq": eseq, "tradeId": f"BTC-USDC:{eseq}", "tseq": eseq, "price": P,
            "qty": Q, "takerSide": "SELL", "buyer": buyer, "seller": seller, "buyCid": buy_cid,
            "sellCid": sell_cid, "ts": 1}  # fmt: skip


def done(eseq: int, cid: str, side: str, status: str, **extra: str) -> DoneEvent:
    event = {"k": "done", "eseq": eseq, "user": "me", "cid": cid, "side": side,
             "status": status, "reason": None, "filled": 0, "ts": 1}  # fmt: skip
    return cast(DoneEvent, event | extra)


def test_the_pair_hold_is_a_reservation_no_client_order_id_can_name() -> None:
    assert PAIR_HOLD == "|tpsl"  # clientOrderIds are A-Z a-z 0-9 . _ : -


def test_a_fill_holds_its_base_and_the_fired_child_takes_spends_and_releases_it() -> None:
    take: TakeEvent = {"k": "take", "eseq": 4, "user": "me", "cid": "p.tp", "hold": "p|tpsl",
                       "ts": 1}  # fmt: skip
    events: list[SettlementEvent] = [
        fill(1, "me", "p", "mm", "ask") | {"hold": "p|tpsl"},
        fill(2, "me", "p", "mm", "ask"),  # both children ended: nothing held
        done(3, "p.sl", "SELL", "CXL", reason="OCO"),  # the OCO'd sibling: no "hold"
        take,
        fill(5, "bid", "b", "me", "p.tp"),
        done(6, "p.tp", "SELL", "FILLED"),
    ]
    ops = dict(plan(SPOT, events)["me"])
    base = str(money.base_units(SPOT, Q))
    credit = ops[1].index(["credit", "BTC", base])
    assert ops[1][credit + 1] == ["hold", "BTC", "p|tpsl", base]  # with the credit, once
    assert not [op for op in ops[2] if op[0] == "hold"]
    assert ops[3] == [
        ["release", "BTC", "p.sl"],
        ["finished", "p.sl", keys.account_order("me", "p.sl")],
    ]
    assert ops[4] == [["take", "p|tpsl", "p.tp"]]
    assert ["spend", "BTC", base, "p.tp"] in ops[5]
    assert ops[6][0] == ["release", "BTC", "p.tp"] and len(ops[6]) == 2


def test_the_last_child_ending_unfired_releases_the_hold() -> None:
    events = [done(7, "p.tp", "SELL", "CXL", hold="p|tpsl")]
    ops = dict(plan(SPOT, events)["me"])
    assert ops[7] == [
        ["release", "BTC", "p.tp"],
        ["release", "BTC", "p|tpsl"],
        ["finished", "p.tp", keys.account_order("me", "p.tp")],
    ]


def test_a_sell_parent_keeps_its_filled_share_and_its_child_takes_its_budget() -> None:
    """A SELL parent's pair holds quote: its done event's keep brings the hold down to what
    buying back its filled qty may spend (0: released whole); a buy-back child's take keeps
    its budget, then moves it."""
    take: TakeEvent = {"k": "take", "eseq": 2, "user": "me", "cid": "s.sl", "hold": "s|tpsl",
                       "keep": 1200, "ts": 1}  # fmt: skip
    events: list[SettlementEvent] = [
        done(1, "s", "SELL", "CXL", hold="s|tpsl") | {"keep": 1234, "filled": Q},
        take,
        done(3, "u", "SELL", "CXL", hold="u|tpsl") | {"keep": 0, "attached": ["u.tp"]},
    ]
    ops = dict(plan(SPOT, events)["me"])
    assert ops[1] == [
        ["release", "BTC", "s"],
        ["keep", "USDC", "s|tpsl", "1234"],
        ["finished", "s", keys.account_order("me", "s")],
    ]
    assert ops[2] == [["keep", "USDC", "s|tpsl", "1200"], ["take", "s|tpsl", "s.sl"]]
    assert ops[3][1] == ["keep", "USDC", "u|tpsl", "0"]
    assert ["finished", "u.tp", keys.account_order("me", "u.tp")] in ops[3]
