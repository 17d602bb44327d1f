"""The settler's queues as an operator meets them: the commands of API.md §1 and §8, as written.

``celery -A services.settler worker`` (no ``-Q``, nothing but environment variables) must run
every job, whether ``celery -A services.settler call NAME`` or beat sends it; ``-Q`` still
splits the work over workers. Each run is checked by its effect in Redis.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.market_driver import MarketDriver
from support.redis_server import wait_for

from common import keys
from common.events import loads
from common.markets import load_markets

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).parent / "celery")
A, B = "0x" + "a" * 40, "0x" + "b" * 40
PERP, OLD_FUTURE = "BTC-PERP", "BTC-FUT-OLD"
PAST = 1_600_000_000_000
WITHIN_S = 30


@pytest.fixture
def markets_file(tmp_path: Path) -> Path:
    """The shipped markets plus a future that expired long ago (work for ``dex.expiry``)."""
    document = yaml.safe_load((REPO / "deploy" / "markets.yaml").read_text())
    document["markets"][OLD_FUTURE] = {
        **document["markets"]["BTC-FUT-20270326"],
        "expiryTs": PAST,
    }
    path = tmp_path / "markets.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def environment(redis_url: str, markets_file: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "DEX_REDIS_URL": redis_url,
        "DEX_MARKETS_FILE": str(markets_file),
        "DEX_LIQUIDATION_GRACE_S": "0",
        **extra,
    }


@contextlib.contextmanager
def started(args: list[str], env: dict[str, str], workdir: Path, name: str) -> Iterator[Path]:
    """Run ``args`` in ``workdir`` (its log in ``<name>.log``) and stop it at the end."""
    log_path = workdir / f"{name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            args, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield log_path
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def call(env: dict[str, str], workdir: Path, name: str, *args: str) -> None:
    """``celery -A services.settler call NAME``, the command API.md §8 gives an operator."""
    command = [CELERY, "-A", "services.settler", "call", name]
    if args:
        command += ["--args", "[" + ", ".join(f'"{a}"' for a in args) + "]"]
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


def prepare_underwater_long(client: Any, markets_file: Path) -> None:
    """A fills B for 0.1 BTC at 30,000 (not yet settled); the index then falls to 25,000."""
    drive = MarketDriver(client, load_markets(markets_file).markets[PERP])
    drive.deposit(A, "USDC", 400_000_000)
    drive.deposit(B, "USDC", 10_000_000_000)
    drive.deposit(keys.INSURANCE_ACCOUNT, "USDC", 1_000_000_000)
    drive.order(B, "s1", "SELL", 3_000_000, 1_000)
    drive.order(A, "b1", "BUY", 3_000_000, 1_000)
    drive.fill((A, "b1"), (B, "s1"), 3_000_000, 1_000, taker="BUY")
    client.hset(keys.market_prices(PERP), "static", 2_500_000)


def settled(client: Any, market: str) -> bool:
    last = client.xrevrange(keys.market_events(market), count=1)
    return bool(last) and client.get(keys.market_settled(market)) == last[0][0]


def test_plain_worker_runs_every_job_sent_with_celery_call(
    redis_url: str, client: Any, markets_file: Path, tmp_path: Path
) -> None:
    prepare_underwater_long(client, markets_file)
    env = environment(redis_url, markets_file)
    with started([CELERY, "-A", "services.settler", "worker"], env, tmp_path, "worker") as log:
        # dex.sweep queues dex.settle for the market whose events run past its cursor.
        call(env, tmp_path, "dex.sweep")
        assert wait_for(lambda: settled(client, PERP), WITHIN_S), tail(log)
        assert client.hget(keys.positions(A), f"{PERP}:size") == "1000"

        call(env, tmp_path, "dex.oracle")
        assert wait_for(
            lambda: client.hget(keys.market_prices(PERP), "mark") == "2500000", WITHIN_S
        ), tail(log)
        assert client.hget(keys.market_prices(PERP), "index") == "2500000"

        call(env, tmp_path, "dex.funding")
        now_period = int(time.time()) // 3600
        assert wait_for(lambda: client.hget(keys.market_funding(PERP), "paid"), WITHIN_S)
        assert int(client.hget(keys.market_funding(PERP), "paid")) in (now_period - 1, now_period)

        call(env, tmp_path, "dex.expiry")
        assert wait_for(lambda: client.xlen(keys.market_in(OLD_FUTURE)) == 1, WITHIN_S), tail(log)

        call(env, tmp_path, "dex.liquidation")
        assert wait_for(
            lambda: client.hget(keys.account_liquidation(A), "last") == "1", WITHIN_S
        ), tail(log)
        # Every queue was drained: nothing waits for a worker that is not there.
        assert [client.llen(queue) for queue in ("settle", "periodic", "celery")] == [0, 0, 0]
    ((_, fields),) = client.xrange(keys.market_in(PERP))
    command = loads(fields["c"])
    assert (command["liquidation"], command["side"], command["qty"]) == (True, "SELL", 1_000)


def test_plain_worker_and_plain_beat_run_the_schedule(
    redis_url: str, client: Any, markets_file: Path, tmp_path: Path
) -> None:
    prepare_underwater_long(client, markets_file)
    # Funding periods of 10 s: beat checks for a finished period every second.
    env = environment(redis_url, markets_file, DEX_FUNDING_INTERVAL_S="10")
    with (
        started([CELERY, "-A", "services.settler", "worker"], env, tmp_path, "worker") as log,
        started([CELERY, "-A", "services.settler", "beat"], env, tmp_path, "beat") as beat_log,
    ):
        # Beat sends every job on its own (oracle and liquidation every 5 s, expiry every
        # 10 s): settlement, the new index, the expiry command and the liquidation all follow.
        assert wait_for(lambda: client.hget(keys.account_liquidation(A), "last") == "1", 60), tail(
            log
        ) + tail(beat_log)
        assert wait_for(lambda: client.xlen(keys.market_in(OLD_FUTURE)) == 1, 30), tail(log)
        assert wait_for(lambda: client.hget(keys.market_funding(PERP), "paid"), 30), tail(log)
    assert settled(client, PERP)
    assert client.hget(keys.market_prices(PERP), "index") == "2500000"


def test_queues_split_by_flag_each_worker_takes_only_its_own(
    redis_url: str, client: Any, markets_file: Path, tmp_path: Path
) -> None:
    prepare_underwater_long(client, markets_file)
    env = environment(redis_url, markets_file)
    periodic = [CELERY, "-A", "services.settler", "worker", "-Q", "periodic"]
    with started(periodic, env, tmp_path, "periodic") as log:
        call(env, tmp_path, "dex.settle", PERP)
        call(env, tmp_path, "dex.oracle")
        assert wait_for(
            lambda: client.hget(keys.market_prices(PERP), "index") == "2500000", WITHIN_S
        ), tail(log)
        # The settle task waits on its queue for a worker that takes `settle`.
        assert client.llen("settle") == 1
        assert not settled(client, PERP)
    settle = [CELERY, "-A", "services.settler", "worker", "-Q", "settle"]
    with started(settle, env, tmp_path, "settle") as log:
        assert wait_for(lambda: settled(client, PERP), WITHIN_S), tail(log)
        assert wait_for(lambda: client.llen("settle") == 0, WITHIN_S)
    assert client.hget(keys.positions(A), f"{PERP}:size") == "1000"
