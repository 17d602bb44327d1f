"""A ``DEX_REDIS_URL`` with a password (as the deployments give it) works for every way the
processes reach Redis: redis-py sync and asyncio clients, the gateway's RESP lane, the Celery
broker, the health check, and on a Redis Cluster (nodes with requirepass and masterauth) the
cluster clients and the broadcaster's per-node pub/sub clients. Real redis-server processes."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from support.redis_server import free_port, redis_command, wait_for

from common.redis_client import connect, connect_async
from common.settings import DexSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
# URL-special characters on purpose: the URL carries it percent-encoded.
PASSWORD = "p@ss:w/rd%"
IN_URL = quote(PASSWORD, safe="")


def _answers(port: int) -> bool:
    try:
        return redis_command("127.0.0.1", port, "PING").startswith(b"-NOAUTH")
    except OSError:
        return False


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Any]]:
    """One plain Redis and a three-master Redis Cluster, all with a password."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        pytest.skip("redis-server and redis-cli are not installed")
    work = Path(tempfile.mkdtemp(prefix="dex-redis-password-"))
    processes: list[subprocess.Popen[bytes]] = []

    def start(port: int, *extra: str) -> None:
        node = work / str(port)
        node.mkdir()
        processes.append(
            subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(node), "--requirepass", PASSWORD, *extra],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip

    try:
        single = free_port()
        start(single)
        nodes = []
        while len(nodes) < 3:
            port = free_port()
            if port + 10_000 <= 65_535 and port not in (single, *nodes):
                nodes.append(port)
        for port in nodes:
            start(port, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                  "--masterauth", PASSWORD)  # fmt: skip
        for port in (single, *nodes):
            assert wait_for(lambda p=port: _answers(p), 10), f"redis on {port} did not start"
        auth = {**os.environ, "REDISCLI_AUTH": PASSWORD}
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in nodes), "--cluster-yes"],
            env=auth, capture_output=True, timeout=60, check=True,
        )  # fmt: skip

        def cluster_ok() -> bool:
            info = subprocess.run(
                [cli, "-p", str(nodes[0]), "cluster", "info"],
                env=auth, capture_output=True, text=True, timeout=5, check=False,
            )  # fmt: skip
            return "cluster_state:ok" in info.stdout

        assert wait_for(cluster_ok, 20, interval=0.2)
        yield {
            "single": f"redis://:{IN_URL}@127.0.0.1:{single}/0",
            "single_user": f"redis://default:{IN_URL}@127.0.0.1:{single}/0",
            "no_password": f"redis://127.0.0.1:{single}/0",
            "cluster": f"redis://:{IN_URL}@127.0.0.1:{nodes[0]}/0",
        }
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def healthcheck(url: str, cluster: bool) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEX_REDIS_URL": url, "DEX_REDIS_CLUSTER": "1" if cluster else "0"}
    return subprocess.run(
        [sys.executable, "-m", "common.healthcheck", "ready"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("which", ["single", "single_user"])
def test_every_client_authenticates_on_a_single_redis(servers: dict[str, Any], which: str) -> None:
    from celery import Celery

    from services.gateway.lane import lane_for

    url = servers[which]
    settings = DexSettings(redis_url=url, redis_cluster=False)
    with connect(settings) as client:
        assert client.set("dex:password-check", "1") is True

    async def asyncio_clients() -> list[Any]:
        client = connect_async(settings)
        lane = lane_for(url, False)
        assert lane is not None and lane.password == PASSWORD
        try:
            return [await client.get("dex:password-check"), *await lane.execute([("PING",)])]
        finally:
            await lane.close()
            await client.aclose()

    assert asyncio.run(asyncio_clients()) == ["1", "PONG"]
    broker = Celery("password-check", broker=settings.celery_broker_url)
    with broker.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1)
        assert connection.default_channel.client.ping() is True
    ready = healthcheck(url, cluster=False)
    assert ready.returncode == 0, ready.stderr
    # And without the password, nothing.
    with pytest.raises(redis.AuthenticationError):
        connect(DexSettings(redis_url=servers["no_password"])).ping()
    assert healthcheck(servers["no_password"], cluster=False).returncode == 1


def test_every_client_authenticates_on_a_redis_cluster(servers: dict[str, Any]) -> None:
    from services.broadcaster.backends.base import SHARDED, Address, Reader

    settings = DexSettings(redis_url=servers["cluster"], redis_cluster=True)
    client = connect(settings)
    try:
        for n in range(30):  # keys on every master
            client.set(f"dex:{{password-check-{n}}}", n)
        assert (
            len({client.get_node_from_key(f"{{password-check-{n}}}").name for n in range(30)}) == 3
        )
    finally:
        client.close()

    async def asyncio_cluster() -> list[Any]:
        cluster = connect_async(settings)
        try:
            values = [await cluster.get(f"dex:{{password-check-{n}}}") for n in range(30)]
            # The broadcaster opens its pub/sub connection to a node from the node's options.
            node = cluster.get_node_from_key("dex:{password-check-1}")
            heard: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

            class Heard:
                def on_published(self, channel: str, data: Any) -> None:
                    if not heard.done():
                        heard.set_result(data)

                def on_lost(self) -> None:
                    pass

            per_node = Reader(Address.of_node(node), node.name, SHARDED, Heard())
            try:
                await per_node.connected()
                per_node.subscribe(["dex:ch:{password-check-1}:x"])
                await asyncio.wait_for(per_node.confirmation(), 10)
                await cluster.spublish("dex:ch:{password-check-1}:x", "relayed")
                relayed = await asyncio.wait_for(heard, 10)
                return [values == [str(n) for n in range(30)], relayed == b"relayed"]
            finally:
                await per_node.stop()
        finally:
            await cluster.aclose()

    assert asyncio.run(asyncio_cluster()) == [True, True]
    ready = healthcheck(servers["cluster"], cluster=True)
    assert ready.returncode == 0, ready.stderr
