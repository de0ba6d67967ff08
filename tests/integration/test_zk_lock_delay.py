"""Issue 14, item 1 on ZooKeeper: a successor honours its predecessor's session, not its node.

A frozen (SIGSTOPped) leader's orchestrator keeps acting on its last grant
until that grant's deadline (its toy records the deadline with every act).
If an operator's ``delete`` or our ``evict --force`` removes its node, the
store no longer protects that window: the successor must still not lead
before it. Real sidecar processes on a real ZooKeeper.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from sidecar_harness.checker import check, read_records
from sidecar_harness.fleet import SidecarProcess
from tests.conftest import ZkServer
from tests.helpers import wait_until
from tests.integration.conftest import Fleet, log_events

pytestmark = pytest.mark.integration


def acting(path: Path, token: int) -> bool:
    return any(r["kind"] == "act" and r["token"] == token for r in read_records([path]))


def grant_deadline(path: Path, token: int) -> float:
    """The latest grant deadline (CLOCK_MONOTONIC) the orchestrator acted under for ``token``."""
    return float(max(r["valid_until"] for r in read_records([path]) if r["kind"] == "act" and r["token"] == token))


def leader_node(zookeeper: ZkServer, election: str) -> str:
    kc = KazooClient(hosts=",".join(zookeeper.endpoints))
    kc.start(5)
    try:
        names = sorted(kc.get_children("/" + election), key=lambda n: n.rsplit("__lock__", 1)[1])
        return f"/{election}/{names[0]}"
    finally:
        kc.stop()
        kc.close()


def zk_delete(zookeeper: ZkServer, path: str) -> None:
    """What an operator does with zkCli's `delete`."""
    kc = KazooClient(hosts=",".join(zookeeper.endpoints))
    kc.start(5)
    try:
        kc.delete(path)
    finally:
        kc.stop()
        kc.close()


def zk_evict(zookeeper: ZkServer, election: str, candidate: str) -> None:
    """The `evict --force` command, run in this process: a new Python process took
    longer to start on a loaded machine than the frozen leader's 3 s session
    lasted, and the node was gone before it asked (the test then proved nothing)."""
    from click.testing import CliRunner

    from sidecar.cli import main

    out = CliRunner().invoke(main, [
        "evict", "--backend", "zookeeper", "--endpoints", ",".join(zookeeper.endpoints),
        "--election", election, "--candidate", candidate, "--force",
    ])  # fmt: skip
    assert out.exit_code == 0, out.output


def elected_mono(s: SidecarProcess, after: float) -> float | None:
    for e in log_events(s, "elected"):
        if e["mono"] > after:
            return float(e["mono"])
    return None


def successor_waits_out_frozen_leader(
    zk_fleet: Fleet, zookeeper: ZkServer, remove: Any, measure: Any, what: str
) -> None:
    zk_fleet.start(2, toy_flags=())
    old, view = zk_fleet.wait_one_leader()
    token = int(view["token"])
    wait_until(lambda: acting(zk_fleet.record(old.candidate), token), 10, what="leader acting")
    other = next(s for s in zk_fleet.sidecars if s is not old)
    node = leader_node(zookeeper, zk_fleet.election)
    old.signal(signal.SIGSTOP)
    try:
        frozen = time.monotonic()
        remove(node, old)
        removed = time.monotonic()
        wait_until(lambda: elected_mono(other, frozen) is not None, 15, what="the successor leads")
        led = elected_mono(other, frozen)
        assert led is not None
        deadline = grant_deadline(zk_fleet.record(old.candidate), token)
        assert led >= deadline, (
            f"{what}: successor led {led - removed:.3f}s after the node went, "
            f"{deadline - led:.3f}s before the frozen leader's grant ended"
        )
        delays = log_events(other, "lock_delay")
        assert len(delays) == 1 and delays[0]["predecessor"] == node, delays
        measure(f"ZooKeeper {what} of a frozen leader: successor led after", f"{led - removed:.2f} s "
                f"(grant deadline {deadline - removed:.2f} s, lock_delay bound {delays[0]['seconds']} s)")  # fmt: skip
    finally:
        old.signal(signal.SIGCONT)
    verdict = check(sorted(zk_fleet.workdir.glob("c*.jsonl")), zk_fleet.store)
    assert verdict.ok, verdict.violations


def test_deleting_a_frozen_leaders_node_does_not_let_the_successor_lead_early(
    zk_fleet: Fleet, zookeeper: ZkServer, measure: Any
) -> None:
    successor_waits_out_frozen_leader(
        zk_fleet, zookeeper, lambda node, _: zk_delete(zookeeper, node), measure, "external delete"
    )


def test_evicting_a_frozen_leader_does_not_let_the_successor_lead_early(
    zk_fleet: Fleet, zookeeper: ZkServer, measure: Any
) -> None:
    successor_waits_out_frozen_leader(
        zk_fleet,
        zookeeper,
        lambda _, old: zk_evict(zookeeper, zk_fleet.election, old.candidate),
        measure,
        "evict --force",
    )


def test_a_live_leaders_deleted_node_ends_the_wait_with_its_confirmed_stop(
    zk_fleet: Fleet, zookeeper: ZkServer, measure: Any
) -> None:
    """Not frozen: it sees its node go, stops its orchestrator and writes the
    marker, so the successor waits for the kill, not for the session."""
    zk_fleet.start(2, toy_flags=())
    old, view = zk_fleet.wait_one_leader()
    wait_until(lambda: acting(zk_fleet.record(old.candidate), int(view["token"])), 10, what="leader acting")
    other = next(s for s in zk_fleet.sidecars if s is not old)
    t = time.monotonic()
    zk_delete(zookeeper, leader_node(zookeeper, zk_fleet.election))
    _, new_view = zk_fleet.wait_one_leader(unlike=old.candidate)
    wait_until(lambda: acting(zk_fleet.record(other.candidate), int(new_view["token"])), 10, what="successor acting")
    led = elected_mono(other, t)
    assert led is not None
    ttl = float(log_events(old, "session_opened")[-1]["ttl"])
    assert led - t < ttl, f"successor led {led - t:.2f}s after the delete: it waited for the session ({ttl}s)"
    measure("ZooKeeper external delete of a live leader: successor led after", f"{led - t:.2f} s")
    # It wrote the marker for its gone node (not merely closed its session on the way out of a crash).
    wait_until(lambda: bool(log_events(old, "campaigning")[1:]), 10, what="the demoted leader queues again")
    assert old.alive and "Traceback" not in old.log_path.read_text(), old.tail(20)
    verdict = check(sorted(zk_fleet.workdir.glob("c*.jsonl")), zk_fleet.store)
    assert verdict.ok, verdict.violations


def test_graceful_handover_and_crash_failover_pay_no_lock_delay(zk_fleet: Fleet, measure: Any) -> None:
    from sidecar.fencing.oneshot import request

    zk_fleet.start(3, toy_flags=())
    old, _ = zk_fleet.wait_one_leader()
    # Both others queued behind it first: a leader that resigns alone re-queues,
    # leads again, and no other leader ever comes (a CI run on a loaded machine).
    others = [s for s in zk_fleet.sidecars if s is not old]
    wait_until(lambda: all(log_events(s, "race_lost") for s in others), 15, what="both others queued")
    t = time.monotonic()
    request(str(old.socket_path), {"type": "resign"}, 2.0)
    new, _ = zk_fleet.wait_one_leader(unlike=old.candidate)
    handover = (elected_mono(new, t) or 0.0) - t
    assert 0 < handover < 1.0, handover
    crashed = time.monotonic()
    new.signal(signal.SIGKILL)
    third, _ = zk_fleet.wait_one_leader(timeout=15, unlike=new.candidate)
    failover = (elected_mono(third, crashed) or 0.0) - crashed
    ttl = float(log_events(new, "session_opened")[-1]["ttl"])
    assert 0 < failover < ttl + 1.0, (failover, ttl)
    for s in zk_fleet.sidecars:
        assert not log_events(s, "lock_delay"), (s.candidate, log_events(s, "lock_delay"))
        # Issue 14 item 3: the server version is logged at start (and exported as store_info).
        assert log_events(s, "store_version")[0]["version"].startswith("3."), log_events(s, "store_version")
    measure(
        "ZooKeeper resign handover / SIGKILL failover",
        f"{handover * 1000:.0f} ms / {failover:.2f} s (session {ttl:g} s)",
    )
