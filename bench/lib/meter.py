"""CPU and memory of the exchange's processes, and Redis's own CPU and command time."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import psutil
import redis

# A process belongs to the name whose marker is in its command line (the settler and beat are
# the Celery ones).
PROCESS_MARKERS = {
    "periodic": "periodic@",  # the Procfile's worker of the periodic jobs (before "worker")
    "gateway": "services.gateway",
    "matcher": "services.matcher",
    "settler": "worker",
    "beat": "beat",
    "broadcaster": "services.broadcaster",
}


class ProcessMeter:
    """CPU seconds and peak RSS of each exchange process, and Redis's own CPU.

    With ``root_pid`` (the system this benchmark started) only that process tree is measured,
    so other exchanges running on the machine do not count. A process that exits keeps the
    CPU time it was last seen with.
    """

    def __init__(self, client: redis.Redis, root_pid: int | None = None) -> None:
        self.client = client
        self.processes: dict[str, list[psutil.Process]] = {}
        self.last_cpu: dict[int, float] = {}
        candidates = (
            psutil.Process(root_pid).children(recursive=True)
            if root_pid is not None
            else list(psutil.process_iter())
        )
        for process in candidates:
            try:
                cmdline, process_name = " ".join(process.cmdline()), process.name()
            except psutil.Error:
                continue
            if "redis-server" in process_name:
                continue
            for name, marker in PROCESS_MARKERS.items():
                celery = name in ("settler", "beat", "periodic")
                if marker in cmdline and ("celery" in cmdline) == celery:
                    group = self.processes.setdefault(name, [])
                    for member in [process, *process.children(recursive=True)]:
                        if all(member.pid != known.pid for known in group):
                            group.append(member)
                    break
        self.cpu0 = self._cpu()
        self.redis0 = self._redis_cpu()
        self.commands0 = self._redis_commands()
        self.wall0 = time.perf_counter()
        self.rss_peak: dict[str, int] = {}

    def _cpu(self) -> dict[str, float]:
        totals = {}
        for name, group in self.processes.items():
            total = 0.0
            for process in group:
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    self.last_cpu[process.pid] = times.user + times.system
                total += self.last_cpu.get(process.pid, 0.0)
            totals[name] = total
        return totals

    def _redis_cpu(self) -> float:
        info = self.client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def _redis_commands(self) -> dict[str, tuple[int, int]]:
        """Calls and microseconds per command; a script's commands count in both the script's
        line and their own."""
        return {
            name: (int(stats["calls"]), int(stats["usec"]))
            for name, stats in self.client.info("commandstats").items()
        }

    def redis_commands(self, orders: int) -> list[dict[str, Any]]:
        """The commands that took most of Redis's time since the start, per accepted order."""
        rows: list[dict[str, Any]] = []
        for name, (calls, usec) in self._redis_commands().items():
            calls0, usec0 = self.commands0.get(name, (0, 0))
            if calls > calls0:
                rows.append(
                    {
                        "command": name.removeprefix("cmdstat_"),
                        "calls_per_order": round((calls - calls0) / max(orders, 1), 3),
                        "usec_per_call": round((usec - usec0) / (calls - calls0), 1),
                        "usec_per_order": round((usec - usec0) / max(orders, 1), 1),
                    }
                )
        return sorted(rows, key=lambda row: -row["usec_per_order"])[:12]

    def sample_memory(self) -> None:
        """Record each process group's RSS if it is the highest seen."""
        for name, group in self.processes.items():
            rss = 0
            for process in group:
                with contextlib.suppress(psutil.Error):
                    rss += process.memory_info().rss
            self.rss_peak[name] = max(self.rss_peak.get(name, 0), rss)

    def report(self) -> dict[str, Any]:
        """CPU percent and peak RSS per process group since the start, and Redis's."""
        wall = time.perf_counter() - self.wall0
        cpu1 = self._cpu()
        result: dict[str, Any] = {
            name: {
                "cpu_percent": round(100 * (cpu1[name] - self.cpu0.get(name, 0)) / wall, 1),
                "cpu_s": round(cpu1[name] - self.cpu0.get(name, 0), 3),
                "rss_mb_peak": round(self.rss_peak.get(name, 0) / 2**20, 1),
            }
            for name in cpu1
        }
        redis_cpu = self._redis_cpu() - self.redis0
        result["redis"] = {
            "cpu_percent": round(100 * redis_cpu / wall, 1),
            "cpu_s": round(redis_cpu, 3),
            "used_memory_mb": round(self.client.info("memory")["used_memory"] / 2**20, 1),
        }
        return result
