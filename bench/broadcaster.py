"""Broadcaster benchmark: many WebSocket clients on one market's ``trade:`` and ``depth:``.

Starts a private redis-server and ``--broadcasters`` broadcaster processes, connects
``--clients`` clients (spread over ``--client-procs`` processes and over the broadcasters),
each subscribed to ``trade:BTC-USDC`` and ``depth:BTC-USDC``, then PUBLISHes synthetic
matcher publications (``{"seq", "data"}`` exactly as match.lua sends them) at ``--rate``
trades per second: per trade one depth update and one trade update, as a taker that fills
one maker produces. Each publication carries its publish time (``benchNs``, an extra field the
broadcaster forwards untouched), so every client measures publish-to-receive latency.

Every ``--measure-every``-th client parses each frame (latency, seq gaps); the others only
count the bytes they read (so the load generator, sharing the machine, stays cheaper than the
server) and are credited with the measuring clients' messages per byte. Reports messages
delivered per second, p50/p99/max latency, seq gaps (must be 0), clients closed (1013 from the
broadcaster's metrics), broadcaster CPU per message and memory per connection (RSS growth
from the connections and their subscriptions, divided by the clients). Results go to
``bench/results/broadcaster.json``.

    .venv/bin/python bench/broadcaster.py                     # 1,000 clients, 500 trades/s
    .venv/bin/python bench/broadcaster.py --rate 100 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import redis

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from common import keys  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results" / "broadcaster.json"
MARKET = "BTC-USDC"
TOPICS = (f"trade:{MARKET}", f"depth:{MARKET}")
BUCKET_US = 100  # latency histogram resolution
BUCKETS = 100_000  # up to 10 s


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port} after {timeout} s")


# -- clients (in their own processes) ----------------------------------------------------------
def mask_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (clients must mask, RFC 6455 §5.3)."""
    key = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = bytes([0x80 | opcode, 0x80 | length])
    elif length < 65536:
        header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + masked


class Stats:
    def __init__(self) -> None:
        self.histogram = [0] * BUCKETS
        self.messages = 0
        self.gaps = 0
        self.connected = 0
        self.closed: dict[str, int] = {}
        self.measuring = False
        self.measured_clients = 0
        self.measured_bytes = 0
        self.drained_clients = 0
        self.drained_bytes = 0


