"""An in-process store with etcd's semantics, for unit and contract tests.

Leases expire on the injected clock, keys carry a create revision from one
global counter, and waiters can block on one key's deletion, so the elector
sees the same shapes of behaviour as with etcd, in microseconds. Tests can
take the store down (``fail``: calls raise) or make it silent (``hang``:
calls never return) to exercise the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial

from sidecar.backends.base import (
    DEFAULT_PRIORITY,
    NO_LEAD_SUFFIX,
    NO_REQUEST,
    PRIORITY_STEP_ASIDE,
    STEP_ASIDE,
    CampaignReport,
    Candidate,
    EpochRecord,
    KeyLost,
    LockDelay,
    OnWait,
    Renewal,
    ResignMarker,
    Session,
    SessionExpired,
    StoreForbidden,
    StoreUnavailable,
    SwitchoverRequest,
    candidate_id_of,
    encode_candidate,
    leader_should_hand_over,
    parse_candidate,
    parse_epoch_record,
    parse_resign_marker,
    parse_switchover,
    priority_verdict,
    steps_aside_early,
)
from sidecar.clock import Clock, MonotonicClock, wait_for
from sidecar.config import Config
from sidecar.model import Leadership

# A leader's wait re-reads its key this often (store clock), as the real
# backends do every retry interval: the elector demotes a leader whose key
# the store has not confirmed for its grant's validity less kill_grace.
CONFIRM_EVERY = 0.5


@dataclass
class _Key:
    value: str
    create_revision: int
    lease: int
    deleted: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryStore:
    """Shared by every memory Session and Election of one test."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or MonotonicClock()
        self.mode = "up"  # "up", "fail" or "hang"
        self.reads_forbidden = False  # a leader's re-reads of its key refused, keepalives still answered
        self.revision = 0
        self.keys: dict[str, _Key] = {}
        self.plain: dict[str, str] = {}
        self.leases: dict[int, tuple[float, float]] = {}  # id -> (expires_at, ttl)
        # Leases revoked before they ran out: id -> when they would have expired.
        # etcd does not remember this; the memory store does, so that the
        # elector's lock-delay can be tested on a fake clock without tracking.
        self.cut_short: dict[int, float] = {}
        self.changed = asyncio.Condition()
        self._lease_ids = itertools.count(0x1000)

    async def gate(self) -> None:
        """Every call passes here first; it is where outages are injected."""
        if self.mode == "fail":
            raise StoreUnavailable("memory store is down")
        if self.mode == "hang":
            await asyncio.Event().wait()
        await self.reap()

    async def reap(self) -> None:
        now = self.clock.now()
        for lease_id, (expires_at, _) in list(self.leases.items()):
            if expires_at <= now:
                await self.revoke(lease_id)

    async def revoke(self, lease_id: int) -> None:
        held = self.leases.pop(lease_id, None)
        if held is not None and held[0] > self.clock.now():
            self.cut_short[lease_id] = held[0]
        for name, key in list(self.keys.items()):
            if key.lease == lease_id:
                await self.delete(name)

    async def delete(self, name: str) -> bool:
        key = self.keys.pop(name, None)
        if key is None:
            return False
        self.revision += 1
        key.deleted.set()
        async with self.changed:
            self.changed.notify_all()
        return True

    async def create(self, name: str, value: str, lease: int) -> _Key:
        if lease not in self.leases:
            raise SessionExpired(f"lease {lease:x} not found")
        existing = self.keys.get(name)
        if existing is not None:
            return existing
        self.revision += 1
        key = _Key(value, self.revision, lease)
        self.keys[name] = key
        async with self.changed:
            self.changed.notify_all()
        return key

    def under(self, prefix: str) -> list[tuple[str, _Key]]:
        return sorted(
            ((k, v) for k, v in self.keys.items() if k.startswith(prefix)),
            key=lambda kv: kv[1].create_revision,
        )

    async def run_reaper(self) -> None:
        """Expire leases as time passes, even when nobody calls the store."""
        while True:
            await self.clock.sleep(0.05)
            if self.mode != "hang":
                await self.reap()


