"""The storage seam: a Session owns a lease, an Election uses one.

Every backend (memory, etcd, ZooKeeper) implements these two Protocols and
passes the same contract tests. The elector never talks to a store directly.

Outcomes are typed, never guessed from messages:

* ``StoreUnavailable``: the store did not answer, or answered with an error
  that says nothing about our lease. Retrying may help. Timing-critical: the
  elector keeps its deadline running while these happen.
* ``SessionExpired``: the store says our lease (or ZooKeeper session) is gone.
  Every key attached to it is gone too; a new session is needed.
* ``KeyLost``: our candidate key vanished while the lease lived (resigned
  elsewhere, evicted by an operator). We lost the race, not the store.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sidecar.model import Leadership


class BackendError(Exception):
    """Base class of every error a backend raises on purpose."""


class StoreUnavailable(BackendError):
    """The store could not be reached or did not answer in time."""


class StoreForbidden(BackendError):
    """The store refused our credentials or our rights: a configuration
    problem that retrying will not fix. The message never holds secrets."""


class SessionExpired(BackendError):
    """The store reports that our lease or session no longer exists."""


class KeyLost(BackendError):
    """Our candidate key is gone although the session is alive."""


@dataclass(frozen=True)
class Renewal:
    """One acknowledged keepalive.

    ``sent_at`` is the monotonic time at which the request left this process:
    the store measures expiry from when it *received* the request, which is
    later, so a deadline computed from ``sent_at`` is never late.
    ``ttl`` is what the store says the lease now has (seconds), which may
    differ from what was asked for.
    ``valid_from`` is when that TTL is proven to start, if earlier than
    ``sent_at``: a store that learns of our renewals only later (ZooKeeper
    followers relay session touches to the leader with their next ping)
    can vouch only for an earlier round trip.
    """

    sent_at: float
    ttl: float
    valid_from: float | None = None

    @property
    def anchor(self) -> float:
        """The send time the lease's expiry is measured from."""
        return self.sent_at if self.valid_from is None else min(self.valid_from, self.sent_at)


@dataclass(frozen=True)
class Candidate:
    """A candidate key as the store holds it."""

    id: str
    token: int
    key: str
    lease_ttl_remaining: float | None = None  # None where the store cannot tell (ZooKeeper)
    stale: bool = False  # its lease or session is gone, though the key is still listed
    priority: int = 0  # higher takes a vacancy first (docs/design.md, 1d)
    no_lead: bool = False  # registered beside the queue, never in it: never leads
    # Not a sidecar's candidacy (an `etcdctl elect` or kazoo candidate): it
    # never steps aside for a switchover and is never handed a term.
    foreign: bool = False


# A periodic re-read waits for the next acknowledged keepalive (it goes out
# in the renewal's moment), and at most this many retry intervals when none
# comes (the store is away): etcd's view and own-key reads, ZooKeeper's own-node read.
RE_READ_WITHIN = 1.5

DEFAULT_PRIORITY = 0
PRIORITY_MIN, PRIORITY_MAX = -1000, 1000
NO_LEAD_SUFFIX = ".no-lead"  # NAME.no-lead/<lease or session>: where --no-lead candidates register
_PRIORITY_TAG = re.compile(r"^priority=(-?[0-9]{1,4})$")


def encode_candidate(candidate_id: str, priority: int = DEFAULT_PRIORITY) -> str:
    """The value of a candidate key or node: the id, and the priority unless it is the default.

    A default-priority candidate writes its bare id, byte for byte what it
    wrote before priorities existed, so ``etcdctl elect -l`` and kazoo's
    ``contenders()`` show it as before. Our ids never hold whitespace
    (config.validate), so a space cannot be part of one.
    """
    return candidate_id if priority == DEFAULT_PRIORITY else f"{candidate_id} priority={priority}"


