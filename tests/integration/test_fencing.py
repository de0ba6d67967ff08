"""Grants, self-fencing and kills with real etcd, real sidecars and real children.

Each orchestrator records, in CLOCK_MONOTONIC, every moment it acted as
leader; the checker proves that no two of them ever overlapped and that the
fenced store accepted no stale token.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from sidecar_harness.checker import Verdict, check, read_records
from sidecar_harness.fleet import FAST_TIMING, SidecarProcess
from tests.helpers import wait_until
from tests.integration.conftest import Fleet, log_events, pid_gone

pytestmark = pytest.mark.integration
TTL = FAST_TIMING["ttl"]


def verdict(fleet: Fleet) -> Verdict:
    v = check(sorted(fleet.workdir.glob("c*.jsonl")), fleet.store)
    assert v.ok, v.violations
    return v


def records(path: Path, kind: str) -> list[dict[str, Any]]:
    # The checker's reader: it skips a last line cut short by a SIGKILL.
    return [r for r in read_records([path]) if r["kind"] == kind]


def wait_acting(fleet: Fleet, candidate: str, token: int) -> None:
    wait_until(lambda: any(r["token"] == token for r in records(fleet.record(candidate), "act")), 10,
               what=f"{candidate}'s orchestrator acting with token {token}")  # fmt: skip


def started(path: Path) -> bool:
    return bool(records(path, "start"))


def child_pid(sidecar: SidecarProcess) -> int:
    """The leader's orchestrator pid, once it has one.

    A sidecar says it leads as soon as it won; it spawns the orchestrator
    just after, so the first status that says "leader" may name no pid yet.
    """
    found: list[int] = []

    def known() -> bool:
        pid = ((sidecar.status() or {}).get("orchestrator") or {}).get("pid")
        found[:] = [pid] if isinstance(pid, int) else []
        return bool(found)

    wait_until(known, 10, what=f"{sidecar.candidate}'s orchestrator pid in its status")
    return found[0]


def test_leaders_child_gets_the_token_and_followers_run_nothing(fleet: Fleet) -> None:
    fleet.start(3, toy_flags=())
    leader, view = fleet.wait_one_leader()
    wait_acting(fleet, leader.candidate, view["token"])
    (start,) = records(fleet.record(leader.candidate), "start")
    assert start["env_token"] == str(view["token"])
    for s in fleet.sidecars:
        if s is not leader:
            assert not fleet.record(s.candidate).exists(), "a follower's orchestrator was started in gate mode"
    assert verdict(fleet).accepted > 0
    # Each sidecar named the store's release, and warned if that release has known bugs.
    from sidecar.backends.etcd import known_bugs

    (version,) = {log_events(s, "store_version")[0]["version"] for s in fleet.sidecars}
    warned = [e["bugs"] for s in fleet.sidecars for e in log_events(s, "store_version_has_known_bugs")]
    assert warned == ["; ".join(known_bugs(version))] * len(fleet.sidecars) if known_bugs(version) else not warned


def test_resign_stops_the_old_child_before_the_successor_starts(fleet: Fleet, measure: Any) -> None:
    fleet.start(2, toy_flags=())
    old, view = fleet.wait_one_leader()
    wait_acting(fleet, old.candidate, view["token"])
    subprocess.run([sys.executable, "-m", "sidecar", "resign", "--socket", str(old.socket_path)], check=True)
    new, new_view = fleet.wait_one_leader(unlike=old.candidate)
    wait_acting(fleet, new.candidate, new_view["token"])
    assert records(fleet.record(old.candidate), "sigterm"), "old child was not sent SIGTERM"
    stopped = log_events(old, "orchestrator_stopped")[-1]
    started = log_events(new, "orchestrator_started")[-1]
    assert stopped["mono"] < started["mono"], "successor's child started before the old one was confirmed dead"
    v = verdict(fleet)
    assert len(v.gaps) == 1 and v.gaps[0] > 0
    measure("resign: old orchestrator's last act -> successor's first act", f"{v.gaps[0] * 1000:.1f} ms")
    measure("resign: SIGTERM -> old orchestrator confirmed dead", f"{stopped['took'] * 1000:.1f} ms")


def test_sigkilled_sidecar_takes_its_child_with_it(fleet: Fleet, measure: Any) -> None:
    fleet.start(2, toy_flags=())
    old, _ = fleet.wait_one_leader()
    pid = child_pid(old)
    t = time.monotonic()
    old.signal(signal.SIGKILL)
    wait_until(lambda: pid_gone(pid), 5, what="orphaned orchestrator to die")
    measure("sidecar SIGKILLed -> its orchestrator dead", f"{(time.monotonic() - t) * 1000:.1f} ms")
    new, new_view = fleet.wait_one_leader(timeout=TTL + 5, unlike=old.candidate)
    wait_acting(fleet, new.candidate, new_view["token"])
    verdict(fleet)


def test_frozen_sidecar_cooperative_child_self_fences_before_lease_expiry(fleet: Fleet, measure: Any) -> None:
    fleet.start(2, toy_flags=())
    old, view = fleet.wait_one_leader()
    wait_acting(fleet, old.candidate, view["token"])
    old.signal(signal.SIGSTOP)
    try:
        new, new_view = fleet.wait_one_leader(timeout=TTL + 5, unlike=old.candidate)
        wait_acting(fleet, new.candidate, new_view["token"])
    finally:
        old.signal(signal.SIGCONT)
    v = verdict(fleet)
    last_old = max(r["mono"] for r in records(fleet.record(old.candidate), "act"))
    first_new = min(r["mono"] for r in records(fleet.record(new.candidate), "act"))
    assert last_old < first_new
    measure("SIGSTOP sidecar: old orchestrator's last act -> successor's first act", f"{min(v.gaps) * 1000:.1f} ms")


def test_frozen_sidecar_non_cooperative_child_is_killed_by_the_watchdog(fleet: Fleet, measure: Any) -> None:
    fleet.start(2, toy_flags=("--no-self-fence", "--ignore-sigterm"))
    old, view = fleet.wait_one_leader()
    pid = child_pid(old)
    wait_acting(fleet, old.candidate, view["token"])
    old.signal(signal.SIGSTOP)
    try:
        wait_until(lambda: pid_gone(pid), TTL + 2, what="watchdog to kill the orchestrator of a frozen sidecar")
        new, new_view = fleet.wait_one_leader(timeout=TTL + 5, unlike=old.candidate)
        wait_acting(fleet, new.candidate, new_view["token"])
    finally:
        old.signal(signal.SIGCONT)
    fired = log_events(old, "watchdog_fired_kill")
    assert fired and fired[0]["late_by"] < 0.05
    v = verdict(fleet)
    assert min(v.gaps) > 0
    measure(
        "SIGSTOP sidecar: watchdog SIGKILL lateness past the grant deadline (margin 500 ms)",
        f"{fired[0]['late_by'] * 1000:.1f} ms",
    )
    measure("SIGSTOP sidecar, non-cooperative child: last act -> successor's first act", f"{min(v.gaps) * 1000:.1f} ms")


def test_child_ignoring_sigterm_is_sigkilled_before_the_deadline(fleet: Fleet, measure: Any) -> None:
    fleet.start(2, toy_flags=("--ignore-sigterm",))
    old, view = fleet.wait_one_leader()
    wait_acting(fleet, old.candidate, view["token"])
    subprocess.run([sys.executable, "-m", "sidecar", "resign", "--socket", str(old.socket_path)], check=True)
    new, new_view = fleet.wait_one_leader(unlike=old.candidate)
    wait_acting(fleet, new.candidate, new_view["token"])
    assert records(fleet.record(old.candidate), "sigterm")[0]["ignored"]
    stopped = log_events(old, "orchestrator_stopped")[-1]
    assert stopped["by"] == "SIGKILL" and stopped["before_deadline"] > 0
    assert stopped["took"] >= FAST_TIMING["kill_grace"]
    assert log_events(old, "orchestrator_stopped")[-1]["mono"] < log_events(new, "orchestrator_started")[-1]["mono"]
    verdict(fleet)
    measure(
        "SIGTERM ignored: killed by SIGKILL with time to spare before the deadline",
        f"{stopped['before_deadline'] * 1000:.0f} ms",
    )


def test_standby_children_all_run_but_only_the_leaders_acts(fleet: Fleet) -> None:
    fleet.start(2, toy_flags=(), extra_args=["--standby"])
    old, view = fleet.wait_one_leader()
    wait_acting(fleet, old.candidate, view["token"])
    for name in (s.candidate for s in fleet.sidecars):
        wait_until(partial(started, fleet.record(name)), 10, what=f"standby child of {name} started")
    subprocess.run([sys.executable, "-m", "sidecar", "resign", "--socket", str(old.socket_path)], check=True)
    new, new_view = fleet.wait_one_leader(unlike=old.candidate)
    wait_acting(fleet, new.candidate, new_view["token"])
    # The old leader's child was stopped and a fresh standby started in its place.
    wait_until(lambda: len(records(fleet.record(old.candidate), "start")) == 2, 10, what="standby restarted")
    verdict(fleet)


def test_pidfile_target_is_stopped_on_loss(fleet: Fleet) -> None:
    victim = subprocess.Popen(["sleep", "600"])
    pidfile = fleet.workdir / "orchestrator.pid"
    pidfile.write_text(f"{victim.pid}\n")
    try:
        fleet.start(1, extra_args=["--kill-pidfile", str(pidfile)])
        (s, _) = fleet.wait_one_leader()
        subprocess.run([sys.executable, "-m", "sidecar", "resign", "--socket", str(s.socket_path)], check=True)
        assert victim.wait(10) == -signal.SIGTERM
        assert log_events(s, "orchestrator_stopped")
    finally:
        victim.kill()


def test_socket_peer_target_is_stopped_but_cli_clients_are_not(fleet: Fleet) -> None:
    fleet.start(1, extra_args=["--kill-peer"])
    (s, view) = fleet.wait_one_leader()
    toy = subprocess.Popen([*fleet.toy("peer"), "--socket", str(s.socket_path)])
    try:
        wait_acting(fleet, "peer", view["token"])
        res = subprocess.run([sys.executable, "-m", "sidecar", "resign", "--socket", str(s.socket_path)], check=False)
        assert res.returncode == 0
        assert toy.wait(10) == 0  # the toy exits cleanly on SIGTERM
        assert records(fleet.record("peer"), "sigterm")
    finally:
        toy.kill()


def test_bad_input_on_the_socket_leaves_the_sidecar_serving(fleet: Fleet) -> None:
    fleet.start(2, toy_flags=())
    leader, view = fleet.wait_one_leader()
    wait_acting(fleet, leader.candidate, view["token"])
    for junk in (b"garbage\n", b'{"v":1,"type":"nope"}\n', b"x" * 70000, b'{"v":1'):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(leader.socket_path))
            sock.sendall(junk)
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            kinds = [json.loads(line)["type"] for line in data.splitlines()]
            assert kinds[-1] == "error", kinds
    still, still_view = fleet.wait_one_leader()
    assert still is leader and still_view["token"] == view["token"]
    before = len(records(fleet.record(leader.candidate), "act"))
    wait_until(
        lambda: len(records(fleet.record(leader.candidate), "act")) > before + 5, 5, what="orchestrator still acting"
    )
    assert os.path.exists(leader.socket_path)
    verdict(fleet)
