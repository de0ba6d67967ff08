"""Issue 14, etcd: the store must protect a grant even when the key goes early.

A "frozen leader" here is a lease and a candidate key made by hand (what a
SIGSTOPped sidecar leaves in the store): it is renewed only when the test
says so, and the epoch record names it as the leader, as its own campaign
would have. In-process electors on the real etcd play the successor.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import pytest

from sidecar.backends import connect
from sidecar.backends.base import Backend
from sidecar.clock import MonotonicClock
from sidecar.config import Config
from sidecar.elector import Elector, Hooks
from sidecar.model import Grant
from sidecar_harness.fleet import FAST_TIMING, fast_config
from tests.conftest import EtcdServer
from tests.helpers import RecordingSink, eventually

pytestmark = pytest.mark.integration
TTL = FAST_TIMING["ttl"]
# The frozen leader's grant ends here, counted from its last renewal's send.
GRANT = TTL * (1 - 0.01) - FAST_TIMING["margin"]


@dataclass
class Successor:
    elector: Elector
    sink: RecordingSink
    task: asyncio.Task[None]
    elected_at: list[float] = field(default_factory=list)


@dataclass
class Store:
    cfg: Config
    backend: Backend
    raw: Any  # the etcd3aio client, for what an operator would do with etcdctl
    successors: list[Successor] = field(default_factory=list)

    async def frozen_leader(self, ttl: float = TTL) -> tuple[int, str, int]:
        """A leader that holds a grant and then stops: (lease, key, token)."""
        lease = (await self.raw.lease.grant(int(ttl))).ID
        key = f"{self.cfg.election}/{lease:x}"
        put = await self.raw.kv.put(key, "frozen", lease=lease)
        token = int(put.header.revision)
        record = {"epoch": 7, "token": token, "leader": "frozen", "key": key, "lease": lease}
        await self.raw.kv.put(self.cfg.election + ".epoch", json.dumps(record))
        return lease, key, token

    async def renew(self, lease: int) -> float:
        """One keepalive; returns its send time (the frozen leader's grant runs from it)."""
        sent = time.monotonic()
        stream = self.raw.lease.keep_alive(lease)
        async for resp in stream:
            assert resp.TTL > 0
            break
        stream.cancel()
        return sent

    def join(self, candidate: str, cfg: Config | None = None) -> Successor:
        sink = RecordingSink()
        elected: list[float] = []

        async def started(_: Grant) -> None:
            elected.append(time.monotonic())

        e = Elector(
            replace(cfg or self.cfg, candidate_id=candidate),
            self.backend,
            MonotonicClock(),
            sink,
            Hooks(started_leading=started),
        )
        s = Successor(e, sink, asyncio.create_task(e.run()), elected)
        self.successors.append(s)
        return s


@pytest.fixture
async def store(etcd: EtcdServer, election_name: str) -> AsyncIterator[Store]:
    cfg = replace(fast_config(election_name), endpoints=tuple(etcd.endpoints))
    backend = await connect(cfg, MonotonicClock())
    from etcd3aio import Etcd3Client

    raw = Etcd3Client(etcd.endpoints)
    await raw.connect()
    st = Store(cfg, backend, raw)
    yield st
    for s in st.successors:
        s.elector.stop()
    await asyncio.wait_for(asyncio.gather(*(s.task for s in st.successors), return_exceptions=True), 15)
    await backend.close()
    await raw.close()


async def queued(s: Successor) -> None:
    await eventually(lambda: bool(s.sink.of("race_lost")), what="the successor queued behind the frozen leader")


@pytest.mark.parametrize("how", ["key-deleted", "lease-revoked", "prefix-deleted"])
async def test_successor_waits_out_a_frozen_leaders_lease_when_its_key_goes_early(store: Store, how: str) -> None:
    lease, key, _ = await store.frozen_leader()
    b = store.join("b")
    await queued(b)
    last_renewal = await store.renew(lease)
    # Let the successor follow the leader's lease for a poll or two, as in life.
    await eventually(
        lambda: time.monotonic() > last_renewal + FAST_TIMING["retry_interval"] * 1.5, what="one poll interval"
    )
    if how == "key-deleted":
        await store.raw.kv.delete(key)  # etcdctl del
    elif how == "prefix-deleted":
        # `etcdctl del --prefix NAME`: every key of the election, the successor's
        # own and the epoch record (which names the leader) among them.
        name = store.cfg.election.encode()
        await store.raw.kv.delete(name, range_end=name[:-1] + bytes([name[-1] + 1]))
    else:
        await store.raw.lease.revoke(lease)  # etcdctl lease revoke
    gone = time.monotonic()
    await eventually(lambda: bool(b.elected_at), timeout=TTL + 5, what="the successor leads")
    # The frozen leader's orchestrator may act until its grant deadline: no grant before it.
    assert b.elected_at[0] >= last_renewal + GRANT, (
        f"{how}: successor led {b.elected_at[0] - gone:.3f}s after the key went, "
        f"{last_renewal + GRANT - b.elected_at[0]:.3f}s before the frozen leader's grant ended"
    )
    assert b.elector.counters["lock_delay"] == 1, b.elector.counters
    (delay,) = b.sink.of("lock_delay")
    assert delay["predecessor"] == key


async def test_crash_failover_is_not_slowed_by_the_lock_delay(store: Store, measure: Any) -> None:
    lease, _, _ = await store.frozen_leader()
    b = store.join("b")
    await queued(b)
    last_renewal = await store.renew(lease)  # then it dies: the lease runs out
    await eventually(lambda: bool(b.elected_at), timeout=TTL + 5, what="the successor leads")
    late = b.elected_at[0] - (last_renewal + TTL)
    measure("crash failover: elected after the dead leader's lease ran out", f"{late * 1000:.0f} ms")
    delays = b.sink.of("lock_delay")
    assert late < 1.0 and (not delays or delays[0]["seconds"] < 0.3), (late, delays)


async def test_clean_resign_pays_no_lock_delay(store: Store) -> None:
    a = store.join("a")
    await eventually(lambda: bool(a.elected_at), what="a leads")
    b = store.join("b")
    await queued(b)
    t = time.monotonic()
    assert a.elector.resign()
    await eventually(lambda: bool(b.elected_at), what="b leads")
    assert b.elected_at[0] - t < 1.0
    assert b.elector.counters["lock_delay"] == 0


@pytest.mark.parametrize("garbage", [b"garbage", b'{"epoch": "x"}', b"[1, 2]", b'{"epoch": -3, "token": 1}'])
async def test_a_malformed_epoch_record_is_repaired_by_the_next_winner(store: Store, garbage: bytes) -> None:
    key = store.cfg.election + ".epoch"
    await store.raw.kv.put(key, garbage)
    admin = store.backend.admin(store.cfg.election)
    problems = await admin.problems()
    assert len(problems) == 1 and key in problems[0], problems
    a = store.join("a")
    await eventually(lambda: bool(a.elected_at), what="a leads despite the garbled epoch record")
    (fixed,) = a.sink.of("epoch_record_repaired")
    assert fixed["key"] == key
    lead = await admin.leader()
    assert lead is not None and lead.id == "a" and lead.epoch >= 1
    assert await admin.problems() == []


async def test_two_sidecars_with_one_id_are_warned_and_told_apart(store: Store) -> None:
    a = store.join("same")
    await eventually(lambda: bool(a.elected_at), what="first leads")
    b = store.join("same")
    await eventually(lambda: bool(b.sink.of("duplicate_candidate_id")), what="the duplicate id warned")
    problems = await store.backend.admin(store.cfg.election).problems()
    assert any("'same'" in p for p in problems), problems


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args], capture_output=True, text=True, timeout=30, check=False
    )


