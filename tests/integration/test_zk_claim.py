"""Issue 16, ZooKeeper: the claim after the head's node went (one pipelined read, one multi).

Bare backend elections on the real ZooKeeper, so the test chooses exactly
what happens between the watch firing and the claim. Each test fails if the
check that guards it is removed from ``ZooKeeperElection._claim``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from kazoo.client import KazooClient

from sidecar.backends.base import LockDelay, SwitchoverRequest
from sidecar.backends.zookeeper import NODE_MARK, ZooKeeperBackend, ZooKeeperElection, ZooKeeperSession
from sidecar.clock import MonotonicClock
from sidecar.model import Leadership
from tests.conftest import ZkServer

pytestmark = pytest.mark.integration


@dataclass
class Report:
    delays: list[LockDelay] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    stepped_aside_for: list[str] = field(default_factory=list)

    def lock_delay(self, delay: LockDelay) -> None:
        self.delays.append(delay)

    def epoch_record_repaired(self, key: str, found: str) -> None:
        self.repaired.append(found)

    def duplicate_candidate_id(self, candidate_id: str, keys: list[str]) -> None: ...

    def switchover(self, verdict: str, request: SwitchoverRequest) -> None: ...

    def priority_step_aside(self, outranked_by: str, priority: int) -> None:
        self.stepped_aside_for.append(outranked_by)


class Env:
    def __init__(self, backend: ZooKeeperBackend, name: str, raw: KazooClient) -> None:
        self.backend, self.name, self.raw = backend, name, raw
        self.sessions: list[ZooKeeperSession] = []
        self.tasks: list[asyncio.Task[Leadership]] = []

    async def session(self) -> ZooKeeperSession:
        s = self.backend.session(3.0)
        await s.open()
        self.sessions.append(s)
        return s

    async def lead(self, cid: str) -> tuple[ZooKeeperElection, Leadership]:
        e = self.backend.election(self.name)
        return e, await e.campaign(await self.session(), cid)

    async def wait(self, cid: str, priority: int = 0) -> tuple[ZooKeeperElection, Report, asyncio.Task[Leadership]]:
        e = self.backend.election(self.name)
        queued, report = asyncio.Event(), Report()
        session = await self.session()
        task = asyncio.create_task(e.campaign(session, cid, lambda _: queued.set(), report, priority=priority))
        self.tasks.append(task)
        await asyncio.wait_for(queued.wait(), 5)
        await asyncio.sleep(0.2)  # its exists watch is set
        return e, report, task


@pytest.fixture
async def env(zookeeper: ZkServer, election_name: str) -> AsyncIterator[Env]:
    backend = ZooKeeperBackend(zookeeper.endpoints, MonotonicClock(), retry_interval=0.5)
    raw = KazooClient(hosts=",".join(zookeeper.endpoints))
    raw.start()
    e = Env(backend, election_name, raw)
    yield e
    for t in e.tasks:
        t.cancel()
    await asyncio.gather(*e.tasks, return_exceptions=True)
    for s in e.sessions:
        await s.close()
    await backend.close()
    raw.stop()
    raw.close()


async def test_a_clean_resign_is_claimed(env: Env) -> None:
    a, lead_a = await env.lead("a")
    b, report, task = await env.wait("b")
    slow: list[int] = []
    read_switchover = b._read_switchover

    async def counted(client: KazooClient) -> tuple[SwitchoverRequest | None, int]:
        slow.append(1)  # the slow path's first read after the wake-up
        return await read_switchover(client)

    b._read_switchover = counted  # type: ignore[method-assign]
    await a.resign()
    lead_b = await asyncio.wait_for(task, 5)
    assert lead_b.epoch == lead_a.epoch + 1 and lead_b.token > lead_a.token
    assert report.delays == [] and slow == [], "the claim was not taken: the slow path decided"
    data, _ = env.raw.get(f"/{env.name}.epoch")
    assert json.loads(data)["token"] == lead_b.token


async def test_a_watch_fired_by_a_data_change_is_not_a_departure(env: Env) -> None:
    """An exists watch fires on setData too: the head still holds its node, and the grant."""
    a, _ = await env.lead("a")
    _, _, task = await env.wait("b")
    env.raw.set(a._node, b"touched")  # an operator's `set` on the leader's node
    await asyncio.sleep(1.0)
    assert not task.done(), "the successor led while the leader's node still existed"
    await a.resign()
    await asyncio.wait_for(task, 5)


async def test_a_watch_fired_on_a_head_that_never_bumped_is_not_a_departure(env: Env) -> None:
    """The same with no term recorded yet, where the lock-delay rule alone would let a claim through."""
    env.raw.create(f"/{env.name}.epoch", b'{"epoch": 0}', makepath=True)
    head = env.raw.create(
        f"/{env.name}/{env.raw.client_id[0]:x}{NODE_MARK}", b"x", ephemeral=True, sequence=True, makepath=True
    )
    _, _, task = await env.wait("b")
    env.raw.set(head, b"touched")
    await asyncio.sleep(1.0)
    assert not task.done(), "the successor led while the head's node still existed"
    env.raw.delete(head)
    await asyncio.wait_for(task, 5)


async def test_a_node_deleted_without_its_marker_still_gets_the_lock_delay(env: Env) -> None:
    a, _ = await env.lead("a")
    _, report, task = await env.wait("b")
    env.raw.delete(a._node)  # `delete` under a live session: the old grant may still run
    await asyncio.sleep(1.0)
    assert not task.done(), "the successor led while the old leader's session lived"
    assert report.delays and report.delays[0].predecessor == a._node
    await a.resign()  # its confirmed stop: the marker ends the wait
    await asyncio.wait_for(task, 5)


async def test_a_record_garbled_before_the_handover_is_repaired(env: Env) -> None:
    a, _ = await env.lead("a")
    _, report, task = await env.wait("b")
    env.raw.set(f"/{env.name}.epoch", b"garbage")
    await a.resign()
    lead_b = await asyncio.wait_for(task, 5)
    assert report.repaired and "not JSON" in report.repaired[0], report.repaired
    assert lead_b.epoch >= 2


async def test_a_pending_switchover_request_is_left_to_the_slow_path(env: Env) -> None:
    a, _ = await env.lead("a")
    _, _, task_b = await env.wait("b")
    _, _, task_c = await env.wait("c")
    await env.backend.election(env.name).request_switchover(SwitchoverRequest("c", "test", "r1", 0, 1e12))
    await a.resign()
    lead_c = await asyncio.wait_for(task_c, 10)
    assert lead_c.id == "c" and not task_b.done()


async def test_a_queued_candidate_of_higher_priority_takes_the_vacancy(env: Env) -> None:
    a, _ = await env.lead("a")
    _, report_b, task_b = await env.wait("b")
    _, _, task_c = await env.wait("c", priority=10)
    await a.resign()
    lead_c = await asyncio.wait_for(task_c, 10)
    assert lead_c.id == "c" and report_b.stepped_aside_for == ["c"] and not task_b.done()
