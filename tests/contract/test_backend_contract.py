"""The behaviour every backend owes the elector, checked on each of them."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from sidecar.backends.base import SessionExpired
from sidecar.model import State
from tests.contract.conftest import Contender
from tests.helpers import eventually, grant_of


async def test_single_leader_among_many(contender: Contender) -> None:
    await contender.join(4)
    leader = await contender.one_leader()
    assert leader.snapshot().grant is not None and grant_of(leader).token > 0 and grant_of(leader).epoch >= 1
    end = time.monotonic() + 2 * contender.cfg.ttl  # across many renewals
    while time.monotonic() < end:
        assert contender.leaders() == [leader]
        await asyncio.sleep(0.05)


async def test_resign_hands_over_with_higher_token_and_next_epoch(contender: Contender) -> None:
    await contender.join(3)
    old = await contender.one_leader()
    assert old.snapshot().grant is not None
    before = grant_of(old)
    t = time.monotonic()
    assert old.resign()
    new = await contender.one_leader(unlike=old)
    took = time.monotonic() - t
    assert new.snapshot().grant is not None
    assert grant_of(new).token > before.token and grant_of(new).epoch == before.epoch + 1
    assert took < contender.cfg.ttl / 2, f"{contender.kind}: handover took {took:.3f}s, like a lease expiry"
    await eventually(lambda: old.state is State.CANDIDATE, what="resigned candidate queued again")


async def test_lost_session_fails_over_to_a_higher_token(contender: Contender) -> None:
    await contender.join(3)
    old = await contender.one_leader()
    assert old.snapshot().grant is not None and old.session is not None
    before = grant_of(old)
    await contender.kill_session(old.session)  # as if its lease or session expired
    new = await contender.one_leader(unlike=old)
    assert (
        new.snapshot().grant is not None and grant_of(new).token > before.token and grant_of(new).epoch > before.epoch
    )
    await eventually(
        lambda: old.counters["leadership_lost:lease-lost"] == 1, what=f"old leader saw lease-lost: {old.counters}"
    )


async def test_only_the_successor_wakes(contender: Contender) -> None:
    electors = await contender.join(5)
    old = await contender.one_leader()
    before = [cast(Any, e.election).wakeups for e in electors]
    old.resign()
    await contender.one_leader(unlike=old)
    woke = [cast(Any, e.election).wakeups - b for e, b in zip(electors, before, strict=True)]
    assert sum(woke) == 1, f"{contender.kind}: wake-ups per candidate {woke}"


async def test_tokens_and_epochs_strictly_increase_over_many_terms(contender: Contender) -> None:
    await contender.join(3)
    seen: list[tuple[int, int]] = []
    leader = await contender.one_leader()
    for _ in range(5):
        assert leader.snapshot().grant is not None
        seen.append((grant_of(leader).token, grant_of(leader).epoch))
        leader.resign()
        leader = await contender.one_leader(unlike=leader)
    assert leader.snapshot().grant is not None
    seen.append((grant_of(leader).token, grant_of(leader).epoch))
    tokens, epochs = zip(*seen, strict=True)
    assert list(tokens) == sorted(set(tokens)), seen
    assert list(epochs) == list(range(epochs[0], epochs[0] + len(epochs))), seen


async def test_store_view_matches_the_electors(contender: Contender) -> None:
    electors = await contender.join(3)
    leader = await contender.one_leader()
    assert leader.snapshot().grant is not None
    election = contender.backend.admin(contender.cfg.election)
    lead = await election.leader()
    assert lead is not None
    assert (lead.id, lead.token, lead.epoch) == (
        leader.snapshot().candidate,
        grant_of(leader).token,
        grant_of(leader).epoch,
    )

    async def all_queued() -> bool:
        return len(await election.candidates()) == len(electors)

    await eventually(all_queued, what="every candidate's key in the store")  # joined = campaigning, not yet written
    candidates = await election.candidates()
    assert candidates[0].id == leader.snapshot().candidate
    assert sorted(c.id for c in candidates) == sorted(e.snapshot().candidate for e in electors)
    assert [c.token for c in candidates] == sorted(c.token for c in candidates)
    assert not any(c.stale for c in candidates)


async def test_observe_reports_each_new_leader(contender: Contender) -> None:
    await contender.join(2)
    old = await contender.one_leader()
    seen: list[str] = []

    async def watch() -> None:
        async for lead in contender.backend.admin(contender.cfg.election).observe():
            if lead is not None and lead.epoch:
                seen.append(lead.id)

    task = asyncio.create_task(watch())
    try:
        await eventually(lambda: seen[-1:] == [old.snapshot().candidate], what="observe shows the leader")
        old.resign()
        new = await contender.one_leader(unlike=old)
        await eventually(lambda: seen[-1:] == [new.snapshot().candidate], what="observe shows the successor")
    finally:
        task.cancel()


async def test_evict_ends_a_candidacy_like_an_expiry(contender: Contender) -> None:
    await contender.join(2)
    old = await contender.one_leader()
    assert old.snapshot().grant is not None
    before = grant_of(old)
    gone = await contender.backend.admin(contender.cfg.election).evict(old.snapshot().candidate)
    assert len(gone) == 1
    new = await contender.one_leader(unlike=old)
    assert new.snapshot().grant is not None and grant_of(new).token > before.token
    await eventually(lambda: old.counters["leadership_lost:lease-lost"] == 1, what="evicted leader saw lease-lost")
    assert await contender.backend.admin(contender.cfg.election).evict("nobody-by-that-name") == []


async def test_an_abandoned_session_keeps_its_key_until_the_store_expires_it(contender: Contender) -> None:
    """abandon() is the way out while an orchestrator may live: nothing is revoked, so the
    successor is elected only by the store's own expiry (compare: resign hands over at once)."""
    session = contender.backend.session(contender.cfg.ttl)
    renewal = await session.open()
    election = contender.backend.election(contender.cfg.election)
    observer = contender.backend.admin(contender.cfg.election)  # as another process sees it
    await election.campaign(session, "abandoned")
    try:
        t0 = time.monotonic()
        await session.abandon()
        ids = [c.id for c in await observer.candidates()]
        assert ids == ["abandoned"], f"{contender.kind}: the key went at once: {ids}"
        await eventually(
            lambda: _no_candidates(observer), timeout=renewal.ttl * 3 + 5, what="the store expired the session"
        )
        took = time.monotonic() - t0
        assert took >= renewal.ttl * 0.5, f"{contender.kind}: gone after {took:.2f}s, before any expiry could happen"
    finally:
        await election.close()
        await observer.close()


