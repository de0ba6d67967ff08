"""Issue 16, ZooKeeper: the claim after the head's node went (one pipelined read, one multi).

Bare backend elections on the real ZooKeeper, so the test chooses exactly
what happens between the watch firing and the claim. Each test fails if the
check that guards it is removed from ``ZooKeeperElection._claim``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import json
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss

from sidecar.backends import zookeeper as zk_mod
from sidecar.backends.base import KeyLost, LockDelay, StoreUnavailable, SwitchoverRequest, leader_should_hand_over
from sidecar.backends.zk_multiread import MultiRead
from sidecar.backends.zookeeper import NODE_MARK, ZooKeeperBackend, ZooKeeperElection, ZooKeeperSession
from sidecar.clock import MonotonicClock
from sidecar.model import Leadership
from tests.conftest import ZkServer
from tests.helpers import eventually

pytestmark = pytest.mark.integration


@dataclass
class Report:
    delays: list[LockDelay] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    stepped_aside_for: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)

    def lock_delay(self, delay: LockDelay) -> None:
        self.delays.append(delay)

    def epoch_record_repaired(self, key: str, found: str) -> None:
        self.repaired.append(found)

    def duplicate_candidate_id(self, candidate_id: str, keys: list[str]) -> None: ...

    def switchover(self, verdict: str, request: SwitchoverRequest) -> None:
        self.verdicts.append(verdict)

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
        # Its exists watch on its predecessor is set (kazoo files it once the server answered).
        base = "/" + self.name.strip("/") + "/"
        await eventually(
            lambda: any(p.startswith(base) and w for p, w in session.client._data_watchers.items()),
            5,
            what=f"{cid} watching its predecessor",
        )
        return e, report, task


@pytest.fixture(params=["one-by-one", "multiRead"])
async def env(zookeeper: ZkServer, election_name: str, request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    """Every claim test twice: the claim's first reads as three requests, and as one
    ``multiRead`` (a sidecar learns the server's version at start, ``describe``)."""
    backend = ZooKeeperBackend(zookeeper.endpoints, MonotonicClock(), retry_interval=0.5)
    if request.param == "multiRead":
        await backend.describe()
        assert backend.multi_read, f"ZooKeeper {backend.server_version} has no multiRead"
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


async def woken_and_waiting_again(e: ZooKeeperElection, task: asyncio.Task[Leadership], head: str) -> None:
    """``e``'s watch on ``head`` fired and its campaign decided: it led (``task`` done) or
    set its watch on ``head`` again (kazoo drops a watch as it fires it), instead of a
    fixed sleep and the hope that the decision was made within it."""
    client: KazooClient = e._client  # type: ignore[assignment]
    await eventually(
        lambda: task.done() or (e.wakeups > 0 and bool(client._data_watchers.get(head))),
        5,
        what=f"{e._node} woken and watching {head} again",
    )


async def test_a_watch_fired_by_a_data_change_is_not_a_departure(env: Env) -> None:
    """An exists watch fires on setData too: the head still holds its node, and the grant."""
    a, _ = await env.lead("a")
    e_b, _, task = await env.wait("b")
    env.raw.set(a._node, b"touched")  # an operator's `set` on the leader's node
    await woken_and_waiting_again(e_b, task, a._node)
    assert not task.done(), "the successor led while the leader's node still existed"
    await a.resign()
    await asyncio.wait_for(task, 5)


async def test_a_watch_fired_on_a_head_that_never_bumped_is_not_a_departure(env: Env) -> None:
    """The same with no term recorded yet, where the lock-delay rule alone would let a claim through."""
    env.raw.create(f"/{env.name}.epoch", b'{"epoch": 0}', makepath=True)
    head = env.raw.create(
        f"/{env.name}/{env.raw.client_id[0]:x}{NODE_MARK}", b"x", ephemeral=True, sequence=True, makepath=True
    )
    e_b, _, task = await env.wait("b")
    env.raw.set(head, b"touched")
    await woken_and_waiting_again(e_b, task, head)
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


async def queue_ids(env: Env) -> list[str]:
    cands = await env.backend.election(env.name).candidates()
    return [c.id for c in sorted(cands, key=lambda c: c.token) if not c.no_lead]


async def test_a_switchover_hands_the_term_over_the_heads_of_those_ahead_in_the_resign_multi(env: Env) -> None:
    """Issue 17: the leader's resign multi takes b's node (between it and the target c),
    checks c's, writes the record naming c and its marker holding the request, and
    deletes the request: c leads on its wake-up with no write of its own, b re-queues
    behind c and reports a step-aside, and the epoch moves exactly once.

    Before, b stepped aside by itself (two writes) and c then bumped the epoch in
    a multi of its own: three writes one after the other on the switchover's path.
    """
    a, lead_a = await env.lead("a")
    _, report_b, task_b = await env.wait("b")
    e_c, report_c, task_c = await env.wait("c")
    writes: list[str] = []
    bump_epoch, claim = e_c._bump_epoch, e_c._claim

    async def counted_bump(*args: Any, **kw: Any) -> int | None:
        writes.append("bump")
        return await bump_epoch(*args, **kw)

    async def counted_claim(*args: Any, **kw: Any) -> Any:
        writes.append("claim")
        return await claim(*args, **kw)

    e_c._bump_epoch, e_c._claim = counted_bump, counted_claim  # type: ignore[method-assign]
    await env.backend.election(env.name).request_switchover(SwitchoverRequest("c", "test", "r-multi", 0, 1e12))
    assert (await asyncio.wait_for(a.wait_switchover("a"), 5)).to == "c"
    assert report_b.verdicts == [], "b was woken before the leader's resign"
    assert await a.resign(hand_over=True) == "c"
    lead_c = await asyncio.wait_for(task_c, 5)
    assert lead_c.id == "c" and lead_c.epoch == lead_a.epoch + 1
    assert report_c.verdicts == ["completed"] and writes == [], f"c wrote: {writes}"
    await eventually(lambda: report_b.verdicts == ["step-aside"], 5, what="b stepping aside behind c")

    async def requeued() -> bool:
        return await queue_ids(env) == ["c", "b"]

    await eventually(requeued, 5, what="b queued again behind c")
    assert await env.backend.election(env.name).switchover_request() is None
    record, record_stat = env.raw.get(f"/{env.name}.epoch")
    _, marker_stat = env.raw.get(f"/{env.name}.resigned")
    assert json.loads(record)["leader"] == "c" and record_stat.mzxid == marker_stat.mzxid
    assert not task_b.done()


async def test_a_foreign_node_ahead_of_the_target_leaves_the_step_asides_to_the_candidates(env: Env) -> None:
    """A kazoo recipe's node never reads our record: no handover in the multi then. The
    leader wakes the next in line instead, and ours step aside one after the other."""
    a, lead_a = await env.lead("a")
    foreign = env.raw.create(f"/{env.name}/{'f' * 32}{NODE_MARK}", b"outsider", ephemeral=True, sequence=True)
    _, report_b, task_b = await env.wait("b")
    await env.backend.election(env.name).request_switchover(SwitchoverRequest("b", "test", "r-f", 0, 1e12))
    assert (await asyncio.wait_for(a.wait_switchover("a"), 5)).to == "b"
    assert await a.resign(hand_over=True) == ""  # a plain resign: the outsider heads the queue now
    assert await queue_ids(env) == ["outsider", "b"]
    env.raw.delete(foreign)
    lead_b = await asyncio.wait_for(task_b, 5)
    assert lead_b.id == "b" and lead_b.epoch == lead_a.epoch + 1 and report_b.verdicts == ["completed"]


async def test_the_leader_learns_of_a_request_in_one_round_trip(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17: after its watch fires, the leader sends every read it needs at once.

    Before, the request node's watch, the request, the queue and the
    queued candidates' ids were four round trips, one after the other,
    between the request landing and the leader's stop. The queue's ids are
    now known before a request comes, and the rest goes out together.
    """
    a, _ = await env.lead("a")
    await env.wait("b")
    env.backend.retry_interval = 30.0  # no re-read of the leader's own between the request and its answer
    mine: contextvars.ContextVar[bool] = contextvars.ContextVar("leader", default=False)
    trace: list[str] = []
    call = zk_mod._call

    async def traced(fn: Any, *args: Any, **kw: Any) -> Any:
        if not mine.get():
            return await call(fn, *args, **kw)
        trace.append("send")
        try:
            return await call(fn, *args, **kw)
        finally:
            trace.append("answer")

    monkeypatch.setattr(zk_mod, "_call", traced)

    async def leader() -> SwitchoverRequest:
        mine.set(True)  # inherited by the tasks the leader's wait starts
        return await a.wait_switchover("a")

    waiting = asyncio.create_task(leader())
    # The first read is done and the watch is set: all sent, all answered.
    await eventually(lambda: bool(trace) and trace.count("send") == trace.count("answer"), 5, what="first read")
    await eventually(lambda: bool(env.sessions[0].client._data_watchers), 5, what="the leader's watch")
    first = len(trace)
    await env.backend.election(env.name).request_switchover(SwitchoverRequest("b", "test", "r-1rt", 0, 1e12))
    assert (await asyncio.wait_for(waiting, 5)).to == "b"
    after = trace[first:]
    # One round trip: everything is sent before the first answer comes back.
    assert after == sorted(after, reverse=True), f"round trips after the request: {after}"


async def test_a_candidate_node_rewritten_by_hand_is_read_again_not_remembered(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding: ids kept by node name went stale when an operator rewrote a node's data, and
    the leader handed over for a target no node named any more (the next in line led instead)."""
    a, _ = await env.lead("a")
    e_b, _, _ = await env.wait("b")
    await env.wait("c")
    decided: list[tuple[str, bool]] = []
    rule = leader_should_hand_over  # what the backend calls, by name: replaced below

    def recorded(request: SwitchoverRequest | None, me: str, others: set[str], now: float) -> bool:
        verdict = rule(request, me, others, now)
        decided.append((request.id if request else "", verdict))
        return verdict

    monkeypatch.setattr(zk_mod, "leader_should_hand_over", recorded)
    waiting = asyncio.create_task(a.wait_switchover("a"))
    admin = env.backend.election(env.name)
    # A request the leader cannot act on: it wakes and reads b's node as naming b.
    await admin.request_switchover(SwitchoverRequest("nobody", "test", "r-0", 0, 1e12))
    await eventually(lambda: ("r-0", False) in decided, 5, what="the leader weighing r-0")
    await asyncio.to_thread(env.raw.set, e_b._node, b"ghost")  # b's node no longer names b
    await admin.request_switchover(SwitchoverRequest("b", "test", "r-b", 0, 1e12))
    await eventually(lambda: any(rid == "r-b" for rid, _ in decided), 5, what="the leader weighing r-b")
    assert ("r-b", True) not in decided, "the leader handed over to a target no node names"
    await admin.request_switchover(SwitchoverRequest("c", "test", "r-c", 0, 1e12))
    assert (await asyncio.wait_for(waiting, 5)).id == "r-c"


async def test_no_term_is_handed_to_a_release_that_would_bump_it_again(env: Env) -> None:
    """A target of the release before the handover multi reads no handed-over term and
    bumps the epoch again (an epoch nobody led: a review found it mid rolling upgrade).
    Only sessions whose liveness node says "handover" are handed a term or taken aside."""
    a, lead_a = await env.lead("a")
    await env.wait("b")
    e_c, report_c, task_c = await env.wait("c")
    liveness = e_c.liveness_path(env.sessions[2].client.client_id[0])
    env.raw.set(liveness, json.dumps({"ttl": 3.0}).encode())  # what the older release wrote
    await env.backend.election(env.name).request_switchover(SwitchoverRequest("c", "test", "r-old", 0, 1e12))
    assert (await asyncio.wait_for(a.wait_switchover("a"), 5)).to == "c"
    assert await a.resign(hand_over=True) == "", "a term was handed to a release that would bump it again"
    lead_c = await asyncio.wait_for(task_c, 5)
    assert lead_c.id == "c" and lead_c.epoch == lead_a.epoch + 1 and report_c.verdicts == ["completed"]


async def test_a_request_rewritten_under_the_same_id_is_not_handed_to_its_old_target(env: Env) -> None:
    """The multi compares the whole request it acts on, not its id (found by a review)."""
    a, _ = await env.lead("a")
    await env.wait("b")
    _, _, task_c = await env.wait("c")
    _, _, task_d = await env.wait("d")
    admin = env.backend.election(env.name)
    await admin.request_switchover(SwitchoverRequest("c", "test", "r-same", 0, 1e12))
    assert (await asyncio.wait_for(a.wait_switchover("a"), 5)).to == "c"
    await admin.request_switchover(SwitchoverRequest("d", "test", "r-same", 0, 1e12))  # same id, now d
    assert await a.resign(hand_over=True) == ""
    done, _ = await asyncio.wait([task_c, task_d], timeout=5, return_when=asyncio.FIRST_COMPLETED)
    assert [t.result().id for t in done] == ["d"]


async def test_a_candidate_whose_step_aside_the_multi_overtook_stays_queued(env: Env) -> None:
    """b decided to step aside (its predecessor left, the request names c behind it) and
    the leader's multi took its node before b's delete: still a step-aside, not a lost node."""
    a, _ = await env.lead("a")
    e_x, _, task_x = await env.wait("x")
    e_b, report_b, task_b = await env.wait("b")
    _, _, task_c = await env.wait("c")
    gate = asyncio.Event()
    requeue = e_b._requeue

    async def held(*args: Any, **kw: Any) -> None:
        await gate.wait()
        await requeue(*args, **kw)

    e_b._requeue = held  # type: ignore[method-assign]
    await env.backend.election(env.name).request_switchover(SwitchoverRequest("c", "test", "r-b", 0, 1e12))
    assert (await asyncio.wait_for(a.wait_switchover("a"), 5)).to == "c"
    task_x.cancel()
    await asyncio.to_thread(env.raw.delete, e_x._node)  # b wakes and decides to step aside
    await eventually(lambda: report_b.verdicts == ["step-aside"], 5, what="b deciding to step aside")
    assert await a.resign(hand_over=True) == "c"
    assert (await asyncio.wait_for(task_c, 5)).id == "c"
    gate.set()

    async def requeued() -> bool:
        return await queue_ids(env) == ["c", "b"]

    await eventually(requeued, 5, what="b queued again behind c")
    assert not task_b.done()


async def learned(env: Env, leader: ZooKeeperElection, cid: str, queued: int) -> asyncio.Task[SwitchoverRequest]:
    """The leader's switchover watch, running as in a sidecar, once it has read the ``queued`` nodes behind it."""
    task = asyncio.create_task(leader.wait_switchover(cid))
    env.tasks.append(task)  # type: ignore[arg-type]
    await eventually(lambda: len(leader._listed) == queued, 5, what=f"{cid} reading the {queued} queued behind it")
    return task


async def b_next_to_a(env: Env) -> tuple[ZooKeeperElection, Leadership, ZooKeeperElection, asyncio.Task[Leadership]]:
    """a leads, b is next in line, and a's switchover watch has read b (a pass-on can name it)."""
    a, lead_a = await env.lead("a")
    e_b, _, task_b = await env.wait("b")
    watch = await learned(env, a, "a", 1)
    watch.cancel()  # as the elector's demote does, before the stop and the resign
    await asyncio.gather(watch, return_exceptions=True)
    return a, lead_a, e_b, task_b


async def test_the_next_in_lines_watch_sends_its_claims_reads_itself(env: Env) -> None:
    """Issue 16: on a pass-on b reads the record, the marker and its own node before it
    leads, and all three leave from kazoo's connection thread as the watch on a's node
    fires, not from the loop a thread handoff later (as they did before)."""
    a, lead_a, e_b, task_b = await b_next_to_a(env)
    client: KazooClient = e_b._client  # type: ignore[assignment]
    loop_thread = threading.get_ident()
    reads: list[tuple[str, bool]] = []  # (path, sent from the loop's thread)

    def traced(send: Any) -> Any:
        def fn(path: str, *args: Any, **kw: Any) -> Any:
            reads.append((path, threading.get_ident() == loop_thread))
            return send(path, *args, **kw)

        return fn

    for name in ("get_async", "exists_async", "get_children_async"):
        setattr(client, name, traced(getattr(client, name)))
    call = client._call

    def traced_call(request: Any, result: Any) -> Any:
        for path in getattr(request, "paths", ()) if isinstance(request, MultiRead) else ():
            reads.append((path, threading.get_ident() == loop_thread))
        return call(request, result)

    client._call = traced_call  # type: ignore[method-assign]
    claim = e_b._claim

    async def claimed(*args: Any, **kw: Any) -> Any:
        out = await claim(*args, **kw)
        reads.append(("<claimed>", False))
        return out

    e_b._claim = claimed  # type: ignore[method-assign]
    assert await a.resign(hand_over=True) == "b"
    lead_b = await asyncio.wait_for(task_b, 5)
    assert lead_b.epoch == lead_a.epoch + 1
    before = reads[: reads.index(("<claimed>", False))]
    assert sorted(p for p, _ in before) == sorted([e_b.epoch_path, e_b.marker_path, e_b._node]), before
    assert not [p for p, on_loop in before if on_loop], f"sent from the loop, not the watch: {before}"


@pytest.mark.parametrize("then", ["touch", "resign"])
async def test_a_record_naming_the_next_in_line_written_by_hand_does_not_start_its_term(env: Env, then: str) -> None:
    """A review of a claim deciding on the record alone: an operator (or any writer but a
    handover multi) sets the record to name b. Woken while a still heads the queue (a
    touch of a's node), b led beside a; woken by a's plain resign, with the record at a's
    own epoch, b led on that epoch a second time. Only record and marker written by one
    multi say a handover."""
    a, lead_a = await env.lead("a")
    e_b, _, task_b = await env.wait("b")
    raw_record, _ = env.raw.get(e_b.epoch_path)
    record = json.loads(raw_record)
    epoch = record["epoch"] + (1 if then == "touch" else 0)
    session = int(env.sessions[1].id, 16)
    forged = dict(record, epoch=epoch, token=e_b._czxid, leader="b", key=e_b._node, lease=session)
    await asyncio.to_thread(env.raw.set, e_b.epoch_path, json.dumps(forged).encode())
    if then == "touch":
        data, _ = await asyncio.to_thread(env.raw.get, a._node)
        await asyncio.to_thread(env.raw.set, a._node, data)  # the watch fires; a still leads
        await woken_and_waiting_again(e_b, task_b, a._node)
        assert not task_b.done(), "b led while a's node still headed the queue"
        return
    await a.resign()  # a plain resign: the marker only
    lead_b = await asyncio.wait_for(task_b, 10)
    assert lead_b.epoch > lead_a.epoch, f"b led on a's epoch {lead_a.epoch} again"


async def test_a_connection_drop_as_the_watch_fires_still_leaves_the_handover_to_the_claim(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review: the reads the watch sends as the event is read are failed by kazoo if the
    connection drops in that pass (ConnectionLoss), where the loop's reads, sent later,
    waited in kazoo's queue across the reconnect. The claim sends them once more itself,
    and b leads on the handed term instead of pausing a retry interval on a store error."""
    a, lead_a, e_b, task_b = await b_next_to_a(env)
    client: KazooClient = e_b._client  # type: ignore[assignment]
    send_reads = zk_mod._ClaimReads.__call__

    def dropped_after(self: Any, event: Any) -> None:  # b's kazoo thread
        send_reads(self, event)
        if event.type == "DELETED":
            client._connection._socket.shutdown(socket.SHUT_RDWR)

    monkeypatch.setattr(zk_mod._ClaimReads, "__call__", dropped_after)
    assert await a.resign(hand_over=True) == "b"
    lead_b = await asyncio.wait_for(task_b, 10)
    assert lead_b.epoch == lead_a.epoch + 1


async def test_a_resign_hands_the_term_to_the_next_in_line_in_its_own_multi(env: Env) -> None:
    """Issue 16: the resign multi writes the record naming b (and the marker, at one
    zxid): b leads on its wake-up read with no write of its own, the epoch moves once,
    and the leader sent no read between its stop and its multi.

    Before, b woke on the delete, read, and bumped the epoch in a second multi:
    two fsynced writes on the handover's path where kazoo's Election pays one.
    """
    a, lead_a = await env.lead("a")
    e_b, report_b, task_b = await env.wait("b")
    watch = await learned(env, a, "a", 1)
    watch.cancel()  # as the elector's demote does, before the stop and the resign
    await asyncio.gather(watch, return_exceptions=True)
    writes: list[str] = []
    bump_epoch = e_b._bump_epoch

    async def counted_bump(*args: Any, **kw: Any) -> int | None:
        writes.append("bump")
        return await bump_epoch(*args, **kw)

    e_b._bump_epoch = counted_bump  # type: ignore[method-assign]
    reads: list[str] = []
    get = a._client.get_async  # type: ignore[union-attr]

    def counted_get(path: str, *args: Any) -> Any:
        reads.append(path)
        return get(path, *args)

    a._client.get_async = counted_get  # type: ignore[union-attr]
    assert await a.resign(hand_over=True) == "b"
    assert reads == [], f"the leader read on its resign path: {reads}"
    lead_b = await asyncio.wait_for(task_b, 5)
    assert lead_b.epoch == lead_a.epoch + 1 and lead_b.token > lead_a.token
    assert writes == [] and report_b.delays == [] and report_b.verdicts == []
    record, record_stat = env.raw.get(f"/{env.name}.epoch")
    _, marker_stat = env.raw.get(f"/{env.name}.resigned")
    assert json.loads(record)["token"] == lead_b.token and record_stat.mzxid == marker_stat.mzxid
    # b's own resign hands on in the same way: the record's version it took over is right.
    _, _, task_c = await env.wait("c")
    await learned(env, e_b, "b", 1)
    assert await e_b.resign(hand_over=True) == "c"
    assert (await asyncio.wait_for(task_c, 5)).epoch == lead_b.epoch + 1


async def test_no_pass_on_to_the_next_in_line_when_a_candidate_behind_outranks_it(env: Env) -> None:
    """c's priority takes the vacancy: the leader must not decide for b, who would step aside."""
    a, _ = await env.lead("a")
    _, report_b, task_b = await env.wait("b")
    _, _, task_c = await env.wait("c", priority=10)
    await learned(env, a, "a", 2)
    assert await a.resign(hand_over=True) == ""
    lead_c = await asyncio.wait_for(task_c, 10)
    assert lead_c.id == "c" and report_b.stepped_aside_for == ["c"] and not task_b.done()


async def test_no_pass_on_to_a_release_that_would_bump_the_epoch_again(env: Env) -> None:
    a, lead_a = await env.lead("a")
    e_b, _, task_b = await env.wait("b")
    liveness = e_b.liveness_path(env.sessions[1].client.client_id[0])
    env.raw.set(liveness, json.dumps({"ttl": 3.0}).encode())  # what the release before wrote
    await learned(env, a, "a", 1)
    assert await a.resign(hand_over=True) == ""
    assert (await asyncio.wait_for(task_b, 5)).epoch == lead_a.epoch + 1


@pytest.mark.parametrize("change", ["request", "rewrite", "gone"])
async def test_a_pass_on_decided_on_a_queue_that_moved_since_writes_nothing(env: Env, change: str) -> None:
    """What the leader read may be a retry interval old: the multi checks what can move
    (a request written since, b's node rewritten by hand or gone) and a plain resign follows."""
    a, lead_a = await env.lead("a")
    e_b, _, task_b = await env.wait("b")
    _, _, task_c = await env.wait("c")
    watch = await learned(env, a, "a", 2)
    watch.cancel()  # the leader's stop: it reads nothing more
    await asyncio.gather(watch, return_exceptions=True)
    if change == "request":
        await env.backend.election(env.name).request_switchover(SwitchoverRequest("c", "test", "r-late", 0, 1e12))
    elif change == "rewrite":
        env.raw.set(e_b._node, b"b")
    else:
        task_b.cancel()
        await asyncio.gather(task_b, return_exceptions=True)
        env.raw.delete(e_b._node)
    record_before, _ = env.raw.get(f"/{env.name}.epoch")
    assert await a.resign(hand_over=True) == ""
    if change == "request":
        assert (await asyncio.wait_for(task_c, 10)).id == "c" and not task_b.done()
    elif change == "rewrite":
        # (b's own claim then counts its node lost: a rewrite by hand ends a candidacy.)
        record, _ = env.raw.get(f"/{env.name}.epoch")
        assert json.loads(record)["token"] == json.loads(record_before)["token"] == lead_a.token
    else:
        assert (await asyncio.wait_for(task_c, 5)).epoch == lead_a.epoch + 1


async def taken(env: Env, leader: ZooKeeperElection, request: SwitchoverRequest, queued: int) -> None:
    """The leader's switchover watch, having read the queue behind it, takes ``request``."""
    watch = await learned(env, leader, "a", queued)
    await env.backend.election(env.name).request_switchover(request)
    assert (await asyncio.wait_for(watch, 5)).to == request.to


def count_reads(leader: ZooKeeperElection) -> list[str]:
    reads: list[str] = []
    client = leader._client
    assert client is not None
    get, children = client.get_async, client.get_children_async

    def counted_get(path: str, *args: Any) -> Any:
        reads.append(path)
        return get(path, *args)

    def counted_children(path: str, *args: Any) -> Any:
        reads.append(path + "/")
        return children(path, *args)

    client.get_async, client.get_children_async = counted_get, counted_children  # type: ignore[method-assign]
    return reads


async def test_a_switchover_handover_needs_no_read_after_the_stop(env: Env) -> None:
    """Issue 17: the leader decides its handover multi on the read it made when it took
    the request and on what it read of each node while it led: no round trip between
    the confirmed stop and the multi (before, one pipelined read of the queue, the
    request, the record, the marker and every node)."""
    a, lead_a = await env.lead("a")
    _, report_b, _ = await env.wait("b")
    _, report_c, task_c = await env.wait("c")
    await taken(env, a, SwitchoverRequest("c", "test", "r-known", 0, 1e12), 2)
    reads = count_reads(a)
    assert await a.resign(hand_over=True) == "c"
    assert reads == [], f"the leader read between its stop and its multi: {reads}"
    lead_c = await asyncio.wait_for(task_c, 5)
    assert lead_c.epoch == lead_a.epoch + 1 and report_c.verdicts == ["completed"]
    await eventually(lambda: report_b.verdicts == ["step-aside"], 5, what="b stepping aside behind c")


async def test_a_node_ahead_of_the_target_gone_since_the_request_was_taken_costs_one_read(env: Env) -> None:
    a, lead_a = await env.lead("a")
    _, _, task_b = await env.wait("b")
    _, _, task_c = await env.wait("c")
    await taken(env, a, SwitchoverRequest("c", "test", "r-gone", 0, 1e12), 2)
    task_b.cancel()
    await asyncio.gather(task_b, return_exceptions=True)
    env.raw.delete(f"/{env.name}/{a._known[0]}")
    reads = count_reads(a)
    assert await a.resign(hand_over=True) == "c"
    assert reads, "the multi on what the leader knew cannot have held: b's node was gone"
    assert (await asyncio.wait_for(task_c, 5)).epoch == lead_a.epoch + 1


@pytest.mark.parametrize("change", ["request", "target"])
async def test_a_handover_on_what_the_leader_knew_fails_when_the_store_moved(env: Env, change: str) -> None:
    """The request rewritten under its id to name d, or c's node rewritten to another id,
    after the leader took the request: the multi on what it knew writes nothing, and the
    fresh read finds no handover to make (c is no longer what was asked for)."""
    a, _ = await env.lead("a")
    await env.wait("b")
    e_c, _, _ = await env.wait("c")
    await env.wait("d")
    await taken(env, a, SwitchoverRequest("c", "test", "r-moved", 0, 1e12), 3)
    if change == "request":
        await env.backend.election(env.name).request_switchover(SwitchoverRequest("d", "test", "r-moved", 0, 1e12))
    else:
        env.raw.set(e_c._node, b"z")
    assert await a.resign(hand_over=True) == ""
    record, _ = env.raw.get(f"/{env.name}.epoch")
    assert json.loads(record)["leader"] != "c"


async def test_a_switchover_to_anyone_is_settled_in_the_resign_multi(env: Env) -> None:
    """No --to: the next in line takes the term from the leader's multi, which deletes the
    request and keeps it in the marker; the successor reports it completed. Before, the
    request rode a plain resign and the successor's own multi settled it."""
    a, lead_a = await env.lead("a")
    _, report_b, task_b = await env.wait("b")
    await env.wait("c", priority=10)  # priorities do not decide over a pending request
    await taken(env, a, SwitchoverRequest("", "test", "r-anyone", 0, 1e12), 2)
    reads = count_reads(a)
    assert await a.resign(hand_over=True) == "b"
    assert reads == [], f"the leader read between its stop and its multi: {reads}"
    lead_b = await asyncio.wait_for(task_b, 5)
    assert lead_b.epoch == lead_a.epoch + 1 and report_b.verdicts == ["completed"]
    assert await env.backend.election(env.name).switchover_request() is None


async def test_a_request_for_anyone_rewritten_since_it_was_taken_is_not_settled_for_it(env: Env) -> None:
    """Rewritten to name c after the leader took it for "anyone": the multi deletes the
    request at the version it was read at, fails, and the plain resign leaves c's request
    to the candidates (b steps aside, c leads)."""
    a, _ = await env.lead("a")
    _, _, task_b = await env.wait("b")
    _, _, task_c = await env.wait("c")
    await taken(env, a, SwitchoverRequest("", "test", "r-any", 0, 1e12), 2)
    await env.backend.election(env.name).request_switchover(SwitchoverRequest("c", "test", "r-c", 0, 1e12))
    assert await a.resign(hand_over=True) == ""
    assert (await asyncio.wait_for(task_c, 10)).id == "c" and not task_b.done()


# -- the hostile review of the pass-on and the handover on what the leader knew --


async def test_a_higher_priority_candidate_that_joined_during_the_stop_takes_the_vacancy(env: Env) -> None:
    """The leader's listing is the switchover watch's; the watch ends when the demote starts,
    and the stop may take seconds. c (priority 10) queues during the stop: the vacancy is
    c's. The multi cannot check that nobody joined, so the queue's watch says it: a plain
    resign, and b's own claim steps aside for c (found by a review)."""
    a, _ = await env.lead("a")
    _, report_b, task_b = await env.wait("b")
    watch = await learned(env, a, "a", 1)
    watch.cancel()  # the elector's demote: the watch ends before the stop hook runs
    await asyncio.gather(watch, return_exceptions=True)
    _, _, task_c = await env.wait("c", priority=10)  # joins while a's orchestrator stops
    assert await a.resign(hand_over=True) == ""
    assert (await asyncio.wait_for(task_c, 10)).id == "c" and report_b.stepped_aside_for == ["c"]
    assert not task_b.done()


async def test_a_request_withdrawn_and_written_again_is_not_settled_as_the_one_taken(env: Env) -> None:
    """The request to c is deleted (withdrawn) and one to d written: a new node, at version 0
    again, the version the leader read. A multi cannot check a czxid; the exists watch set
    with the read that took the request says the node moved, and the fresh read finds a
    request the leader did not take (found by a review)."""
    a, _ = await env.lead("a")
    await env.wait("b")
    await env.wait("c")
    _, _, task_d = await env.wait("d")
    await taken(env, a, SwitchoverRequest("c", "test", "r-c", 0, 1e12), 3)
    env.raw.delete(f"/{env.name}.switchover")
    await env.backend.election(env.name).request_switchover(SwitchoverRequest("d", "test", "r-d", 0, 1e12))
    _, stat = env.raw.get(f"/{env.name}.switchover")
    assert stat.version == a._acting_version == 0  # what the version alone cannot tell apart
    assert await a.resign(hand_over=True) == ""
    assert (await asyncio.wait_for(task_d, 10)).id == "d"


async def test_a_request_for_anyone_withdrawn_and_written_again_for_d_is_not_settled_for_anyone(env: Env) -> None:
    a, _ = await env.lead("a")
    _, _, task_b = await env.wait("b")
    _, _, task_d = await env.wait("d")
    await taken(env, a, SwitchoverRequest("", "test", "r-any", 0, 1e12), 2)
    env.raw.delete(f"/{env.name}.switchover")
    await env.backend.election(env.name).request_switchover(SwitchoverRequest("d", "test", "r-d", 0, 1e12))
    assert await a.resign(hand_over=True) == ""
    assert (await asyncio.wait_for(task_d, 10)).id == "d" and not task_b.done()


async def test_a_pass_on_whose_answer_was_lost_leaves_one_term(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The multi committed, its answer was lost: the resign fails, the leader queues again on
    the same session; b leads on the term handed to it, once, with no lock-delay."""
    a, lead_a = await env.lead("a")
    _, report_b, task_b = await env.wait("b")
    watch = await learned(env, a, "a", 1)
    watch.cancel()
    await asyncio.gather(watch, return_exceptions=True)
    real, lost = zk_mod._call, list[Any]()

    async def lossy(fn: Any, *args: Any, **kw: Any) -> Any:
        got = await real(fn, *args, **kw)
        if getattr(fn, "__name__", "") == "commit_async" and not lost:
            lost.append(got)
            raise ConnectionLoss()  # committed, the answer lost
        return got

    monkeypatch.setattr(zk_mod, "_call", lossy)
    with pytest.raises(StoreUnavailable):
        await a.resign(hand_over=True)
    monkeypatch.setattr(zk_mod, "_call", real)
    again = asyncio.create_task(a.campaign(env.sessions[0], "a"))
    env.tasks.append(again)
    lead_b = await asyncio.wait_for(task_b, 5)
    assert lead_b.epoch == lead_a.epoch + 1 and lead_b.token > lead_a.token and report_b.delays == []
    record, _ = env.raw.get(f"/{env.name}.epoch")
    assert json.loads(record)["token"] == lead_b.token
    assert not again.done()


async def test_a_successor_gone_before_it_read_the_term_handed_to_it(env: Env) -> None:
    """b's process dies after the multi named it and before its read: c leads on the epoch
    after b's, and no token or epoch goes back."""
    a, lead_a = await env.lead("a")
    e_b, _, _ = await env.wait("b")
    _, _, task_c = await env.wait("c")
    watch = await learned(env, a, "a", 2)
    watch.cancel()
    await asyncio.gather(watch, return_exceptions=True)
    stuck, entered = asyncio.Event(), asyncio.Event()

    async def stuck_claim(*args: object, **kw: object) -> None:
        entered.set()
        await stuck.wait()

    e_b._claim = stuck_claim  # type: ignore[method-assign]
    assert await a.resign(hand_over=True) == "b"
    await asyncio.wait_for(entered.wait(), 5)
    await env.sessions[1].abandon()  # b's process dies: its session expires on the server
    lead_c = await asyncio.wait_for(task_c, 15)
    record, _ = env.raw.get(f"/{env.name}.epoch")
    assert lead_c.epoch == lead_a.epoch + 2 and json.loads(record)["token"] == lead_c.token


async def test_watches_set_again_every_pass_do_not_pile_up(
    zookeeper: ZkServer, election_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kazoo keeps a path's watch callbacks in a set until an event fires them: a new
    callback on every pass of a loop that re-reads each retry interval added one entry per
    pass on a quiet path, as long as a leader led (about 43,000 a day at the default 2 s)."""
    backend = ZooKeeperBackend(zookeeper.endpoints, MonotonicClock(), retry_interval=0.02)
    sessions = [backend.session(3.0) for _ in range(2)]
    for s in sessions:
        await s.open()
    leader, standby = backend.election(election_name), backend.election(election_name)
    try:
        await leader.campaign(sessions[0], "a")
        passes: list[str] = []
        read, looked = zk_mod._switchover_of, standby._leadership

        def counted(outcome: Any) -> tuple[SwitchoverRequest | None, int]:  # each pass reads the request
            passes.append("leader")
            return read(outcome)

        async def counted_look(*args: Any, **kw: Any) -> Leadership | None:
            passes.append("no-lead")
            return await looked(*args, **kw)

        monkeypatch.setattr(zk_mod, "_switchover_of", counted)
        standby._leadership = counted_look  # type: ignore[method-assign]
        tasks = [
            asyncio.create_task(leader.wait_switchover("a")),
            asyncio.create_task(standby.campaign(sessions[1], "s", no_lead=True)),
        ]
        await eventually(
            lambda: min(passes.count("leader"), passes.count("no-lead")) >= 20, 10, what="20 passes of each loop"
        )
        c0, c1 = sessions[0].client, sessions[1].client
        no_lead_node = f"{standby.no_lead_path}/{sessions[1].id}"
        sizes = {
            "leader, request node": len(c0._data_watchers.get(leader.switch_path, ())),
            "leader, queue": len(c0._child_watchers.get(leader.base, ())),
            "no-lead, own node": len(c1._data_watchers.get(no_lead_node, ())),
            "no-lead, queue": len(c1._child_watchers.get(standby.base, ())),
        }
        assert all(n <= 1 for n in sizes.values()), sizes
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for s in sessions:
            await s.close()
        await backend.close()


async def test_a_listing_of_an_earlier_switchover_watch_is_not_decided_on(env: Env) -> None:
    """The elector calls the switchover watch again after a store error: what the failed
    call listed was guarded by that call's queue watch, not the new one's. A candidate of
    higher priority that joined in between, before the new call listed, is not passed over."""
    a, _ = await env.lead("a")
    await env.wait("b")
    first = await learned(env, a, "a", 1)
    first.cancel()  # the store error that ends the call
    await asyncio.gather(first, return_exceptions=True)
    held = asyncio.Event()

    async def unanswered(client: KazooClient, watcher: Any = None) -> list[str]:
        await held.wait()  # the new call's listing (and its queue watch) is not set yet
        return []

    a._children = unanswered  # type: ignore[method-assign]
    second = asyncio.create_task(a.wait_switchover("a"))
    env.tasks.append(second)  # type: ignore[arg-type]
    _, _, task_c = await env.wait("c", priority=10)
    second.cancel()
    await asyncio.gather(second, return_exceptions=True)
    assert await a.resign(hand_over=True) == ""
    assert (await asyncio.wait_for(task_c, 10)).id == "c"


async def test_observe_leaves_one_watch_callback_per_path(env: Env) -> None:
    """``status --watch``: each change of the queue fired the queue's watch, and the epoch
    node's stayed registered beside a new one set by the next pass (one more per change)."""
    await env.lead("a")
    observer = env.backend.election(env.name)
    seen: list[Leadership | None] = []

    async def follow() -> None:
        async for now in observer.observe():
            seen.append(now)

    task = asyncio.create_task(follow())
    env.tasks.append(task)  # type: ignore[arg-type]
    await eventually(lambda: len(seen) == 1, 5, what="the first leader observed")
    client = await env.backend.observer()
    for _ in range(10):  # a queue that changes, a leader that does not
        _, _, waiting = await env.wait("w")
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await env.sessions[-1].close()
    await eventually(
        lambda: len(client._child_watchers.get(f"/{env.name}", ())) == 1, 5, what="observe watching the queue again"
    )
    assert len(client._data_watchers.get(f"/{env.name}.epoch", ())) <= 1


def learned_all(leader: ZooKeeperElection, n: int) -> bool:
    return len(leader._listed) == n


async def test_candidates_joining_cost_the_leader_a_read_of_each_new_node_only(
    zookeeper: ZkServer, election_name: str
) -> None:
    """The queue's watch wakes the leader's loop on each join; a pass woken that way read the
    id of every node listed before (meant for a request's wake-up): N joins cost about N^2/2
    reads (a second review measured 17.5 a join at 30). Now: the new node and its session's
    liveness node."""
    backend = ZooKeeperBackend(zookeeper.endpoints, MonotonicClock(), retry_interval=60.0)
    sessions: list[ZooKeeperSession] = []
    tasks: list[asyncio.Task[Any]] = []
    try:
        s = backend.session(5.0)
        await s.open()
        sessions.append(s)
        leader = backend.election(election_name)
        await leader.campaign(s, "a")
        reads: list[str] = []
        get = s.client.get_async

        def counted(path: str, *args: Any) -> Any:
            reads.append(path)
            return get(path, *args)

        s.client.get_async = counted  # type: ignore[method-assign]
        tasks.append(asyncio.create_task(leader.wait_switchover("a")))
        await eventually(lambda: leader._listed_mark == 0, 5, what="the leader's first pass")
        n = 20
        for i in range(n):
            cs = backend.session(5.0)
            await cs.open()
            sessions.append(cs)
            tasks.append(asyncio.create_task(backend.election(election_name).campaign(cs, f"c{i}")))
            await eventually(partial(learned_all, leader, i + 1), 5, what=f"the leader reading c{i}")
        assert len(reads) / n <= 4, f"{len(reads)} reads for {n} joins, no request pending"
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for s in sessions:
            await s.close()
        await backend.close()


async def test_a_connection_drop_turns_the_pass_on_off_until_the_next_listing(env: Env) -> None:
    """kazoo does not set watches again on a reconnect: it fires every callback with a
    session event and forgets them. The count moves, and a candidate that queued while the
    queue was unwatched is not passed over (a second review's check)."""
    a, _ = await env.lead("a")
    await env.wait("b")
    watch = await learned(env, a, "a", 1)
    watch.cancel()
    await asyncio.gather(watch, return_exceptions=True)
    queue_watch = a._queue_watch
    assert queue_watch is not None
    env.sessions[0].client._connection._socket.shutdown(socket.SHUT_RDWR)
    await eventually(lambda: queue_watch.count != a._listed_mark, 5, what="the session event counted")
    await eventually(lambda: env.sessions[0].client.connected, 5, what="a reconnected, same session")
    _, _, task_c = await env.wait("c", priority=10)
    assert await a.resign(hand_over=True) == ""
    assert (await asyncio.wait_for(task_c, 10)).id == "c"


async def test_a_target_evicted_before_its_wake_up_read_does_not_lead(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator evicts b right after a's pass-on multi named it, before b's wake-up
    read: its listing misses its node, KeyLost, and its orchestrator never starts (a review
    had it lead on the record and marker alone, on a node that no longer existed)."""
    a, _ = await env.lead("a")
    e_b, _, task_b = await env.wait("b")
    watch = await learned(env, a, "a", 1)
    watch.cancel()
    await asyncio.gather(watch, return_exceptions=True)
    send_reads = zk_mod._ClaimReads.__call__

    def evicted_first(self: Any, event: Any) -> None:  # b's kazoo thread, as the head's deletion is read
        if self._paths[2] == e_b._node:
            env.raw.delete(e_b._node)  # `evict b`, landing just after the multi (raw has its own thread)
        send_reads(self, event)

    monkeypatch.setattr(zk_mod._ClaimReads, "__call__", evicted_first)
    assert await a.resign(hand_over=True) == "b"
    with pytest.raises(KeyLost):
        await asyncio.wait_for(task_b, 5)


async def test_a_pass_on_landing_between_the_record_read_and_the_listing_bumps_once(env: Env) -> None:
    """b is woken by x's departure (ahead [a, x]) and pipelines its wake-up read; a's
    pass-on multi commits after the server answered b's marker read and before the
    requests b sent after it. Listing first: the listing shows a, b waits on a, then
    takes the handed term: one bump. With the record and the marker sent first (a
    review's test), the listing said b heads the queue, the stale record said "not
    handed", and the slow path bumped again: e+2."""
    a, lead_a = await env.lead("a")
    e_x, _, task_x = await env.wait("x")
    e_b, _, task_b = await env.wait("b")
    watch = await learned(env, a, "a", 2)
    client: KazooClient = e_b._client  # type: ignore[assignment]
    loop = asyncio.get_running_loop()
    held: list[tuple[Any, tuple[Any, ...], dict[str, Any], Any]] = []
    armed = True
    names = {
        "get_async": client.get_async,
        "get_children_async": client.get_children_async,
        "exists_async": client.exists_async,
    }

    def hold(name: str) -> Any:
        orig = names[name]

        def fn(*args: Any, **kw: Any) -> Any:
            if not armed:
                return orig(*args, **kw)
            ar = client.handler.async_result()
            held.append((orig, args, kw, ar))
            return ar

        return fn

    for n in names:
        setattr(client, n, hold(n))

    def release(item: tuple[Any, tuple[Any, ...], dict[str, Any], Any]) -> asyncio.Event:
        orig, args, kw, ar = item
        answered = asyncio.Event()

        def relay(r: Any) -> None:
            try:
                ar.set(r.get_nowait())
            except Exception as exc:
                ar.set_exception(exc)
            loop.call_soon_threadsafe(answered.set)

        orig(*args, **kw).rawlink(relay)
        return answered

    await asyncio.to_thread(env.raw.delete, e_x._node)  # x goes (evicted): b wakes, ahead is [a]
    await eventually(lambda: any(a[0] == e_b.marker_path for _, a, _, _ in held), 5, what="b's marker read")
    await eventually(lambda: a._listed == [e_b._node.rsplit("/", 1)[1]], 5, what="a relisting [b]")
    watch.cancel()
    await asyncio.gather(watch, return_exceptions=True)
    # The server answers b's requests in the order sent, up to and including the marker read ...
    first = held[: 1 + next(i for i, (_, a, _, _) in enumerate(held) if a[0] == e_b.marker_path)]
    del held[: len(first)]
    for item in first[:-1]:
        release(item)
    await release(first[-1]).wait()
    # ... then a's pass-on multi commits, then the rest of b's requests are answered.
    assert await a.resign(hand_over=True) == "b"
    armed = False
    for item in held:
        release(item)
    held.clear()
    lead_b = await asyncio.wait_for(task_b, 5)
    assert lead_b.epoch == lead_a.epoch + 1, f"epoch bumped twice in b's term: {lead_a.epoch} -> {lead_b.epoch}"
    task_x.cancel()


async def test_a_failed_wake_up_read_leaves_no_unretrieved_task_exception(env: Env) -> None:
    """The record read fails (connection loss) and the marker read failed before it
    (the listing too, should the slow path read it): every read's task is retrieved,
    none logs 'Task exception was never retrieved'."""
    a, _ = await env.lead("a")
    e_b, _, task_b = await env.wait("b")
    loop = asyncio.get_running_loop()
    logged: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _l, ctx: logged.append(str(ctx.get("message"))))

    failed_first = asyncio.Event()

    async def lost(client: KazooClient, path: str) -> Any:
        if path == e_b.marker_path:
            failed_first.set()
            raise ConnectionLoss()
        await failed_first.wait()  # the record read fails after the marker read did
        raise ConnectionLoss()

    async def unlisted(client: KazooClient, watcher: Any = None) -> list[str]:
        failed_first.set()
        raise StoreUnavailable("zookeeper list candidates: ConnectionLoss")

    e_b._read = lost  # type: ignore[method-assign]
    e_b._children = unlisted  # type: ignore[method-assign]
    try:
        await a.resign()
        with contextlib.suppress(StoreUnavailable):
            await asyncio.wait_for(task_b, 5)
        env.tasks.remove(task_b)
        del task_b
        for _ in range(3):
            gc.collect()
            await asyncio.sleep(0)
        assert not [m for m in logged if "never retrieved" in m], logged
    finally:
        loop.set_exception_handler(previous)


async def test_a_handover_landing_between_the_claims_two_rounds_bumps_once(env: Env) -> None:
    """The claim decides a handover on its first round (record, marker, our node) and
    reads the rest only when that says "not handed". b wakes on a data change of the
    leader's node (a watch that fires without a departure), its first round finds a's
    term, a's pass-on multi lands, and the second round finds a gone and b at the head:
    decided on the first round's record, b must not bump the epoch a second time."""
    a, lead_a, e_b, task_b = await b_next_to_a(env)
    client: KazooClient = e_b._client  # type: ignore[assignment]
    held: list[tuple[Any, tuple[Any, ...], Any]] = []
    state = {"armed": False, "claims": 0}
    originals = {n: getattr(client, n) for n in ("get_children_async", "exists_async", "get_async")}

    def hold(name: str) -> Any:
        def fn(*args: Any) -> Any:
            if name == "get_children_async" and not held:
                state["armed"] = True  # the second round starts with the listing
            if not state["armed"]:
                return originals[name](*args)
            ar = client.handler.async_result()
            held.append((originals[name], args, ar))
            return ar

        return fn

    for n in originals:
        setattr(client, n, hold(n))
    claim = e_b._claim

    async def counted(*args: Any, **kw: Any) -> Any:
        state["claims"] += 1
        return await claim(*args, **kw)

    e_b._claim = counted  # type: ignore[method-assign,assignment]
    writes: list[int] = []
    transaction = client.transaction

    def counted_tx() -> Any:
        writes.append(1)
        return transaction()

    client.transaction = counted_tx  # type: ignore[method-assign]
    env.raw.set(a._node, b"touched")  # b's exists watch fires; a still leads
    await eventually(lambda: len(held) == 3, 5, what="b's second round sent, held")
    assert await a.resign(hand_over=True) == "b"
    state["armed"] = False

    def relay(r: Any, ar: Any) -> None:
        if r.successful():
            ar.set(r.get_nowait())
        else:
            ar.set_exception(r.exception)

    for orig, args, ar in held:
        orig(*args).rawlink(partial(relay, ar=ar))
    lead_b = await asyncio.wait_for(task_b, 5)
    assert state["claims"] == 1
    assert lead_b.epoch == lead_a.epoch + 1, f"epoch bumped twice in b's term: {lead_a.epoch} -> {lead_b.epoch}"
    assert writes == [], "b wrote its term again over the one a's multi handed it"
    _, record_stat = env.raw.get(f"/{env.name}.epoch")
    _, marker_stat = env.raw.get(f"/{env.name}.resigned")
    assert record_stat.mzxid == marker_stat.mzxid
