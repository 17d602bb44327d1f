"""``dex``: the exchange from a terminal, on the SDK (``dex --help``).

A trader's key lives in a key file (``DEX_KEY_FILE``, default ``~/.config/dex/key.json``,
created mode 0600): ``dex key create`` or ``dex key import``. The gateway is ``DEX_URL``
(default ``http://127.0.0.1:8000``), the market-data feed ``DEX_WS_URL`` (default
``ws://127.0.0.1:8001/ws``); the operator's commands (``dex admin ...``) need
``DEX_ADMIN_TOKEN``. ``--json`` prints the answers as JSON instead of tables. A refusal prints
its code and message and exits with status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from orderbookdex.client import Client
from orderbookdex.errors import DexError
from orderbookdex.models import Trade
from orderbookdex.stream import MarketStream

__all__ = ["app", "main"]

app = typer.Typer(help="OrderBookDEX from the command line.", no_args_is_help=True)
key_app = typer.Typer(help="Create, import or show the trading key.", no_args_is_help=True)
order_app = typer.Typer(help="Place, cancel and amend orders.", no_args_is_help=True)
admin_app = typer.Typer(help="The operator's commands (DEX_ADMIN_TOKEN).", no_args_is_help=True)
leverage_app = typer.Typer(
    help="Set or show the leverage of derivative markets.", no_args_is_help=True
)
twap_app = typer.Typer(help="Place, show and cancel TWAP orders.", no_args_is_help=True)
app.add_typer(key_app, name="key")
app.add_typer(order_app, name="order")
app.add_typer(admin_app, name="admin")
app.add_typer(leverage_app, name="leverage")
app.add_typer(twap_app, name="twap")

console = Console()


class Settings:
    url: str = "http://127.0.0.1:8000"
    ws_url: str = "ws://127.0.0.1:8001/ws"
    key_file: Path = Path("~/.config/dex/key.json").expanduser()
    account: str | None = None
    as_json: bool = False


settings = Settings()


@app.callback()
def _options(
    url: Annotated[str, typer.Option(envvar="DEX_URL", help="the gateway")] = settings.url,
    ws_url: Annotated[
        str, typer.Option(envvar="DEX_WS_URL", help="the broadcaster's feed")
    ] = settings.ws_url,
    key_file: Annotated[
        Path, typer.Option(envvar="DEX_KEY_FILE", help="the trading key's file")
    ] = settings.key_file,
    account: Annotated[
        str | None,
        typer.Option(envvar="DEX_ACCOUNT", help="the owner's address, when the key is its agent"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON, not tables")] = False,
) -> None:
    settings.url, settings.ws_url = url, ws_url
    settings.key_file, settings.account, settings.as_json = key_file.expanduser(), account, as_json


# -- what the commands share ---------------------------------------------------------------
def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items() if k != "raw"}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _print_json(value: Any) -> None:
    console.print_json(json.dumps(_plain(value)))


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """A refusal or a missing key prints one line and exits 1 (no traceback)."""
    try:
        yield
    except DexError as exc:
        console.print(f"[red]{exc.code}[/red] ({exc.status}): {exc.message}")
        raise typer.Exit(1) from None
    except (ValueError, OSError) as exc:
        console.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(1) from None


def _read_key() -> str:
    path = settings.key_file
    if not path.exists():
        raise ValueError(f"no key file at {path}: run `dex key create` or `dex key import`")
    return str(json.loads(path.read_text())["privateKey"])


def _client(signing: bool = False, admin: bool = False) -> Client:
    token = os.environ.get("DEX_ADMIN_TOKEN") if admin else None
    if admin and not token:
        raise ValueError("the operator's commands need DEX_ADMIN_TOKEN")
    key = _read_key() if signing else None
    return Client(settings.url, key=key, account=settings.account, admin_token=token)


def _who(user: str | None) -> str:
    """USER, else ``--account``, else the key file's address (read without loading a signer)."""
    if user:
        return user
    if settings.account:
        return settings.account
    if not settings.key_file.exists():
        raise ValueError(f"name a user, or create a key (no key file at {settings.key_file})")
    return str(json.loads(settings.key_file.read_text())["address"])


