"""One contract for every fencing adapter, against real servers.

Each test runs once per store: SQLite, PostgreSQL (started from Debian's
package), etcd and ZooKeeper. Tokens come from real leadership: an etcd
election (ZooKeeper's for the ZooKeeper adapter), won with
``Election.campaign`` through the sidecar's own backends; a leader loses
by losing its lease (etcd revokes it, ZooKeeper closes the session), which
deletes its key exactly as an expiry would.

The decisive test: a real child process enters its write path with the
leader's token, is SIGSTOPped there, loses leadership, a successor writes,
then the child is SIGCONTed and finishes. Its write must be refused and the
history must never go back to a lower token. The same test with the guard
taken out (``fenced=False``) must see the stale write land: that is how we
know the test can fail.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sidecar.backends import connect
from sidecar.backends.base import Backend, Election, Session
from sidecar.clock import MonotonicClock
from sidecar.config import Config
from sidecar.fencing.adapters.base import Fence, StaleToken, Write
from sidecar.fencing.client import NotLeader
from tests.helpers import eventually
from tests.integration.fence_stores import STORES, get, open_fence, put

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Term:
    who: str
    token: int
    session: Session
    election: Election


@dataclass
class StoreUnderTest:
    kind: str
    target: str
    election: str
    backend: Backend
    fences: list[Fence[Any]] = field(default_factory=list)
    terms: list[Term] = field(default_factory=list)

    async def open(self, *, fenced: bool = True, keep_history: bool = True) -> Fence[Any]:
        fence = await open_fence(self.kind, self.target, self.election, fenced=fenced, keep_history=keep_history)
        self.fences.append(fence)
        return fence

    async def lead(self, who: str) -> Term:
        """Win the election as ``who``: a real session and candidate key in etcd or ZooKeeper."""
        session = self.backend.session(4.0 if self.kind == "zookeeper" else 30.0)
        await session.open()
        election = self.backend.election(self.election)
        won = await election.campaign(session, who)
        term = Term(who, won.token, session, election)
        self.terms.append(term)
        return term

    async def lose(self, term: Term) -> None:
        """The term ends as a sidecar ends it after a confirmed stop: resign, then close.

        A bare close would revoke the lease with no resign marker, which the
        successor must treat as a key gone before its lease could expire and
        sit out a lock-delay of one TTL (issue 14): slow, and not what is tested here.
        """
        await term.election.resign()
        await term.session.close()

    async def close(self) -> None:
        for f in self.fences:
            await f.close()
        for t in self.terms:
            await t.session.close()
        await self.backend.close()


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, election_name: str, workdir: Path) -> AsyncIterator[StoreUnderTest]:
    kind = request.param
    # The election that hands out tokens: ZooKeeper's for the ZooKeeper adapter, etcd's for the rest.
    server = request.getfixturevalue("zookeeper" if kind == "zookeeper" else "etcd")
    cfg = Config(backend="zookeeper" if kind == "zookeeper" else "etcd", endpoints=tuple(server.endpoints),
                 election=election_name)  # fmt: skip
    if kind == "sqlite":
        target = str(workdir / "fenced.db")
    elif kind == "postgres":
        target = request.getfixturevalue("postgres").dsn
    else:
        target = ",".join(server.endpoints)
    s = StoreUnderTest(kind, target, election_name, await connect(cfg, MonotonicClock()))
    try:
        yield s
    finally:
        await s.close()


def accepted_tokens(history: list[Write]) -> list[int]:
    return [w.token for w in history if w.accepted]


def never_decreasing(tokens: list[int]) -> bool:
    return all(a <= b for a, b in itertools.pairwise(tokens))


async def test_the_leaders_writes_commit_with_one_history_entry_each(store: StoreUnderTest) -> None:
    a = await store.lead("a")
    fence = await store.open()
    for i in range(2):
        async with fence.transaction(a.token, "a") as tx:
            await put(fence, tx, f"k{i}", "from a")
    assert await get(fence, "k0") == "from a" and await get(fence, "k1") == "from a"
    history = await fence.history()
    assert accepted_tokens(history) == [a.token, a.token]
    assert {w.writer for w in history} == {"a"}


async def test_a_deposed_leaders_write_is_refused_and_none_of_it_lands(store: StoreUnderTest) -> None:
    a = await store.lead("a")
    fence = await store.open()
    await store.lose(a)
    b = await store.lead("b")
    assert b.token > a.token
    async with fence.transaction(b.token, "b") as tx:
        await put(fence, tx, "by-b", "from b")
    with pytest.raises(StaleToken) as refused:
        async with fence.transaction(a.token, "a") as tx:
            await put(fence, tx, "by-a", "from a")
    assert isinstance(refused.value, NotLeader)  # callers that only know the client library catch it too
    assert refused.value.token == a.token
    assert await get(fence, "by-a") is None
    assert accepted_tokens(await fence.history()) == [b.token]


async def test_without_a_history_the_fence_still_refuses(store: StoreUnderTest) -> None:
    if store.kind == "sqlite":
        pytest.skip("the toy SQLite store always keeps its history (the checker reads it)")
    a = await store.lead("a")
    fence = await store.open(keep_history=False)
    await store.lose(a)
    b = await store.lead("b")
    async with fence.transaction(b.token, "b") as tx:
        await put(fence, tx, "by-b", "from b")
    with pytest.raises(StaleToken):
        async with fence.transaction(a.token, "a") as tx:
            await put(fence, tx, "by-a", "from a")
    assert await get(fence, "by-b") == "from b" and await get(fence, "by-a") is None
    assert await fence.history() == []


async def test_a_failing_body_commits_nothing(store: StoreUnderTest) -> None:
    a = await store.lead("a")
    fence = await store.open()
    with pytest.raises(RuntimeError, match="body failed"):
        async with fence.transaction(a.token, "a") as tx:
            await put(fence, tx, "half", "never")
            raise RuntimeError("body failed")
    assert await get(fence, "half") is None
    assert accepted_tokens(await fence.history()) == []


def stopped(pid: int) -> bool:
    """The process is in state T (stopped by a signal)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


