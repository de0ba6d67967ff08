"""The Grafana dashboard is generated (deploy/grafana/dashboard.py), never hand-edited.

These checks need no Grafana and no Prometheus: the committed JSON is what
the generator writes, and it follows the conventions operators expect of a
mixin dashboard. tests/integration/test_prometheus.py runs every query
against a real Prometheus scraping real sidecars.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "deploy" / "grafana" / "dashboard.py"
COMMITTED = [ROOT / "deploy/grafana/election.json", ROOT / "helm/election-sidecar/files/election.json"]
VARIABLES = ("cluster", "namespace", "election")


def generated() -> str:
    # deploy/ is not a package: load the script by path, as `make dashboard` runs it.
    spec = importlib.util.spec_from_file_location("election_dashboard", GENERATOR)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return cast(Callable[[], str], module.render)()


@pytest.fixture(scope="module")
def dash() -> dict[str, Any]:
    d: dict[str, Any] = json.loads(generated())
    return d


def queries(dash: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, expr) of every panel target and every Prometheus annotation."""
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for a in dash["annotations"]["list"]:
        if "expr" in a:
            yield f"annotation {a['name']}", a["expr"]


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dash["panels"] if p["type"] != "row"]


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_dashboard_is_what_the_generator_writes(path: Path) -> None:
    if path.read_text() != generated():
        pytest.fail(f"{path.relative_to(ROOT)} is not the generator's output: run `make dashboard`", pytrace=False)


def test_generator_is_a_dev_tool_the_runtime_never_imports() -> None:
    assert ROOT / "sidecar" not in GENERATOR.parents
    for src in (ROOT / "sidecar").rglob("*.py"):
        assert "grafana" not in src.read_text(), f"{src.relative_to(ROOT)} mentions grafana"
    probe = "import sys, sidecar.cli, sidecar.metrics; print(any(m.startswith('grafana') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_variables_are_a_datasource_and_chained_label_values(dash: dict[str, Any]) -> None:
    var = {v["name"]: v for v in dash["templating"]["list"]}
    assert list(var) == ["datasource", *VARIABLES]
    assert var["datasource"]["type"] == "datasource" and var["datasource"]["query"] == "prometheus"
    for i, name in enumerate(VARIABLES):
        v = var[name]
        assert v["type"] == "query" and v["datasource"]["uid"] == "${datasource}"
        query = v["query"]["query"]
        assert re.fullmatch(rf"label_values\(election_is_leader(\{{.*\}})?, {name}\)", query), query
        for earlier in VARIABLES[:i]:  # chained, as in kubernetes-mixin
            assert f'{earlier}=~"${earlier}"' in query, (name, query)
        # "All" must match series without the label (no `cluster` on a single-cluster Prometheus).
        assert v["includeAll"] and v["multi"] and v["allValue"] == ".*"


def test_every_query_is_scoped_aggregated_and_uses_rate_interval(dash: dict[str, Any]) -> None:
    for where, expr in queries(dash):
        for metric, matchers in re.findall(r"\b([a-z_:][a-z0-9_:]*)\{([^}]*)\}", expr):
            assert 'cluster=~"$cluster"' in matchers and 'namespace=~"$namespace"' in matchers, (where, metric)
            if metric.startswith("election_"):
                assert 'election=~"$election"' in matchers, (where, metric)
        bare = re.findall(r"\b((?:election|process)_[a-z_]+)\b(?![{(])", expr)
        assert not bare, f"{where}: selector without the variables: {bare}"
        ranges = re.findall(r"\[([^\]]+)\]", expr)
        assert all(r == "$__rate_interval" for r in ranges), f"{where}: ranges {ranges}"
        for agg in re.findall(r"\b(?:sum|max|min) by \(([^)]*)\)", expr):
            assert agg.startswith("cluster, namespace, election"), f"{where}: aggregates by ({agg})"


def test_every_panel_has_a_description_unit_and_the_templated_datasource(dash: dict[str, Any]) -> None:
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels(dash):
        assert p["description"], p["title"]
        assert p["fieldConfig"]["defaults"].get("unit"), p["title"]
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"] and all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])
        assert set(p["gridPos"]) == {"h", "w", "x", "y"} and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24


def test_leaders_stat_is_red_unless_exactly_one(dash: dict[str, Any]) -> None:
    (leaders,) = [p for p in panels(dash) if p["title"] == "Leaders"]
    assert leaders["type"] == "stat" and leaders["options"]["colorMode"] == "background"
    defaults = leaders["fieldConfig"]["defaults"]

    def color(value: float) -> str:
        steps = defaults["thresholds"]["steps"]
        return str([s["color"] for s in steps if s["value"] is None or value >= s["value"]][-1])

    assert [color(v) for v in (0, 1, 2, 5)] == ["red", "green", "red", "red"]
    texts = {json.dumps(mp["options"], sort_keys=True) for mp in defaults["mappings"]}
    assert any('"no leader"' in t for t in texts) and any('"split brain"' in t for t in texts)


def test_operator_questions_each_have_a_panel(dash: dict[str, Any]) -> None:
    """Who leads, how late renewals run against the deadline, RTT against the
    margin, what was lost and killed, the store, the process."""
    exprs = " ".join(e for _, e in queries(dash))
    for metric in (
        "election_is_leader",
        "election_leader_epoch",
        "election_fencing_token",
        "election_lease_remaining_seconds",
        "election_seconds_since_renewal",
        "election_renew_deadline_seconds",
        "election_margin_seconds",
        "election_keepalive_rtt_seconds_bucket",
        "election_keepalive_failures_total",
        "election_transitions_total",
        "election_lease_lost_total",
        "election_orchestrator_kills_total",
        "election_kill_unconfirmed",
        "election_orchestrator_up",
        "election_grant_clients",
        "election_backend_up",
        "election_store_unreachable_total",
        "election_event_loop_lag_seconds",
        "process_resident_memory_bytes",
    ):
        assert metric in exprs, metric
    names = {a["name"]: a for a in dash["annotations"]["list"]}
    assert 'to="leader"' in names["Leader changes"]["expr"]
    assert "election_switchovers_total" in names["Switchovers"]["expr"]
    assert 'outcome="handed-over"' in names["Switchovers"]["expr"]
    # Every metric the dashboard plots is one the sidecar exports (docs/metrics.md lists them).
    documented = (ROOT / "docs" / "metrics.md").read_text()
    for metric in set(re.findall(r"\b(election_[a-z_]+?)(?:_bucket)?\{", exprs)):
        assert f"`{metric}`" in documented, f"{metric} is not in docs/metrics.md"