def parse_candidate(value: str) -> tuple[str, int]:
    """(id, priority) from a candidate value: ours, or anyone's (``etcdctl elect NAME VALUE``).

    Only exactly ``<id> priority=<N>`` with N in range carries a priority;
    any other string is an id of default priority, so a foreign candidate
    never outranks ours by accident and is never misread as someone else.
    """
    cid, sep, tag = value.partition(" ")
    if sep and cid and (m := _PRIORITY_TAG.match(tag)) is not None:
        prio = int(m.group(1))
        if PRIORITY_MIN <= prio <= PRIORITY_MAX:
            return cid, prio
    return value, DEFAULT_PRIORITY


def candidate_id_of(value: str) -> str:
    return parse_candidate(value)[0]


@dataclass(frozen=True)
class EpochRecord:
    """``NAME.epoch``: the last leader's term, token and where its lease lives.

    ``key`` and ``lease`` (etcd: lease id; ZooKeeper: session id) name the
    last leader's candidacy, so a successor can tell whether it resigned
    cleanly and, on etcd, ask how long its lease had left.
    """

    epoch: int
    token: int
    leader: str = ""
    key: str = ""
    lease: int = 0
    # etcd: the leader's granted lease TTL in seconds (0: not recorded). Sidecars
    # may run different --ttl; a successor that never polled this lease must
    # still know how long its grant could run (docs/design.md, 1b).
    ttl: int = 0

    def encode(self) -> bytes:
        fields: dict[str, object] = {
            "epoch": self.epoch, "token": self.token, "leader": self.leader, "key": self.key, "lease": self.lease,
        }  # fmt: skip
        if self.ttl:  # written only when known: older records and ZooKeeper's stay byte for byte as before
            fields["ttl"] = self.ttl
        return json.dumps(fields).encode()


def parse_epoch_record(key: str, raw: bytes | None) -> EpochRecord | str:
    """The record, or one line naming the key and the rule it breaks.

    The token is the fence; the epoch is for people. A record that an
    operator or a bug garbled must never stop an election, so the caller
    repairs it rather than fail.
    """
    if raw is None or raw == b"":
        return EpochRecord(0, 0)
    try:
        data: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return f'{key}: not JSON ({raw[:40]!r}); expected {{"epoch": int, "token": int, ...}}'
    if not isinstance(data, dict):
        return f"{key}: JSON {type(data).__name__}, expected an object with an integer epoch"
    epoch, token = data.get("epoch"), data.get("token", 0)
    lease = data.get("lease", 0)
    for name, value in (("epoch", epoch), ("token", token)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"{key}: {name} {value!r} is not a non-negative integer"
    # A ZooKeeper session id is negative from server myid 128 on (its top byte).
    if not isinstance(lease, int) or isinstance(lease, bool) or not -(2**63) <= lease < 2**64:
        return f"{key}: lease {lease!r} is not a 64-bit integer"
    leader, cand, ttl = data.get("leader", ""), data.get("key", ""), data.get("ttl", 0)
    return EpochRecord(
        int(epoch),  # type: ignore[arg-type]  # checked above
        int(token),
        leader if isinstance(leader, str) else "",
        cand if isinstance(cand, str) else "",
        int(lease),
        # Only a hint that lengthens waits: a bad one is dropped, not a garbled record.
        ttl if isinstance(ttl, int) and not isinstance(ttl, bool) and 0 < ttl < 1_000_000 else 0,
    )


@dataclass(frozen=True)
class ResignMarker:
    """``NAME.resigned``: the last leader that stopped its orchestrator, confirmed, and then left."""

    token: int
    key: str
    # ZooKeeper: the switchover request a handover settled in the same multi
    # (it deletes the request node, and ZooKeeper keeps no history to read it
    # back from). Written only then: other markers stay byte for byte as before.
    settled: SwitchoverRequest | None = None

    def encode(self) -> bytes:
        fields: dict[str, object] = {"token": self.token, "key": self.key}
        if self.settled is not None:
            fields["settled"] = json.loads(self.settled.encode())
        return json.dumps(fields).encode()


def parse_resign_marker(raw: bytes | None) -> ResignMarker | None:
    """The marker, or None when absent or unreadable (then nobody counts as resigned: the safe side)."""
    if not raw:
        return None
    try:
        data: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("token"), int) or not isinstance(data.get("key"), str):
        return None
    settled = data.get("settled")
    request = parse_switchover(json.dumps(settled).encode()) if isinstance(settled, dict) else None
    return ResignMarker(int(data["token"]), str(data["key"]), request)


