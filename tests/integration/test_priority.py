"""Priorities and --no-lead with real sidecars, real toys, SIGKILL and real etcd and ZooKeeper.

Each vacancy (the leader's sidecar SIGKILLed, so no resign) must go to the
highest-priority live candidate; a --no-lead candidate joined first never
holds a grant, even when it is the last one left, and never holds up the
others; the toys' records pass the checker (no overlap, rising tokens).
"""

from __future__ import annotations

import signal

import pytest

from sidecar_harness.checker import check, read_records
from tests.helpers import wait_until
from tests.integration.conftest import Fleet, log_events
from tests.integration.test_switchover import TTL, cli, status

pytestmark = pytest.mark.integration


@pytest.fixture(params=["etcd", "zookeeper"])
def any_fleet(request: pytest.FixtureRequest) -> Fleet:
    fleet: Fleet = request.getfixturevalue("fleet" if request.param == "etcd" else "zk_fleet")
    return fleet


def test_each_crash_vacancy_goes_to_the_highest_live_priority(any_fleet: Fleet) -> None:
    fleet = any_fleet
    first = fleet.start(1, toy_flags=(), extra_args=["--priority", "0"])[0]
    leader, _ = fleet.wait_one_leader()
    assert leader is first
    watcher = fleet.start(1, toy_flags=(), extra_args=["--no-lead"])[0]
    prios = {}
    for p in (1, 5, 3):
        s = fleet.start(1, toy_flags=(), extra_args=["--priority", str(p)])[0]
        prios[s.candidate] = p
    wait_until(lambda: len(status(fleet)["candidates"]) == 5, 10, what="five candidates listed")
    view = status(fleet)
    shown = {c["id"]: ("no-lead" if c["no_lead"] else c["priority"]) for c in view["candidates"]}
    assert shown == {first.candidate: 0, watcher.candidate: "no-lead", **prios}
    out = cli(fleet, "switchover", "--to", watcher.candidate)
    assert out.returncode == 4 and "--no-lead" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out
    for want in (5, 3, 1):
        leader.signal(signal.SIGKILL)
        new, _ = fleet.wait_one_leader(timeout=TTL + 15, unlike=leader.candidate)
        assert new is not watcher
        assert prios[new.candidate] == want, f"vacancy went to {new.candidate} ({prios[new.candidate]}), not {want}"
        leader = new
    leader.signal(signal.SIGKILL)
    # Alone now: the no-lead candidate must never claim a grant.
    wait_until(lambda: status(fleet)["leader"] is None, TTL + 10, what="the last leader's key to go")
    assert fleet.never_two_leaders(TTL + 1) == set()
    assert not [e for e in log_events(watcher, "elected")] and watcher.alive
    starts = [r for r in read_records([fleet.record(watcher.candidate)]) if r["kind"] == "start"]
    assert not starts, "the no-lead candidate's orchestrator was started"
    verdict = check(sorted(fleet.workdir.glob("c*.jsonl")), fleet.store)
    assert verdict.ok, verdict.violations
    stepped = sum(len(log_events(s, "priority_step_aside")) for s in fleet.sidecars)
    assert stepped >= 1
    if fleet.backend == "etcd":
        # The vacancy's winner tracked the crashed leader's lease: no full-TTL fallback.
        waits = [e for s in fleet.sidecars for e in log_events(s, "lock_delay")]
        assert not [e for e in waits if "unknown" in e["why"]], [
            (e["candidate"], e["why"], e["seconds"]) for e in waits
        ]
