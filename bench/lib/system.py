"""The whole exchange under test: started with ``deploy/run.sh``, or one already running.

``System.spawn`` runs ``deploy/run.sh`` (a private Redis and the five processes of the
Procfile, as ``make run`` does) on free ports with rate limits off, its output in
``var/bench-e2e.log``, and waits for the gateway's health; ``stop`` interrupts the whole
process group and removes the private Redis's data.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from support.redis_server import free_port

from lib import REPO_ROOT

ADMIN_TOKEN = "bench-admin-token"
LOG = REPO_ROOT / "var" / "bench-e2e.log"


@dataclass
class System:
    gateway: str
    ws: str
    redis_url: str
    process: subprocess.Popen[bytes] | None = None
    redis_dir: Path | None = None  # the private Redis's data, removed on stop

    @classmethod
    def spawn(cls, access_log: bool = False, root: Path = REPO_ROOT) -> System:
        """Start ``deploy/run.sh`` of the checkout at ``root`` (another build, e.g. main's
        from ``git archive`` with this ``.venv`` linked in, for a same-run baseline); the
        system once its gateway answers."""
        ports = [_low_free_port() for _ in range(3)]
        redis_dir = root / "var" / f"bench-redis-{ports[0]}"
        env = {
            **os.environ,
            "DEX_REDIS_URL": f"redis://127.0.0.1:{ports[0]}/0",
            "DEX_GATEWAY_PORT": str(ports[1]),
            "DEX_BROADCASTER_PORT": str(ports[2]),
            "DEX_ADMIN_TOKEN": ADMIN_TOKEN,
            "DEX_RATE_LIMIT_USER": "0",
            "DEX_RATE_LIMIT_IP": "0",
            # One JSON line per request, relayed by honcho (Python) line by line, cost ~20 % of
            # the whole system's throughput at 2,000 orders/s: off unless --access-log.
            "DEX_LOG_LEVEL": "INFO" if access_log else "WARNING",
            "DEX_REDIS_DIR": str(redis_dir),
            "DEX_LOCAL_CHAIN": "0",  # the load signs under the default domain: no chain
            "PYTHONPATH": str(root),  # the services of that checkout, whatever .venv installs
        }
        LOG.parent.mkdir(exist_ok=True)
        log = LOG.open("wb")  # closed when the run ends, with this process
        process = subprocess.Popen(
            [str(root / "deploy" / "run.sh")],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        system = cls(
            gateway=f"http://127.0.0.1:{ports[1]}",
            ws=f"ws://127.0.0.1:{ports[2]}/ws",
            redis_url=env["DEX_REDIS_URL"],
            process=process,
            redis_dir=redis_dir,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{system.gateway}/v1/health", timeout=1).status_code == 200:
                    time.sleep(2)  # let the matcher and the worker finish starting
                    return system
            if process.poll() is not None:
                raise SystemExit("deploy/run.sh exited; see var/bench-e2e.log")
            time.sleep(0.3)
        system.stop()
        raise SystemExit("the exchange did not come up within 60 s; see var/bench-e2e.log")

    def stop(self) -> None:
        """Interrupt what ``spawn`` started (nothing for a running exchange) and remove its
        Redis's data."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        if self.redis_dir is not None:
            shutil.rmtree(self.redis_dir, ignore_errors=True)


def _low_free_port() -> int:
    """A free port below 55,000 (the range this launcher has always used)."""
    while (port := free_port()) >= 55_000:
        pass
    return port