async def _no_candidates(election: Any) -> bool:
    return not await election.candidates()


async def _leader_among(contender: Contender, live: list[Any], timeout: float = 15) -> Any:
    await eventually(
        lambda: len([e for e in live if e.state is State.LEADER and e.snapshot().grant is not None]) == 1,
        timeout,
        what=f"one {contender.kind} leader among the live candidates",
    )
    return next(e for e in live if e.state is State.LEADER)


async def test_each_vacancy_goes_to_the_highest_priority_live_candidate(contender: Contender) -> None:
    """Priorities decide vacancies, never preempt: the first joiner leads although it ranks lowest."""
    first = (await contender.join(1, priority=0))[0]
    assert await _leader_among(contender, [first]) is first
    # Queued in an order that is NOT the priority order, so each vacancy needs step-asides.
    queued = [*await contender.join(1, priority=1), *await contender.join(1, priority=5),
              *await contender.join(1, priority=3), *await contender.join(1, priority=2)]  # fmt: skip
    live = [first, *queued]
    await asyncio.sleep(contender.cfg.retry_interval * 2)
    assert [e for e in live if e.state is State.LEADER] == [first], "a higher priority preempted a sitting leader"
    leader = first
    expected_order = [5, 3, 2, 1]
    for want in expected_order:
        assert leader.session is not None
        live.remove(leader)
        # A crash, not a resign: the session goes server-side and the elector never rejoins.
        leader.stop()
        await contender.kill_session(leader.session)
        leader = await _leader_among(contender, live)
        assert leader._cfg.priority == want, (
            f"{contender.kind}: vacancy went to priority {leader._cfg.priority}, "
            f"not {want} (live: {[e._cfg.priority for e in live]})"
        )
    stepped = sum(e.counters["priority_step_aside"] for e in queued)
    assert stepped >= 1, "nobody ever stepped aside for a higher priority"
    # What the store shows: each candidate's priority, read back from its key.
    shown = {c.id: c.priority for c in await contender.backend.admin(contender.cfg.election).candidates()}
    assert shown == {leader._cfg.candidate_id: 1}


