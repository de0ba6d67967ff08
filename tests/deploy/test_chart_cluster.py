"""Issue 15: the chart as operators run it on a real cluster.

Rendered by Helm's own library: service links off, `status` in the pod
needs no flags (its exact environment is loaded by the real CLI), usable as
a subchart, DNS-1123 names whatever the release and election are called,
the workload knobs every chart has, a graceful rollout.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_deploy import CHART, ENDPOINTS, SECRET_VALUES, container_env, helm, render, validate_k8s

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    return dep


def pod_of(values: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment(render(values))["spec"]["template"]["spec"]
    return spec


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    c: dict[str, Any] = next(c for c in [*pod.get("initContainers", []), *pod["containers"]] if c["name"] == name)
    return c


def notes(values: dict[str, Any], name: str = "rel") -> str:
    out = helm().Chart.load(str(CHART)).render(values, name=name, namespace="orders")
    return str(next(text for path, text in out.items() if path.endswith("NOTES.txt")))


# -- service links ---------------------------------------------------------------


def test_service_links_are_off_in_the_pod() -> None:
    assert pod_of(ENDPOINTS)["enableServiceLinks"] is False


# -- `kubectl exec ... -- election-sidecar status`, with no flags ------------------

STATUS_SCENARIOS: dict[str, dict[str, Any]] = {
    "endpoints-from-secret": {"election": {"endpointsSecret": {"name": "etcd-client", "key": "endpoints"}}},
    "etcd-tls": {
        "election": {"endpoints": ["https://etcd-0.etcd:2379"]},
        "etcd": {"tls": {"enabled": True, "secretName": "etcd-client-tls"}},
    },
    "etcd-auth": {**ENDPOINTS, "etcd": {"auth": {"existingSecret": "etcd-user"}}},
    "zookeeper-chroot": {
        "election": {"backend": "zookeeper", "endpoints": ["zk-0.zk:2181"], "ttl": 12, "name": "orders"},
        "zookeeper": {"chroot": "/apps/prod", "authSecret": {"name": "zk-digest"}},
    },
}


@pytest.mark.parametrize("scenario", sorted(STATUS_SCENARIOS))
def test_notes_status_command_runs_with_the_pod_environment(scenario: str, tmp_path: Path) -> None:
    values = STATUS_SCENARIOS[scenario]
    text = notes(values)
    assert re.search(r"kubectl exec \S+ -n orders -c election-sidecar -- election-sidecar status\n", text), text
    sc = container(pod_of(values), "election-sidecar")
    assert sc["args"] == ["run"], "settings travel as environment variables, so every command in the pod sees them"
    env = container_env(sc, tmp_path)
    # The exact command of NOTES.txt, its config loading only (no store here).
    probe = (
        "import json; from sidecar.cli import status, load_config;"
        "ctx = status.make_context('status', []); cfg = load_config(ctx.params);"
        "print(json.dumps({k: getattr(cfg, k) for k in ('backend', 'endpoints', 'election', 'zk_chroot',"
        " 'ca_file', 'cert_file', 'zk_auth_file', 'etcd_user', 'etcd_password_file')}))"
    )
    res = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    cfg = json.loads(res.stdout)
    assert cfg["election"] == values["election"].get("name", "orders")
    assert cfg["backend"] == values["election"].get("backend", "etcd")
    if scenario == "endpoints-from-secret":
        assert cfg["endpoints"] == SECRET_VALUES[("etcd-client", "endpoints")].split(",")
    if scenario == "etcd-tls":
        assert cfg["ca_file"] and cfg["cert_file"]
    if scenario == "etcd-auth":
        assert cfg["etcd_user"] == "secret-value" and cfg["etcd_password_file"]
    if scenario == "zookeeper-chroot":
        assert cfg["zk_chroot"] == "/apps/prod" and cfg["zk_auth_file"]
    # And `run` in the same pod accepts the same environment.
    ok = subprocess.run(
        [sys.executable, "-m", "sidecar", "check-config"],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr


# -- a subchart --------------------------------------------------------------------

PARENT_TEMPLATE = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-own
spec:
  selector:
    matchLabels: {app: own}
  template:
    metadata:
      labels: {app: own}
    spec:
      initContainers:
        {{- include "election-sidecar.sidecarContainer" . | nindent 8 }}
      containers:
        - name: own
          image: example/own:1
          volumeMounts:
            - name: election-socket
              mountPath: /run/election
      volumes:
        {{- include "election-sidecar.volumes" . | nindent 8 }}
"""


