"""deploy/monitoring: the alert rules and the Grafana dashboard are well formed and name only
metrics the running processes export (gateway, broadcaster, deploy/monitoring/exporter.py),
and the exporter reports the figures an operator pages on from a real exchange: the backlog
while the matcher is down, settlement lag back to 0, a lease change after a matcher SIGKILL,
Redis memory, and the auditor's difference 0."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support.exchange import REPO_ROOT, Exchange
from support.redis_server import RedisServer, free_port, wait_for
from support.signing import Trader

pytestmark = pytest.mark.integration

MONITORING = REPO_ROOT / "deploy" / "monitoring"
RULES = MONITORING / "prometheus-rules.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
SPOT = "BTC-USDC"
# The figures an on-call operator pages on, each by the metric that carries it.
PAGED_ON = {
    "backlog": "dex_market_backlog",
    "settlement lag": "dex_market_settlement_lag_events",
    "matcher lease changes": "dex_matcher_lease_changes_total",
    "5xx": "dex_gateway_requests_total",
    "memory high-water": "dex_redis_memory_used_bytes",
    "auditor difference": "dex_audit_difference",
}
METRIC = re.compile(r"\b(dex_[a-z0-9_]+)")
DURATION = re.compile(r"\d+[smhd]")


@pytest.fixture(scope="module")
def exchange(redis_server: RedisServer) -> Iterator[Exchange]:
    redis_server.flushall()
    # beat too: its sweep settles what a SIGKILLed matcher's settle trigger left behind, as in
    # production (the test kills the matcher)
    with Exchange(redis_server.url, DEX_MATCHER_LEASE_MS="2000") as running:
        running.start("gateway", "matcher", "settler", "beat", "broadcaster")
        yield running


@pytest.fixture(scope="module")
def exporter(exchange: Exchange) -> Iterator[str]:
    port = free_port()
    env = {
        **exchange.env,
        "DEX_EXPORTER_PORT": str(port),
        "DEX_EXPORTER_GATEWAY_URL": exchange.http,
        "DEX_EXPORTER_AUDIT_INTERVAL_S": "0.5",
    }
    log = open(exchange.workdir / "exporter.log", "ab")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, str(MONITORING / "exporter.py")],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        assert wait_for(lambda: _answers(url), 30), exchange.log("exporter")
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics answer: (name, sorted labels) -> value."""
    text = httpx.get(url, timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def rule_list() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in board["panels"] for t in panel["targets"]]


def test_the_rules_and_the_dashboard_are_well_formed() -> None:
    document = yaml.safe_load(RULES.read_text())
    groups = document["groups"]
    assert len({g["name"] for g in groups}) == len(groups)
    rules = rule_list()
    assert len({r["alert"] for r in rules}) == len(rules)
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("warning", "critical"), rule
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule
        assert DURATION.fullmatch(rule.get("for", "0s")), rule
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule
    exprs = " ".join(r["expr"] for r in rules)
    for figure, metric in PAGED_ON.items():
        assert metric in exprs, f"no alert on the {figure} ({metric})"

    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 30
    ids = [panel["id"] for panel in board["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in board["panels"]:
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"} and panel["targets"], panel
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target
    boards = " ".join(dashboard_exprs())
    for figure, metric in PAGED_ON.items():
        assert metric in boards, f"no panel shows the {figure} ({metric})"

    promtool = shutil.which("promtool")
    if promtool:  # Debian's prometheus package; a structural check otherwise
        subprocess.run([promtool, "check", "rules", str(RULES)], check=True)


def test_every_metric_named_is_exported_and_the_exporter_reports_the_exchange(
    exchange: Exchange, exporter: str
) -> None:
    maker, taker = Trader(), Trader()
    exchange.deposit(maker.address, "BTC", 50_000_000)
    exchange.deposit(taker.address, "USDC", 10_000_000_000)
    with exchange.client() as http:
        assert (
            http.post(
                "/v1/orders?wait=1", json=maker.order(SPOT, "SELL", 3_000_000, 1_000)
            ).status_code
            == 200
        )
        assert (
            http.post(
                "/v1/orders?wait=1", json=taker.order(SPOT, "BUY", 3_000_000, 1_000)
            ).status_code
            == 200
        )
        http.get("/v1/markets/NO-SUCH")  # a 404, so a status other than 200 is exported too

    # The matcher dies: orders wait on the stream (the backlog), then a new matcher takes the
    # lease (a lease change) and matches them.
    lease_before = value(scrape(exporter), "dex_matcher_lease_held", market=SPOT)
    assert lease_before == 1
    exchange.kill("matcher", signal.SIGKILL)
    with exchange.client() as http:
        answer = http.post("/v1/orders", json=maker.order(SPOT, "SELL", 3_000_100, 1_000))
        assert answer.status_code == 202, answer.text
    assert wait_for(lambda: value(scrape(exporter), "dex_market_backlog", market=SPOT) == 1, 10)
    assert wait_for(lambda: value(scrape(exporter), "dex_matcher_lease_held", market=SPOT) == 0, 10)
    exchange.start("matcher")

    def settled() -> bool:
        samples = scrape(exporter)
        return (
            value(samples, "dex_market_backlog", market=SPOT) == 0
            and value(samples, "dex_market_settlement_lag_events", market=SPOT) == 0
            and value(samples, "dex_matcher_lease_held", market=SPOT) == 1
            # one change at least: a loaded machine may let a lease lapse and be taken again
            and (value(samples, "dex_matcher_lease_changes_total", market=SPOT) or 0) >= 1
        )

    assert wait_for(settled, 30), [s for s in scrape(exporter).items() if SPOT in str(s[0])]
    assert wait_for(
        lambda: (
            all(v == 0 for (n, _), v in scrape(exporter).items() if n == "dex_audit_difference")
            and value(scrape(exporter), "dex_audit_invariant_ok", invariant="conservation") == 1
        ),
        30,
    )
    samples = scrape(exporter)
    assert {labels for (n, labels) in samples if n == "dex_audit_difference"} >= {
        (("asset", "BTC"),),
        (("asset", "USDC"),),
    }
    assert value(samples, "dex_redis_memory_used_bytes", node="redis") > 0
    assert value(samples, "dex_exporter_redis_up") == 1
    assert value(samples, "dex_audit_failures_total") == 0

    exported = set()
    for url in (f"{exchange.http}/metrics", exporter,
                f"http://127.0.0.1:{exchange.broadcaster_port}/metrics"):  # fmt: skip
        exported |= {name for name, _ in scrape(url)}
    named = {
        m
        for expr in [r["expr"] for r in rule_list()] + dashboard_exprs()
        for m in METRIC.findall(expr)
    }
    assert named - exported == set(), f"named but not exported: {sorted(named - exported)}"