class LeanClient(asyncio.Protocol):
    """A minimal WebSocket client: so the load generator, not the broadcaster, stays cheap."""

    def __init__(self, host: str, port: int, stats: Stats, measure: bool) -> None:
        self.host, self.port, self.stats = host, port, stats
        # A measuring client parses every frame; the others only count the bytes they read,
        # so the load generator's CPU goes to reading sockets, as real clients' would.
        self.measure = measure
        self.buffer = bytearray()
        self.upgraded = False
        self.transport: Any = None
        self.last: dict[str, int] = {}
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        stats = self.stats
        if self.upgraded and not self.measure:
            if stats.measuring:
                stats.drained_bytes += len(data)
            return
        if stats.measuring:
            stats.measured_bytes += len(data)
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.finish("refused")
                return
            del buffer[: end + 4]
            self.upgraded = True
            self.stats.connected += 1
            for topic in TOPICS:
                self.send(1, orjson.dumps({"op": "subscribe", "topic": topic}))
            if not self.measure:
                return
        offset = 0
        size = len(buffer)
        while size - offset >= 2:
            opcode = buffer[offset] & 0x0F
            length = buffer[offset + 1] & 0x7F
            head = 2
            if length == 126:
                if size - offset < 4:
                    break
                length = int.from_bytes(buffer[offset + 2 : offset + 4], "big")
                head = 4
            elif length == 127:
                if size - offset < 10:
                    break
                length = int.from_bytes(buffer[offset + 2 : offset + 10], "big")
                head = 10
            if size - offset < head + length:
                break
            payload = bytes(buffer[offset + head : offset + head + length])
            offset += head + length
            if opcode == 1:
                now = time.time_ns()
                message = orjson.loads(payload)
                topic = message.get("topic")
                seq = message.get("seq")
                if message.get("type") == "update":
                    previous = self.last.get(topic)
                    if previous is not None and seq != previous + 1:
                        stats.gaps += 1
                    if stats.measuring:
                        data = message["data"]
                        sent = data[-1]["benchNs"] if isinstance(data, list) else data["benchNs"]
                        bucket = min((now - sent) // (BUCKET_US * 1000), BUCKETS - 1)
                        stats.histogram[bucket] += 1
                        stats.messages += 1
                self.last[topic] = seq
            elif opcode == 9:
                self.send(10, payload)
            elif opcode == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.finish(str(code))
                return
        del buffer[:offset]

    def send(self, opcode: int, payload: bytes) -> None:
        self.transport.write(mask_frame(opcode, payload))

    def finish(self, why: str) -> None:
        if not self.done.done():
            self.stats.closed[why] = self.stats.closed.get(why, 0) + 1
            self.done.set_result(None)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.finish("lost")


def client_process(
    urls: list[str],
    count: int,
    measure_every: int,
    ready: Any,
    start: Any,
    stop: Any,
    results: Any,
) -> None:
    import uvloop

    async def main() -> dict[str, Any]:
        stats = Stats()
        loop = asyncio.get_running_loop()
        clients: list[LeanClient] = []
        for index in range(count):
            host, _, port = (
                urls[index % len(urls)].removeprefix("ws://").partition("/")[0].partition(":")
            )
            measure = index % measure_every == 0
            _, client = await loop.create_connection(
                lambda h=host, p=int(port), m=measure: LeanClient(h, p, stats, m), host, int(port)
            )
            if measure:
                stats.measured_clients += 1
            else:
                stats.drained_clients += 1
            clients.append(client)
            if index % 50 == 49:
                await asyncio.sleep(0.05)
        deadline = time.monotonic() + 60
        while stats.connected < count and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # snapshots arrive
        ready.set()
        while not start.is_set():
            await asyncio.sleep(0.01)
        stats.measuring = True
        while not stop.is_set():
            await asyncio.sleep(0.05)
        stats.measuring = False
        for client in clients:
            if not client.done.done():
                client.transport.close()
        return {
            "histogram": stats.histogram,
            "messages": stats.messages,
            "gaps": stats.gaps,
            "connected": stats.connected,
            "closed": stats.closed,
            "measured_clients": stats.measured_clients,
            "measured_bytes": stats.measured_bytes,
            "drained_clients": stats.drained_clients,
            "drained_bytes": stats.drained_bytes,
        }

    uvloop.install()
    results.put(asyncio.run(main()))


# -- the publisher -----------------------------------------------------------------------------
def publish(r: redis.Redis, rate: int, seconds: float, counters: dict[str, int]) -> dict[str, Any]:
    """``rate`` trades/s for ``seconds``, in 10 ms ticks, one depth + one trade update each;
    ``counters`` carries the depth and trade seq from one call to the next."""
    depth_channel, trade_channel = (keys.channel(t) for t in (TOPICS[1], TOPICS[0]))
    seq, tseq = counters["seq"], counters["tseq"]
    first_trade = tseq
    tick = 0.01
    per_tick = rate * tick
    owed = 0.0
    published = 0
    begin = time.monotonic()
    next_tick = begin
    while time.monotonic() - begin < seconds:
        owed += per_tick
        pipe = r.pipeline(transaction=False)
        while owed >= 1:
            owed -= 1
            seq += 1
            tseq += 1
            now = time.time_ns()
            price = 3_000_000 + (tseq % 7)
            depth = {"bids": [], "asks": [[price, tseq % 50]], "benchNs": now}
            trade = {
                "tradeId": f"{MARKET}:{tseq}", "market": MARKET, "price": price, "qty": 1,
                "takerSide": "BUY", "buyer": "0xb", "seller": "0xs", "buyOid": f"b{tseq}",
                "sellOid": f"s{tseq}", "ts": now // 1_000_000, "seq": tseq, "benchNs": now,
            }  # fmt: skip
            pipe.publish(depth_channel, orjson.dumps({"seq": seq, "data": depth}))
            pipe.publish(trade_channel, orjson.dumps({"seq": tseq, "data": [trade]}))
            published += 2
        pipe.execute()
        next_tick += tick
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    elapsed = time.monotonic() - begin
    counters.update(seq=seq, tseq=tseq)
    return {"publications": published, "trades": tseq - first_trade, "seconds": elapsed}


def slow_disconnects(ws_url: str) -> float:
    """The broadcaster's own count of clients it closed with 1013."""
    metrics_url = ws_url.replace("ws://", "http://").removesuffix("/ws") + "/metrics"
    text = httpx.get(metrics_url, timeout=10).text
    for line in text.splitlines():
        if line.startswith("dex_broadcaster_slow_client_disconnects_total "):
            return float(line.split()[1])
    return 0.0


def percentile(histogram: list[int], fraction: float) -> float | None:
    total = sum(histogram)
    if total == 0:
        return None
    wanted = fraction * total
    running = 0
    for bucket, count in enumerate(histogram):
        running += count
        if running >= wanted:
            return (bucket + 1) * BUCKET_US / 1000
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=500, help="trades per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--broadcasters", type=int, default=1)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--send-queue", type=int, default=1000)
    parser.add_argument(
        "--measure-every", type=int, default=25, help="every Nth client parses and times frames"
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="dex-bench-broadcaster-"))
    redis_port = free_port()
    redis_server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_port(redis_port)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    broadcasters: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for index in range(args.broadcasters):
            port = free_port()
            env = {
                **os.environ,
                "DEX_REDIS_URL": redis_url,
                "DEX_BROADCASTER_PORT": str(port),
                "DEX_BROADCASTER_SEND_QUEUE": str(args.send_queue),
                # The byte-counting clients do not parse frames, so they cannot answer pings.
                "DEX_BROADCASTER_PING_INTERVAL_S": "3600",
                # Every bench client connects from 127.0.0.1.
                "DEX_BROADCASTER_MAX_CONNECTIONS_PER_IP": "0",
                "PYTHONPATH": str(REPO_ROOT),
            }
            log = open(workdir / f"broadcaster-{index}.log", "wb")  # noqa: SIM115
            broadcasters.append(
                subprocess.Popen(
                    [sys.executable, "-m", "services.broadcaster"],
                    cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )  # fmt: skip
            wait_port(port)
            urls.append(f"ws://127.0.0.1:{port}/ws")
        procs = [psutil.Process(b.pid) for b in broadcasters]
        rss_before = sum(p.memory_info().rss for p in procs)

        context = multiprocessing.get_context("spawn")
        ready = [context.Event() for _ in range(args.client_procs)]
        start, stop = context.Event(), context.Event()
        results = context.Queue()
        share = [args.clients // args.client_procs] * args.client_procs
        share[0] += args.clients - sum(share)
        workers = [
            context.Process(
                target=client_process,
                args=(urls, n, args.measure_every, ready[i], start, stop, results),
                daemon=True,
            )
            for i, n in enumerate(share)
        ]
        for worker in workers:
            worker.start()
        for event in ready:
            if not event.wait(120):
                raise SystemExit("the clients did not connect within 120 s")
        rss_connected = sum(p.memory_info().rss for p in procs)

        r = redis.Redis.from_url(redis_url)
        counters = {"seq": 0, "tseq": 0}
        publish(r, args.rate, 2.0, counters)  # warm-up, not measured
        time.sleep(0.5)
        client_procs = [psutil.Process(w.pid) for w in workers if w.pid is not None]
        redis_proc = psutil.Process(redis_server.pid)
        for p in [*procs, *client_procs, redis_proc]:
            p.cpu_percent(None)
        start.set()
        published = publish(r, args.rate, args.seconds, counters)
        cpu = [p.cpu_percent(None) for p in procs]
        client_cpu = [p.cpu_percent(None) for p in client_procs]
        redis_cpu = redis_proc.cpu_percent(None)
        rss_loaded = sum(p.memory_info().rss for p in procs)
        time.sleep(1.0)  # the last publications arrive
        stop.set()
        outcomes = [results.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join(timeout=30)
        slow = sum(slow_disconnects(url) for url in urls)
    finally:
        for process in broadcasters:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in broadcasters:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        redis_server.terminate()
        redis_server.wait(timeout=10)

    histogram = [sum(o["histogram"][i] for o in outcomes) for i in range(BUCKETS)]
    measured = sum(o["messages"] for o in outcomes)
    measured_clients = sum(o["measured_clients"] for o in outcomes)
    drained_clients = sum(o["drained_clients"] for o in outcomes)
    measured_bytes = sum(o["measured_bytes"] for o in outcomes)
    drained_bytes = sum(o["drained_bytes"] for o in outcomes)
    # Byte-counting clients are credited with the measured clients' messages per byte.
    drained_ratio = (
        (drained_bytes / drained_clients) / (measured_bytes / measured_clients)
        if drained_clients and measured_bytes
        else 1.0
    )
    delivered = round(
        measured / max(measured_clients, 1) * (measured_clients + drained_clients * drained_ratio)
    )
    closed: dict[str, int] = {}
    for outcome in outcomes:
        for code, count in outcome["closed"].items():
            closed[code] = closed.get(code, 0) + count
    expected = published["publications"] * args.clients
    report = {
        "clients": args.clients,
        "broadcasters": args.broadcasters,
        "trades_per_s": round(published["trades"] / published["seconds"], 1),
        "publications_per_s": round(published["publications"] / published["seconds"], 1),
        "measuring_clients": measured_clients,
        "messages_delivered_to_measuring_clients": measured,
        "byte_counting_clients_share_of_bytes": round(drained_ratio, 4),
        "messages_delivered": delivered,
        "messages_expected": expected,
        "delivered_per_s": round(delivered / published["seconds"]),
        "latency_ms": {  # measuring clients, publish to receive
            "p50": percentile(histogram, 0.50),
            "p99": percentile(histogram, 0.99),
            "max": percentile(histogram, 1.0),
        },
        "seq_gaps": sum(o["gaps"] for o in outcomes),
        "client_close_codes": closed,
        "slow_client_disconnects": slow,
        "broadcaster_cpu_percent": cpu,
        # CPU time the broadcasters spent per message delivered (less sensitive than latency
        # to other processes competing for the same cores).
        "broadcaster_cpu_us_per_message": round(
            sum(cpu) / 100 * published["seconds"] / max(delivered, 1) * 1e6, 2
        ),
        "client_procs_cpu_percent": client_cpu,
        "redis_cpu_percent": redis_cpu,
        "memory_per_connection_kib": round((rss_connected - rss_before) / args.clients / 1024, 1),
        "broadcaster_rss_mib": {
            "idle": round(rss_before / 2**20, 1),
            "connected": round(rss_connected / 2**20, 1),
            "under_load": round(rss_loaded / 2**20, 1),
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_1m": os.getloadavg()[0]},
        "seconds": round(published["seconds"], 1),
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
