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

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

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


OnWait = Callable[[Leadership], None]
"""Called with the current leader (epoch may be 0) whenever a campaign must wait."""


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

    async def campaign(self, session: Session, candidate_id: str, on_wait: OnWait | None = None) -> Leadership:
        """Join the queue and return once this candidate leads.

        Blocks while others lead, waking only when its predecessor goes;
        ``on_wait(leader)`` is called each time it has to wait.
        The returned epoch was bumped in a transaction that also proved the
        candidate key still exists.
        """
        ...

    async def resign(self) -> None:
        """Delete our candidate key so the successor takes over at once."""
        ...

    async def wait_lost(self) -> None:
        """Return when our candidate key disappears (raises on store errors)."""
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

    async def evict(self, candidate_id: str) -> list[str]:
        """End every candidacy of ``candidate_id`` as a lease expiry would.

        etcd revokes the candidate's lease; ZooKeeper deletes its node (our
        ACL lets only our identity do that). Returns the keys removed.
        """
        ...

    def observe(self) -> AsyncIterator[Leadership | None]:
        """Yield the leader now and on every change."""
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
