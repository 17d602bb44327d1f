"""The exchange's state as Prometheus metrics: what an operator pages on and no process exports.

The gateway and the broadcaster export their own traffic (``/metrics``: requests by status,
orders by outcome, connections). What lives in Redis is read here, fresh at each scrape, by one
small process (run one per exchange; it only reads):

    dex_market_backlog{market}                 entries of the market stream not yet matched
                                               (the matcher group's lag + pending, as the
                                               gateway counts it against DEX_MAX_BACKLOG)
    dex_market_settlement_lag_events{market}   settlement events (fills, order ends) after the
                                               settled mark, counted up to 10,000
    dex_market_settlement_lag_seconds{market}  age of the oldest of them (0: none waits)
    dex_matcher_lease_held{market}             1 while a matcher holds the market's lease
    dex_matcher_lease_changes_total{market}    lease holders seen to change (a matcher died,
                                               restarted or was rescheduled)
    dex_redis_memory_used_bytes{node}          INFO memory used_memory, per Redis node
    dex_redis_memory_max_bytes{node}           maxmemory (0 = none); the gateway refuses
                                               writes past DEX_MEMORY_HIGH_WATER_PCT of it
    dex_audit_difference{asset}                the auditor's difference (must be 0), atomic
                                               units, from GET /v1/admin/audit
    dex_audit_invariant_ok{invariant}          1 when the auditor found the invariant holding
    dex_audit_last_success_timestamp_seconds   when the audit last answered
    dex_audit_failures_total                   audits that did not answer
    dex_exporter_redis_up                      1 when this scrape could read Redis

The audit reads every account, so it runs every ``DEX_EXPORTER_AUDIT_INTERVAL_S`` (default 60)
in the background, not per scrape. Configuration: the exchange's ``DEX_*`` variables
(``DEX_REDIS_URL``, ``DEX_REDIS_CLUSTER``, ``DEX_MARKETS_FILE``, ``DEX_ADMIN_TOKEN``) plus
``DEX_EXPORTER_PORT`` (default 9108), ``DEX_EXPORTER_HOST`` (default 127.0.0.1) and
``DEX_EXPORTER_GATEWAY_URL`` (default http://127.0.0.1:8000).

    python deploy/monitoring/exporter.py
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis.exceptions import RedisError, ResponseError

from common import keys
from common.markets import load_markets
from common.redis_client import connect
from common.settings import get_settings

log = logging.getLogger("dex.exporter")

UNSETTLED_CAP = 10_000  # counted per market and scrape at most: a figure past it means "many"


class Audit:
    """The auditor's last report, refreshed in a background thread."""

    def __init__(self, gateway_url: str, token: str | None, interval_s: float) -> None:
        self.gateway_url, self.token, self.interval_s = gateway_url, token, interval_s
        self.report: dict[str, Any] | None = None
        self.last_success = 0.0
        self.failures = 0
        self._stop = threading.Event()

    def run_once(self) -> None:
        try:
            response = httpx.get(
                f"{self.gateway_url}/v1/admin/audit",
                headers={"Authorization": f"Bearer {self.token or ''}"},
                timeout=max(10.0, self.interval_s),
            )
            response.raise_for_status()
            self.report, self.last_success = response.json(), time.time()
        except (httpx.HTTPError, ValueError) as exc:
            self.failures += 1
            log.warning("audit: GET /v1/admin/audit failed: %s", exc)

    def loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval_s)

    def families(self) -> Iterator[Metric]:
        failures = CounterMetricFamily(
            "dex_audit_failures", "Audits (GET /v1/admin/audit) that did not answer"
        )
        failures.add_metric([], self.failures)
        yield failures
        if self.report is None:
            return
        difference = GaugeMetricFamily(
            "dex_audit_difference",
            "The auditor's conservation difference per asset, atomic units (must be 0)",
            labels=["asset"],
        )
        for asset, row in sorted(self.report.get("assets", {}).items()):
            difference.add_metric([asset], int(row.get("difference", 0)))
        yield difference
        invariant = GaugeMetricFamily(
            "dex_audit_invariant_ok",
            "1 when the auditor found the invariant (DESIGN.md) holding",
            labels=["invariant"],
        )
        for name, check in sorted(self.report.get("invariants", {}).items()):
            invariant.add_metric([name], 1 if check.get("ok") else 0)
        yield invariant
        yield GaugeMetricFamily(
            "dex_audit_last_success_timestamp_seconds",
            "When the audit last answered (Unix time)",
            value=self.last_success,
        )