def test_usable_as_a_subchart_with_global_values(tmp_path: Path) -> None:
    parent = tmp_path / "parent"
    (parent / "templates").mkdir(parents=True)
    shutil.copytree(CHART, parent / "charts" / "election-sidecar")
    (parent / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "parent",
                "version": "1.0.0",
                "dependencies": [{"name": "election-sidecar", "version": "0.1.0"}],
            }
        )
    )
    (parent / "values.yaml").write_text("own: {replicas: 1}\n")
    (parent / "templates" / "own.yaml").write_text(PARENT_TEMPLATE)
    values = {
        "global": {"imageRegistry": "registry.example"},
        "election-sidecar": {"election": {"name": "parent-election", "endpoints": ["etcd:2379"]}},
    }
    out = helm().Chart.load(str(parent)).render(values, name="rel", namespace="orders")
    docs = [d for path, text in sorted(out.items()) if not path.endswith("NOTES.txt") for d in yaml.safe_load_all(text)]
    docs = [d for d in docs if d]
    own = next(d for d in docs if d["metadata"]["name"] == "rel-own")
    sc = container(own["spec"]["template"]["spec"], "election-sidecar")
    env = {e["name"]: e.get("value") for e in sc["env"]}
    # The helper read the subchart's values, not the parent's (which have no "election").
    assert env["ELECTION_SIDECAR_ELECTION"] == "parent-election"
    assert env["ELECTION_SIDECAR_ENDPOINTS"] == "etcd:2379"
    for d in docs:
        if d["kind"] not in ("ServiceMonitor", "PrometheusRule"):
            validate_k8s(d)


# -- names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("release", "values"),
    [
        ("r" * 53, {"election": {**ENDPOINTS["election"], "name": "Orders/EU_West.primary-" + "x" * 60}}),
        ("rel", {"election": {**ENDPOINTS["election"], "name": "_A.B/C_"}}),
        ("9lives", {**ENDPOINTS, "fullnameOverride": "orders"}),
    ],
)
def test_object_names_are_dns_labels_whatever_the_inputs(release: str, values: dict[str, Any]) -> None:
    chart = helm().Chart.load(str(CHART))
    out = chart.render(values, name=release, namespace="orders")
    docs = [d for p, t in sorted(out.items()) if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(t) if d]
    for d in docs:
        name = d["metadata"]["name"]
        assert len(name) <= 63 and DNS1123_LABEL.match(name), name
        if d["kind"] == "Service":
            assert DNS1035_LABEL.match(name), name
            assert name.endswith("-metrics"), name  # the suffix survives truncation


@pytest.mark.parametrize("override", ["Orders", "a_b", "a.b", "x" * 64, "-x"])
def test_schema_refuses_names_that_are_not_dns_labels(override: str) -> None:
    with pytest.raises(helm().HelmError):
        render({**ENDPOINTS, "fullnameOverride": override})


# -- workload knobs -------------------------------------------------------------------

EVERYTHING: dict[str, Any] = {
    **ENDPOINTS,
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "orchestrators", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "Exists"}]}]
            }
        }
    },
    "imagePullSecrets": [{"name": "regcred"}],
    "podAnnotations": {"example.com/owner": "orders"},
    "podLabels": {"team": "orders"},
    "priorityClassName": "orchestrators",
    "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1},
    "etcd": {"auth": {"existingSecret": "etcd-user", "usernameKey": "user", "passwordKey": "pw"}},
    "orchestrator": {
        "env": [{"name": "LOG_LEVEL", "value": "debug"}],
        "envFrom": [{"configMapRef": {"name": "orders-config"}}],
        "ports": [{"name": "api", "containerPort": 8080}],
        "livenessProbe": {"httpGet": {"path": "/live", "port": "api"}},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "api"}},
        "startupProbe": {"httpGet": {"path": "/live", "port": "api"}, "failureThreshold": 30},
        "extraVolumes": [{"name": "data", "emptyDir": {}}],
        "extraVolumeMounts": [{"name": "data", "mountPath": "/data"}],
        "shutdownSeconds": 40,
    },
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
}


