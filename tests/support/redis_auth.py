"""A deployment's Redis command and health check, run on a local redis-server with a password.

``check_password_redis`` starts the command as the deployment would (the password in
``REDISCLI_AUTH``, the port and directory of the test), and asserts that an empty password is
refused at start, that the server refuses clients without the password, and that the health
check passes with the password and fails with a wrong one (its ``redis-cli`` pointed at the
test port by a shim on ``PATH``).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from support.redis_server import free_port, redis_command, redis_ping, wait_for


def check_password_redis(
    command: list[str],
    health_check: list[str],
    tmp_path: Path,
    empty_refusal: str,
    hides_password: bool = False,
) -> None:
    """Run ``command`` (given the test's ``--port``… arguments) and ``health_check``."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server and redis-cli are not installed")
    port = free_port()
    local = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", ""]
    empty = subprocess.run(
        [*command, *local],
        env={**os.environ, "REDISCLI_AUTH": ""},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert empty.returncode != 0 and empty_refusal in empty.stderr
    assert not redis_ping("127.0.0.1", port)
    shim = tmp_path / "bin" / "redis-cli"  # the health check's redis-cli, on the test port
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec {shutil.which("redis-cli")} -p {port} "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "REDISCLI_AUTH": "pw-" + tmp_path.name}
    server = subprocess.Popen(
        [*command, *local], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:

        def refuses_without_password() -> bool:
            try:
                return redis_command("127.0.0.1", port, "PING").startswith(b"-NOAUTH")
            except OSError:
                return False

        assert wait_for(refuses_without_password, 10)
        path = f"{shim.parent}{os.pathsep}{os.environ['PATH']}"
        ready = subprocess.run(health_check, env={**env, "PATH": path}, timeout=10, check=False)
        assert ready.returncode == 0
        wrong = {**env, "PATH": path, "REDISCLI_AUTH": "wrong"}
        refused = subprocess.run(
            health_check, env=wrong, capture_output=True, timeout=10, check=False
        )
        assert refused.returncode != 0
        cmdline = Path(f"/proc/{server.pid}/cmdline")
        if hides_password and cmdline.exists():  # Redis overwrites its command line
            assert env["REDISCLI_AUTH"].encode() not in cmdline.read_bytes()
    finally:
        server.terminate()
        server.wait(timeout=10)