async def test_evict_needs_force_for_the_leader_and_refuses_an_ambiguous_id(store: Store, etcd: EtcdServer) -> None:
    a = store.join("dup")
    await eventually(lambda: bool(a.elected_at), what="a leads")
    b = store.join("dup")
    await queued(b)
    common = ["--endpoints", ",".join(etcd.endpoints), "--election", store.cfg.election]
    out = await asyncio.to_thread(cli, "evict", "--candidate", "dup", *common)
    assert out.returncode == 1 and "--key" in out.stderr, out.stderr
    status = await asyncio.to_thread(cli, "status", *common)
    assert "KEY" in status.stdout and "duplicate id" in status.stdout, status.stdout
    leader_key = f"{store.cfg.election}/{a.elector.session.id if a.elector.session else ''}"
    out = await asyncio.to_thread(cli, "evict", "--candidate", "dup", "--key", leader_key, *common)
    assert out.returncode == 1 and "--force" in out.stderr and "lock-delay" in out.stderr, out.stderr
    out = await asyncio.to_thread(cli, "evict", "--candidate", "dup", "--key", leader_key, "--force", *common)
    assert out.returncode == 0, out.stderr


async def test_the_store_version_is_known(store: Store) -> None:
    describe = getattr(store.backend, "describe", None)
    assert describe is not None, "the etcd backend cannot tell its server version"
    facts = await describe()
    assert facts["version"].startswith("3."), facts
    from sidecar.backends.etcd import known_bugs

    assert facts.get("known_bugs", "") == "; ".join(known_bugs(facts["version"])), facts


