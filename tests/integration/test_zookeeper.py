"""Sidecars on ZooKeeper: layout interop, crash and expiry failover, ensembles."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.recipe.election import Election as KazooElection

from sidecar.backends.base import SessionExpired
from sidecar.backends.zk_poll import PollHandler
from sidecar.backends.zookeeper import ZooKeeperBackend, _call, _watch
from sidecar.clock import MonotonicClock
from sidecar_harness.checker import check, read_records
from sidecar_harness.fleet import FAST_TIMING
from sidecar_harness.localzk import TICK_MS
from tests.conftest import ZkServer
from tests.helpers import wait_until
from tests.integration.conftest import Fleet, log_events

pytestmark = pytest.mark.integration
TTL = FAST_TIMING["ttl"]


def negotiated(s: Any) -> float:
    ttl = log_events(s, "session_opened")[-1]["ttl"]
    assert isinstance(ttl, float)
    return ttl


async def test_server_clamped_session_timeout_is_what_the_deadline_uses(zookeeper: ZkServer) -> None:
    backend = ZooKeeperBackend(zookeeper.endpoints, MonotonicClock())
    session = backend.session(60.0)  # far above the server's 20-tick ceiling
    try:
        renewal = await session.open()
        assert renewal.ttl == pytest.approx(20 * TICK_MS / 1000)
        again = await session.keepalive()
        assert again.ttl == renewal.ttl and again.sent_at > renewal.sent_at
        # Every session's client waits on its sockets with one poll() (zk_poll.py).
        assert isinstance(session.client.handler, PollHandler)
    finally:
        await session.close()
        await backend.close()


def test_kazoo_election_lists_our_candidates_leader_first(zk_fleet: Fleet, zookeeper: ZkServer) -> None:
    zk_fleet.start(3)
    leader, _ = zk_fleet.wait_one_leader()
    kc = KazooClient(hosts=",".join(zookeeper.endpoints))
    kc.start(5)
    try:
        election = KazooElection(kc, "/" + zk_fleet.election)
        # The others may still be connecting when the first one leads.
        wait_until(lambda: len(election.contenders()) == 3, 15, what="all three candidates queued")
        contenders = election.contenders()
    finally:
        kc.stop()
        kc.close()
    assert contenders[0] == leader.candidate
    assert sorted(contenders) == ["c0", "c1", "c2"]


def test_status_cli_on_zookeeper(zk_fleet: Fleet, zookeeper: ZkServer) -> None:
    zk_fleet.start(2)
    leader, view = zk_fleet.wait_one_leader()
    res = subprocess.run(
        [sys.executable, "-m", "sidecar", "status", "--backend", "zookeeper", "--endpoints",
         ",".join(zookeeper.endpoints), "--election", zk_fleet.election, "-o", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["leader"] == {"id": leader.candidate, "token": view["token"], "epoch": view["epoch"]}
    assert out["candidates"][0]["id"] == leader.candidate
    assert all(c["lease_ttl_remaining"] is None and not c["stale"] for c in out["candidates"])


def toys_ok(fleet: Fleet) -> list[float]:
    v = check(sorted(fleet.workdir.glob("c*.jsonl")), fleet.store)
    assert v.ok, v.violations
    return v.gaps


def acting(path: Path, token: int) -> bool:
    return any(r["kind"] == "act" and r["token"] == token for r in read_records([path]))


def test_crashed_leader_is_replaced_after_the_session_timeout(zk_fleet: Fleet, measure: Any) -> None:
    zk_fleet.start(3, toy_flags=())
    old, view = zk_fleet.wait_one_leader()
    wait_until(lambda: acting(zk_fleet.record(old.candidate), view["token"]), 10, what="leader acting")
    timeout = negotiated(old)
    t_kill = time.time()
    old.signal(signal.SIGKILL)
    new, new_view = zk_fleet.wait_one_leader(timeout=timeout + 5, unlike=old.candidate)
    took = log_events(new, "elected")[-1]["t"] - t_kill
    assert took >= timeout - FAST_TIMING["retry_interval"] - 0.2, f"successor after {took:.2f}s, session {timeout}s"
    assert new_view["token"] > view["token"] and new_view["epoch"] == view["epoch"] + 1
    wait_until(lambda: acting(zk_fleet.record(new.candidate), new_view["token"]), 10, what="successor acting")
    toys_ok(zk_fleet)
    measure(
        "ZooKeeper: SIGKILL leader -> successor elected", f"{took:.2f} s (negotiated session timeout {timeout:g} s)"
    )


def test_expired_session_fences_the_orchestrator_before_the_successor(zk_fleet: Fleet, measure: Any) -> None:
    zk_fleet.start(2, toy_flags=())
    old, view = zk_fleet.wait_one_leader()
    wait_until(lambda: acting(zk_fleet.record(old.candidate), view["token"]), 10, what="leader acting")
    timeout = negotiated(old)
    old.signal(signal.SIGSTOP)  # past the session timeout: the server expires it
    try:
        new, new_view = zk_fleet.wait_one_leader(timeout=timeout + 5, unlike=old.candidate)
        wait_until(lambda: acting(zk_fleet.record(new.candidate), new_view["token"]), 10, what="successor acting")
    finally:
        old.signal(signal.SIGCONT)
    # Back from the freeze, the old sidecar finds its session gone and queues again on a new one.
    wait_until(lambda: len(log_events(old, "session_opened")) >= 2, 15, what="old sidecar on a fresh session")
    gaps = toys_ok(zk_fleet)
    assert gaps and min(gaps) > 0
    measure(
        "ZooKeeper: session expiry, old orchestrator's last act -> successor's first act", f"{min(gaps) * 1000:.0f} ms"
    )


def test_ensemble_leader_killed_never_two_leaders(
    zk_ensemble: ZkServer, election_name: str, workdir: Path, measure: Any
) -> None:
    local = zk_ensemble.local
    assert local is not None
    f = Fleet(zk_ensemble, election_name, workdir, backend="zookeeper")
    try:
        f.start(3, toy_flags=())
        first, first_view = f.wait_one_leader()
        zk_leader = local.leader()
        assert zk_leader is not None
        local.kill(zk_leader)
        seen = f.never_two_leaders(3 * TTL)
        now, view = f.wait_one_leader(timeout=TTL + 10)
        assert view["token"] >= first_view["token"]
        if now.candidate != first.candidate:
            assert view["token"] > first_view["token"]
        toys_ok(f)
        moved = "survived" if now.candidate == first.candidate else "moved"
        measure("ZooKeeper ensemble leader killed", f"sidecar leadership {moved} (leaders seen: {sorted(seen)})")
    finally:
        f.stop()


async def test_closing_a_lost_session_stops_kazoo_before_releasing_it(zookeeper: ZkServer) -> None:
    """After an expiry kazoo reconnects on its own thread; close() must stop that thread
    first, or kazoo raises a bare Exception where callers expect SessionExpired (the
    campaign's reader crashed on it when a member was isolated from its peers)."""
    backend = ZooKeeperBackend(zookeeper.endpoints, MonotonicClock())
    session = backend.session(3.0)
    await session.open()
    client = session._client
    assert client is not None
    session._lost = "zookeeper session lost (as kazoo's LOST callback records it)"
    try:
        with pytest.raises(SessionExpired):
            await session.close()
        assert not client.connected
    finally:
        await backend.close()


async def test_the_loop_sees_a_watch_event_before_the_answer_sent_after_it(zookeeper: ZkServer) -> None:
    """ZooKeeper sends a change's watch event before any answer that follows the change
    on the connection. kazoo ran events and answers on two worker threads, so the loop
    could see our own delete answered with the watch on that node not yet fired."""
    client = KazooClient(hosts=",".join(zookeeper.endpoints), handler=PollHandler())
    await asyncio.to_thread(client.start, 10)
    loop = asyncio.get_running_loop()
    late = 0
    try:
        for i in range(300):
            node = await _call(client.create_async, f"/order-{os.getpid()}-{i}", b"", None, True)
            fired, watcher = _watch(loop)
            assert await _call(client.exists_async, node, watcher) is not None
            await _call(client.delete_async, node)
            late += not fired.is_set()
    finally:
        await asyncio.to_thread(client.stop)
        await asyncio.to_thread(client.close)
    assert late == 0, f"{late} of 300 answers reached the loop before the watch event sent ahead of them"
