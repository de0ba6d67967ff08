"""The fault campaign, small enough for CI, and proof that its checker can fail.

The seed is random per run and printed first; a failure is replayed with
`election-sidecar validate --seed N`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sidecar_harness.localetcd import EtcdNotFound, find_binary
from sidecar_harness.localzk import ZooKeeperNotFound, find_classpath
from tests.conftest import missing

pytestmark = pytest.mark.integration


def validate(*args: str, timeout: float = 1500) -> tuple[int, str]:
    res = subprocess.run(
        [sys.executable, "-m", "sidecar", "validate", "--no-progress", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    return res.returncode, res.stdout + res.stderr


@pytest.mark.timeout(1500)
def test_etcd_campaign_of_30_faults_passes(etcd: Any, tmp_path: Path, measure: Any) -> None:
    report = tmp_path / "report.json"
    code, out = validate("--backend", "etcd", "--faults", "30", "--report", str(report))
    print(out)
    assert code == 0, out
    r = json.loads(report.read_text())
    assert r["verdict"] == "PASS" and r["faults"] == 30 and not r["violations"]
    assert r["checker"]["writes_accepted"] > 0 and r["checker"]["leaderships"] >= 2
    f = r["failover_s"]
    measure("campaign etcd (30 faults)", f"seed {r['seed']}, failover p50/p99/max {f['p50']}/{f['p99']}/{f['max']} s")


@pytest.mark.timeout(900)
def test_zookeeper_campaign_of_10_faults_passes(zookeeper: Any, postgres: Any, tmp_path: Path, measure: Any) -> None:
    """Its orchestrators write to PostgreSQL: "stale writes accepted 0" measured on a real database."""
    report = tmp_path / "report.json"
    code, out = validate(
        "--backend", "zookeeper", "--faults", "10", "--fenced-store", "postgres", "--report", str(report)
    )  # fmt: skip
    print(out)
    assert code == 0, out
    r = json.loads(report.read_text())
    assert r["verdict"] == "PASS" and not r["violations"]
    assert r["fenced_store"] == "postgres" and r["checker"]["writes_accepted"] > 0
    measure("campaign ZooKeeper (10 faults)", f"seed {r['seed']}, failover {r['failover_s']}")


@pytest.mark.timeout(600)
def test_a_build_without_self_fencing_is_caught(etcd: Any) -> None:
    """Disable the deadline and the watchdog; freeze the leader: the checker must report overlaps."""
    code, out = validate("--unsafe-broken", "--only", "sidecar-stop", "--faults", "2", "--seed", "1")
    assert code == 1, out
    assert "verdict: FAIL" in out and "overlap:" in out


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["etcd", "zookeeper"])
def test_member_isolated_from_its_peers(backend: str, tmp_path: Path, measure: Any) -> None:
    """Issue 14: the leader's member is cut from its peers (silently) while still reachable by
    clients. The leader must demote before a successor could be elected; no overlap."""
    try:
        find_binary("etcd") if backend == "etcd" else find_classpath()
    except (EtcdNotFound, ZooKeeperNotFound) as exc:
        missing(str(exc))
    report = tmp_path / "report.json"
    code, out = validate(
        "--backend", backend, "--only", "member-isolate", "--faults", "6", "--report", str(report), timeout=600
    )  # fmt: skip
    print(out)
    assert code == 0, out
    r = json.loads(report.read_text())
    assert r["verdict"] == "PASS" and not r["violations"]
    row = r["per_fault"]["member-isolate"]
    assert row["demoted_s"] is not None and row["demoted_s"]["n"] >= 1
    measure(
        f"member-isolate {backend} (6 faults)",
        f"seed {r['seed']}, demoted {row['demoted_s']}, failover {row['failover_s']}, "
        f"smallest gap {r['checker']['min_gap_ms']} ms",
    )


def test_a_store_member_that_exits_on_its_own_is_reported_and_started_again() -> None:
    """After every heal the campaign checks its store: a member no fault killed that is gone
    (etcd 3.5.1 panics on a cancelled read-only txn) is a problem of that fault, not a silent outage later."""
    from sidecar_harness.faults import revive_exited
    from sidecar_harness.localetcd import LocalEtcd

    try:
        find_binary("etcd")
    except EtcdNotFound as exc:
        missing(str(exc))
    with LocalEtcd(1) as cluster:
        (m,) = cluster.members
        assert revive_exited(cluster) == []
        assert m.proc is not None
        m.proc.kill()  # behind the harness's back, as a crash would
        m.proc.wait(10)
        problems = revive_exited(cluster)
        assert len(problems) == 1 and "m0 exited on its own" in problems[0], problems
        assert m.alive, "the member was not started again"


def test_a_campaign_whose_sidecars_cannot_start_stops_what_it_started(
    etcd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sidecar that exits at start (here on a setting it does not know) fails the run,
    and the store's members the campaign started are stopped, not left running."""
    import asyncio

    from sidecar_harness.faults import Campaign

    monkeypatch.setenv("ELECTION_SIDECAR_NOT_A_SETTING", "1")
    c = Campaign("etcd", candidates=2, faults=1, seed=1, progress=False)
    try:
        with pytest.raises(RuntimeError, match="not a known setting"):
            asyncio.run(c.run())
        assert c.cluster.members and not any(m.alive for m in c.cluster.members), "store members left running"
    finally:
        c.cluster.stop()
        c.fenced.stop()