SWITCHOVER_TTL = 30.0  # seconds a switchover request stays pending unless the CLI says otherwise


@dataclass(frozen=True)
class SwitchoverRequest:
    """``NAME.switchover``: an operator's request that leadership move, and to whom.

    ``to`` is a candidate id, or "" for "whoever is next". ``at`` is the
    requester's wall clock (seconds since the epoch) and the request is
    pending until ``at + ttl``: the TTL only bounds how long a dead or slow
    target can hold the election up; safety never depends on these clocks
    (every handover still goes through the kill path and the fencing token).
    """

    to: str
    requested_by: str
    id: str
    at: float
    ttl: float = SWITCHOVER_TTL

    def pending(self, now: float) -> bool:
        return now < self.at + self.ttl

    def encode(self) -> bytes:
        return json.dumps(
            {"to": self.to, "requested_by": self.requested_by, "id": self.id, "at": self.at, "ttl": self.ttl}
        ).encode()


def parse_switchover(raw: bytes | None) -> SwitchoverRequest | None:
    """The request, or None when absent or unreadable.

    A garbled request is no request: candidates then elect as usual, which
    is the safe side (nobody steps aside for a target nobody can name).
    """
    if not raw:
        return None
    try:
        data: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    to, by, rid, at, ttl = (data.get(k) for k in ("to", "requested_by", "id", "at", "ttl"))
    if not (isinstance(to, str) and isinstance(by, str) and isinstance(rid, str)):
        return None
    if not isinstance(at, int | float) or not isinstance(ttl, int | float) or isinstance(at, bool) or ttl <= 0:
        return None
    return SwitchoverRequest(to, by, rid, float(at), float(ttl))


NO_REQUEST = "none"  # nothing pending: lead as usual
STEP_ASIDE = "step-aside"  # a pending request names another live candidate: re-queue without a grant
COMPLETED = "completed"  # the request names us, or anyone: lead and clear it
EXPIRED = "expired"  # its TTL ran out: lead and clear it
TARGET_GONE = "target-gone"  # its target is not queued (dead or never there): lead and clear it


def switchover_verdict(request: SwitchoverRequest | None, me: str, others: set[str], now: float) -> str:
    """The invariant, in one place for every backend.

    ``others``: ids of the live candidates queued besides us. While a
    request to X is pending and X is queued, every other candidate that
    reaches the head of the queue steps aside (re-queues behind X) instead
    of leading, so X is the next to hold a grant. The winner's epoch bump
    compares the request key unchanged since it read it, so a request
    written after that read makes the bump fail and the read run again.
    """
    if request is None:
        return NO_REQUEST
    if not request.pending(now):
        return EXPIRED
    if request.to in ("", me):
        return COMPLETED
    if request.to in others:
        return STEP_ASIDE
    return TARGET_GONE


def steps_aside_early(request: SwitchoverRequest | None, me: str, behind: set[str], now: float) -> bool:
    """A waiting candidate ahead of a pending request's target re-queues behind it at once.

    ``behind``: ids of the live candidates queued after us. It would step
    aside anyway when it reached the head of the queue (``switchover_verdict``);
    doing it while the leader is still stopping its orchestrator takes that
    hop (a watch event, a read and two writes per candidate ahead of the
    target) off the switchover's critical path. Only ever safe: a waiting
    candidate holds no grant, and the target still leads through the claim
    and the lock-delay like any successor.
    """
    return request is not None and request.pending(now) and request.to not in ("", me) and request.to in behind