def _units(amount: int, decimals: int) -> str:
    """``amount`` atomic units as a decimal string of whole units, exactly (no float)."""
    sign, digits = ("-" if amount < 0 else ""), str(abs(amount))
    if decimals <= 0:
        return sign + digits
    digits = digits.rjust(decimals + 1, "0")
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}"


# -- key ----------------------------------------------------------------------------------------
def _write_key(private_key: str, force: bool) -> str:
    path = settings.key_file
    if path.exists() and not force:
        raise ValueError(f"{path} exists; pass --force to replace it")
    from eth_account import Account

    address = str(Account.from_key(private_key).address)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"address": address, "privateKey": private_key}, handle)
    return address


@key_app.command("create")
def key_create(
    force: Annotated[bool, typer.Option(help="replace an existing key")] = False,
) -> None:
    """Create a new key and store it (mode 0600)."""
    from eth_account import Account

    with _refusals():
        address = _write_key("0x" + bytes(Account.create().key).hex(), force)
    console.print(address if not settings.as_json else json.dumps({"address": address}))


@key_app.command("import")
def key_import(
    private_key: Annotated[
        str, typer.Option(prompt=True, hide_input=True, help="0x + 64 hex digits")
    ],
    force: Annotated[bool, typer.Option(help="replace an existing key")] = False,
) -> None:
    """Store an existing private key (read from the prompt, not the command line)."""
    with _refusals():
        key = private_key.strip()
        address = _write_key(key if key.startswith("0x") else "0x" + key, force)
    console.print(address if not settings.as_json else json.dumps({"address": address}))


@key_app.command("show")
def key_show() -> None:
    """Print the key's address."""
    with _refusals():
        _read_key()
        console.print(str(json.loads(settings.key_file.read_text())["address"]))


# -- account reads ------------------------------------------------------------------------------
@app.command()
def balances(user: Annotated[str | None, typer.Argument()] = None) -> None:
    """Balances of USER (default: the key's account), in whole units."""
    with _refusals(), _client() as client:
        held = client.balances(_who(user))
        if settings.as_json:
            return _print_json(held)
        assets = client.info()["assets"]
        table = Table("asset", "total", "available", "locked", title="balances")
        for asset, b in sorted(held.items()):
            d = int(assets.get(asset, {}).get("decimals", 0))
            table.add_row(asset, _units(b.total, d), _units(b.available, d), _units(b.locked, d))
        console.print(table)


@app.command()
def positions(user: Annotated[str | None, typer.Argument()] = None) -> None:
    """Open positions of USER (default: the key's account)."""
    with _refusals(), _client() as client:
        held = client.positions(_who(user))
        if settings.as_json:
            return _print_json(held)
        table = Table(
            "market",
            "size",
            "avgEntry",
            "mark",
            "unrealizedPnl",
            "realizedPnl",
            "liquidation",
            title="positions",
        )
        for p in held:
            table.add_row(
                p.market,
                str(p.size),
                p.avg_entry,
                str(p.mark_price),
                str(p.unrealized_pnl),
                str(p.realized_pnl),
                str(p.liquidation_price or "-"),
            )
        console.print(table)


def _order_table(orders: list[Any], title: str) -> Table:
    table = Table(
        "clientOrderId",
        "market",
        "side",
        "type",
        "price",
        "qty",
        "filled",
        "status",
        "reason",
        title=title,
    )
    for o in orders:
        table.add_row(
            o.client_order_id,
            o.market,
            o.side,
            o.type,
            str(o.price),
            str(o.qty),
            str(o.filled),
            o.status,
            o.reason or "",
        )
    return table


