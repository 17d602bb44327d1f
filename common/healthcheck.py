"""``python -m common.healthcheck``: container probes for the processes without an HTTP port.

``ready`` answers whether Redis answers (readiness: take no work while the store is away);
``alive --file F --max-age S`` answers whether the process touched its heartbeat file in the
last S seconds (liveness: a wedged consumer is restarted, a Redis outage alone is not).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from common.redis_client import connect

DEFAULT_HEARTBEAT = Path("/tmp/dex-heartbeat")


def touch_heartbeat(path: Path = DEFAULT_HEARTBEAT) -> None:
    """Record that this process is making progress (cheap: one utime call)."""
    # A read-only or missing /tmp must never stop the service itself.
    with contextlib.suppress(OSError):
        path.touch()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.healthcheck")
    sub = parser.add_subparsers(dest="check", required=True)
    sub.add_parser("ready", help="exit 0 when Redis answers PING")
    alive = sub.add_parser("alive", help="exit 0 when the heartbeat file is fresh")
    alive.add_argument("--file", type=Path, default=DEFAULT_HEARTBEAT)
    alive.add_argument("--max-age", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.check == "ready":
        try:
            connect(socket_timeout=2.0).ping()
        except Exception as exc:
            print(f"not ready: Redis does not answer: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        age = time.time() - args.file.stat().st_mtime
    except OSError as exc:
        print(f"not alive: no heartbeat file {args.file}: {exc}", file=sys.stderr)
        return 1
    if age > args.max_age:
        print(f"not alive: heartbeat {age:.0f} s old (limit {args.max_age:.0f} s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
