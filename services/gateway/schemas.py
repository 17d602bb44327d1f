"""Response shapes for the OpenAPI document (API.md §5), with examples, and the error
responses each route can give. Request bodies are declared in ``shapes``, which both parses
them and makes their schemas.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.gateway.errors import ErrorCode

ADDRESS = "0x8ba1f109551bD432803012645Ac136ddd64DBA72"


def _example(**values: Any) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [values]})


class ErrorDetail(BaseModel):
    code: ErrorCode = Field(description="UPPER_SNAKE error code (API.md §5)")
    message: str


class ErrorBody(BaseModel):
    model_config = _example(error={"code": "INVALID_PRICE", "message": "price 7 is not a tick"})
    error: ErrorDetail


class Accepted(BaseModel):
    model_config = _example(clientOrderId="c-1", status="ACCEPTED")
    clientOrderId: str
    status: str


class Order(BaseModel):
    model_config = _example(
        clientOrderId="c-1", userId=ADDRESS.lower(), market="BTC-USDC", side="BUY",
        type="LIMIT", timeInForce="GTC", reduceOnly=False, expiresAt=0, price=3000000,
        qty=1000, filled=0, status="NEW", reason=None, ts=1764590000000,
        updatedTs=1764590000012,
    )  # fmt: skip
    clientOrderId: str
    userId: str
    market: str
    side: str
    type: str
    timeInForce: str
    reduceOnly: bool
    expiresAt: int
    price: int
    qty: int
    filled: int
    status: str = Field(description="ACCEPTED UNTRIGGERED NEW PARTIAL FILLED CXL EXP REJECTED")
    reason: str | None
    ts: int
    updatedTs: int
    agent: str | None = Field(
        None, description="only on an order an agent key signed: that key's address"
    )
    triggerPrice: int | None = Field(
        None, description='a trigger order\'s (docs/api.md "Trigger orders"), else absent'
    )
    triggerSource: str | None = Field(None, description="a trigger order's: MARK, LAST or INDEX")
    triggered: bool | None = Field(None, description="a trigger order's: whether it fired")
    trailingDelta: int | None = Field(None, description="a trailing stop's distance")
    trailingUnit: str | None = Field(None, description="a trailing stop's: TICKS or BPS")


class Cancelled(BaseModel):
    model_config = _example(cancelled=3)
    cancelled: int


class CancelReplaced(BaseModel):
    """A cancel-replace's answer: the order cancelled and the order placed in its stead."""

    cancelled: Order | None = Field(description="null only in a 202, for an unknown order")
    order: Order


class DeadmanSwitch(BaseModel):
    model_config = _example(
        userId="0x8ba1f109551bd432803012645ac136ddd64dba72", market="", deadline=1764590060000
    )
    userId: str
    market: str
    deadline: int


class Balance(BaseModel):
    model_config = _example(total="5000000000", available="3998500000", locked="1001500000")
    total: str
    available: str
    locked: str


class Position(BaseModel):
    model_config = _example(
        market="BTC-PERP", size=1000, entryNotional="3000000000", avgEntry="3000000",
        realizedPnl="0", unrealizedPnl="1000000", markPrice=3001000, fundingPaid="0",
        liquidationPrice=2850000,
    )  # fmt: skip
    market: str
    size: int
    entryNotional: str
    avgEntry: str
    realizedPnl: str
    unrealizedPnl: str
    markPrice: int
    fundingPaid: str
    liquidationPrice: int | None


class Margin(BaseModel):
    model_config = _example(
        equity="5001000000", initialMargin="300100000", maintenanceMargin="150050000",
        freeCollateral="4700900000", unrealizedPnl="1000000",
    )  # fmt: skip
    equity: str
    initialMargin: str
    maintenanceMargin: str
    freeCollateral: str
    unrealizedPnl: str


class Fill(BaseModel):
    model_config = _example(
        tradeId="BTC-USDC:1", market="BTC-USDC", clientOrderId="c-1", side="BUY",
        price=3000000, qty=1000, fee="1500000", liquidity="TAKER", ts=1764590000012,
    )  # fmt: skip
    tradeId: str
    market: str
    clientOrderId: str
    side: str
    price: int
    qty: int
    fee: str
    liquidity: str
    ts: int


class Trade(BaseModel):
    model_config = _example(
        tradeId="BTC-USDC:1", market="BTC-USDC", price=3000000, qty=1000, takerSide="BUY",
        buyer=ADDRESS.lower(), seller="0x" + "11" * 20, buyOid="c-1", sellOid="c-2",
        ts=1764590000012, seq=1,
    )  # fmt: skip
    tradeId: str
    market: str
    price: int
    qty: int
    takerSide: str
    buyer: str
    seller: str
    buyOid: str
    sellOid: str
    ts: int
    seq: int


class Depth(BaseModel):
    model_config = _example(
        market="BTC-USDC", seq=42, bids=[[2999900, 1500]], asks=[[3000000, 1000]]
    )
    market: str
    seq: int
    bids: list[list[int]]
    asks: list[list[int]]


