"""The behaviour every backend owes the elector, checked on each of them."""

from __future__ import annotations

import asyncio
import time

from sidecar.model import State
from tests.contract.conftest import Contender
from tests.helpers import eventually


async def test_single_leader_among_many(contender: Contender) -> None:
    await contender.join(4)
    leader = await contender.one_leader()
    assert leader.grant is not None and leader.grant.token > 0 and leader.grant.epoch >= 1
    end = time.monotonic() + 2 * contender.cfg.ttl  # across many renewals
    while time.monotonic() < end:
        assert contender.leaders() == [leader]
        await asyncio.sleep(0.05)


async def test_resign_hands_over_with_higher_token_and_next_epoch(contender: Contender) -> None:
    await contender.join(3)
    old = await contender.one_leader()
    assert old.grant is not None
    before = old.grant
    t = time.monotonic()
    assert old.resign()
    new = await contender.one_leader(unlike=old)
    took = time.monotonic() - t
    assert new.grant is not None
    assert new.grant.token > before.token and new.grant.epoch == before.epoch + 1
    assert took < contender.cfg.ttl / 2, f"{contender.kind}: handover took {took:.3f}s, like a lease expiry"
    await eventually(lambda: old.state is State.CANDIDATE, what="resigned candidate queued again")


async def test_lost_session_fails_over_to_a_higher_token(contender: Contender) -> None:
    await contender.join(3)
    old = await contender.one_leader()
    assert old.grant is not None and old.session is not None
    before = old.grant
    await contender.kill_session(old.session)  # as if its lease or session expired
    new = await contender.one_leader(unlike=old)
    assert new.grant is not None and new.grant.token > before.token and new.grant.epoch > before.epoch
    await eventually(
        lambda: old.counters["leadership_lost:lease-lost"] == 1, what=f"old leader saw lease-lost: {old.counters}"
    )


async def test_only_the_successor_wakes(contender: Contender) -> None:
    electors = await contender.join(5)
    old = await contender.one_leader()
    before = [e.election.wakeups for e in electors]
    old.resign()
    await contender.one_leader(unlike=old)
    woke = [e.election.wakeups - b for e, b in zip(electors, before, strict=True)]
    assert sum(woke) == 1, f"{contender.kind}: wake-ups per candidate {woke}"


async def test_tokens_and_epochs_strictly_increase_over_many_terms(contender: Contender) -> None:
    await contender.join(3)
    seen: list[tuple[int, int]] = []
    leader = await contender.one_leader()
    for _ in range(5):
        assert leader.grant is not None
        seen.append((leader.grant.token, leader.grant.epoch))
        leader.resign()
        leader = await contender.one_leader(unlike=leader)
    assert leader.grant is not None
    seen.append((leader.grant.token, leader.grant.epoch))
    tokens, epochs = zip(*seen, strict=True)
    assert list(tokens) == sorted(set(tokens)), seen
    assert list(epochs) == list(range(epochs[0], epochs[0] + len(epochs))), seen


async def test_store_view_matches_the_electors(contender: Contender) -> None:
    electors = await contender.join(3)
    leader = await contender.one_leader()
    assert leader.grant is not None
    election = electors[-1].election
    lead = await election.leader()
    assert lead is not None
    assert (lead.id, lead.token, lead.epoch) == (leader.cfg.candidate_id, leader.grant.token, leader.grant.epoch)

    async def all_queued() -> bool:
        return len(await election.candidates()) == len(electors)

    await eventually(all_queued, what="every candidate's key in the store")  # joined = campaigning, not yet written
    candidates = await election.candidates()
    assert candidates[0].id == leader.cfg.candidate_id
    assert sorted(c.id for c in candidates) == sorted(e.cfg.candidate_id for e in electors)
    assert [c.token for c in candidates] == sorted(c.token for c in candidates)
    assert not any(c.stale for c in candidates)


async def test_observe_reports_each_new_leader(contender: Contender) -> None:
    await contender.join(2)
    old = await contender.one_leader()
    seen: list[str] = []

    async def watch() -> None:
        async for lead in old.election.observe():
            if lead is not None and lead.epoch:
                seen.append(lead.id)

    task = asyncio.create_task(watch())
    try:
        await eventually(lambda: seen[-1:] == [old.cfg.candidate_id], what="observe shows the leader")
        old.resign()
        new = await contender.one_leader(unlike=old)
        await eventually(lambda: seen[-1:] == [new.cfg.candidate_id], what="observe shows the successor")
    finally:
        task.cancel()


async def test_evict_ends_a_candidacy_like_an_expiry(contender: Contender) -> None:
    await contender.join(2)
    old = await contender.one_leader()
    assert old.grant is not None
    before = old.grant
    gone = await old.election.evict(old.cfg.candidate_id)
    assert len(gone) == 1
    new = await contender.one_leader(unlike=old)
    assert new.grant is not None and new.grant.token > before.token
    await eventually(lambda: old.counters["leadership_lost:lease-lost"] == 1, what="evicted leader saw lease-lost")
    assert await old.election.evict("nobody-by-that-name") == []