PRIORITY_STEP_ASIDE = "priority-step-aside"  # a live queued candidate outranks us: re-queue without a grant


def priority_verdict(
    request: SwitchoverRequest | None, me: str, priority: int, others: dict[str, int], now: float
) -> str:
    """What a candidate at the head of the queue does, switchover and priorities together.

    ``others``: id -> priority of the live candidates queued besides us. A
    pending switchover decides first (an operator's explicit choice, even of
    a lower priority): to us or to "anyone", we lead; to another queued
    candidate, we step aside. Otherwise (no request, or one expired or with
    its target gone) we step aside when a queued candidate has a strictly
    higher priority: it takes the vacancy.
    Nobody preempts a sitting leader: this is asked only at the head of the
    queue, which a leader has already left behind.
    """
    verdict = switchover_verdict(request, me, set(others), now)
    if verdict in (STEP_ASIDE, COMPLETED):
        # A pending request decides, "anyone" included: the leader it moves
        # away from has re-queued behind us, and by priority alone it would
        # take the vacancy straight back (a switchover that goes nowhere).
        return verdict
    if any(p > priority for p in others.values()):
        return PRIORITY_STEP_ASIDE
    return verdict


def vacancy_winner(waiting: list[tuple[str, int]]) -> int:
    """Index, in queue order, of who takes the next vacancy among ``waiting`` (key, priority).

    The first of the highest priority: ties keep queue order (no step-aside
    among equals). -1 when nobody waits.
    """
    best = -1
    for i, (_, prio) in enumerate(waiting):
        if best < 0 or prio > waiting[best][1]:
            best = i
    return best


def leader_should_hand_over(request: SwitchoverRequest | None, me: str, others: set[str], now: float) -> bool:
    """A leader acts on a pending request that someone queued can fulfil, and names someone else."""
    if request is None or not request.pending(now) or request.to == me:
        return False
    return bool(others) if request.to == "" else request.to in others


OnWait = Callable[[Leadership], None]
"""Called with the current leader (epoch may be 0) whenever a campaign must wait."""


@dataclass(frozen=True)
class LockDelay:
    """A campaign found its predecessor gone before that one's grant could have ended.

    The predecessor's key or node vanished without the clean-resign marker
    (deleted by an operator, lease revoked, evicted): the store no longer
    protects its grant window, so the campaign waits ``seconds`` (at most;
    it ends early if the predecessor confirms its orchestrator stopped)
    before it lets this candidate lead (Chubby's lock-delay).
    """

    predecessor: str  # its key or node
    token: int
    seconds: float
    why: str


class CampaignReport(Protocol):
    """What a campaign tells the elector besides its outcome (logged and counted there)."""

    def lock_delay(self, delay: LockDelay) -> None: ...

    def epoch_record_repaired(self, key: str, found: str) -> None: ...

    def duplicate_candidate_id(self, candidate_id: str, keys: list[str]) -> None: ...

    def switchover(self, verdict: str, request: SwitchoverRequest) -> None:
        """A campaign acted on a switchover request (``STEP_ASIDE``, ``COMPLETED``, ...)."""
        ...

    def priority_step_aside(self, outranked_by: str, priority: int) -> None:
        """A campaign at the head of the queue re-queued behind ``outranked_by`` (of ``priority``)."""
        ...


class Session(Protocol):
    """A lease (etcd) or session (ZooKeeper) that keeps candidate keys alive."""

    @property
    def id(self) -> str:
        """Store-side identity of the session (lease id in hex for etcd)."""
        ...

    async def open(self) -> Renewal:
        """Create the lease. The returned renewal starts the deadline."""
        ...

    async def keepalive(self) -> Renewal:
        """One renewal round trip. Raises SessionExpired or StoreUnavailable."""
        ...

    async def close(self) -> None:
        """Revoke the lease; every key attached to it is deleted by the store."""
        ...

    async def abandon(self) -> None:
        """Stop keeping the lease alive without revoking it: the store expires
        it (and our keys) after its TTL. For when an orchestrator may still
        live: a revoke would let a successor start at once."""
        ...