@app.command()
def orders(
    user: Annotated[str | None, typer.Argument()] = None,
    market: Annotated[str | None, typer.Option(help="only this market")] = None,
    open_only: Annotated[bool, typer.Option("--open", help="only open orders")] = False,
) -> None:
    """Orders of USER (default: the key's account), newest first."""
    with _refusals(), _client() as client:
        found = client.orders(_who(user), market=market, open=open_only)
        if settings.as_json:
            return _print_json(found)
        console.print(_order_table(found, "orders"))


@app.command()
def book(market: str, limit: Annotated[int, typer.Option(help="levels a side")] = 10) -> None:
    """The market's depth, as REST answers it now."""
    with _refusals(), _client() as client:
        depth = client.depth(market, limit)
        if settings.as_json:
            return _print_json(depth)
        console.print(_depth_table(market, depth.seq, depth.bids, depth.asks))


# -- orders -------------------------------------------------------------------------------------
def _show_order(answer: Any) -> None:
    if settings.as_json or isinstance(answer, dict):
        return _print_json(answer)
    console.print(_order_table([answer], "order"))


@order_app.command("place")
def order_place(
    market: str,
    side: Annotated[str, typer.Argument(help="BUY or SELL")],
    qty: int,
    price: Annotated[int, typer.Argument(help="in price units (0 for a MARKET order)")] = 0,
    type: Annotated[str, typer.Option("--type", help="LIMIT or MARKET")] = "LIMIT",
    tif: Annotated[str | None, typer.Option(help="GTC, IOC, FOK or POST_ONLY")] = None,
    reduce_only: Annotated[bool, typer.Option(help="only reduce a position")] = False,
    cid: Annotated[str | None, typer.Option(help="the clientOrderId (default: a new one)")] = None,
    wait: Annotated[bool, typer.Option(help="answer once the matcher has it")] = True,
) -> None:
    """Sign and place an order."""
    with _refusals(), _client(signing=True) as client:
        _show_order(
            client.place(
                market,
                side.upper(),
                qty,
                price,
                type=type.upper(),
                time_in_force=tif,
                reduce_only=reduce_only,
                client_order_id=cid,
                wait=wait,
            )
        )


@order_app.command("cancel")
def order_cancel(market: str, cid: str) -> None:
    """Cancel one order."""
    with _refusals(), _client(signing=True) as client:
        _show_order(client.cancel(market, cid))


@order_app.command("cancel-all")
def order_cancel_all(market: Annotated[str, typer.Argument(help='"" = every market')] = "") -> None:
    """Cancel every open order of the account in MARKET (or everywhere)."""
    with _refusals(), _client(signing=True) as client:
        _print_json({"cancelled": client.cancel_all(market)})


@order_app.command("amend")
def order_amend(
    market: str,
    cid: str,
    price: int,
    qty: Annotated[int, typer.Argument(help="the new total, filled part included")],
    expected_filled: Annotated[int, typer.Option(help="-1: no guard")] = -1,
) -> None:
    """Change a resting order's price and quantity."""
    with _refusals(), _client(signing=True) as client:
        _show_order(client.amend(market, cid, price, qty, expected_filled))


@order_app.command("stop")
def order_stop(
    market: str,
    side: Annotated[str, typer.Argument(help="BUY or SELL")],
    qty: Annotated[int, typer.Argument(help="0 with --close-position")],
    trigger_price: Annotated[int, typer.Argument(help="fires when the source price reaches it")],
    price: Annotated[int, typer.Argument(help="the limit price (0: a *_MARKET order)")] = 0,
    take_profit: Annotated[
        bool, typer.Option(help="a take-profit (BUY fires at or below), not a stop")
    ] = False,
    source: Annotated[str, typer.Option(help='MARK, LAST or INDEX ("": the market\'s)')] = "",
    reduce_only: Annotated[bool, typer.Option(help="only reduce a position")] = False,
    close_position: Annotated[bool, typer.Option(help="close the whole position")] = False,
    cid: Annotated[str | None, typer.Option(help="the clientOrderId (default: a new one)")] = None,
) -> None:
    """Sign and place a stop or take-profit (an OrderV4); it waits UNTRIGGERED."""
    with _refusals(), _client(signing=True) as client:
        place = client.place_take_profit if take_profit else client.place_stop
        _show_order(
            place(
                market,
                side.upper(),
                qty,
                trigger_price,
                price,
                trigger_source=source.upper(),
                reduce_only=reduce_only,
                close_position=close_position,
                client_order_id=cid,
                wait=True,
            )
        )