async def test_a_candidate_on_a_member_without_a_raft_leader_does_not_sleep_unaware(
    etcd_cluster: EtcdServer, election_name: str
) -> None:
    """Watches require a leader: on a cut-off member the waiting candidate hears of it."""
    assert etcd_cluster.local is not None
    cluster = etcd_cluster.local
    cfg = replace(fast_config(election_name), endpoints=tuple(etcd_cluster.endpoints))
    backend = await connect(cfg, MonotonicClock())
    raw_cfg = replace(cfg, endpoints=(etcd_cluster.endpoints[0],))
    lonely = await connect(raw_cfg, MonotonicClock())
    st = Store(cfg, backend, None)
    try:
        a = st.join("a")
        await eventually(lambda: bool(a.elected_at), what="a leads")
        sink = RecordingSink()
        e = Elector(replace(raw_cfg, candidate_id="b"), lonely, MonotonicClock(), sink)
        task = asyncio.create_task(e.run())
        await eventually(lambda: bool(sink.of("race_lost")), what="b queued")
        for m in cluster.members[1:]:
            await asyncio.to_thread(cluster.kill, m)
        await eventually(
            lambda: any(f["during"] == "campaign" for f in sink.of("store_unreachable")),
            timeout=15,
            what="b noticed its member lost the raft leader",
        )
        e.stop()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 15)
    finally:
        for s in st.successors:
            s.elector.stop()
        await asyncio.wait_for(asyncio.gather(*(s.task for s in st.successors), return_exceptions=True), 15)
        await backend.close()
        await lonely.close()


async def test_after_a_prefix_delete_a_head_that_never_led_does_not_hide_the_frozen_leader(store: Store) -> None:
    """Hostile review: after `del --prefix` the queue re-forms behind a candidate that
    never led; if it then stops cleanly (its lease revoked), the one behind it must
    still wait out the frozen leader, not read "lease gone" as "nothing to wait for"."""
    lease, _, _ = await store.frozen_leader()
    a, b = store.join("a"), store.join("b")
    await queued(a)
    await queued(b)
    last_renewal = await store.renew(lease)
    name = store.cfg.election.encode()
    await store.raw.kv.delete(name, range_end=name[:-1] + bytes([name[-1] + 1]))  # etcdctl del --prefix NAME
    await eventually(lambda: bool(a.sink.of("lock_delay") or b.sink.of("lock_delay")), what="a lock-delay")
    head, other = (a, b) if a.sink.of("lock_delay") else (b, a)
    await eventually(lambda: len(other.sink.of("race_lost")) >= 2, what="the other queued behind the new head")
    head.elector.stop()  # a clean stop: its campaign ends and its lease is revoked
    await asyncio.wait_for(head.task, 10)
    await eventually(lambda: bool(other.elected_at), timeout=TTL + 5, what="the other leads")
    assert other.elected_at[0] >= last_renewal + GRANT, (
        f"led {last_renewal + GRANT - other.elected_at[0]:.3f}s before the frozen leader's grant ended"
    )


@pytest.mark.parametrize("how", ["key-deleted", "lease-revoked"])
async def test_a_leader_with_a_longer_ttl_than_ours_is_waited_out_in_full(store: Store, how: str) -> None:
    """Hostile review: sidecars may run different --ttl (a rolling change). The wait was
    capped by the successor's own TTL (3 s) while the frozen leader's lease ran 10 s."""
    ttl = 10.0
    lease, key, _ = await store.frozen_leader(ttl)
    b = store.join("b")
    await queued(b)
    last_renewal = await store.renew(lease)
    await eventually(lambda: time.monotonic() > last_renewal + FAST_TIMING["retry_interval"] * 1.5, what="a poll")
    if how == "key-deleted":
        await store.raw.kv.delete(key)
    else:
        await store.raw.lease.revoke(lease)
    await eventually(lambda: bool(b.elected_at), timeout=ttl + 5, what="the successor leads")
    grant = ttl * (1 - 0.01) - FAST_TIMING["margin"]
    assert b.elected_at[0] >= last_renewal + grant, (
        f"{how}: led {last_renewal + grant - b.elected_at[0]:.3f}s before the frozen leader's grant ended"
    )