class Ticker(BaseModel):
    model_config = _example(
        last=3000000, bestBid=2999900, bestAsk=3000000, open24h=2950000, high24h=3010000,
        low24h=2940000, volume24h=12000, quoteVolume24h="36000000000", indexPrice=3000000,
        markPrice=3000000, fundingRate=None, nextFundingTs=None, openInterest=None,
        status="OPEN",
    )  # fmt: skip
    last: int | None
    bestBid: int | None
    bestAsk: int | None
    open24h: int | None
    high24h: int | None
    low24h: int | None
    volume24h: int | str | None
    quoteVolume24h: int | str | None
    indexPrice: int | None
    markPrice: int | None
    fundingRate: int | str | None
    nextFundingTs: int | None
    openInterest: int | str | None
    status: str = Field(description='the market\'s status (docs/api.md "Market states")')


class Candle(BaseModel):
    model_config = _example(t=1764589980000, o=3000000, h=3001000, l=2999000, c=3000500, v=2500)
    t: int
    o: int
    h: int
    l: int  # noqa: E741 - the contract's field name
    c: int
    v: int


class MarketView(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "symbol": "BTC-USDC", "status": "OPEN", "product": "SPOT", "base": "BTC",
                    "quote": "USDC", "priceScale": 2, "qtyScale": 4, "tickSize": 1,
                    "lotSize": 1, "minQty": 1, "makerFeeBps": 1, "takerFeeBps": 5,
                    "indexPrice": 3000000,
                }
            ]
        },
    )  # fmt: skip
    symbol: str
    status: str = Field(
        description="OPEN, HALTED, EXPIRED, CANCEL_ONLY, POST_ONLY or REDUCE_ONLY "
        '(docs/api.md "Market states")'
    )


class Withdrawal(BaseModel):
    model_config = _example(
        withdrawalId="w-3f1c", userId=ADDRESS.lower(), asset="USDC", amount="1000000",
        status="PENDING",
    )  # fmt: skip
    withdrawalId: str
    userId: str
    asset: str
    amount: str
    status: str


class WithdrawalListed(BaseModel):
    model_config = _example(
        withdrawalId="w-3f1c", asset="USDC", amount="1000000", status="PENDING",
        ts=1764590000000,
    )  # fmt: skip
    withdrawalId: str
    asset: str
    amount: str
    status: str
    ts: int


class SystemAccounts(BaseModel):
    model_config = _example(
        fees={"USDC": "1800000"}, insurance={"USDC": "0"}, insurancePositions=[]
    )
    fees: dict[str, str]
    insurance: dict[str, str]
    insurancePositions: list[Position]


class OracleResult(BaseModel):
    model_config = _example(market="BTC-PERP", indexPrice=3000000, markPrice=3000000)
    market: str
    indexPrice: int
    markPrice: int


class Health(BaseModel):
    model_config = _example(status="ok")
    status: str


ERROR_NOTES = {
    403: "missing or wrong admin token",
    404: "or UNKNOWN_MARKET for a market named in the path",
    429: "see Retry-After",
}


def errors(*statuses: int) -> dict[int | str, Any]:
    """The error responses a route can give, all in the contract's error shape, each described
    by the codes of that status (``ErrorCode``)."""
    described = {}
    for status in (429, *statuses, 503):
        codes = ", ".join(code for code in ErrorCode if code.status == status)
        note = ERROR_NOTES.get(status)
        described[status] = f"{codes} ({note})" if note else codes
    return {s: {"model": ErrorBody, "description": d} for s, d in described.items()}


def ok(model: Any, *statuses: int) -> dict[int | str, Any]:
    """A 200 described by ``model`` plus the route's error responses."""
    return {200: {"model": model, "description": "success"}, **errors(*statuses)}


class Agent(BaseModel):
    model_config = _example(
        agent="0x2546bcd3c84621e976d8185a91a922ae77ecec30", name="bot-1", scope="TRADE",
        markets="BTC-USDC", expiresAt=0, approvedAt=1764590000012,
    )  # fmt: skip
    agent: str
    name: str
    scope: str = Field(description="TRADE or CANCEL_ONLY")
    markets: str = Field(description='"" for every market, else markets joined by ","')
    expiresAt: int = Field(description="ms since epoch, 0 = never")
    approvedAt: int


class AgentRevoked(BaseModel):
    model_config = _example(agent="0x2546bcd3c84621e976d8185a91a922ae77ecec30", revoked=True)
    agent: str
    revoked: bool


class BatchItemResult(BaseModel):
    status: int = Field(description="the HTTP status the action's single request would answer")
    order: dict[str, Any] | None = Field(
        None, description="a PLACE's {clientOrderId, status: ACCEPTED}, a CANCEL's order"
    )
    error: ErrorDetail | None = Field(None, description="the action's refusal")


class BatchResult(BaseModel):
    model_config = _example(
        atomic=False,
        results=[
            {"status": 202, "order": {"clientOrderId": "c-1", "status": "ACCEPTED"}},
            {"status": 422, "error": {"code": "INSUFFICIENT_BALANCE", "message": "..."}},
        ],
    )
    atomic: bool
    results: list[BatchItemResult] = Field(description="one per action, in the batch's order")
