"""The elector against the memory backend on a fake clock: no real waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from sidecar.clock import FakeClock
from sidecar.config import Config, validate
from sidecar.elector import Elector, Hooks
from sidecar.model import Grant, KillUnconfirmed, Reason, State
from sidecar_harness.memory import MemoryBackend, MemoryStore
from tests.helpers import RecordingSink

CFG = validate(
    Config(
        backend="memory",
        election="unit",
        ttl=10,
        renew_deadline=6,
        retry_interval=2,
        drift=0.01,
        margin=0.5,
        kill_grace=2,
    )
)


def state(e: Elector) -> State:
    """Read the state afresh (keeps mypy from narrowing across awaits)."""
    return e.state


class Harness:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = MemoryStore(self.clock)
        self.backend = MemoryBackend(self.store)
        self.tasks: list[asyncio.Task[None]] = []
        self.reaper = asyncio.create_task(self.store.run_reaper())

    def elector(self, name: str, hooks: Hooks | None = None) -> tuple[Elector, RecordingSink]:
        sink = RecordingSink()
        e = Elector(replace(CFG, candidate_id=name), self.backend, self.clock, sink, hooks)
        self.tasks.append(asyncio.create_task(e.run()))
        return e, sink

    async def close(self) -> None:
        for t in [*self.tasks, self.reaper]:
            t.cancel()
        await asyncio.gather(*self.tasks, self.reaper, return_exceptions=True)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    await harness.close()


async def test_single_candidate_wins_with_token_epoch_and_deadline(h: Harness) -> None:
    a, sink = h.elector("a")
    await h.clock.advance(0.1)
    assert a.state is State.LEADER
    assert a.grant is not None
    assert a.grant.token > 0 and a.grant.epoch == 1
    assert a.last_renewal is not None
    # The deadline is measured from the send time of the acknowledged request.
    assert a.grant.expires_monotonic == pytest.approx(a.last_renewal.sent_at + 10 * 0.99 - 0.5)
    elected = sink.of("elected")
    assert elected and elected[0]["token"] == a.grant.token and elected[0]["epoch"] == 1
    assert elected[0]["election"] == "unit" and elected[0]["candidate"] == "a"


async def test_second_candidate_loses_race_and_waits(h: Harness) -> None:
    a, _ = h.elector("a")
    await h.clock.advance(0.1)
    b, b_sink = h.elector("b")
    await h.clock.advance(0.1)
    assert a.state is State.LEADER
    assert b.state is State.CANDIDATE
    assert b.counters["race_lost"] == 1 and b.counters["store_unreachable"] == 0
    assert b_sink.of("race_lost")[0]["leader"] == "a"
    # Renewals keep both alive well past the TTL.
    await h.clock.advance(35)
    assert a.state is State.LEADER and b.state is State.CANDIDATE


async def test_resign_hands_over_with_higher_token_and_epoch(h: Harness) -> None:
    a, _ = h.elector("a")
    await h.clock.advance(0.1)
    b, _ = h.elector("b")
    await h.clock.advance(0.1)
    assert a.grant is not None
    old = a.grant
    assert a.resign()
    await h.clock.advance(0.1)
    assert b.state is State.LEADER and b.grant is not None
    assert b.grant.token > old.token and b.grant.epoch == old.epoch + 1
    # The resigned candidate queues again behind the new leader.
    assert a.state is State.CANDIDATE
    assert b.resign()  # and a, queued again, leads once more
    await h.clock.advance(0.1)
    assert state(a) is State.LEADER and a.grant is not None and a.grant.epoch == old.epoch + 2


async def test_resign_when_not_leader_is_refused(h: Harness) -> None:
    h.elector("a")
    await h.clock.advance(0.1)
    b, _ = h.elector("b")
    await h.clock.advance(0.1)
    assert b.resign() is False


async def test_keepalive_failures_short_of_the_deadline_keep_leadership(h: Harness) -> None:
    a, sink = h.elector("a")
    await h.clock.advance(0.1)
    assert a.grant is not None
    token = a.grant.token
    h.store.mode = "fail"
    await h.clock.advance(4.0)  # less than renew_deadline (6) since the last renewal
    assert a.state is State.LEADER
    assert a.counters["keepalive_failed"] >= 1
    assert sink.of("keepalive_failed")
    h.store.mode = "up"
    await h.clock.advance(3.0)
    assert a.state is State.LEADER and a.grant is not None and a.grant.token == token
    assert a.counters["renewals"] >= 1


async def test_silent_store_demotes_at_renew_deadline_before_expiry(h: Harness) -> None:
    demoted_at: list[float] = []

    async def stopped(grant: Grant, reason: Reason) -> None:
        demoted_at.append(h.clock.now())

    a, sink = h.elector("a", Hooks(stopped_leading=stopped))
    await h.clock.advance(0.1)
    assert a.grant is not None and a.last_renewal is not None
    h.store.mode = "hang"  # the store never answers again
    await h.clock.advance(12)
    assert demoted_at, "leader never demoted while the store was silent"
    last = a.last_renewal
    assert demoted_at[0] <= last.sent_at + CFG.renew_deadline + 0.06
    # Demotion leaves kill_grace + margin before the lease can possibly expire.
    assert demoted_at[0] + CFG.kill_grace + CFG.margin <= last.sent_at + CFG.ttl * (1 - CFG.drift) + 1e-6
    lost = [f for f in sink.of("state_changed") if f["to_state"] == "demoting"]
    assert lost[0]["reason"] == "backend-unreachable"
    assert a.state is not State.LEADER


async def test_store_down_and_race_lost_are_told_apart(h: Harness) -> None:
    h.elector("a")
    await h.clock.advance(0.1)
    h.store.mode = "fail"
    b, b_sink = h.elector("b")
    await h.clock.advance(3)
    assert b.counters["store_unreachable"] >= 1 and b.counters["race_lost"] == 0
    assert b_sink.of("store_unreachable")[0]["during"] == "session-open"
    assert all(level == "warning" for level, name, _ in b_sink.events if name == "store_unreachable")
    h.store.mode = "up"
    await h.clock.advance(3)
    assert b.counters["race_lost"] == 1
    assert all(level == "info" for level, name, _ in b_sink.events if name == "race_lost")


async def test_revoked_lease_is_lease_lost_and_successor_is_higher(h: Harness) -> None:
    reasons: list[Reason] = []

    async def stopped(grant: Grant, reason: Reason) -> None:
        reasons.append(reason)

    a, _ = h.elector("a", Hooks(stopped_leading=stopped))
    await h.clock.advance(0.1)
    b, _ = h.elector("b")
    await h.clock.advance(0.1)
    assert a.grant is not None
    old = a.grant
    lease = int(next(iter(h.store.leases)))
    await h.store.revoke(lease)  # as `evict` or a server-side expiry would
    await h.clock.advance(0.5)
    assert reasons == [Reason.LEASE_LOST]
    assert b.state is State.LEADER and b.grant is not None and b.grant.token > old.token
    # a comes back as a candidate on a fresh lease.
    await h.clock.advance(1)
    assert a.state is State.CANDIDATE


async def test_successor_waits_for_stop_hook(h: Harness) -> None:
    release = asyncio.Event()

    async def stopped(grant: Grant, reason: Reason) -> None:
        await release.wait()  # the orchestrator is still shutting down

    a, _ = h.elector("a", Hooks(stopped_leading=stopped))
    await h.clock.advance(0.1)
    b, _ = h.elector("b")
    await h.clock.advance(0.1)
    a.resign()
    await h.clock.advance(1)
    assert a.state is State.DEMOTING
    assert b.state is State.CANDIDATE, "successor elected while the old orchestrator may still run"
    release.set()
    await h.clock.advance(0.1)
    assert state(b) is State.LEADER


async def test_unconfirmed_kill_leaves_the_election(h: Harness) -> None:
    async def stopped(grant: Grant, reason: Reason) -> None:
        raise KillUnconfirmed("pid 42 still alive")

    a, sink = h.elector("a", Hooks(stopped_leading=stopped))
    await h.clock.advance(0.1)
    h.store.mode = "hang"
    await h.clock.advance(8)
    assert a.out_of_election
    assert sink.of("kill_unconfirmed")
    await h.clock.advance(20)
    assert h.tasks[0].done() and h.tasks[0].exception() is None
    assert a.counters["elected"] == 1


async def test_stop_hands_over_immediately(h: Harness) -> None:
    a, _ = h.elector("a")
    await h.clock.advance(0.1)
    b, _ = h.elector("b")
    await h.clock.advance(0.1)
    a.stop()
    await h.clock.advance(0.1)
    assert b.state is State.LEADER
    assert h.tasks[0].done()
    assert not h.store.leases.get(0x1000), "lease of the stopped sidecar was not revoked"


async def test_grant_is_resent_on_every_renewal_with_rising_seq(h: Harness) -> None:
    grants: list[Grant] = []

    async def on_grant(grant: Grant) -> None:
        grants.append(grant)

    h.elector("a", Hooks(started_leading=on_grant, renewed=on_grant))
    await h.clock.advance(9)
    assert len(grants) >= 4
    assert [g.seq for g in grants] == sorted({g.seq for g in grants})
    assert all(g.expires_monotonic < grants[-1].expires_monotonic for g in grants[:-1])


async def test_a_lease_that_could_not_be_revoked_is_revoked_when_the_store_returns(h: Harness) -> None:
    a, sink = h.elector("a")
    await h.clock.advance(0.1)
    first_lease = next(iter(h.store.leases))
    h.store.mode = "hang"
    await h.clock.advance(8)  # demoted; the revoke hung and timed out
    assert sink.of("session_close_failed")
    h.store.mode = "up"
    await h.clock.advance(6)  # the next session-open attempt comes within a retry cycle (4 s)
    assert sink.of("orphan_session_revoked")[0]["session"] == f"{first_lease:x}"
    assert first_lease not in h.store.leases
    assert state(a) in (State.CANDIDATE, State.LEADER)
