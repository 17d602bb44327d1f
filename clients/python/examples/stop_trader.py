"""A trader that opens a perpetual position and protects it with a stop.

    python clients/python/examples/stop_trader.py --key 0x... --market BTC-PERP \
        --side BUY --qty 1000 --price 3000000 --stop 2900000

It buys (or sells) ``--qty`` at up to ``--price`` as an IOC order, then places a reduce-only
``STOP_MARKET`` order on the other side for what filled, triggered at ``--stop``. Trigger
orders are signed as ``OrderV4``; the SDK signs the type as the gateway publishes it in
``GET /v1/info``, so an exchange that does not publish it yet is told apart (exit status 3)
before anything is sent.
"""

from __future__ import annotations

import argparse
import sys

from orderbookdex import Client, Order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", required=True, help="the account's private key (0x...)")
    parser.add_argument("--market", default="BTC-PERP")
    parser.add_argument("--side", default="BUY", choices=("BUY", "SELL"))
    parser.add_argument("--qty", type=int, default=1000)
    parser.add_argument("--price", type=int, required=True, help="the entry's limit price")
    parser.add_argument("--stop", type=int, required=True, help="the stop's trigger price")
    parser.add_argument("--trigger-source", default="", help='"" = the exchange\'s default')
    args = parser.parse_args()

    client = Client(args.url, key=args.key)
    if "OrderV4" not in client.published_types():
        print("this exchange does not publish OrderV4 (trigger orders): no stop", file=sys.stderr)
        sys.exit(3)

    entry = client.place(
        args.market, args.side, args.qty, args.price, time_in_force="IOC", wait=True
    )
    assert isinstance(entry, Order)
    print(f"entry {entry.client_order_id}: {entry.status}, filled {entry.filled}", flush=True)
    if entry.filled == 0:
        sys.exit("the entry did not fill: no position to protect")

    stop_side = "SELL" if args.side == "BUY" else "BUY"
    stop = client.place_stop(
        args.market,
        stop_side,
        entry.filled,
        args.stop,
        reduce_only=True,
        trigger_source=args.trigger_source,
        wait=True,
    )
    status = stop.status if isinstance(stop, Order) else stop["status"]
    stop_id = stop.client_order_id if isinstance(stop, Order) else stop["clientOrderId"]
    print(f"stop {stop_id}: {stop_side} {entry.filled} if {args.stop} trades, {status}", flush=True)
    for position in client.positions():
        print(f"position {position.market}: size {position.size}, entry {position.avg_entry}")


if __name__ == "__main__":
    main()
