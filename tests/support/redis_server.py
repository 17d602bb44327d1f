"""A throw-away ``redis-server`` for tests: free port, temp dir, PING-checked start, clean stop."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

__all__ = [
    "RedisServer",
    "RedisServerUnavailable",
    "free_port",
    "redis_command",
    "redis_ping",
    "wait_for",
]


class RedisServerUnavailable(RuntimeError):
    """``redis-server`` is not installed (not on PATH)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def redis_command(host: str, port: int, *args: str, timeout: float = 1.0) -> bytes:
    """Send one command in RESP and return the raw first reply line (e.g. ``b"+PONG"``).

    Raises ``OSError`` when nothing answers. No redis-py involved, so it works
    against any server and never leaves a pool behind.
    """
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        raw = arg.encode()
        payload += b"$%d\r\n%s\r\n" % (len(raw), raw)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(payload)
        buf = b""
        while not buf.endswith(b"\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    return buf.split(b"\r\n", 1)[0]


def redis_ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if a Redis on ``host:port`` answers PING with PONG."""
    try:
        return redis_command(host, port, "PING", timeout=timeout) == b"+PONG"
    except OSError:
        return False


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until it is truthy (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class RedisServer:
    """A private ``redis-server`` (no persistence) on 127.0.0.1 and a free port.

    >>> with RedisServer() as srv:
    ...     srv.url  # 'redis://127.0.0.1:<port>/0'
    """

    host = "127.0.0.1"

    def __init__(
        self,
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
        start_timeout: float = 10.0,
    ) -> None:
        self._requested_port = port
        self.port: int = port or 0
        self.extra_args = extra_args
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    # --- addresses -----------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.url_for_db(0)

    def url_for_db(self, db: int) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    @property
    def dir(self) -> Path:
        assert self._tmp is not None, "server not started"
        return Path(self._tmp.name)

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    # --- lifecycle -----------------------------------------------------------------
    def start(self) -> RedisServer:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RedisServerUnavailable(
                "redis-server is not on PATH; run `make setup` "
                "(or `apt-get install redis-server`) to run the tests that need it"
            )
        if self.proc is not None:
            return self
        self._tmp = tempfile.TemporaryDirectory(prefix="dex-test-redis-")
        # A port picked by free_port() can be taken before redis binds it: retry with another.
        attempts = 1 if self._requested_port else 5
        last_error = ""
        for _ in range(attempts):
            self.port = self._requested_port or free_port(self.host)
            if self._spawn(exe):
                return self
            last_error = self.log_tail()
        self._cleanup_tmp()
        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{last_error}")

    def _spawn(self, exe: str) -> bool:
        cmd = [
            exe,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--daemonize", "no",
            *self.extra_args,
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:  # exited: port taken, bad option, ...
                self.proc = None
                return False
            if redis_ping(self.host, self.port, timeout=0.5):
                # Still alive: the PONG came from our server, not one that owned the port.
                time.sleep(0.05)
                if self.proc.poll() is None:
                    return True
            time.sleep(0.05)
        self._terminate()
        return False

    def stop(self) -> None:
        self._terminate()
        self._cleanup_tmp()

    def crash_and_restart(self) -> None:
        """SIGKILL the server and start it again on the same port and data directory.

        With ``--appendonly yes --appendfsync always`` in ``extra_args`` the restarted server
        holds every write that was acknowledged before the kill.
        """
        exe = shutil.which("redis-server")
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if exe is None or not self._spawn(exe):
            raise RuntimeError(
                f"redis-server did not restart on port {self.port}:\n{self.log_tail()}"
            )

    def _terminate(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def _cleanup_tmp(self) -> None:
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
            self._tmp = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ping(self) -> bool:
        return redis_ping(self.host, self.port)

    def flushall(self) -> None:
        reply = redis_command(self.host, self.port, "FLUSHALL", timeout=5.0)
        if reply != b"+OK":
            raise RuntimeError(f"FLUSHALL failed: {reply!r}")

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<RedisServer {self.host}:{self.port} {state}>"