async def test_a_renewal_after_the_last_poll_then_a_revoke_is_waited_out(store: Store) -> None:
    """Hostile review: the leader renews just after the successor's poll, freezes, and is
    evicted (lease revoke) before the next poll. The bound of that poll predates the
    renewal; a lease found revoked, not seen expiring, may run a whole TTL from then."""
    ttl = 5.0
    cfg = replace(store.cfg, ttl=ttl, renew_deadline=2.5, retry_interval=2.0, kill_grace=1.0)
    lease, _, token = await store.frozen_leader(ttl)
    b = store.join("b", cfg)
    await queued(b)
    el: Any = b.elector.election
    await eventually(lambda: token in el._tracks, what="b polls the leader's lease")

    def polled_after(t: float) -> bool:
        return bool(el._tracks[token].polled > t)

    def past(t: float) -> bool:
        return time.monotonic() > t

    # Wanted: b polls 1.1-1.9 s after a renewal (its bound then has under a second of
    # slack), the leader renews once more just after that poll, freezes, and is
    # revoked before b's next poll. The leader, alive, renews every 2 s meanwhile.
    for _ in range(10):
        renewed = await store.renew(lease)
        poll = renewed
        while poll - renewed < 1.1:
            await eventually(partial(polled_after, poll), timeout=5, what="b polls again")
            poll = el._tracks[token].polled
        if poll - renewed > 1.9:
            continue
        await eventually(partial(past, poll + 0.2), what="a moment after b's poll")
        if el._tracks[token].polled == poll:
            break
    last_renewal = await store.renew(lease)  # then it freezes
    await store.raw.lease.revoke(lease)  # evict --force
    assert el._tracks[token].polled == poll, "b polled between the renewal and the revoke: the race was missed"
    await eventually(lambda: bool(b.elected_at), timeout=ttl + 5, what="the successor leads")
    grant = ttl * (1 - 0.01) - FAST_TIMING["margin"]
    assert b.elected_at[0] >= last_renewal + grant, (
        f"led {last_renewal + grant - b.elected_at[0]:.3f}s before the frozen leader's grant ended"
    )


async def test_a_leader_that_took_over_between_two_queue_reads_is_remembered(store: Store) -> None:
    """Second review: queue [X leading, A, b]; X resigns cleanly, A takes over and
    freezes, and `del --prefix` comes before b read the queue again. b had only
    remembered X (its lease gone): it led at once, beside the frozen A."""
    raw, name = store.raw, store.cfg.election

    async def member(cid: str) -> tuple[int, str, int]:
        lease = (await raw.lease.grant(int(TTL))).ID
        key = f"{name}/{lease:x}"
        return lease, key, int((await raw.kv.put(key, cid, lease=lease)).header.revision)

    xl, xk, xt = await member("X")
    await raw.kv.put(name + ".epoch", json.dumps({"epoch": 7, "token": xt, "leader": "X", "key": xk, "lease": xl}))
    al, ak, at = await member("A")
    b = store.join("b")
    await queued(b)
    for _ in range(2):  # X and A alive (renewing) while b settles into its read cadence
        await store.renew(xl)
        await store.renew(al)
    kv = raw.kv
    marker = json.dumps({"token": xt, "key": xk})
    await kv.txn(compare=[], success=[kv.txn_op_delete(xk), kv.txn_op_put(name + ".resigned", marker)], failure=[])
    await raw.lease.revoke(xl)  # X resigned cleanly
    await kv.put(name + ".epoch", json.dumps({"epoch": 8, "token": at, "leader": "A", "key": ak, "lease": al}))
    last_renewal = await store.renew(al)  # A leads, renews once and freezes
    nm = name.encode()
    await kv.delete(nm, range_end=nm[:-1] + bytes([nm[-1] + 1]))  # etcdctl del --prefix NAME
    await eventually(lambda: bool(b.elected_at), timeout=TTL + 5, what="b leads")
    assert b.elected_at[0] >= last_renewal + GRANT, (
        f"led {last_renewal + GRANT - b.elected_at[0]:.3f}s before the frozen leader A's grant ended"
    )


async def test_a_longer_leader_ttl_is_read_from_its_epoch_record(store: Store) -> None:
    """Second review: a rolling --ttl change; the successor that must wait never polled
    the frozen leader's lease (it was not next in line, or it started after the
    eviction). The leader's TTL, recorded in its epoch record, bounds the wait."""
    ttl = 10
    lease, key, token = await store.frozen_leader(ttl)
    record = {"epoch": 7, "token": token, "leader": "frozen", "key": key, "lease": lease, "ttl": ttl}
    await store.raw.kv.put(store.cfg.election + ".epoch", json.dumps(record))  # as a leader of this release writes it
    last_renewal = await store.renew(lease)
    await store.raw.lease.revoke(lease)  # evict --force of the frozen leader
    b = store.join("b")  # started after the eviction: it never polled that lease
    await eventually(lambda: bool(b.elected_at), timeout=ttl + 5, what="b leads")
    grant = ttl * (1 - 0.01) - FAST_TIMING["margin"]
    assert b.elected_at[0] >= last_renewal + grant, (
        f"led {last_renewal + grant - b.elected_at[0]:.3f}s before the frozen leader's grant ended"
    )
