"""Issue 15: alert rules in the style of the etcd and kubernetes mixins.

Aggregated per namespace (and cluster), summary/description/runbook_url
with one runbook anchor per alert, a severity and a `for:`; every alert has
a promtool case that fires and one that does not, and promtool passes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import missing

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
REQUIRED = {
    "ElectionMultipleLeaders",
    "ElectionNoLeader",
    "ElectionLeaseLow",
    "ElectionBackendDown",
    "ElectionKillFailed",
    "ElectionFlapping",
    "ElectionLeaderWithoutOrchestrator",
}


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_every_alert_has_the_mixin_fields_and_a_runbook_anchor() -> None:
    anchors = {
        re.sub(r"[^a-z0-9-]", "", h.strip().lower().replace(" ", "-"))
        for h in re.findall(r"^## (.+)$", RUNBOOK.read_text(), re.M)
    }
    names = {r["alert"] for r in rules()}
    assert names >= REQUIRED, REQUIRED - names
    for r in rules():
        ann = r["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(ann), r["alert"]
        assert r["labels"]["severity"] in ("critical", "warning", "info"), r["alert"]
        assert "for" in r, r["alert"]
        url = ann["runbook_url"]
        assert "/docs/runbook.md#" in url, url
        assert url.rsplit("#", 1)[1] == r["alert"].lower() and r["alert"].lower() in anchors, r["alert"]


def test_aggregations_keep_namespace_and_cluster() -> None:
    for r in rules():
        for grouping in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", r["expr"]):
            labels = {label.strip() for label in grouping.split(",")}
            if labels != {"le"} and "le" not in labels:
                assert {"namespace", "cluster"} <= labels, (r["alert"], grouping)
        assert not re.search(r"\b(sum|count|max|min|avg)\s*\(", r["expr"]), f"{r['alert']}: aggregation without by"


def test_lease_low_uses_renewal_lateness_and_kill_failed_the_gauge() -> None:
    by_name = {r["alert"]: r for r in rules()}
    assert "election_seconds_since_renewal" in by_name["ElectionLeaseLow"]["expr"]
    assert "election_renew_deadline_seconds" in by_name["ElectionLeaseLow"]["expr"]
    assert "election_kill_unconfirmed" in by_name["ElectionKillFailed"]["expr"]
    assert "election_orchestrator_up" in by_name["ElectionLeaderWithoutOrchestrator"]["expr"]


def test_every_alert_has_a_firing_and_a_quiet_promtool_case() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for t in yaml.safe_load(TESTS.read_text())["tests"]:
        for case in t.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {r["alert"] for r in rules()}
    assert names <= fires, names - fires
    assert names <= quiet, names - quiet


def test_promtool_passes() -> None:
    promtool = shutil.which("promtool")
    if not promtool:
        missing("promtool not found: apt-get install prometheus")
    assert promtool is not None
    check = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    res = subprocess.run(
        [promtool, "test", "rules", TESTS.name], cwd=TESTS.parent, capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("path", ["deploy/prometheus/alerts.yml", "helm/election-sidecar/files/alerts.yml"])
def test_chart_copy_is_the_same(path: str) -> None:
    assert (ROOT / path).read_bytes() == ALERTS.read_bytes()
