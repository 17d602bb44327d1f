"""A private redis-server under callgrind, and what the profiles read from it.

Both profiles (bench/matcher_profile.py, bench/admission_profile.py) count the instructions
Redis retires inside ``evalShaCommand`` and ``fcallCommand`` (the script and function calls and
everything they run) and the
commands run (INFO commandstats), so their figures do not depend on the machine's load.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import redis


def start_redis(
    listen: list[str], client: redis.Redis, workdir: Path, valgrind: bool
) -> subprocess.Popen[bytes]:
    """redis-server with ``listen`` (its port or socket options), no persistence, under
    callgrind when ``valgrind``; returns once ``client`` reaches it (callgrind is slow to start)."""
    cmd = ["redis-server", *listen, "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    if valgrind:
        cmd = ["valgrind", "--tool=callgrind", "--toggle-collect=evalShaCommand",
               "--toggle-collect=fcallCommand",
               f"--callgrind-out-file={workdir / 'callgrind.out'}", *cmd]  # fmt: skip
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("redis-server did not start") from None
            time.sleep(0.2)


def command_counts(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def command_usec(client: redis.Redis) -> dict[str, int]:
    """Microseconds Redis has spent in each command, those a script calls included."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["usec"]) for name, v in stats.items()}


def instructions(workdir: Path) -> int:
    """The instructions retired inside the script calls, from the server's callgrind output
    (read once the server has exited)."""
    out = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", str(workdir / "callgrind.out")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    total = re.search(r"^([\d,]+).*PROGRAM TOTALS", out, re.M)
    if total is None:
        raise SystemExit("callgrind_annotate printed no total")
    return int(total.group(1).replace(",", ""))


def per_order(commands: dict[str, int], orders: int, workdir: Path, valgrind: bool) -> dict:
    """The profiles' common figures per order: the commands run, by name, and (under
    callgrind) the instructions retired in the script calls."""
    figures: dict = {
        "commandsPerOrder": round(sum(commands.values()) / orders, 2),
        "commands": {
            k: round(v / orders, 3) for k, v in sorted(commands.items(), key=lambda i: -i[1])
        },
    }
    if valgrind:
        total = instructions(workdir)
        figures["instructions"] = total
        figures["instructionsPerOrder"] = round(total / orders)
        figures["callgrindOut"] = str(workdir / "callgrind.out")
    return figures
