"""Issue 14, items 5 and 7: how the elector treats sessions that end early.

A scripted backend on a fake clock: each test states exactly what the store
does, so the elector's answer is the only thing under test.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sidecar.backends.base import Renewal, Session, SessionExpired
from sidecar.clock import FakeClock
from sidecar.config import Config
from sidecar.elector import Elector
from sidecar.model import Leadership
from tests.helpers import RecordingSink

CFG = Config(
    backend="memory", election="unit", candidate_id="a", ttl=10, renew_deadline=6, retry_interval=2,
    drift=0.01, margin=0.5, kill_grace=2,
)  # fmt: skip


@dataclass
class ScriptedSession:
    clock: FakeClock
    ttl: float
    n: int

    @property
    def id(self) -> str:
        return f"{self.n:x}"

    async def open(self) -> Renewal:
        return Renewal(self.clock.now(), self.ttl)

    async def keepalive(self) -> Renewal:
        return Renewal(self.clock.now(), self.ttl)

    async def close(self) -> None:
        return None

    async def abandon(self) -> None:
        return None


@dataclass
class ScriptedBackend:
    """Grants ``granted`` seconds; the first campaign finds the session expired, later ones queue for ever."""

    clock: FakeClock
    granted: float = 10.0
    sessions: list[ScriptedSession] = field(default_factory=list)
    campaigns: int = 0
    session_type: type[ScriptedSession] = ScriptedSession  # what each session does (a subclass scripts more)

    def session(self, ttl: float) -> ScriptedSession:
        s = self.session_type(self.clock, self.granted, len(self.sessions) + 1)
        self.sessions.append(s)
        return s

    def election(self, name: str) -> ScriptedBackend:
        return self

    @property
    def name(self) -> str:
        return "unit"

    async def campaign(
        self,
        session: Session,
        candidate_id: str,
        on_wait: object = None,
        report: object = None,
        *,
        priority: int = 0,
        no_lead: bool = False,
    ) -> Leadership:
        self.campaigns += 1
        if self.campaigns == 1:
            raise SessionExpired("zookeeper campaign: session expired")
        await asyncio.Event().wait()  # queued behind a leader that never goes
        raise AssertionError("unreachable")

    async def resign(self, *, hand_over: bool = False) -> str:
        return ""

    async def wait_lost(self, seen: object = None) -> None:
        await asyncio.Event().wait()

    async def wait_switchover(self, candidate_id: str) -> object:
        await asyncio.Event().wait()  # nobody ever asks for a switchover here
        raise AssertionError("unreachable")

    async def close(self) -> None:
        return None


async def _advance(clock: FakeClock, seconds: float, step: float = 0.05) -> None:
    t = 0.0
    while t < seconds:
        await clock.advance(step)
        t += step


async def test_session_expired_during_a_campaign_does_not_end_the_run() -> None:
    """Item 7: the old elector inspected a keepalive task it had just cancelled
    and CancelledError escaped ``run()``: the sidecar process exited."""
    clock = FakeClock()
    backend = ScriptedBackend(clock)
    e = Elector(CFG, backend, clock, RecordingSink())  # type: ignore[arg-type]
    task = asyncio.create_task(e.run())
    try:
        await _advance(clock, 3 * CFG.retry_interval)
        assert not task.done(), f"run() ended: {task!r}"
        assert backend.campaigns >= 2, "the elector did not campaign again on a new session"
        assert len(backend.sessions) >= 2
    finally:
        e.stop()
        await asyncio.wait_for(task, 5)


class BrokenKeepalive(ScriptedSession):
    async def keepalive(self) -> Renewal:
        raise RuntimeError("a bug in the client library")


@dataclass
class WinningBackend(ScriptedBackend):
    session_type: type[ScriptedSession] = BrokenKeepalive

    async def campaign(
        self,
        session: Session,
        candidate_id: str,
        on_wait: object = None,
        report: object = None,
        *,
        priority: int = 0,
        no_lead: bool = False,
    ) -> Leadership:
        self.campaigns += 1
        return Leadership(candidate_id, self.campaigns, self.campaigns)


async def test_a_renewal_that_dies_of_a_bug_ends_the_term() -> None:
    """The lease's renewal task died silently: its ``lost`` never resolved and
    the elector went on leading on a deadline nobody extended or checked."""
    clock = FakeClock()
    sink = RecordingSink()
    e = Elector(CFG, WinningBackend(clock), clock, sink)  # type: ignore[arg-type]
    task = asyncio.create_task(e.run())
    try:
        await _advance(clock, CFG.retry_interval + 0.5)
        demoted = sink.of("demoted")
        assert demoted and demoted[0]["reason"] == "internal-error", sink.names()
    finally:
        e.stop()
        await asyncio.wait_for(task, 5)


class EndedByTheStore(ScriptedSession):
    async def close(self) -> None:
        raise SessionExpired("etcd lease revoke: our lease is gone")


async def test_a_session_the_store_had_ended_is_not_logged_as_closed_by_us() -> None:
    """A review found 'session_closed' after a lease the store had already ended."""
    clock = FakeClock()
    backend = ScriptedBackend(clock, session_type=EndedByTheStore)
    sink = RecordingSink()
    e = Elector(CFG, backend, clock, sink)  # type: ignore[arg-type]
    task = asyncio.create_task(e.run())
    try:
        await _advance(clock, 3 * CFG.retry_interval)
        assert sink.of("session_already_gone") and not sink.of("session_closed"), sink.names()
    finally:
        e.stop()
        await asyncio.wait_for(task, 5)