async def paused_ex_leader(store: StoreUnderTest, *, fenced: bool) -> tuple[dict[str, Any], list[int], Fence[Any]]:
    """Run the scenario; return the child's outcome, the accepted tokens in order, and a fence to read with."""
    a = await store.lead("a")
    argv = [sys.executable, "-m", "tests.integration.fence_child",
            store.kind, store.target, store.election, str(a.token), "paused"]  # fmt: skip
    if not fenced:
        argv.append("--unfenced")
    child = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        assert line.strip() == b"ready", f"child said {line!r} (exit {child.returncode})"
        os.kill(child.pid, signal.SIGSTOP)  # frozen in its write path, holding token a
        await eventually(lambda: stopped(child.pid), what="the child to be stopped")
        child.stdin.write(b"go\n")  # waits in the pipe until the child runs again
        await child.stdin.drain()

        await store.lose(a)
        b = await store.lead("b")
        assert b.token > a.token
        fence = await store.open()
        async with fence.transaction(b.token, "b") as tx:
            await put(fence, tx, "successor", "from b")

        os.kill(child.pid, signal.SIGCONT)
        out = await asyncio.wait_for(child.stdout.readline(), 30)
        assert await asyncio.wait_for(child.wait(), 30) == 0
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    outcome: dict[str, Any] = json.loads(out)
    assert await get(fence, "successor") == "from b"
    return outcome, accepted_tokens(await fence.history()), fence


async def test_a_paused_ex_leader_is_refused_after_its_successor_wrote(store: StoreUnderTest) -> None:
    outcome, tokens, fence = await paused_ex_leader(store, fenced=True)
    assert outcome["outcome"] == "refused", outcome
    assert await get(fence, "paused") is None
    assert len(tokens) == 1 and never_decreasing(tokens), tokens


async def test_without_the_fence_the_paused_ex_leader_writes_after_its_successor(store: StoreUnderTest) -> None:
    """The decisive test's scenario against a store with the guard taken out: the
    stale write lands and the history goes backwards. Proves the test above bites."""
    outcome, tokens, fence = await paused_ex_leader(store, fenced=False)
    assert outcome["outcome"] == "accepted", outcome
    assert await get(fence, "paused") is not None
    assert not never_decreasing(tokens), tokens