class MemorySession:
    def __init__(self, store: MemoryStore, ttl: float) -> None:
        self._store = store
        self._ttl = ttl
        self._lease: int | None = None

    @property
    def id(self) -> str:
        return f"{self._lease:x}" if self._lease is not None else ""

    async def open(self) -> Renewal:
        sent = self._store.clock.now()
        await self._store.gate()
        self._lease = next(self._store._lease_ids)
        self._store.leases[self._lease] = (self._store.clock.now() + self._ttl, self._ttl)
        return Renewal(sent, self._ttl)

    async def keepalive(self) -> Renewal:
        sent = self._store.clock.now()
        await self._store.gate()
        lease = self._lease
        if lease is None or lease not in self._store.leases:
            raise SessionExpired(f"lease {lease:x} expired")
        self._store.leases[lease] = (self._store.clock.now() + self._ttl, self._ttl)
        return Renewal(sent, self._ttl)

    async def close(self) -> None:
        if self._lease is None:
            return
        await self._store.gate()
        await self._store.revoke(self._lease)
        self._lease = None

    async def abandon(self) -> None:
        self._lease = None  # the store's reaper expires it on the clock


class MemoryElection:
    def __init__(self, store: MemoryStore, name: str) -> None:
        self._store = store
        self._name = name
        self._mine: str | None = None
        self._token = 0
        self.wakeups = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def _prefix(self) -> str:
        return self._name + "/"

    @property
    def _epoch_key(self) -> str:
        return self._name + ".epoch"

    @property
    def _marker_key(self) -> str:
        return self._name + ".resigned"

    async def campaign(
        self,
        session: Session,
        candidate_id: str,
        on_wait: OnWait | None = None,
        report: CampaignReport | None = None,
        *,
        priority: int = DEFAULT_PRIORITY,
        no_lead: bool = False,
    ) -> Leadership:
        await self._store.gate()
        if not session.id:
            raise SessionExpired("session not open")
        if no_lead:
            return await self._stand_by(session, candidate_id, on_wait)
        name = self._prefix + session.id
        mine = await self._store.create(name, encode_candidate(candidate_id, priority), int(session.id, 16))
        self._mine = name
        self._token = mine.create_revision
        while True:
            verdict, request, mine = await self._queue(name, mine, candidate_id, on_wait, report, priority=priority)
            if verdict in (STEP_ASIDE, PRIORITY_STEP_ASIDE):
                continue
            break
        if verdict != NO_REQUEST:
            self._store.plain.pop(self._switch_key, None)  # settled with our win, as etcd's txn does
            if request is not None and report is not None:
                report.switchover(verdict, request)
        raw = self._store.plain.get(self._epoch_key)
        old = parse_epoch_record(self._epoch_key, raw.encode() if raw is not None else None)
        epoch = old.epoch + 1 if isinstance(old, EpochRecord) else 1
        if isinstance(old, str) and report is not None:
            report.epoch_record_repaired(self._epoch_key, old)
        self._store.plain[self._epoch_key] = (
            EpochRecord(epoch, mine.create_revision, candidate_id, name, mine.lease).encode().decode()
        )
        return Leadership(candidate_id, mine.create_revision, epoch)

    async def _stand_by(self, session: Session, candidate_id: str, on_wait: OnWait | None) -> Leadership:
        """--no-lead: a key beside the queue; never leads, raises KeyLost if the key goes."""
        name = self._no_lead_prefix + session.id
        mine = await self._store.create(name, candidate_id, int(session.id, 16))
        told: Leadership | None = None
        while True:
            await self._store.gate()
            if self._store.keys.get(name) is not mine:
                raise KeyLost(f"no-lead key {name} vanished")
            queue = self._store.under(self._prefix)
            if queue and on_wait is not None:
                head = Leadership(candidate_id_of(queue[0][1].value), queue[0][1].create_revision, 0)
                if head != told:
                    on_wait(head)
                    told = head
            await self._store.clock.sleep(0.05)

    @property
    def _no_lead_prefix(self) -> str:
        return self._name + NO_LEAD_SUFFIX + "/"

    async def _queue(
        self,
        name: str,
        mine: _Key,
        candidate_id: str,
        on_wait: OnWait | None,
        report: CampaignReport | None,
        *,
        priority: int,
    ) -> tuple[str, SwitchoverRequest | None, _Key]:
        """Wait to head the queue; step aside (re-queue) if a switchover names someone else."""
        while True:
            await self._store.gate()
            if self._store.keys.get(name) is not mine:
                raise KeyLost(f"candidate key {name} vanished while campaigning")
            queue = self._store.under(self._prefix)
            ahead = [(k, v) for k, v in queue if v.create_revision < mine.create_revision]
            if not ahead:
                break
            behind = {candidate_id_of(v.value) for _, v in queue if v.create_revision > mine.create_revision}
            request = self._request()
            if steps_aside_early(request, candidate_id, behind, time.time()):
                # As etcd and ZooKeeper do: re-queue behind the target now, not at the head.
                assert request is not None
                if report is not None:
                    report.switchover(STEP_ASIDE, request)
                mine = await self._requeue(name, mine)
                continue
            predecessor = ahead[-1][1]
            if on_wait is not None:
                on_wait(Leadership(candidate_id_of(ahead[0][1].value), ahead[0][1].create_revision, 0))
            async with self._store.changed:
                await self._store.changed.wait_for(
                    partial(self._woken, predecessor, self._store.plain.get(self._switch_key))
                )
            if predecessor.deleted.is_set():
                self.wakeups += 1
        await self._lock_delay(mine.create_revision, report)
        if self._store.keys.get(name) is not mine:
            raise KeyLost(f"candidate key {name} vanished during the lock-delay")
        # The decision, the ownership check and the epoch bump happen in one
        # step (no await between them), as the etcd transaction does.
        request = self._request()
        others: dict[str, int] = {}
        for k, v in self._store.under(self._prefix):
            if k != name:
                cid, prio = parse_candidate(v.value)
                others[cid] = max(prio, others.get(cid, prio))
        verdict = priority_verdict(request, candidate_id, priority, others, time.time())
        if verdict in (STEP_ASIDE, PRIORITY_STEP_ASIDE):
            if report is not None and verdict == STEP_ASIDE:
                assert request is not None
                report.switchover(verdict, request)
            elif report is not None:
                best = max(others, key=lambda i: others[i])
                report.priority_step_aside(best, others[best])
            mine = await self._requeue(name, mine)
        return verdict, request, mine

    def _woken(self, predecessor: _Key, request_was: str | None) -> bool:
        """The predecessor went, or the switchover request changed."""
        return predecessor.deleted.is_set() or self._store.plain.get(self._switch_key) != request_was

    async def _requeue(self, name: str, mine: _Key) -> _Key:
        """Step aside: the same key again, at the end of the queue."""
        value = mine.value
        await self._store.delete(name)
        mine = await self._store.create(name, value, mine.lease)
        self._token = mine.create_revision
        return mine

    @property
    def _switch_key(self) -> str:
        return self._name + ".switchover"

    def _request(self) -> SwitchoverRequest | None:
        return parse_switchover((self._store.plain.get(self._switch_key) or "").encode())

    async def wait_switchover(self, candidate_id: str) -> SwitchoverRequest:
        while True:
            request = self._request()
            others = {candidate_id_of(v.value) for k, v in self._store.under(self._prefix) if k != self._mine}
            if leader_should_hand_over(request, candidate_id, others, time.time()):
                assert request is not None
                return request
            await self._store.clock.sleep(0.05)

    async def switchover_request(self) -> SwitchoverRequest | None:
        return self._request()

    async def request_switchover(self, request: SwitchoverRequest) -> None:
        await self._store.gate()
        self._store.plain[self._switch_key] = request.encode().decode()
        async with self._store.changed:
            self._store.changed.notify_all()  # waiting candidates ahead of its target step aside

    async def _lock_delay(self, mine: int, report: CampaignReport | None) -> None:
        """The etcd rule, with the store's exact knowledge of when a revoked lease would have run out."""
        raw = self._store.plain.get(self._epoch_key)
        record = parse_epoch_record(self._epoch_key, raw.encode() if raw is not None else None)
        marker = parse_resign_marker((self._store.plain.get(self._marker_key) or "").encode())
        if not isinstance(record, EpochRecord) or record.token in (0, mine):
            return
        if marker is not None and marker.token == record.token:
            return
        key = self._store.keys.get(record.key)
        until = self._store.cut_short.get(record.lease, 0.0)
        if key is not None and record.lease in self._store.leases:  # key deleted, lease lives
            until = self._store.leases[record.lease][0]
        now = self._store.clock.now()
        if until <= now:
            return
        if report is not None:
            why = "the last leader's key went before its lease could have expired"
            report.lock_delay(LockDelay(record.key, record.token, round(until - now, 3), why))
        while self._store.clock.now() < until:
            await self._store.clock.sleep(min(0.05, until - self._store.clock.now()))
            marker = parse_resign_marker((self._store.plain.get(self._marker_key) or "").encode())
            if marker is not None and marker.token == record.token:
                return

    async def resign(self, *, hand_over: bool = False) -> str:
        if self._mine is None:
            return ""
        await self._store.gate()
        key = self._store.keys.get(self._mine)
        token = self._token
        self._store.plain[self._marker_key] = ResignMarker(token, self._mine).encode().decode()
        if key is not None and key.create_revision == token:
            await self._store.delete(self._mine)
        self._mine = None
        return ""

    async def wait_lost(self, seen: Callable[[float], None] | None = None) -> None:
        name = self._mine
        key = self._store.keys.get(name) if name else None
        if key is None:
            return
        while not key.deleted.is_set():
            await self._store.gate()
            if self._store.reads_forbidden:
                raise StoreForbidden("memory store: reading our key is forbidden")
            if self._store.keys.get(name or "") is not key:
                return
            if seen is not None:
                seen(0.0)
            with contextlib.suppress(TimeoutError):
                await wait_for(self._store.clock, key.deleted.wait(), CONFIRM_EVERY)

    def _record(self) -> EpochRecord | str:
        raw = self._store.plain.get(self._epoch_key)
        return parse_epoch_record(self._epoch_key, raw.encode() if raw is not None else None)

    async def leader(self) -> Leadership | None:
        await self._store.gate()
        keys = self._store.under(self._prefix)
        if not keys:
            return None
        _, key = keys[0]
        recorded = self._record()
        # Until the new leader has bumped the epoch, the term is not yet its.
        ok = isinstance(recorded, EpochRecord) and recorded.token == key.create_revision
        return Leadership(
            candidate_id_of(key.value),
            key.create_revision,
            recorded.epoch if isinstance(recorded, EpochRecord) and ok else 0,
        )

    async def problems(self) -> list[str]:
        await self._store.gate()
        recorded = self._record()
        return [recorded] if isinstance(recorded, str) else []

    async def candidates(self) -> list[Candidate]:
        await self._store.gate()
        now = self._store.clock.now()
        out = []
        for no_lead, prefix in ((False, self._prefix), (True, self._no_lead_prefix)):
            for name, key in self._store.under(prefix):
                lease = self._store.leases.get(key.lease)
                left = lease[0] - now if lease else None
                cid, prio = (key.value, DEFAULT_PRIORITY) if no_lead else parse_candidate(key.value)
                stale = left is None or left <= 0
                out.append(Candidate(cid, key.create_revision, name, left, stale=stale, priority=prio, no_lead=no_lead))
        return out

    async def evict(self, candidate_id: str, key: str = "") -> list[str]:
        await self._store.gate()
        gone = [
            (name, k)
            for name, k in self._store.under(self._prefix) + self._store.under(self._no_lead_prefix)
            if candidate_id_of(k.value) == candidate_id and (not key or name == key)
        ]
        for _, k in gone:
            await self._store.revoke(k.lease)
        return [name for name, _ in gone]

    async def observe(self) -> AsyncIterator[Leadership | None]:
        last: object = object()
        while True:
            current = await self.leader()
            if current != last:
                last = current
                yield current
            async with self._store.changed:
                await self._store.changed.wait()

    async def close(self) -> None:
        return None


class MemoryBackend:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def session(self, ttl: float) -> MemorySession:
        return MemorySession(self.store, ttl)

    def election(self, name: str) -> MemoryElection:
        return MemoryElection(self.store, name)

    def admin(self, name: str) -> MemoryElection:
        # One class serves both roles; the protocols keep each caller to its own part.
        return MemoryElection(self.store, name)

    async def close(self) -> None:
        return None


# -- the registry's entry points (sidecar/backends/__init__.py) -------------


def check_config(cfg: Config) -> None:
    """Any timing the generic rules allow: tests use sub-second TTLs."""


async def connect(cfg: Config, clock: Clock) -> MemoryBackend:
    return MemoryBackend(MemoryStore(clock))