class Election(Protocol):
    """One election as a candidate takes part in it: all the elector uses.

    Candidates queue by creation order; the oldest leads.
    """

    @property
    def name(self) -> str: ...

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
        """Join the queue and return once this candidate leads.

        ``priority`` travels in the key's value (``encode_candidate``); at
        the head of the queue a candidate steps aside for a live queued one
        of higher priority (``priority_verdict``). ``no_lead``: register
        under ``NAME.no-lead/`` instead of the queue and never return (until
        the registration or the session is lost, raised as usual), calling
        ``on_wait`` with each new leader: nobody ever queues behind it.

        Blocks while others lead, waking only when its predecessor goes;
        ``on_wait(leader)`` is called each time it has to wait.
        Returns only once the last leader's grant cannot still be valid: if
        its key vanished without a clean resign, it waits (``lock_delay``).
        The returned epoch was bumped in a transaction that also proved the
        candidate key still exists; a malformed epoch record is overwritten
        (``epoch_record_repaired``), never a reason to fail.
        """
        ...

    async def resign(self, *, hand_over: bool = False) -> str:
        """Delete our candidate key so the successor takes over at once.

        Called only once our orchestrator is confirmed stopped, also after a
        lost lease; it leaves the clean-resign marker (same transaction as
        the delete), which tells the successor it need not wait.
        ``hand_over`` (a resign, switchover or shutdown, our key still held):
        a backend may start the successor's term in the same transaction,
        when it can compare everything the successor's own claim would.
        Returns the id of the candidate whose term it started, or "".
        """
        ...

    async def wait_lost(self, seen: Callable[[float], None] | None = None) -> None:
        """Return when our candidate key disappears (raises on store errors).

        ``seen(age)``: called every time the store shows our key present, in
        a call sent ``age`` seconds before, at least once a retry interval
        while the store answers; the elector demotes when it has not been
        for a grant's validity less kill_grace. A watch alone is not a
        confirmation: only an answer from the store is.
        """
        ...

    async def wait_switchover(self, candidate_id: str) -> SwitchoverRequest:
        """While leading: return a pending switchover request that names
        another queued candidate (or anyone, when others are queued).
        Raises on store errors; the caller retries."""
        ...

    async def close(self) -> None:
        """Release connections. Does not touch the keys."""
        ...


class ElectionAdmin(Protocol):
    """One election seen and acted on from outside: `status`, `watch`, `evict`, the demo."""

    async def leader(self) -> Leadership | None:
        """The current leader as the store sees it, or None."""
        ...

    async def candidates(self) -> list[Candidate]:
        """Every candidate, oldest (the leader) first."""
        ...

    async def evict(self, candidate_id: str, key: str = "") -> list[str]:
        """End every candidacy of ``candidate_id`` (or only ``key``) as a lease expiry would.

        etcd revokes the candidate's lease; ZooKeeper deletes its node (our
        ACL lets only our identity do that). Returns the keys removed. The
        successor then waits out the evicted one's lease (lock-delay).
        """
        ...

    async def problems(self) -> list[str]:
        """Store data that breaks a rule, one line each naming the key and the rule."""
        ...

    def observe(self) -> AsyncIterator[Leadership | None]:
        """Yield the leader now and on every change."""
        ...

    async def switchover_request(self) -> SwitchoverRequest | None:
        """The switchover request in the store, pending or not, or None."""
        ...

    async def request_switchover(self, request: SwitchoverRequest) -> None:
        """Write (or overwrite) the switchover request the leader watches."""
        ...

    async def close(self) -> None:
        """Release connections. Does not touch the keys."""
        ...


class Backend(Protocol):
    """A connection to one store, from which sessions and elections are made."""

    def session(self, ttl: float) -> Session: ...

    def election(self, name: str) -> Election: ...

    def admin(self, name: str) -> ElectionAdmin: ...

    async def close(self) -> None: ...