def test_every_workload_option_reaches_the_objects() -> None:
    report = helm().lint(str(CHART), EVERYTHING, strict=True)
    assert not report["errors"], report
    docs = render(EVERYTHING)
    for d in docs:
        if d["kind"] not in ("ServiceMonitor", "PrometheusRule"):
            validate_k8s(d)
    dep = deployment(docs)
    pod = dep["spec"]["template"]["spec"]
    meta = dep["spec"]["template"]["metadata"]
    assert pod["nodeSelector"] == EVERYTHING["nodeSelector"]
    assert pod["tolerations"] == EVERYTHING["tolerations"]
    assert pod["affinity"] == EVERYTHING["affinity"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["priorityClassName"] == "orchestrators"
    assert meta["annotations"]["example.com/owner"] == "orders" and meta["labels"]["team"] == "orders"
    orch = container(pod, "orchestrator")
    for key in ("env", "envFrom", "ports", "livenessProbe", "readinessProbe", "startupProbe"):
        got = orch[key]
        for item in EVERYTHING["orchestrator"][key] if isinstance(got, list) else [EVERYTHING["orchestrator"][key]]:
            assert item in got if isinstance(got, list) else item == got, key
    assert {"name": "data", "mountPath": "/data"} in orch["volumeMounts"]
    assert {"name": "data", "emptyDir": {}} in pod["volumes"]
    sc = container(pod, "election-sidecar")
    env = {e["name"]: e for e in sc["env"]}
    assert env["ELECTION_SIDECAR_ETCD_USER"]["valueFrom"]["secretKeyRef"] == {"name": "etcd-user", "key": "user"}
    pw_file = env["ELECTION_SIDECAR_ETCD_PASSWORD_FILE"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in sc["volumeMounts"]}
    vol = next(v for v in pod["volumes"] if v["name"] == mounts[str(Path(pw_file).parent)])
    assert vol["secret"]["secretName"] == "etcd-user" and vol["secret"]["items"][0]["key"] == "pw"
    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= meta["labels"].items()
    for kind in ("ServiceMonitor", "PrometheusRule"):
        obj = next(d for d in docs if d["kind"] == kind)
        assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack", kind
    # The grace period covers the orchestrator's own shutdown plus the sidecar's hand-over.
    assert pod["terminationGracePeriodSeconds"] >= 40 + 2


def test_default_pod_spreads_rolls_over_gracefully_and_probes_right() -> None:
    docs = render(ENDPOINTS)
    pod = deployment(docs)["spec"]["template"]["spec"]
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"].items() <= deployment(docs)["spec"]["selector"]["matchLabels"].items()
    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    sc = container(pod, "election-sidecar")
    env = {e["name"]: e.get("value") for e in sc["env"]}
    kill_grace = float(env["ELECTION_SIDECAR_KILL_GRACE"])
    # Long enough for the orchestrator to stop, then the sidecar to demote (SIGTERM..SIGKILL) and resign.
    assert pod["terminationGracePeriodSeconds"] >= math.ceil(kill_grace) + 30
    assert sc["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert sc["readinessProbe"]["httpGet"]["path"] == "/readyz"
    orch = container(pod, "orchestrator")
    tmp = next(m for m in orch["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert tmp["name"] != next(m["name"] for m in sc["volumeMounts"] if m["mountPath"] == "/tmp")
    # Leader routing for a Service or an LB health check.
    assert "/leader/ready" in notes(ENDPOINTS)
