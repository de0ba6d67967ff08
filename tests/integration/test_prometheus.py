"""A real Prometheus scrapes three real sidecars on real etcd.

After a failover exactly one sidecar reports is_leader, and it is the new
one; every PromQL expression of the dashboard (panels, annotations and the
variables' label_values) and of the alert rules runs against that
Prometheus without error, with the template variables substituted as
Grafana would (every panel also returns data); promtool checks and
unit-tests the alert rules. The dashboard's static conventions are checked
in tests/deploy/test_dashboard.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.fencing.oneshot import request
from sidecar_harness.localstore import free_ports
from tests.conftest import missing
from tests.helpers import wait_until
from tests.integration.conftest import Fleet

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "election.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"


def tool(name: str) -> str:
    path = os.environ.get(f"ELECTION_SIDECAR_{name.upper()}_BIN") or shutil.which(name)
    if not path:
        missing(f"{name} not found: apt-get install prometheus")
    assert path is not None
    return path


class Prometheus:
    def __init__(self, workdir: Path, targets: list[str]) -> None:
        self.port = free_ports(1)[0]
        self.workdir = workdir
        cfg = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": "election-sidecar", "static_configs": [{"targets": targets}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        self.log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self.ready, 30, what="prometheus ready")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


@pytest.fixture
def prometheus_for(workdir: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(targets: list[str]) -> Prometheus:
        p = Prometheus(workdir, targets)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def substitute(expr: str, election: str) -> str:
    """What Grafana sends with cluster and namespace at "All" (their allValue,
    .*, which also matches these sidecars' series that carry neither label)
    and the test's election picked; $__rate_interval as Grafana would compute
    it for a 1 s scrape (at least four scrapes), rounded up."""
    values = {"$__rate_interval": "1m", "$cluster": ".*", "$namespace": ".*", "$election": election}
    for name, value in values.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a template variable the test does not know: {expr}"
    return expr


def dashboard_exprs(election: str) -> list[tuple[str, str]]:
    """Every panel target (rows have none) as the panel's title and its PromQL."""
    dash = json.loads(DASHBOARD.read_text())
    return [
        (f"{p['title']} {t['refId']}", substitute(t["expr"], election))
        for p in dash["panels"]
        for t in p.get("targets", [])
    ]


def dashboard_annotations(election: str) -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(a["name"], substitute(a["expr"], election)) for a in dash["annotations"]["list"] if "expr" in a]


def dashboard_variables(election: str) -> list[tuple[str, str, str]]:
    """label_values(SELECTOR, LABEL) of each query variable, as the PromQL
    Grafana's series lookup amounts to: `group by (LABEL) (SELECTOR)`."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            found = re.fullmatch(r"label_values\((.+), (\w+)\)", v["query"]["query"])
            assert found, v["query"]
            out.append((v["name"], found[2], substitute(f"group by ({found[2]}) ({found[1]})", election)))
    return out


def alert_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


def test_failover_is_seen_by_prometheus_and_every_query_runs(fleet: Fleet, prometheus_for: Any, measure: Any) -> None:
    sidecars = fleet.start(3, toy_flags=(), http=True)
    prom = prometheus_for([f"127.0.0.1:{s.http_port}" for s in sidecars])
    sel = f'{{election="{fleet.election}"}}'
    old, _ = fleet.wait_one_leader()

    def sole_leader(expected: str) -> bool:
        total = prom.query(f"sum(election_is_leader{sel})")
        who = prom.query(f"election_is_leader{sel} == 1")
        return (
            bool(total) and float(total[0]["value"][1]) == 1 and [r["metric"]["candidate"] for r in who] == [expected]
        )

    wait_until(lambda: sole_leader(old.candidate), 30, what="prometheus to see the first leader")
    old.signal(signal.SIGKILL)
    new, _ = fleet.wait_one_leader(timeout=10, unlike=old.candidate)
    t = time.monotonic()
    wait_until(lambda: sole_leader(new.candidate), 30, what="prometheus to see exactly the new leader")
    measure("prometheus shows the new sole leader after the store did", f"{time.monotonic() - t:.1f} s")
    # A resign makes transitions and kills to plot.
    request(str(new.socket_path), {"type": "resign"})
    third, _ = fleet.wait_one_leader(timeout=10, unlike=new.candidate)
    wait_until(lambda: sole_leader(third.candidate), 30, what="prometheus to see the third leader")
    kills = f'election_orchestrator_kills_total{{election="{fleet.election}",signal="SIGTERM"}} > 0'
    wait_until(lambda: bool(prom.query(kills)), 30, what="the SIGTERM of the resign to be scraped")

    empty = []
    for title, expr in dashboard_exprs(fleet.election):
        series = prom.query(expr)
        measure(f"PromQL panel '{title}'", f"{len(series)} series")
        if not series:
            empty.append(title)
    assert not empty, f"dashboard panels without data: {empty}"
    for name, expr in dashboard_annotations(fleet.election):
        marks = prom.query(expr)  # leader changes may be older than the window by now
        measure(f"PromQL annotation '{name}'", f"evaluates, {len(marks)} series now")
    for name, label, expr in dashboard_variables(fleet.election):
        options = prom.query(expr)
        measure(f"PromQL variable ${name}", f"{len(options)} value(s)")
        # Local sidecars carry no cluster or namespace label: one empty value, which "All" (.*) matches.
        assert options, f"variable ${name} would offer nothing"
        if name == "election":
            assert fleet.election in [o["metric"].get(label) for o in options]
    for name, expr in alert_exprs():
        firing = prom.query(expr)  # must evaluate; most are (rightly) empty on a healthy election
        measure(f"PromQL alert {name}", f"evaluates, {len(firing)} series now")
    rules = prom.api("rules")
    health = {r["name"]: r["health"] for g in rules["groups"] for r in g["rules"]}
    assert health and all(h == "ok" for h in health.values()), health


def test_promtool_checks_and_unit_tests_the_alert_rules() -> None:
    promtool = tool("promtool")
    check = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yml"], cwd=ALERTS.parent, capture_output=True, text=True, check=False
    )
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr
