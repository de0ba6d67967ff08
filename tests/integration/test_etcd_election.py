"""Real sidecar processes campaigning through a real etcd."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from sidecar_harness.fleet import FAST_TIMING
from sidecar_harness.localetcd import find_binary
from tests.conftest import EtcdServer
from tests.helpers import wait_until
from tests.integration.conftest import Fleet, log_events

pytestmark = pytest.mark.integration
TTL = FAST_TIMING["ttl"]


def cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_exactly_one_leader_among_candidates(fleet: Fleet) -> None:
    fleet.start(4)
    leader, view = fleet.wait_one_leader()
    assert view["token"] > 0 and view["epoch"] == 1
    # Held steady across several renewals (TTL 3 s, keepalive every 0.5 s).
    end = time.monotonic() + 2 * TTL
    while time.monotonic() < end:
        claim = fleet.claimers()
        assert [s.candidate for s, _ in claim] == [leader.candidate]
        time.sleep(0.1)


def test_status_cli_shows_leader_token_epoch_and_candidates(fleet: Fleet, etcd: EtcdServer) -> None:
    fleet.start(3)
    leader, view = fleet.wait_one_leader()
    status = ("status", "--endpoints", ",".join(etcd.endpoints), "--election", fleet.election, "-o", "json")
    # The others may still be connecting when the first one leads.
    wait_until(lambda: len(json.loads(cli(*status).stdout)["candidates"]) == 3, 15, what="all three queued")
    res = cli(*status)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["election"] == fleet.election
    assert out["leader"] == {"id": leader.candidate, "token": view["token"], "epoch": view["epoch"]}
    assert {c["id"] for c in out["candidates"]} == {"c0", "c1", "c2"}
    assert out["candidates"][0]["id"] == leader.candidate
    for c in out["candidates"]:
        assert isinstance(c["token"], int) and 0 < c["lease_ttl_remaining"] <= TTL
    table = cli("status", "--endpoints", ",".join(etcd.endpoints), "--election", fleet.election)
    assert table.returncode == 0 and f"leader {leader.candidate}" in table.stdout
    assert f"token {view['token']}" in table.stdout


def test_resign_hands_over_at_once_with_higher_token(fleet: Fleet, measure: Any) -> None:
    fleet.start(3)
    old, old_view = fleet.wait_one_leader()
    res = cli("resign", "--socket", str(old.socket_path))
    assert res.returncode == 0, res.stderr
    new, new_view = fleet.wait_one_leader(timeout=5, unlike=old.candidate)
    assert new_view["token"] > old_view["token"] and new_view["epoch"] == old_view["epoch"] + 1
    asked = log_events(old, "resign_requested")[-1]["t"]
    elected = log_events(new, "elected")[-1]["t"]
    assert 0 < elected - asked < TTL / 2, "successor waited for the lease instead of the delete event"
    measure("resign -> successor elected (etcd, from logs)", f"{(elected - asked) * 1000:.1f} ms")
    # The old leader queues again and can be told to resign only when it leads.
    again = cli("resign", "--socket", str(old.socket_path))
    assert again.returncode == 1 and "not leader" in again.stderr


def test_sigterm_revokes_so_successor_does_not_wait_for_ttl(fleet: Fleet, measure: Any) -> None:
    fleet.start(2)
    old, old_view = fleet.wait_one_leader()
    t = time.time()
    old.signal(signal.SIGTERM)
    assert old.proc is not None and old.proc.wait(10) == 0
    new, new_view = fleet.wait_one_leader(timeout=5, unlike=old.candidate)
    elected = log_events(new, "elected")[-1]["t"]
    assert elected - t < TTL / 2
    assert new_view["token"] > old_view["token"]
    measure("SIGTERM -> successor elected (etcd)", f"{(elected - t) * 1000:.1f} ms")


def test_sigkill_leader_successor_after_about_ttl(fleet: Fleet, measure: Any) -> None:
    fleet.start(3)
    old, old_view = fleet.wait_one_leader()
    t_kill = time.time()
    old.signal(signal.SIGKILL)
    new, new_view = fleet.wait_one_leader(timeout=TTL + 5, unlike=old.candidate)
    elected = log_events(new, "elected")[-1]["t"]
    took = elected - t_kill
    # The lease cannot expire before the last keepalive (at most one
    # retry_interval before the kill) plus TTL: an earlier successor would be
    # a safety bug, a much later one a liveness bug.
    assert took >= TTL - FAST_TIMING["retry_interval"] - 0.1, f"successor after only {took:.2f}s"
    assert took < TTL + 3
    assert new_view["token"] > old_view["token"] and new_view["epoch"] == old_view["epoch"] + 1
    measure(f"SIGKILL leader -> successor elected (etcd, TTL {TTL:g}s)", f"{took:.2f} s")


def test_etcdctl_elect_lists_our_leader(fleet: Fleet, etcd: EtcdServer) -> None:
    fleet.start(2)
    leader, _ = fleet.wait_one_leader()
    etcdctl = find_binary("etcdctl")
    proc = subprocess.Popen(
        [etcdctl, "--endpoints", ",".join(etcd.endpoints), "elect", "-l", fleet.election],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip(), proc.stdout.readline().strip()]
    finally:
        proc.kill()
        proc.wait()
    assert lines[0].startswith(fleet.election + "/")
    assert lines[1] == leader.candidate


def test_etcdctl_elect_queues_behind_our_leader(fleet: Fleet, etcd: EtcdServer) -> None:
    (ours,) = fleet.start(1)
    fleet.wait_one_leader()
    etcdctl = find_binary("etcdctl")
    proc = subprocess.Popen(
        [etcdctl, "--endpoints", ",".join(etcd.endpoints), "elect", fleet.election, "outsider"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    status = ("status", "--endpoints", ",".join(etcd.endpoints), "--election", fleet.election, "-o", "json")
    try:

        def queued() -> bool:
            out = json.loads(cli(*status).stdout)
            return [c["id"] for c in out["candidates"]] == [ours.candidate, "outsider"]

        wait_until(queued, 10, what="etcdctl queued behind our leader")
        assert json.loads(cli(*status).stdout)["leader"]["id"] == ours.candidate
        ours.signal(signal.SIGTERM)
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()  # etcdctl prints its key once it leads
        assert line.startswith(fleet.election + "/")
    finally:
        proc.kill()
        proc.wait()


def test_cluster_leader_member_killed_never_two_leaders(
    etcd_cluster: EtcdServer, election_name: str, workdir: Any, measure: Any
) -> None:
    local = etcd_cluster.local
    assert local is not None
    f = Fleet(etcd_cluster, election_name, workdir)
    try:
        f.start(3)
        first, first_view = f.wait_one_leader()
        raft_leader = local.leader()
        assert raft_leader is not None
        local.kill(raft_leader)
        seen = f.never_two_leaders(3 * TTL)
        now, view = f.wait_one_leader(timeout=TTL + 5)
        assert view["token"] >= first_view["token"]
        if now.candidate != first.candidate:
            assert view["token"] > first_view["token"] and view["epoch"] > first_view["epoch"]
        measure(
            "etcd raft leader killed",
            f"sidecar leadership {'survived' if now.candidate == first.candidate else 'moved'} ({sorted(seen)})",
        )
    finally:
        f.stop()


def test_status_cross_checks_sidecars_and_watch_streams_changes(fleet: Fleet, etcd: EtcdServer) -> None:
    sidecars = fleet.start(2, http=True)
    old, _ = fleet.wait_one_leader()
    urls = ",".join(s.url for s in sidecars) + ",http://127.0.0.1:9"  # the last one answers nothing
    base = ("--endpoints", ",".join(etcd.endpoints), "--election", fleet.election)
    res = cli("status", *base, "--sidecars", urls, "-o", "json")
    assert res.returncode == 0, res.stdout + res.stderr
    rows = {r["url"]: r for r in json.loads(res.stdout)["sidecars"]}
    assert rows[old.url]["verdict"] == "agrees" and rows[old.url]["state"] == "leader"
    assert rows["http://127.0.0.1:9"]["verdict"] == "unreachable"
    table = cli("status", *base, "--sidecars", urls)
    assert "SIDECAR VIEWS" in table.stdout and "unreachable" in table.stdout

    watcher = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "watch", *base, "-o", "json"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert watcher.stdout is not None
        first = json.loads(watcher.stdout.readline())
        assert first["leader"]["id"] == old.candidate
        assert cli("resign", "--socket", str(old.socket_path)).returncode == 0
        second = json.loads(watcher.stdout.readline())
        assert second["leader"]["id"] != old.candidate
        assert second["leader"]["epoch"] == first["leader"]["epoch"] + 1
    finally:
        watcher.terminate()
        watcher.wait(5)