class ExchangeCollector:
    """Reads the markets' streams, settlement watermarks, leases and Redis memory per scrape."""

    def __init__(self, client: Any, markets: list[str], audit: Audit | None) -> None:
        self.client, self.markets, self.audit = client, markets, audit
        self._leases: dict[str, str | None] = {}
        self._lease_changes = dict.fromkeys(markets, 0)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("dex_exporter_redis_up", "1 when this scrape could read Redis")
        try:
            families = list(self._redis_families())
        except RedisError as exc:
            log.warning("exporter: Redis did not answer: %s", exc)
            up.add_metric([], 0)
            families = []
        else:
            up.add_metric([], 1)
        yield up
        yield from families
        if self.audit is not None:
            yield from self.audit.families()

    def _backlog(self, market: str) -> int:
        stream = keys.market_in(market)
        try:
            groups = self.client.xinfo_groups(stream)
        except ResponseError:  # no stream yet: nothing waits
            return 0
        matcher = [g for g in groups if g.get("name") == keys.MATCHER_GROUP]
        if matcher and matcher[0].get("lag") is not None:
            return int(matcher[0]["lag"]) + int(matcher[0].get("pending") or 0)
        return int(self.client.xlen(stream))

    def _unsettled(self, market: str) -> tuple[int, int | None]:
        """Events after the market's settled mark (``dex:{m}:settled``, an entry id of
        ``dex:{m}:events``), counted up to ``UNSETTLED_CAP``, and the oldest one's time (ms)."""
        settled = self.client.get(keys.market_settled(market))
        start = f"({settled}" if settled else "-"
        waiting = self.client.xrange(keys.market_events(market), start, "+", count=UNSETTLED_CAP)
        if not waiting:
            return 0, None
        return len(waiting), int(str(waiting[0][0]).split("-")[0])

    def _redis_families(self) -> Iterator[Metric]:
        backlog = GaugeMetricFamily(
            "dex_market_backlog", "Entries of the market stream not yet matched", labels=["market"]
        )
        lag = GaugeMetricFamily(
            "dex_market_settlement_lag_events",
            "Settlement events the matcher wrote that the settler has not settled yet",
            labels=["market"],
        )
        age = GaugeMetricFamily(
            "dex_market_settlement_lag_seconds",
            "Age of the oldest settlement event not yet settled (0 when none waits)",
            labels=["market"],
        )
        now = time.time()
        held = GaugeMetricFamily(
            "dex_matcher_lease_held",
            "1 while a matcher holds the market's lease",
            labels=["market"],
        )
        changes = CounterMetricFamily(
            "dex_matcher_lease_changes",
            "Changes of the market's lease holder seen by this exporter",
            labels=["market"],
        )
        for market in self.markets:
            backlog.add_metric([market], self._backlog(market))
            count, oldest_ms = self._unsettled(market)
            lag.add_metric([market], count)
            age.add_metric([market], 0 if oldest_ms is None else max(0.0, now - oldest_ms / 1000))
            token = self.client.get(keys.market_lease(market))
            before = self._leases.get(market)
            if token is not None and before is not None and token != before:
                self._lease_changes[market] += 1
            if token is not None:
                self._leases[market] = token
            held.add_metric([market], 0 if token is None else 1)
            changes.add_metric([market], self._lease_changes[market])
        yield from (backlog, lag, age, held, changes)
        used = GaugeMetricFamily(
            "dex_redis_memory_used_bytes", "Redis used_memory", labels=["node"]
        )
        limit = GaugeMetricFamily(
            "dex_redis_memory_max_bytes", "Redis maxmemory (0 = no limit)", labels=["node"]
        )
        info = self.client.info("memory")
        nodes = info.items() if info and "used_memory" not in info else [("redis", info)]
        for node, memory in nodes:
            if isinstance(memory, dict):
                used.add_metric([str(node)], int(memory.get("used_memory", 0)))
                limit.add_metric([str(node)], int(memory.get("maxmemory", 0)))
        yield from (used, limit)


def main() -> None:
    logging.basicConfig(level=os.environ.get("DEX_LOG_LEVEL", "INFO"))
    settings = get_settings()
    markets = sorted(load_markets(settings.markets_file).markets)
    token = settings.admin_token.get_secret_value().strip() if settings.admin_token else None
    audit = Audit(
        os.environ.get("DEX_EXPORTER_GATEWAY_URL", "http://127.0.0.1:8000").rstrip("/"),
        token,
        float(os.environ.get("DEX_EXPORTER_AUDIT_INTERVAL_S", "60")),
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExchangeCollector(connect(settings), markets, audit if token else None))
    port = int(os.environ.get("DEX_EXPORTER_PORT", "9108"))
    start_http_server(port, os.environ.get("DEX_EXPORTER_HOST", "127.0.0.1"), registry=registry)
    log.info(
        "exporter: serving http://%s:%d/metrics",
        os.environ.get("DEX_EXPORTER_HOST", "127.0.0.1"),
        port,
    )
    if token is None:
        log.warning("exporter: DEX_ADMIN_TOKEN unset: no audit metrics")
        threading.Event().wait()
    audit.loop()


if __name__ == "__main__":
    main()
