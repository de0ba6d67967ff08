"""The behaviour every backend owes the elector, checked on each of them."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

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
