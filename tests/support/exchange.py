"""Run the real exchange processes against a test Redis, and drive them over HTTP.

``Exchange`` starts any of the five processes of API.md §1 with their own ports and logs,
can SIGKILL and restart each one (fault tests), and stops them all at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import redis

from support.redis_server import free_port, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ADMIN_TOKEN = "test-admin-token"

# Exactly the commands of API.md §1: only environment variables change them.
COMMANDS: dict[str, list[str]] = {
    "gateway": [sys.executable, "-m", "services.gateway"],
    "matcher": [sys.executable, "-m", "services.matcher"],
    "settler": [str(VENV_BIN / "celery"), "-A", "services.settler", "worker"],
    "beat": [str(VENV_BIN / "celery"), "-A", "services.settler", "beat"],
    "broadcaster": [sys.executable, "-m", "services.broadcaster"],
}
FIVE = tuple(COMMANDS)
"""What ``start()`` starts by default: the bridge (below) runs only with a chain."""
COMMANDS["bridge"] = [sys.executable, "-m", "services.bridge"]
PORT_ATTEMPTS = 3  # a server whose free port another test's process took first starts again


class Exchange:
    """The five processes on one Redis, each with its log file under a temp dir."""

    def __init__(self, redis_url: str, **env: str) -> None:
        self.redis_url = redis_url
        self.workdir = Path(tempfile.mkdtemp(prefix="dex-exchange-"))
        self.gateway_port = free_port()
        self.broadcaster_port = free_port()
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
            ),
            "DEX_REDIS_URL": redis_url,
            "DEX_ADMIN_TOKEN": ADMIN_TOKEN,
            "DEX_LOG_LEVEL": "INFO",  # the servers' "running on" line tells their readiness
            "DEX_GATEWAY_PORT": str(self.gateway_port),
            "DEX_BROADCASTER_PORT": str(self.broadcaster_port),
            **env,
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.broadcaster_port}/ws"

    def start(self, *names: str, args: Sequence[str] = ()) -> Exchange:
        """Start ``names`` (all five when none) and wait until they are ready; ``args`` are
        added to each one's command (``--concurrency 2`` for a worker, say)."""
        for name in names or FIVE:
            self._launch(name, args)
        self.wait_ready(*(names or FIVE), args=args)
        return self

    def _launch(self, name: str, args: Sequence[str] = ()) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        # In the temp dir, as an operator's own directory: beat keeps its schedule file there.
        self.processes[name] = subprocess.Popen(
            [*COMMANDS[name], *args],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, *names: str, timeout: float = 30.0, args: Sequence[str] = ()) -> None:
        """Wait until each of ``names`` is ready. A server is ready once its own log says it
        listens on its port and the port answers: the port alone can be answered by another
        test's process that was given the same free port a moment earlier (the tests run in
        parallel). A server that lost its port to such a process is started again on a new
        one."""
        checks: dict[str, Callable[[], bool]] = {
            "gateway": lambda: (
                self._listening("gateway", self.gateway_port) and _http_ok(f"{self.http}/v1/health")
            ),
            "broadcaster": lambda: (
                self._listening("broadcaster", self.broadcaster_port)
                and _port_open(self.broadcaster_port)
            ),
            "settler": self._worker_connected,
        }
        for name in names:
            check = checks.get(name)
            if check is None:
                continue
            for attempt in range(PORT_ATTEMPTS):
                try:
                    ready = wait_for(lambda c=check, n=name: self._alive(n) and c(), timeout)
                except RuntimeError:
                    if attempt + 1 == PORT_ATTEMPTS or not self._lost_its_port(name):
                        raise
                    self._launch(name, args)
                    continue
                if not ready:
                    raise RuntimeError(f"{name} did not become ready:\n{self.log(name)[-3000:]}")
                break

    def _listening(self, name: str, port: int) -> bool:
        """``name``'s log says it has bound ``port`` (uvicorn's "running on" line, at INFO)."""
        if self.env.get("DEX_LOG_LEVEL", "INFO").upper() not in ("INFO", "DEBUG"):
            return True  # the line is not written: the port's answer has to do
        return f"http://127.0.0.1:{port} " in self.log(name)

    def _lost_its_port(self, name: str) -> bool:
        """``name`` exited as its port was taken: give it a new one (gateway, broadcaster)."""
        if name not in ("gateway", "broadcaster"):
            return False
        if "address already in use" not in self.log(name).lower():
            return False
        port = free_port()
        if name == "gateway":
            self.gateway_port = port
            self.env["DEX_GATEWAY_PORT"] = str(port)
        else:
            self.broadcaster_port = port
            self.env["DEX_BROADCASTER_PORT"] = str(port)
        self.processes.pop(name)
        return True

    def _worker_connected(self) -> bool:
        """The worker has reached its broker (it binds its control mailbox there): at the
        default log level it prints no "ready" line."""
        broker = redis.Redis.from_url(self.env.get("DEX_BROKER_URL") or self.redis_url)
        try:
            return bool(broker.keys("_kombu.binding.*pidbox"))
        finally:
            broker.close()

    def _alive(self, name: str) -> bool:
        process = self.processes[name]
        if process.poll() is not None:
            raise RuntimeError(
                f"{name} exited with {process.returncode}:\n{self.log(name)[-3000:]}"
            )
        return True

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        process.wait(timeout=20)

    def revive(self) -> list[str]:
        """Start again every process that has exited, as Kubernetes or compose would.

        Returns the names restarted. Processes are crash-only: one that loses Redis may exit
        (Celery's Redis transport does), and its supervisor brings it back.
        """
        exited = [name for name, process in self.processes.items() if process.poll() is not None]
        for name in exited:
            self.processes.pop(name)
            self.start(name)
        return exited

    def stop(self) -> None:
        for name in list(self.processes):
            process = self.processes[name]
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for name in list(self.processes):
            process = self.processes.pop(name)
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- HTTP helpers -------------------------------------------------------------------
    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.http, timeout=10.0)

    def deposit(self, user: str, asset: str, amount: int) -> dict[str, Any]:
        with self.client() as client:
            response = client.post(
                "/v1/admin/deposits",
                json={"userId": user, "asset": asset, "amount": str(amount)},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
        response.raise_for_status()
        return response.json()

    def get(self, path: str) -> Any:
        """A read that must answer 200: its JSON."""
        with self.client() as client:
            response = client.get(path)
        assert response.status_code == 200, response.text
        return response.json()

    def balance(self, user: str, asset: str) -> tuple[int, int]:
        """``(total, locked)`` of ``asset`` as the REST balances read shows them."""
        held = self.get(f"/v1/accounts/{user}/balances").get(asset, {})
        return int(held.get("total", 0)), int(held.get("locked", 0))

    def __enter__(self) -> Exchange:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