async def test_a_switchover_to_anyone_moves_leadership_off_the_top_priority(contender: Contender) -> None:
    """`switchover` without --to: the next in line leads. The leader it moves away
    from re-queues behind; by priority alone it would take the vacancy straight back."""
    from sidecar.backends.base import SwitchoverRequest

    top = (await contender.join(1, priority=5))[0]
    assert await _leader_among(contender, [top]) is top
    others = await contender.join(2)
    admin = contender.backend.admin(contender.cfg.election)
    await admin.request_switchover(SwitchoverRequest("", "contract", "anyone-1", time.time(), 30.0))
    leader = await _leader_among(contender, others)
    assert top.state is not State.LEADER and leader is others[0], (contender.kind, top.state, leader)


async def test_a_no_lead_candidate_never_leads_nor_blocks_and_costs_no_writes(contender: Contender) -> None:
    # Joined first: in the queue it would head it and everyone would wait on it.
    watcher = (await contender.join(1, no_lead=True))[0]
    a, b = await contender.join(2)
    leader = await _leader_among(contender, [watcher, a, b])
    assert leader is a, "the no-lead candidate held up the queue"
    admin = contender.backend.admin(contender.cfg.election)
    listed = await admin.candidates()
    assert [(c.id, c.no_lead) for c in listed][-1] == (watcher._cfg.candidate_id, True), listed
    assert (await admin.leader()) is not None and (await admin.leader()).id == a._cfg.candidate_id  # type: ignore[union-attr]
    for gone in (a, b):
        assert gone.session is not None
        gone.stop()
        await contender.kill_session(gone.session)
        if gone is a:
            assert await _leader_among(contender, [watcher, b]) is b
    # Alone now: it must neither lead nor churn the store.
    await eventually(lambda: a.state is State.FOLLOWER and b.state is State.FOLLOWER, what="the others gone")
    await asyncio.sleep(contender.cfg.retry_interval * 2)  # settle: the last kill's own writes land
    before = await contender.store_revision()
    window = 2 * contender.cfg.ttl
    end = time.monotonic() + window
    while time.monotonic() < end:
        assert watcher.state is not State.LEADER and watcher.snapshot().grant is None
        await asyncio.sleep(0.05)
    climbed = await contender.store_revision() - before
    # etcd keepalives do not touch the revision; a ZooKeeper keepalive is a
    # one-check multi (a write, by design: section 3b), one per retry interval.
    allowed = window / contender.cfg.retry_interval + 4 if contender.kind == "zookeeper" else 1
    assert climbed <= allowed, (
        f"{contender.kind}: the store moved {climbed} writes in {window}s with one no-lead candidate"
    )
    assert watcher.counters["elected"] == 0 and watcher.state is State.CANDIDATE
    assert [c.id for c in await admin.candidates()] == [watcher._cfg.candidate_id]
    assert await admin.leader() is None


async def test_a_campaign_on_a_session_the_store_ended_is_a_lost_session_not_an_outage(contender: Contender) -> None:
    """The elector opens a new session on SessionExpired; StoreUnavailable would have it
    wait and retry on the dead one, counted as an outage (a lost lease is neither a lost
    race nor an unreachable store). etcd answers a put on a revoked lease with NOT_FOUND."""
    session = contender.backend.session(contender.cfg.ttl)
    await session.open()
    election = contender.backend.election(contender.cfg.election)
    try:
        await contender.kill_session(session)
        try:
            await asyncio.wait_for(election.campaign(session, "ended"), 10)
        except SessionExpired:
            pass
        else:
            raise AssertionError(f"{contender.kind}: a campaign on an ended session registered")
    finally:
        await election.close()
