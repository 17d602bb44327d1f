"""Run a clients/ npm package's tests against the real exchange (tests/support.exchange).

``require_npm_package`` fails (never skips) when node, npm or the package's installed
dependencies are missing: ``make setup`` installs them (``npm ci``). ``ControlServer`` lets a
node test ask the Python side to kill -9 and restart a process mid-test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support.exchange import ADMIN_TOKEN, REPO_ROOT, Exchange

CLIENTS = REPO_ROOT / "clients"


def require_npm_package(name: str) -> Path:
    """clients/<name>, with node, npm and its node_modules present (else the test fails)."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: the npm client tests need Node.js 20 and npm")
    package = CLIENTS / name
    if not (package / "node_modules").is_dir():
        pytest.fail(f"{package}/node_modules is missing: run `make setup` (npm ci) first")
    return package


def compile_if_stale(package: Path) -> None:
    """``npm run build`` when a TypeScript source is newer than the last build (``make setup``
    compiles, so this runs only after an edit)."""
    stamp = package / "dist" / ".built"
    sources = [*package.glob("src/*.ts"), *package.glob("test/*.ts"), package / "tsconfig.json"]
    newest = max(path.stat().st_mtime for path in sources)
    if stamp.exists() and stamp.stat().st_mtime >= newest:
        return
    run_npm(package, "build", {}, timeout=180)
    stamp.touch()


def exchange_env(exchange: Exchange, control: ControlServer | None = None) -> dict[str, str]:
    """The environment a node test reads to find the exchange."""
    env = {
        "DEX_GATEWAY_URL": exchange.http,
        "DEX_BROADCASTER_URL": exchange.ws,
        "DEX_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    if control is not None:
        env["DEX_TEST_CONTROL_URL"] = control.url
    return env


def run_npm(package: Path, script: str, env: dict[str, str], timeout: float) -> str:
    """``npm run <script>`` in ``package``; its output, failing the test with it if it fails."""
    done = subprocess.run(
        ["npm", "run", "--silent", script],
        cwd=package,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = done.stdout + done.stderr
    print(output)
    if done.returncode != 0:
        pytest.fail(f"npm run {script} in {package} exited {done.returncode}:\n{output[-6000:]}")
    return output


class ControlServer:
    """``POST /restart-broadcaster`` on 127.0.0.1: SIGKILL the broadcaster, start it again,
    answer 200 once it listens."""

    def __init__(self, exchange: Exchange) -> None:
        self.restarts = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path != "/restart-broadcaster":
                    self.send_error(404)
                    return
                exchange.kill("broadcaster")
                exchange.start("broadcaster")
                owner.restarts += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ControlServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