# -- leverage and TWAP ------------------------------------------------------------------------
@leverage_app.command("set")
def leverage_set(
    market: str,
    initial_margin_bps: Annotated[int, typer.Argument(help="e.g. 2000 = 5x; 0: the market's")],
) -> None:
    """Choose MARKET's initial margin for the account."""
    with _refusals(), _client(signing=True) as client:
        _print_json(client.set_leverage(market, initial_margin_bps))


@leverage_app.command("show")
def leverage_show(user: Annotated[str | None, typer.Argument()] = None) -> None:
    """Every derivative market's initial margin for USER (default: the key's account)."""
    with _refusals(), _client() as client:
        _print_json(list(client.leverage(_who(user)).values()))


@twap_app.command("place")
def twap_place(
    market: str,
    side: Annotated[str, typer.Argument(help="BUY or SELL")],
    qty: int,
    minutes: Annotated[int, typer.Argument(help="5 to 1440; 2 slices a minute")],
    slippage_bps: Annotated[int, typer.Option(help="1 to 5000 past the best price")] = 50,
    randomize: Annotated[bool, typer.Option(help="slices of 80-120 % of their share")] = False,
    reduce_only: Annotated[bool, typer.Option(help="only reduce a position")] = False,
    cid: Annotated[str | None, typer.Option(help="the TWAP's id (default: a new one)")] = None,
) -> None:
    """Sign and place a TWAP order."""
    with _refusals(), _client(signing=True) as client:
        _print_json(
            client.place_twap(
                market,
                side.upper(),
                qty,
                minutes,
                slippage_bps=slippage_bps,
                randomize=randomize,
                reduce_only=reduce_only,
                client_order_id=cid,
            )
        )


@twap_app.command("show")
def twap_show(
    cid: Annotated[str | None, typer.Argument(help="one TWAP (default: the active ones)")] = None,
    user: Annotated[str | None, typer.Option(help="default: the key's account")] = None,
) -> None:
    """A TWAP's progress, or the account's active TWAPs."""
    with _refusals(), _client() as client:
        who = _who(user)
        _print_json(client.twap(cid, who) if cid else client.twaps(who))


@twap_app.command("cancel")
def twap_cancel(market: str, cid: str) -> None:
    """End a TWAP (CXL): no slice is sent after it."""
    with _refusals(), _client(signing=True) as client:
        _print_json(client.cancel_twap(market, cid))


# -- watch --------------------------------------------------------------------------------------
def _depth_table(market: str, seq: int, bids: list[Any], asks: list[Any]) -> Table:
    table = Table("bid qty", "bid", "ask", "ask qty", title=f"{market}  seq {seq}")
    for i in range(max(len(bids), len(asks))):
        bid = bids[i] if i < len(bids) else ("", "")
        ask = asks[i] if i < len(asks) else ("", "")
        table.add_row(str(bid[1]), str(bid[0]), str(ask[0]), str(ask[1]))
    return table


def _trades_table(trades: list[Trade]) -> Table:
    table = Table("time", "side", "price", "qty", title="trades")
    for t in trades[-15:][::-1]:
        stamp = time.strftime("%H:%M:%S", time.localtime(t.ts / 1000))
        table.add_row(stamp, t.taker_side, str(t.price), str(t.qty))
    return table


