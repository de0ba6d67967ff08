"""Metrics move on the transitions that should move them; endpoints tell the truth."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from sidecar.clock import FakeClock
from sidecar.elector import Elector
from sidecar.http_api import HttpApi, health
from sidecar.loopmon import LoopMonitor
from sidecar.metrics import SidecarMetrics
from sidecar.model import State
from sidecar_harness.memory import MemoryBackend, MemoryStore
from tests.helpers import RecordingSink, grant_of
from tests.unit.test_elector import CFG


class World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = MemoryStore(self.clock)
        self.backend = MemoryBackend(self.store)
        self.registries: dict[str, CollectorRegistry] = {}  # fresh per test, one per sidecar
        self.tasks = [asyncio.create_task(self.store.run_reaper())]

    @property
    def registry(self) -> CollectorRegistry:
        return self.registries["a"]

    def elector(self, name: str) -> tuple[Elector, SidecarMetrics]:
        self.registries[name] = CollectorRegistry()
        m = SidecarMetrics(self.registries[name], CFG.election, name, "memory")
        e = Elector(replace(CFG, candidate_id=name), self.backend, self.clock, RecordingSink(), metrics=m)
        m.bind(remaining=lambda: e.snapshot().remaining if e.state is State.LEADER else 0.0, clients=lambda: 3)
        self.tasks.append(asyncio.create_task(e.run()))
        return e, m

    def value(self, name: str, candidate: str = "a", **labels: str) -> float | None:
        registry = self.registries.get(candidate)
        if registry is None:
            return None
        return registry.get_sample_value(name, {"election": CFG.election, "candidate": candidate, **labels})


@pytest.fixture
async def w() -> AsyncIterator[World]:
    world = World()
    yield world
    for t in world.tasks:
        t.cancel()
    await asyncio.gather(*world.tasks, return_exceptions=True)


async def test_winning_moves_leader_token_epoch_rtt_and_transitions(w: World) -> None:
    assert w.value("election_is_leader") is None  # nothing before the sidecar exists
    e, _ = w.elector("a")
    assert w.value("election_is_leader") == 0 and w.value("election_backend_up") == 0
    await w.clock.advance(0.1)
    assert e.snapshot().grant is not None
    assert w.value("election_is_leader") == 1
    assert w.value("election_fencing_token") == grant_of(e).token
    assert w.value("election_leader_epoch") == 1
    assert w.value("election_transitions_total", to="leader") == 1
    assert w.value("election_transitions_total", to="candidate") == 1
    assert w.value("election_backend_up") == 1
    assert (w.value("election_keepalive_rtt_seconds_count") or 0) >= 1
    assert w.value("election_lease_remaining_seconds") == pytest.approx(e.snapshot().remaining)
    assert w.value("election_grant_clients") == 3
    assert (w.value("election_last_transition_timestamp_seconds") or 0) > 1e9


async def test_queueing_counts_a_lost_race_not_a_store_error(w: World) -> None:
    w.elector("a")
    await w.clock.advance(0.1)
    w.elector("b")
    await w.clock.advance(0.1)
    assert w.value("election_race_lost_total", candidate="b") == 1
    assert w.value("election_is_leader", candidate="b") == 0
    assert w.value("election_store_unreachable_total", candidate="b", during="session-open") == 0


async def test_silent_store_counts_failures_then_a_lost_lease(w: World) -> None:
    w.elector("a")
    await w.clock.advance(0.1)
    w.store.mode = "fail"
    await w.clock.advance(3)
    assert (w.value("election_keepalive_failures_total") or 0) >= 1
    assert (w.value("election_store_unreachable_total", during="keepalive") or 0) >= 1
    assert w.value("election_backend_up") == 0
    assert w.value("election_is_leader") == 1  # short of the renew deadline: still leading
    await w.clock.advance(5)
    assert w.value("election_is_leader") == 0
    assert w.value("election_lease_lost_total", reason="backend-unreachable", role="leader") == 1
    assert w.value("election_transitions_total", to="demoting") == 1
    assert w.value("election_lease_remaining_seconds") == 0


async def test_kills_are_counted_by_signal(w: World) -> None:
    _, m = w.elector("a")
    m.orchestrator_kill("SIGTERM")
    m.orchestrator_kill("SIGKILL")
    m.orchestrator_kill("SIGKILL")
    assert w.value("election_orchestrator_kills_total", signal="SIGTERM") == 1
    assert w.value("election_orchestrator_kills_total", signal="SIGKILL") == 2
    assert w.value("election_orchestrator_kills_total", signal="unconfirmed") == 0


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


async def test_endpoints_report_leader_health_and_readiness(w: World) -> None:
    e, _ = w.elector("a")
    await w.clock.advance(0.1)
    loop = LoopMonitor()
    api = HttpApi(replace(CFG, candidate_id="a"), e, loop, w.registry)
    port = await api.start("127.0.0.1:0")
    base = f"http://127.0.0.1:{port}"
    try:
        status, body = await asyncio.to_thread(get, base + "/leader")
        view = json.loads(body)
        assert status == 200 and view["state"] == "leader"
        assert e.snapshot().grant is not None
        assert view["leader"] == {"id": "a", "token": grant_of(e).token, "epoch": 1}
        assert 0 < view["deadline"]["valid_for_ms"] <= 10_000
        assert (await asyncio.to_thread(get, base + "/healthz"))[0] == 200
        assert (await asyncio.to_thread(get, base + "/readyz"))[0] == 200
        status, text = await asyncio.to_thread(get, base + "/metrics")
        assert status == 200 and 'election_is_leader{candidate="a",election="unit"} 1.0' in text

        # A leader whose renewals stopped while it still believes it leads is not healthy.
        stuck = replace(e.snapshot(), demote_at=w.clock.now() - 1)
        assert any("renewals stopped" in p for p in health(stuck, loop, CFG))

        loop.lag = 2.0  # a stalled loop
        status, body = await asyncio.to_thread(get, base + "/healthz")
        assert status == 503 and "event loop" in body
        loop.lag = 0.0

        w.store.mode = "fail"
        await w.clock.advance(2.5)  # past the next keepalive
        assert (await asyncio.to_thread(get, base + "/readyz"))[0] == 503
    finally:
        await api.close()


async def test_loop_lag_is_read_from_the_lease_sleep_and_a_stall_fails_healthz(w: World) -> None:
    samples: list[float] = []
    monitor = LoopMonitor(samples.append, w.clock)
    monitor.start()
    try:
        e = Elector(replace(CFG, candidate_id="p"), w.backend, w.clock, RecordingSink(), loop_probe=monitor)
        w.tasks.append(asyncio.create_task(e.run()))
        await w.clock.advance(0.1)
        assert e.state is State.LEADER
        # The lease sleeps until its next renewal: that pending timer is the probe.
        await w.clock.advance(CFG.retry_interval * 2)
        assert samples and monitor.last_tick > 1000.0
        assert not health(e.snapshot(), monitor, CFG)

        # A timer overdue by more than the limit is a stalled loop, before it fires.
        monitor.sleeping(w.clock.now() - 1.5)
        assert any("event loop" in p for p in health(e.snapshot(), monitor, CFG))
        monitor.woke(w.clock.now() - 1.5)
        assert monitor.lag == pytest.approx(1.5) and monitor.stalled_for() == 0
        assert any("event loop" in p for p in health(e.snapshot(), monitor, CFG))
    finally:
        await monitor.stop()


async def test_loop_monitor_probes_by_itself_only_while_no_lease_does() -> None:
    clock = FakeClock()
    samples: list[float] = []
    monitor = LoopMonitor(samples.append, clock, interval=1.0)
    monitor.start()
    try:
        await clock.advance(3.05)
        assert len(samples) == 3  # nobody probes for it: its own 1 s timer
        monitor.attach()
        await clock.advance(1.05)  # the timer pending at attach fires, and stands down
        n = len(samples)
        await clock.advance(5)
        assert len(samples) == n  # a lease probes now: no wake-ups of its own
        monitor.detach()
        await clock.advance(2.05)
        assert len(samples) == n + 2
    finally:
        await monitor.stop()
