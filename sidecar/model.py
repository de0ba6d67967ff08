"""The shared vocabulary, on the ground floor: every other module may import
it, it imports nothing of ours.

Timing is defined here once. For a renewal sent at ``sent_at`` and
acknowledged with ``ttl``:

    expires   = sent_at + ttl * (1 - drift) - margin      (the grant's deadline)
    demote_at = min(sent_at + renew_deadline, expires - kill_grace)

The store cannot expire the lease before ``sent_at + ttl`` on its clock, so
a grant that ends at ``expires`` ends ``margin`` before the earliest expiry
even with a relative clock-rate error of ``drift``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol


class State(enum.Enum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"
    DEMOTING = "demoting"


class Reason(enum.StrEnum):
    """Why leadership ended; the same words go to the orchestrator in ``revoke``."""

    LEASE_LOST = "lease-lost"  # the store says our lease or key is gone
    RESIGNED = "resigned"  # asked to hand over
    BACKEND_UNREACHABLE = "backend-unreachable"  # no renewal acknowledged before demote_at, or our key unconfirmed
    SHUTDOWN = "shutdown"  # the sidecar is stopping
    WATCHDOG_LOST = "watchdog-lost"  # the out-of-process deadline guard died
    INTERNAL_ERROR = "internal-error"  # a bug or hook failure in the sidecar itself
    SWITCHOVER = "switchover"  # an operator asked, through the store, for another candidate to lead

    @property
    def unasked(self) -> bool:
        """A loss nobody asked for: counted and alerted on, unlike a resign or shutdown."""
        return self not in (Reason.RESIGNED, Reason.SHUTDOWN, Reason.SWITCHOVER)


@dataclass(frozen=True)
class Leadership:
    """What the store proves about a leader: who, which token, which term."""

    id: str
    token: int
    epoch: int


@dataclass(frozen=True)
class Grant:
    """One grant handed to the orchestrator; a new one (higher seq) per renewal."""

    election: str
    candidate: str
    token: int
    epoch: int
    expires_monotonic: float
    seq: int

    def valid_for(self, now: float) -> float:
        """Seconds left at ``now``: computed when sent, never cached."""
        return max(0.0, self.expires_monotonic - now)


@dataclass(frozen=True)
class Timing:
    """The timing settings that decide deadlines (a view of Config)."""

    renew_deadline: float
    drift: float
    margin: float
    kill_grace: float

    def grant_validity(self, ttl: float) -> float:
        """Seconds from a renewal's send time during which its grant is valid."""
        return ttl * (1 - self.drift) - self.margin

    def expires(self, sent_at: float, ttl: float) -> float:
        return sent_at + self.grant_validity(ttl)

    def demote_at(self, sent_at: float, ttl: float, anchor: float | None = None) -> float:
        """``anchor``: where the store's TTL is proven to run from, if before ``sent_at``."""
        expires = self.expires(sent_at if anchor is None else anchor, ttl)
        return min(sent_at + self.renew_deadline, expires - self.kill_grace)

    def demote_after(self, ttl: float) -> float:
        """Seconds of store silence after which a leader demotes."""
        return self.demote_at(0.0, ttl)


# Every outcome of a switchover request that a sidecar counts (election_switchovers_total{outcome}):
# the leader hands over; a candidate steps aside for the target; the winner settles it.
SWITCHOVER_OUTCOMES = ("handed-over", "step-aside", "completed", "expired", "target-gone")


class StoreCall(enum.StrEnum):
    """Where the elector talks to the store; the ``during`` label of store errors."""

    SESSION_OPEN = "session-open"
    KEEPALIVE = "keepalive"
    CAMPAIGN = "campaign"
    RESIGN = "resign"
    WATCH_OWN_KEY = "watch-own-key"
    WATCH_SWITCHOVER = "watch-switchover"


class EventSink(Protocol):
    """Where the elector reports what happened (a structlog logger fits)."""

    def info(self, event: str, **fields: Any) -> Any: ...

    def warning(self, event: str, **fields: Any) -> Any: ...

    def error(self, event: str, **fields: Any) -> Any: ...


class KillUnconfirmed(Exception):
    """Raised by a stop hook that could not confirm the orchestrator died.

    The elector then stays out of the election: campaigning again could
    let a second orchestrator act beside one that may still be alive.
    """


@dataclass(frozen=True)
class Loss:
    """How a term or a lease ended: the value every exit from leadership is matched on."""

    reason: Reason
    detail: str


class GuardLost(Exception):
    """The out-of-process watchdog is not running: the deadline would be unguarded."""


@dataclass(frozen=True)
class Snapshot:
    """The elector as seen from outside at one instant (HTTP, socket status, CLI)."""

    election: str
    candidate: str
    at: float  # monotonic time of the snapshot
    state: State
    grant: Grant | None  # only while LEADER
    leader: Leadership | None  # ourselves while leading, else the last leader we queued behind
    demote_at: float
    renewed_at: float  # send time of the last acknowledged renewal (0: no session)
    backend_up: bool
    out_of_election: str  # why we stay out of the election, or ""

    @property
    def remaining(self) -> float:
        """Seconds the current grant stays valid; 0 when not leading."""
        return self.grant.valid_for(self.at) if self.grant is not None and self.state is State.LEADER else 0.0

    @property
    def past_demote(self) -> float:
        """How far a leader is past its demote time (renewals stopped); 0 otherwise."""
        return max(0.0, self.at - self.demote_at) if self.state is State.LEADER else 0.0


class ElectorMetrics:
    """What the elector reports for metrics. Every method does nothing here;
    sidecar/metrics.py overrides them with Prometheus series, so the core never
    imports a metrics library and tests need no registry."""

    def transition(self, state: State) -> None: ...

    def leading(self, grant: Grant | None) -> None: ...

    def renewed(self, rtt: float) -> None: ...

    def keepalive_failed(self) -> None: ...

    def store_unreachable(self, during: StoreCall) -> None: ...

    def race_lost(self) -> None: ...

    def lease_lost(self, reason: Reason, role: str) -> None: ...

    def kill_unconfirmed(self, active: bool) -> None: ...

    def lock_delay(self, seconds: float) -> None: ...

    def switchover(self, outcome: str) -> None: ...

    def priority_step_aside(self) -> None: ...
