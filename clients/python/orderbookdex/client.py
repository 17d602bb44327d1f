"""The REST client: every endpoint of API.md §5 and docs/api.md, typed results, typed errors.

``Client`` reads ``GET /v1/info`` once (lazily) for the EIP-712 domain, the published types
and the markets, and signs every write with its key (``key``). With an agent key, pass the
owner's address as ``account``: the agent signs bodies whose ``userId`` is the owner's
(docs/api.md "Agent keys"). Admin calls need ``admin_token``.

Every ``build_*`` method returns a signed body without sending it, for the WebSocket order
entry (``OrderEntry``) or a batch.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from orderbookdex.errors import raise_for_error
from orderbookdex.models import (
    Balance,
    Candle,
    Depth,
    Fill,
    Leverage,
    Margin,
    Market,
    MarketHealth,
    Order,
    Position,
    Ticker,
    Trade,
    Twap,
    Withdrawal,
)
from orderbookdex.signing import BUILTIN_TYPES, DEFAULT_DOMAIN, Signer, blank_value

__all__ = ["BatchAction", "Client", "new_client_order_id", "now_ms"]

_ids = itertools.count(1)
T = TypeVar("T")


def now_ms() -> int:
    return int(time.time() * 1000)


def new_client_order_id(prefix: str = "py") -> str:
    """A fresh clientOrderId (1–64 characters of ``A-Z a-z 0-9 . _ : -``)."""
    return f"{prefix}-{time.time_ns():x}-{os.getpid():x}-{next(_ids)}"


@dataclass(frozen=True)
class BatchAction:
    """One action of a signed batch (docs/api.md "Signed batches"); unused fields blank."""

    kind: str
    market: str
    client_order_id: str
    side: str = ""
    type: str = ""
    price: int = 0
    qty: int = 0
    time_in_force: str = ""
    reduce_only: bool = False
    expires_at: int = 0
    expected_filled: int = 0

    @classmethod
    def place(
        cls,
        market: str,
        side: str,
        qty: int,
        price: int = 0,
        *,
        type: str = "LIMIT",
        time_in_force: str = "GTC",
        reduce_only: bool = False,
        expires_at: int = 0,
        client_order_id: str | None = None,
    ) -> BatchAction:
        return cls(
            "PLACE",
            market,
            client_order_id or new_client_order_id(),
            side,
            type,
            price,
            qty,
            time_in_force,
            reduce_only,
            expires_at,
            0,
        )

    @classmethod
    def cancel(cls, market: str, client_order_id: str) -> BatchAction:
        return cls("CANCEL", market, client_order_id)

    @classmethod
    def amend(
        cls, market: str, client_order_id: str, price: int, qty: int, expected_filled: int = -1
    ) -> BatchAction:
        return cls(
            "AMEND", market, client_order_id, price=price, qty=qty, expected_filled=expected_filled
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "market": self.market,
            "clientOrderId": self.client_order_id,
            "side": self.side,
            "type": self.type,
            "price": self.price,
            "qty": self.qty,
            "timeInForce": self.time_in_force,
            "reduceOnly": self.reduce_only,
            "expiresAt": self.expires_at,
            "expectedFilled": self.expected_filled,
        }


def _order_or_ack(answer: Any) -> Order | dict[str, Any]:
    """An order's answer: the order (``?wait=1``), else ``{"clientOrderId", "status"}``."""
    return Order.from_json(answer) if "userId" in answer else dict(answer)


def _cancel_replace_answer(answer: Any) -> dict[str, Order | None]:
    old = answer.get("cancelled")
    return {
        "cancelled": Order.from_json(old) if old else None,
        "order": Order.from_json(answer["order"]),
    }


class Client:
    """A synchronous client of one gateway (``base_url``, e.g. ``http://127.0.0.1:8000``)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        key: str | bytes | None = None,
        account: str | None = None,
        admin_token: str | None = None,
        timeout: float = 10.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.http = http or httpx.Client(base_url=base_url, timeout=timeout)
        self._key = key
        self._account = account
        self.admin_token = admin_token
        self._info: dict[str, Any] | None = None
        self._signer: Signer | None = None

    # -- plumbing -----------------------------------------------------------------------------
    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        admin: bool = False,
    ) -> Any:
        headers = {}
        if admin:
            if not self.admin_token:
                raise ValueError("an admin call needs admin_token (DEX_ADMIN_TOKEN)")
            headers["Authorization"] = f"Bearer {self.admin_token}"
        query = {k: v for k, v in (params or {}).items() if v is not None}
        response = self.http.request(method, path, json=json, params=query, headers=headers)
        try:
            body = response.json()
        except ValueError:
            body = response.text
        raise_for_error(response.status_code, body, response.headers)
        return body

    def _get(self, path: str, **params: Any) -> Any:
        return self._request("GET", path, params=params)

    def _signed_write(
        self, path: str, body: Mapping[str, Any], read: Callable[[Any], T], **params: Any
    ) -> T:
        """POST a signed ``body`` (a ``build_*`` method's) to ``path``; its answer, read by
        ``read`` (a model's ``from_json``, ``dict``…)."""
        return read(self._request("POST", path, json=dict(body), params=params))

    # -- who signs ------------------------------------------------------------------------------
    @property
    def signer(self) -> Signer:
        """The signer of this client's key, over the domain and types the server publishes."""
        if self._key is None:
            raise ValueError("this call signs: create the Client with key=<private key>")
        if self._signer is None:
            info = self.info()
            types = {**BUILTIN_TYPES, **info.get("types", {})}
            self._signer = Signer(self._key, info.get("domain", DEFAULT_DOMAIN), types)
        return self._signer

    @property
    def address(self) -> str:
        """The account this client acts for: ``account``, else its key's address."""
        return self._account or self.signer.address

    def published_types(self) -> dict[str, list[dict[str, str]]]:
        return dict(self.info()["types"])

    # -- public reads -------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return dict(self._get("/v1/health"))

    def info(self, refresh: bool = False) -> dict[str, Any]:
        """``{domain, types, markets, assets, serverTime}``; read once, then remembered."""
        if self._info is None or refresh:
            self._info = dict(self._get("/v1/info"))
        return self._info

    def markets(self) -> list[Market]:
        return [Market.from_json(m) for m in self._get("/v1/markets")]

    def market(self, market: str) -> Market:
        return Market.from_json(self._get(f"/v1/markets/{market}"))

    def depth(self, market: str, limit: int | None = None) -> Depth:
        return Depth.from_json(self._get(f"/v1/markets/{market}/depth", limit=limit))

    def trades(self, market: str, limit: int | None = None) -> list[Trade]:
        raw = self._get(f"/v1/markets/{market}/trades", limit=limit)
        return [Trade.from_json(t) for t in raw]

    def ticker(self, market: str) -> Ticker:
        return Ticker.from_json(self._get(f"/v1/markets/{market}/ticker"))

    def candles(self, market: str, interval: str = "1m", limit: int | None = None) -> list[Candle]:
        raw = self._get(f"/v1/markets/{market}/candles", interval=interval, limit=limit)
        return [Candle.from_json(c) for c in raw]

    def system_accounts(self) -> dict[str, Any]:
        raw = self._get("/v1/system/accounts")
        return {
            "fees": {a: int(v) for a, v in raw["fees"].items()},
            "insurance": {a: int(v) for a, v in raw["insurance"].items()},
            "insurancePositions": [Position.from_json(p) for p in raw["insurancePositions"]],
        }

    def metrics(self) -> str:
        """The gateway's Prometheus text."""
        response = self.http.get("/metrics")
        raise_for_error(response.status_code, response.text)
        return response.text

    # -- account reads (``user`` defaults to this client's account) --------------------------------
    def _user(self, user: str | None) -> str:
        return user or self.address

    def order(self, client_order_id: str, user: str | None = None) -> Order:
        return Order.from_json(self._get(f"/v1/orders/{self._user(user)}/{client_order_id}"))

    def orders(
        self,
        user: str | None = None,
        *,
        market: str | None = None,
        open: bool = False,
        limit: int | None = None,
    ) -> list[Order]:
        raw = self._get(
            f"/v1/accounts/{self._user(user)}/orders",
            market=market,
            open=1 if open else None,
            limit=limit,
        )
        return [Order.from_json(o) for o in raw]

    def fills(
        self, user: str | None = None, *, market: str | None = None, limit: int | None = None
    ) -> list[Fill]:
        raw = self._get(f"/v1/accounts/{self._user(user)}/fills", market=market, limit=limit)
        return [Fill.from_json(f) for f in raw]

    def balances(self, user: str | None = None) -> dict[str, Balance]:
        raw = self._get(f"/v1/accounts/{self._user(user)}/balances")
        return {asset: Balance.from_json(b) for asset, b in raw.items()}

    def positions(self, user: str | None = None) -> list[Position]:
        return [
            Position.from_json(p) for p in self._get(f"/v1/accounts/{self._user(user)}/positions")
        ]

    def margin(self, user: str | None = None) -> dict[str, Margin]:
        raw = self._get(f"/v1/accounts/{self._user(user)}/margin")
        return {asset: Margin.from_json(m) for asset, m in raw.items()}

    def withdrawals(self, user: str | None = None, limit: int | None = None) -> list[Withdrawal]:
        """Newest first; ``status`` PENDING, SENT, CONFIRMED or FAILED, ``tx_hash`` once SENT."""
        raw = self._get(f"/v1/accounts/{self._user(user)}/withdrawals", limit=limit)
        return [Withdrawal.from_json(w) for w in raw]

    def twap(self, client_order_id: str, user: str | None = None) -> Twap:
        """One TWAP and its progress (``NOT_FOUND`` if none)."""
        return Twap.from_json(self._get(f"/v1/twaps/{self._user(user)}/{client_order_id}"))

    def twaps(self, user: str | None = None) -> list[Twap]:
        """The account's active TWAPs, oldest first."""
        return [Twap.from_json(t) for t in self._get(f"/v1/twaps/{self._user(user)}")]

    def leverage(self, user: str | None = None) -> dict[str, Leverage]:
        """Every derivative market's initial margin for the account, by market."""
        raw = self._get(f"/v1/accounts/{self._user(user)}/leverage")
        return {row["market"]: Leverage.from_json(row) for row in raw}

    def agents(self, user: str | None = None) -> list[dict[str, Any]]:
        return list(self._get(f"/v1/accounts/{self._user(user)}/agents"))

    def schedule_cancels(self, user: str | None = None) -> list[dict[str, Any]]:
        return list(self._get(f"/v1/orders/schedule-cancel/{self._user(user)}"))

    # -- building signed bodies -----------------------------------------------------------------
    def _market_info(self, market: str) -> dict[str, Any]:
        for m in self.info()["markets"]:
            if m["symbol"] == market:
                return dict(m)
        self.info(refresh=True)
        for m in self.info()["markets"]:
            if m["symbol"] == market:
                return dict(m)
        raise ValueError(f"no market named {market!r}")

    def order_type_for(self, fields: set[str]) -> str:
        """The published order type with the fewest fields that has every name of ``fields``:
        ``Order`` for the seed fields, ``OrderV2`` with ``timeInForce``, ``OrderV3`` with
        ``selfTradePrevention``, and any later one (``OrderV4``'s trigger fields) as the
        server publishes it."""
        types = self.signer.types
        candidates = [
            (len(spec), name)
            for name, spec in types.items()
            if (name == "Order" or (name.startswith("OrderV") and name[6:].isdigit()))
            and fields <= {f["name"] for f in spec}
        ]
        if not candidates:
            raise ValueError(f"no published order type has the fields {sorted(fields)}")
        return min(candidates)[1]

    def _sign(self, primary: str, message: dict[str, Any]) -> dict[str, Any]:
        return self.signer.signed(primary, message)

    def _sign_for_account(self, primary: str, **fields: Any) -> dict[str, Any]:
        """A signed ``primary`` body of ``fields`` for this account: ``userId`` and a ``ts`` of
        now added."""
        return self._sign(primary, {"userId": self.address, **fields, "ts": now_ms()})

    def build_order(
        self,
        market: str,
        side: str,
        qty: int,
        price: int = 0,
        *,
        type: str = "LIMIT",
        time_in_force: str | None = None,
        reduce_only: bool = False,
        expires_at: int = 0,
        self_trade_prevention: str | None = None,
        client_order_id: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """A signed order body. The type is chosen by the fields it needs: the seed ``Order``
        when only those are given, ``OrderV2`` with a time in force, reduce-only or expiry,
        ``OrderV3`` with a self-trade prevention mode; ``extra`` fields (camelCase, e.g.
        ``triggerPrice``) pick the published type that has them, its other fields blank."""
        message: dict[str, Any] = {
            "clientOrderId": client_order_id or new_client_order_id(),
            "userId": self.address,
            "market": market,
            "side": side,
            "type": type,
            "price": int(price),
            "qty": int(qty),
            "product": self._market_info(market)["product"],
            "ts": now_ms(),
        }
        if time_in_force is not None or reduce_only or expires_at or extra:
            message |= {
                "timeInForce": time_in_force or "GTC",
                "reduceOnly": reduce_only,
                "expiresAt": int(expires_at),
            }
        if self_trade_prevention is not None:
            message.setdefault("timeInForce", time_in_force or "GTC")
            message.setdefault("reduceOnly", reduce_only)
            message.setdefault("expiresAt", int(expires_at))
            message["selfTradePrevention"] = self_trade_prevention
        message |= extra
        primary = self.order_type_for(set(message))
        for field in self.signer.fields(primary):
            message.setdefault(field["name"], blank_value(field["type"]))
        return self._sign(primary, message)

    def build_cancel(self, market: str, client_order_id: str) -> dict[str, Any]:
        return self._sign_for_account("Cancel", market=market, clientOrderId=client_order_id)

    def build_cancel_all(self, market: str = "") -> dict[str, Any]:
        return self._sign_for_account("CancelAll", market=market)

    def build_amend(
        self, market: str, client_order_id: str, price: int, qty: int, expected_filled: int = -1
    ) -> dict[str, Any]:
        return self._sign_for_account(
            "Amend",
            market=market,
            clientOrderId=client_order_id,
            price=int(price),
            qty=int(qty),
            expectedFilled=int(expected_filled),
        )

    def build_cancel_replace(
        self,
        cancel_client_order_id: str,
        market: str,
        side: str,
        qty: int,
        price: int = 0,
        *,
        type: str = "LIMIT",
        time_in_force: str = "GTC",
        reduce_only: bool = False,
        expires_at: int = 0,
        client_order_id: str | None = None,
    ) -> dict[str, Any]:
        return self._sign(
            "CancelReplace",
            {
                "clientOrderId": client_order_id or new_client_order_id(),
                "userId": self.address,
                "market": market,
                "side": side,
                "type": type,
                "price": int(price),
                "qty": int(qty),
                "product": self._market_info(market)["product"],
                "ts": now_ms(),
                "timeInForce": time_in_force,
                "reduceOnly": reduce_only,
                "expiresAt": int(expires_at),
                "cancelClientOrderId": cancel_client_order_id,
            },
        )

    def build_batch(self, actions: Sequence[BatchAction], atomic: bool = False) -> dict[str, Any]:
        return self._sign_for_account(
            "Batch", atomic=atomic, actions=[a.to_json() for a in actions]
        )

    def build_trigger_order(
        self,
        market: str,
        side: str,
        qty: int,
        price: int = 0,
        *,
        type: str,
        trigger_price: int = 0,
        trigger_source: str = "",
        trailing_delta: int = 0,
        trailing_unit: str = "",
        close_position: bool = False,
        take_profit_price: int = 0,
        stop_loss_price: int = 0,
        **options: Any,
    ) -> dict[str, Any]:
        """A signed ``OrderV4`` (docs/api.md "Trigger orders"; ``build_order``'s options)."""
        return self.build_order(
            market,
            side,
            qty,
            price,
            type=type,
            self_trade_prevention=options.pop("self_trade_prevention", ""),
            triggerPrice=int(trigger_price),
            triggerSource=trigger_source,
            trailingDelta=int(trailing_delta),
            trailingUnit=trailing_unit,
            closePosition=close_position,
            takeProfitPrice=int(take_profit_price),
            stopLossPrice=int(stop_loss_price),
            **options,
        )

    def build_twap(
        self,
        market: str,
        side: str,
        qty: int,
        duration_minutes: int,
        *,
        slippage_bps: int = 50,
        randomize: bool = False,
        reduce_only: bool = False,
        client_order_id: str | None = None,
    ) -> dict[str, Any]:
        return self._sign_for_account(
            "Twap",
            market=market,
            clientOrderId=client_order_id or new_client_order_id("twap"),
            side=side,
            qty=int(qty),
            durationMinutes=int(duration_minutes),
            randomize=randomize,
            slippageBps=int(slippage_bps),
            reduceOnly=reduce_only,
        )

    def build_set_leverage(self, market: str, initial_margin_bps: int) -> dict[str, Any]:
        return self._sign_for_account(
            "SetLeverage", market=market, initialMarginBps=int(initial_margin_bps)
        )

    def build_schedule_cancel(self, deadline: int, market: str = "") -> dict[str, Any]:
        return self._sign_for_account("ScheduleCancel", market=market, deadline=int(deadline))

    def build_withdraw(self, asset: str, amount: int) -> dict[str, Any]:
        return self._sign_for_account("Withdraw", asset=asset, amount=int(amount))

    def build_approve_agent(
        self,
        agent: str,
        *,
        name: str = "",
        scope: str = "TRADE",
        markets: Sequence[str] = (),
        expires_at: int = 0,
    ) -> dict[str, Any]:
        return self._sign_for_account(
            "ApproveAgent",
            agent=agent,
            name=name,
            scope=scope,
            markets=",".join(markets),
            expiresAt=int(expires_at),
        )

    def build_revoke_agent(self, agent: str) -> dict[str, Any]:
        return self._sign_for_account("RevokeAgent", agent=agent)

    # -- signed writes ----------------------------------------------------------------------------
    def place(
        self,
        market: str,
        side: str,
        qty: int,
        price: int = 0,
        *,
        wait: bool = False,
        **options: Any,
    ) -> Order | dict[str, Any]:
        """Place an order (``build_order``'s options). ``wait=True``: the order once the
        matcher has processed it (``?wait=1``); else ``{"clientOrderId", "status": "ACCEPTED"}``.
        ``take_profit_price`` / ``stop_loss_price`` attach children ``<cid>.tp`` / ``<cid>.sl``
        (an ``OrderV4``; PERP, FUTURE and SPOT: reduce-only on a derivative, on SPOT they sell
        the base a BUY bought or buy back what a SELL sold; docs/api.md "Attached TP/SL")."""
        tp, sl = options.pop("take_profit_price", 0), options.pop("stop_loss_price", 0)
        if tp or sl:
            options.setdefault("type", "LIMIT")
            body = self.build_trigger_order(
                market, side, qty, price, take_profit_price=tp, stop_loss_price=sl, **options
            )
        else:
            body = self.build_order(market, side, qty, price, **options)
        return self.send_order(body, wait=wait)

    def place_stop(
        self,
        market: str,
        side: str,
        qty: int,
        trigger_price: int,
        price: int = 0,
        *,
        wait: bool = False,
        **options: Any,
    ) -> Order | dict[str, Any]:
        """A stop: ``STOP_LIMIT`` at ``price``, or ``STOP_MARKET`` when ``price`` is 0 (a price
        given with ``type="STOP_MARKET"`` is its protection price). It waits ``UNTRIGGERED``
        until the source price (``trigger_source``: MARK, LAST, INDEX; ``""`` the market's)
        reaches ``trigger_price``: BUY at or above, SELL at or below. ``close_position=True``
        with ``qty`` 0 closes the whole position when it fires."""
        options.setdefault("type", "STOP_LIMIT" if price else "STOP_MARKET")
        body = self.build_trigger_order(
            market, side, qty, price, trigger_price=trigger_price, **options
        )
        return self.send_order(body, wait=wait)

    def place_take_profit(
        self,
        market: str,
        side: str,
        qty: int,
        trigger_price: int,
        price: int = 0,
        *,
        wait: bool = False,
        **options: Any,
    ) -> Order | dict[str, Any]:
        """A take-profit: ``TAKE_PROFIT_LIMIT`` at ``price``, else ``TAKE_PROFIT_MARKET``; it
        fires when the source price reaches ``trigger_price``: BUY at or below, SELL at or
        above."""
        options.setdefault("type", "TAKE_PROFIT_LIMIT" if price else "TAKE_PROFIT_MARKET")
        body = self.build_trigger_order(
            market, side, qty, price, trigger_price=trigger_price, **options
        )
        return self.send_order(body, wait=wait)

    def place_trailing_stop(
        self,
        market: str,
        side: str,
        qty: int,
        trailing_delta: int,
        trailing_unit: str = "BPS",
        price: int = 0,
        *,
        wait: bool = False,
        **options: Any,
    ) -> Order | dict[str, Any]:
        """A ``TRAILING_STOP_MARKET`` ``trailing_delta`` ``TICKS`` or ``BPS`` behind the extreme
        price seen since placement (``price``: its protection price)."""
        body = self.build_trigger_order(
            market,
            side,
            qty,
            price,
            type="TRAILING_STOP_MARKET",
            trailing_delta=trailing_delta,
            trailing_unit=trailing_unit,
            **options,
        )
        return self.send_order(body, wait=wait)

    def place_twap(
        self, market: str, side: str, qty: int, duration_minutes: int, **options: Any
    ) -> Twap:
        """Work ``qty`` into the market over ``duration_minutes`` (2 IOC slices a minute, each
        at most ``slippage_bps`` past the best opposite price; docs/api.md "TWAP orders").
        Cancel it with ``cancel(market, <its id>)``, which answers the TWAP."""
        body = self.build_twap(market, side, qty, duration_minutes, **options)
        return self._signed_write("/v1/orders/twap", body, Twap.from_json)

    def cancel_twap(self, market: str, client_order_id: str) -> Twap:
        """End a TWAP ``CXL`` (a ``Cancel`` naming its id); the TWAP as it ended."""
        body = self.build_cancel(market, client_order_id)
        return self._signed_write("/v1/orders/cancel", body, Twap.from_json)

    def set_leverage(self, market: str, initial_margin_bps: int) -> Leverage:
        """Choose the initial margin of a derivative market (``0``: back to the market's);
        leverage is ``10000 / initial_margin_bps``. It applies from the next order on."""
        body = self.build_set_leverage(market, initial_margin_bps)
        return self._signed_write("/v1/accounts/leverage", body, Leverage.from_json)

    def send_order(self, body: Mapping[str, Any], *, wait: bool = False) -> Order | dict[str, Any]:
        """Send an order body already signed (``build_order``)."""
        return self._signed_write("/v1/orders", body, _order_or_ack, wait=1 if wait else None)

    def cancel(self, market: str, client_order_id: str) -> Order:
        body = self.build_cancel(market, client_order_id)
        return self._signed_write("/v1/orders/cancel", body, Order.from_json)

    def cancel_all(self, market: str = "") -> int:
        body = self.build_cancel_all(market)
        return self._signed_write("/v1/orders/cancel-all", body, lambda a: int(a["cancelled"]))

    def amend(
        self, market: str, client_order_id: str, price: int, qty: int, expected_filled: int = -1
    ) -> Order:
        body = self.build_amend(market, client_order_id, price, qty, expected_filled)
        return self._signed_write("/v1/orders/amend", body, Order.from_json)

    def cancel_replace(
        self,
        cancel_client_order_id: str,
        market: str,
        side: str,
        qty: int,
        price: int = 0,
        **options: Any,
    ) -> dict[str, Order | None]:
        """``{"cancelled": <old order>, "order": <new order>}``."""
        body = self.build_cancel_replace(
            cancel_client_order_id, market, side, qty, price, **options
        )
        return self._signed_write("/v1/orders/cancel-replace", body, _cancel_replace_answer)

    def batch(self, actions: Sequence[BatchAction], atomic: bool = False) -> dict[str, Any]:
        """The batch's answer: ``{"atomic", "results": [{status, order | error}]}``."""
        return self._signed_write("/v1/orders/batch", self.build_batch(actions, atomic), dict)

    def schedule_cancel(self, deadline: int, market: str = "") -> dict[str, Any]:
        """Arm (``deadline`` ms since epoch), renew or disarm (``0``) the dead-man's switch."""
        body = self.build_schedule_cancel(deadline, market)
        return self._signed_write("/v1/orders/schedule-cancel", body, dict)

    def withdraw(self, asset: str, amount: int) -> Withdrawal:
        body = self.build_withdraw(asset, amount)
        return self._signed_write("/v1/withdrawals", body, Withdrawal.from_json)

    def approve_agent(self, agent: str, **options: Any) -> dict[str, Any]:
        """Let ``agent`` sign orders and cancels for this account (docs/api.md "Agent keys");
        ``build_approve_agent``'s options: ``name``, ``scope``, ``markets``, ``expires_at``."""
        body = self.build_approve_agent(agent, **options)
        return self._signed_write("/v1/accounts/agents", body, dict)

    def revoke_agent(self, agent: str) -> dict[str, Any]:
        body = self.build_revoke_agent(agent)
        return self._signed_write("/v1/accounts/agents/revoke", body, dict)

    # -- admin (DEX_ADMIN_TOKEN) ------------------------------------------------------------------
    def deposit(self, user: str, asset: str, amount: int, deposit_id: str | None = None) -> Balance:
        body: dict[str, Any] = {"userId": user, "asset": asset, "amount": str(int(amount))}
        if deposit_id is not None:
            body["depositId"] = deposit_id
        return Balance.from_json(self._request("POST", "/v1/admin/deposits", json=body, admin=True))

    def set_oracle(self, market: str, index_price: int) -> dict[str, Any]:
        body = {"market": market, "indexPrice": int(index_price)}
        return dict(self._request("POST", "/v1/admin/oracle", json=body, admin=True))

    def halt(self, market: str) -> Market:
        return Market.from_json(
            self._request("POST", f"/v1/admin/markets/{market}/halt", admin=True)
        )

    def resume(self, market: str) -> Market:
        return Market.from_json(
            self._request("POST", f"/v1/admin/markets/{market}/resume", admin=True)
        )

    def set_market_status(self, market: str, status: str) -> Market:
        answer = self._request(
            "POST", f"/v1/admin/markets/{market}/status", json={"status": status}, admin=True
        )
        return Market.from_json(answer)

    def market_health(self) -> list[MarketHealth]:
        """Per market: status, matcher backlog, unsettled events and settlement lag."""
        raw = self._request("GET", "/v1/admin/markets/health", admin=True)
        return [MarketHealth.from_json(m) for m in raw]

    def audit(self) -> dict[str, Any]:
        """The auditor's report: per asset ``difference`` must be 0."""
        return dict(self._request("GET", "/v1/admin/audit", admin=True))