async def _watch(market: str, depth: int, seconds: float | None) -> None:
    trades: list[Trade] = []
    async with MarketStream(settings.ws_url) as stream:
        book = stream.book(market)

        async def follow() -> None:
            async for trade in stream.trades(market):
                trades.append(trade)
                del trades[:-100]

        follower = asyncio.create_task(follow())

        def frame() -> Group:
            status = "" if book.synced else "  (syncing)"
            table = _depth_table(market + status, book.seq, book.bids[:depth], book.asks[:depth])
            return Group(table, _trades_table(trades))

        deadline = None if seconds is None else time.monotonic() + seconds
        try:
            with Live(frame(), console=console, refresh_per_second=4) as live:
                while deadline is None or time.monotonic() < deadline:
                    await asyncio.sleep(0.25)
                    live.update(frame())
        finally:
            follower.cancel()


@app.command()
def watch(
    market: str,
    depth: Annotated[int, typer.Option(help="levels a side")] = 10,
    timeout: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
) -> None:
    """A live book and the market's trades (Ctrl-C quits)."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_watch(market, depth, timeout))


# -- admin --------------------------------------------------------------------------------------
@admin_app.command("deposit")
def admin_deposit(
    user: str,
    asset: str,
    amount: Annotated[int, typer.Argument(help="atomic units")],
    deposit_id: Annotated[str | None, typer.Option(help="credits once only")] = None,
) -> None:
    """Credit USER with AMOUNT of ASSET."""
    with _refusals(), _client(admin=True) as client:
        _print_json(client.deposit(user, asset, amount, deposit_id))


@admin_app.command("oracle")
def admin_oracle(market: str, index_price: int) -> None:
    """Push MARKET's index price."""
    with _refusals(), _client(admin=True) as client:
        _print_json(client.set_oracle(market, index_price))


@admin_app.command("halt")
def admin_halt(market: str) -> None:
    """Stop matching in MARKET (cancels still work)."""
    with _refusals(), _client(admin=True) as client:
        _print_json({"symbol": market, "status": client.halt(market).status})


@admin_app.command("resume")
def admin_resume(market: str) -> None:
    """Open MARKET again."""
    with _refusals(), _client(admin=True) as client:
        _print_json({"symbol": market, "status": client.resume(market).status})


@admin_app.command("health")
def admin_health() -> None:
    """Per market: status, matcher backlog, unsettled events, settlement lag."""
    with _refusals(), _client(admin=True) as client:
        _print_json(client.market_health())


@admin_app.command("audit")
def admin_audit() -> None:
    """The auditor's report; exits 2 when an asset's difference is not 0 or an invariant broke."""
    with _refusals(), _client(admin=True) as client:
        report = client.audit()
    if settings.as_json:
        _print_json(report)
    else:
        table = Table(
            "asset",
            "deposits",
            "withdrawals",
            "userTotals",
            "fees",
            "insurance",
            "difference",
            title="audit",
        )
        for asset, row in sorted(report.get("assets", report).items()):
            if isinstance(row, dict) and "difference" in row:
                table.add_row(
                    asset,
                    *(
                        str(row.get(k, ""))
                        for k in (
                            "deposits",
                            "withdrawals",
                            "userTotals",
                            "fees",
                            "insurance",
                            "difference",
                        )
                    ),
                )
        console.print(table)
    if _audit_broken(report):
        console.print("[red]the audit found a difference or a broken invariant[/red]")
        raise typer.Exit(2)


def _audit_broken(report: dict[str, Any]) -> bool:
    rows = report.get("assets", report)
    for row in rows.values() if isinstance(rows, dict) else ():
        if isinstance(row, dict) and "difference" in row and int(row["difference"]) != 0:
            return True
    invariants = report.get("invariants") or {}
    items = invariants.values() if isinstance(invariants, dict) else invariants
    return any(isinstance(i, dict) and i.get("ok") is False for i in items)


def main() -> None:
    app()
