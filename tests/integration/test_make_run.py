"""`make run` (deploy/run.sh): starts Redis + every process, answers /v1/health, and a Ctrl-C
stops everything it started — including its own Redis, but never a Redis that was already there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis
from support.redis_server import (
    RedisServer,
    RedisServerUnavailable,
    free_port,
    redis_ping,
    wait_for,
)

from common.chain import ChainError, Rpc

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RUN_SH = ROOT / "deploy" / "run.sh"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


def _require_tools() -> None:
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not on PATH (make setup installs it)")
    if not (ROOT / ".venv" / "bin" / "honcho").exists():
        pytest.skip(".venv/bin/honcho is missing: run `make setup`")


def _health(port: int) -> tuple[int, object]:
    url = f"http://127.0.0.1:{port}/v1/health"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError):
        return 0, None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunSh:
    """deploy/run.sh as a subprocess in its own process group (as a terminal would run it)."""

    def __init__(self, tmp_path: Path, redis_port: int, **extra_env: str) -> None:
        self.gateway_port = free_port()
        self.chain_port = free_port()
        self.log_path = tmp_path / "run.log"
        env = dict(os.environ)
        env.pop("DEX_PROCFILE", None)  # the real deploy/Procfile
        env.update(
            {
                "DEX_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                "DEX_GATEWAY_PORT": str(self.gateway_port),
                "DEX_BROADCASTER_PORT": str(free_port()),
                "DEX_REDIS_DIR": str(tmp_path / "redis"),
                "DEX_CHAIN_PORT": str(self.chain_port),
                **extra_env,
            }
        )
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [str(RUN_SH)],
            cwd=tmp_path,  # run.sh must work from any directory
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pgid = self.proc.pid
        self.seen: dict[int, psutil.Process] = {}

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def snapshot(self) -> list[psutil.Process]:
        """Remember every descendant (honcho's children run in their own sessions)."""
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.seen.setdefault(child.pid, child)
        return list(self.seen.values())

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last: tuple[int, object] = (0, None)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"run.sh exited early (rc={self.proc.returncode}):\n{self.output()}")
            self.snapshot()
            last = _health(self.gateway_port)
            if last == (200, {"status": "ok"}):
                return
            time.sleep(0.25)
        pytest.fail(f"/v1/health never answered 200 ok (last {last!r}) :\n{self.output()}")

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to the whole foreground process group; assert all of it goes away."""
        self.snapshot()
        os.killpg(self.pgid, signal.SIGINT)
        try:
            rc = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run.sh still running {STOP_TIMEOUT}s after SIGINT:\n{self.output()}")
        assert rc in (0, 130, 143), f"run.sh exit status {rc}:\n{self.output()}"
        assert wait_for(lambda: not _group_alive(self.pgid), 5.0), (
            f"processes of run.sh's group survived:\n{self.output()}"
        )
        survivors = [p for p in self.seen.values() if _alive(p)]
        assert not survivors, f"left running after Ctrl-C: {survivors}\n{self.output()}"

    def close(self) -> None:
        """Teardown, also after a failed assertion: nothing may outlive the test."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pgid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        for p in self.seen.values():
            if _alive(p):
                with contextlib.suppress(psutil.Error):
                    p.kill()
        self._log.close()


def _redis_servers(procs: list[psutil.Process]) -> list[psutil.Process]:
    found = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if _alive(p) and p.name().startswith("redis-server"):
                found.append(p)
    return found


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture
def run_sh() -> Iterator[list[RunSh]]:
    _require_tools()
    started: list[RunSh] = []
    yield started
    for r in started:
        r.close()


def test_run_starts_everything_and_ctrl_c_stops_it_and_its_redis(
    tmp_path: Path, run_sh: list[RunSh]
) -> None:
    redis_port = free_port()
    assert not redis_ping("127.0.0.1", redis_port)

    run = RunSh(tmp_path, redis_port)
    run_sh.append(run)
    run.wait_healthy()
    assert redis_ping("127.0.0.1", redis_port), "run.sh did not start a Redis on DEX_REDIS_URL"
    redis_procs = _redis_servers(run.snapshot())
    assert len(redis_procs) == 1, f"expected run.sh to start one redis-server: {redis_procs}"
    # persistence: the AOF alone, rewritten from 512 MB on (docs/operations.md)
    started = redis.Redis(port=redis_port, decode_responses=True)
    assert started.config_get("appendonly") == {"appendonly": "yes"}
    assert started.config_get("save") == {"save": ""}
    assert started.config_get("auto-aof-rewrite-min-size") == {
        "auto-aof-rewrite-min-size": str(512 * 2**20)
    }
    started.close()
    # the local chain with the vault deployed, and the bridge following it
    chain = Rpc(f"http://127.0.0.1:{run.chain_port}")
    deployed = json.loads((ROOT / "var" / "chain.json").read_text())
    assert chain.call("eth_getCode", deployed["vault"], "latest") not in (None, "0x")
    assert wait_for(lambda: "following vault" in run.output(), 30.0), run.output()

    run.interrupt()
    assert wait_for(lambda: not redis_ping("127.0.0.1", redis_port), 5.0), (
        "the Redis run.sh started still answers after Ctrl-C"
    )
    with pytest.raises(ChainError):
        chain.chain_id()


def test_run_uses_a_redis_that_already_answers_and_leaves_it_running(
    tmp_path: Path, run_sh: list[RunSh]
) -> None:
    try:
        existing = RedisServer().start()
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        run = RunSh(tmp_path, existing.port, DEX_LOCAL_CHAIN="0")
        run_sh.append(run)
        run.wait_healthy()
        assert "bridge" not in run.output()  # no chain: no bridge
        started = _redis_servers(run.snapshot())
        assert not started, f"run.sh started another redis-server: {started}"

        run.interrupt()
        assert existing.is_running(), "the pre-existing redis-server was stopped"
        assert existing.ping(), "the pre-existing redis-server no longer answers"
    finally:
        existing.stop()


def test_respawn_starts_a_command_again_until_told_to_stop(tmp_path: Path) -> None:
    """deploy/respawn.sh (the Procfile's wrapper of Celery's worker and beat) restarts a
    command that exits on its own, and on SIGTERM stops it and exits with its status."""
    starts = tmp_path / "starts"
    wrapper = subprocess.Popen(
        [str(ROOT / "deploy" / "respawn.sh"), "sh", "-c", f"echo up >> {starts}; exit 3"],
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(_lines(starts)) < 3:
        time.sleep(0.1)
    assert len(_lines(starts)) >= 3
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=10) in (3, 143)
    assert b"exited with status 3; starting it again" in (
        wrapper.stderr.read() if wrapper.stderr else b""
    )

    marker = tmp_path / "long"
    wrapper = subprocess.Popen(
        [str(ROOT / "deploy" / "respawn.sh"), "sh", "-c", f"echo up > {marker}; exec sleep 300"]
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not marker.exists():
        time.sleep(0.05)
    child = [p for p in psutil.Process(wrapper.pid).children() if "sleep" in p.name()]
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=10) == 143  # the child's status: ended by SIGTERM
    assert child and not child[0].is_running()


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []
