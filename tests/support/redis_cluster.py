"""A throw-away Redis Cluster of real ``redis-server`` processes on loopback.

Three masters (no replicas) on free ports, joined with ``redis-cli --cluster create``; stopped
and deleted afterwards. The exchange's code talks to it exactly as to a production cluster.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from support.redis_server import RedisServerUnavailable, free_port, redis_command, wait_for


class RedisCluster:
    def __init__(self, masters: int = 3) -> None:
        self.masters = masters
        self.ports: list[int] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.dir = Path(tempfile.mkdtemp(prefix="dex-redis-cluster-"))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> RedisCluster:
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            raise RedisServerUnavailable("redis-server and redis-cli are needed for a cluster")
        for _ in range(self.masters):
            port = _free_port_with_bus(taken={p + bus for p in self.ports for bus in (0, 10_000)})
            node_dir = self.dir / str(port)
            node_dir.mkdir()
            self.ports.append(port)
            self.processes.append(
                subprocess.Popen(
                    [
                        server, "--port", str(port), "--bind", "127.0.0.1",
                        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no",
                        "--dir", str(node_dir), "--logfile", str(node_dir / "redis.log"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        for port in self.ports:
            if not wait_for(lambda p=port: _ping(p), 10):
                self.stop()
                raise RuntimeError(f"cluster node on port {port} did not start")
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        result = subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            self.stop()
            raise RuntimeError(
                f"redis-cli --cluster create failed:\n{result.stdout}{result.stderr}"
            )
        if not wait_for(self._ready, 20, interval=0.2):
            self.stop()
            raise RuntimeError("the cluster did not reach state ok")
        return self

    def _ready(self) -> bool:
        for port in self.ports:
            try:
                info = subprocess.run(
                    ["redis-cli", "-p", str(port), "cluster", "info"],
                    capture_output=True, text=True, timeout=5, check=False,
                ).stdout  # fmt: skip
            except subprocess.TimeoutExpired:
                return False
            if "cluster_state:ok" not in info:
                return False
        return True

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self.processes.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _free_port_with_bus(taken: set[int]) -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free too, neither of them
    in ``taken``: the ports of the nodes started just before, which may not be bound yet, so
    the system could hand one of them out again."""
    for _ in range(200):
        port = free_port()
        bus = port + 10_000
        if bus <= 65_535 and not {port, bus} & taken and _bindable(bus):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _ping(port: int) -> bool:
    try:
        return redis_command("127.0.0.1", port, "PING") == b"+PONG"
    except OSError:
        return False
