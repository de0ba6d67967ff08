"""The election state machine: FOLLOWER -> CANDIDATE -> LEADER -> DEMOTING.

No lease-based election can by itself guarantee that only one process acts
as leader: a process may pause after it last checked. The elector therefore
never trusts anything but its own deadline, computed from the *send time*
of the last keepalive the store acknowledged:

    expires  = sent + ttl * (1 - drift) - margin     (handed to the orchestrator)
    demote_at = min(sent + renew_deadline, expires - kill_grace)

The store cannot expire the lease before ``sent + ttl`` (it counts from when
it received the request, later than ``sent``). At ``demote_at`` a leader that
could not renew stops, whether or not the store ever answers again, which
leaves ``kill_grace`` for the orchestrator to stop and ``margin`` for the
kill to land before anyone else can win.

Losing a race and losing the store are different outcomes: the first is
normal queueing (``race_lost``, info), the second is an outage
(``store_unreachable``, warning). Both are counted separately.

The core never imports logging or metrics libraries: an ``EventSink`` is
handed in, and ``Hooks`` let the caller act on transitions (publish grants,
kill the orchestrator).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sidecar.backends.base import (
    Backend,
    Election,
    KeyLost,
    Renewal,
    Session,
    SessionExpired,
    StoreForbidden,
    StoreUnavailable,
)
from sidecar.clock import Clock, wait_for
from sidecar.config import Config
from sidecar.model import EventSink, Grant, KillUnconfirmed, Leadership, Reason, State, StoreCall


class ElectorMetrics(Protocol):
    """What the elector reports for metrics; a Prometheus adapter lives in sidecar/metrics.py."""

    def transition(self, state: State) -> None: ...

    def leading(self, grant: Grant | None) -> None: ...

    def renewed(self, rtt: float) -> None: ...

    def keepalive_failed(self) -> None: ...

    def store_unreachable(self, during: StoreCall) -> None: ...

    def race_lost(self) -> None: ...

    def lease_lost(self, reason: Reason, role: str) -> None: ...


class NoMetrics:
    def transition(self, state: State) -> None: ...

    def leading(self, grant: Grant | None) -> None: ...

    def renewed(self, rtt: float) -> None: ...

    def keepalive_failed(self) -> None: ...

    def store_unreachable(self, during: StoreCall) -> None: ...

    def race_lost(self) -> None: ...

    def lease_lost(self, reason: Reason, role: str) -> None: ...


async def _nothing(*_: object) -> None:
    return None


@dataclass
class Hooks:
    """Async callbacks, each awaited in order; a slow hook delays the elector."""

    started_leading: Callable[[Grant], Awaitable[None]] = _nothing
    renewed: Callable[[Grant], Awaitable[None]] = _nothing
    # Must return only when the orchestrator is known to have stopped, or
    # raise KillUnconfirmed.
    stopped_leading: Callable[[Grant, Reason], Awaitable[None]] = _nothing
    state_changed: Callable[[State], Awaitable[None]] = _nothing


class _Lost(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Elector:
    def __init__(
        self,
        cfg: Config,
        backend: Backend,
        clock: Clock,
        log: EventSink,
        hooks: Hooks | None = None,
        *,
        metrics: ElectorMetrics | None = None,
    ) -> None:
        self.cfg = cfg
        self.backend = backend
        self.clock = clock
        self.hooks = hooks or Hooks()
        self.metrics: ElectorMetrics = metrics or NoMetrics()
        self.state = State.FOLLOWER
        self.counters: Counter[str] = Counter()
        self.grant: Grant | None = None
        self.last_renewal: Renewal | None = None
        self.expires = 0.0
        self.demote_at = 0.0
        self.out_of_election = False
        self.forbidden: str = ""  # why the store refused us, if it did; fatal
        self.current_leader: Leadership | None = None
        self.session: Session | None = None
        self.backend_up = False  # did the last store call succeed?
        # Only for proving the fault checker can fail: never demote at the deadline.
        self.unsafe_ignore_deadline = False
        self._orphans: list[Session] = []  # sessions we could not revoke; retried later
        self._log = log
        self._seq = 0
        self._stop = asyncio.Event()
        self._resign = asyncio.Event()
        self._election: Election = backend.election(cfg.election)
        self._fields = {"election": cfg.election, "candidate": cfg.candidate_id}

    # -- public control -------------------------------------------------

    def stop(self) -> None:
        """Leave the election: demote if leading, resign, revoke the lease."""
        self._stop.set()

    def resign(self) -> bool:
        """Hand leadership over; we rejoin the queue at its end. False if not leader."""
        if self.state is not State.LEADER:
            return False
        self._resign.set()
        return True

    @property
    def election(self) -> Election:
        return self._election

    def remaining(self) -> float:
        """Seconds our current grant (or session) stays valid; 0 once passed."""
        return max(0.0, self.expires - self.clock.now())

    # -- helpers --------------------------------------------------------

    def _emit(self, level: str, event: str, **fields: Any) -> None:
        getattr(self._log, level)(event, **self._fields, **fields)

    async def _set_state(self, state: State, **fields: Any) -> None:
        if state is self.state:
            return
        old, self.state = self.state, state
        self.counters[f"transition:{state.value}"] += 1
        self.metrics.transition(state)
        token = self.grant.token if self.grant else None
        epoch = self.grant.epoch if self.grant else None
        self._emit(
            "info", "state_changed", from_state=old.value, to_state=state.value, token=token, epoch=epoch, **fields
        )
        await self.hooks.state_changed(state)

    def _accept(self, renewal: Renewal) -> None:
        cfg = self.cfg
        self.last_renewal = renewal
        self.expires = cfg.timing.expires(renewal.sent_at, renewal.ttl)
        self.demote_at = cfg.timing.demote_at(renewal.sent_at, renewal.ttl)

    def _next_grant(self, lead: Leadership) -> Grant:
        self._seq += 1
        return Grant(
            election=self.cfg.election,
            candidate=self.cfg.candidate_id,
            token=lead.token,
            epoch=lead.epoch,
            expires_monotonic=self.expires,
            seq=self._seq,
        )

    async def _stoppable(self, aw: Awaitable[Any], timeout: float) -> Any:
        return await wait_for(self.clock, aw, timeout)

    def _store_unreachable(self, where: StoreCall, exc: BaseException) -> None:
        self.counters["store_unreachable"] += 1
        self.backend_up = False
        self.metrics.store_unreachable(where)
        self._emit("warning", "store_unreachable", during=where.value, error=str(exc) or type(exc).__name__)

    # -- the loop -------------------------------------------------------

    async def run(self) -> None:
        """Campaign until stop(). Raises only on bugs, never on store outages.

        A store that refuses our credentials or rights (StoreForbidden) ends
        the run: retrying cannot fix configuration, and the operator should
        see it at once (``forbidden`` says why).
        """
        try:
            await self._run()
        except StoreForbidden as exc:
            self._forbid(exc)

    def _forbid(self, exc: StoreForbidden) -> None:
        self.forbidden = str(exc)
        self.out_of_election = True
        self._emit("error", "store_forbidden", error=str(exc))

    async def _run(self) -> None:
        try:
            while not self._stop.is_set() and not self.out_of_election:
                session = self.backend.session(self.cfg.ttl)
                try:
                    renewal = await self._stoppable(session.open(), self.cfg.effective_request_timeout)
                except (StoreUnavailable, TimeoutError) as exc:
                    self._store_unreachable(StoreCall.SESSION_OPEN, exc)
                    await self._pause(self.cfg.retry_interval)
                    continue
                self._accept(renewal)
                self.metrics.renewed(self.clock.now() - renewal.sent_at)
                self.backend_up = True
                self.session = session
                self._emit("info", "session_opened", session=session.id, ttl=renewal.ttl)
                await self._revoke_orphans()
                if renewal.ttl < self.cfg.ttl:
                    # Safe (deadlines use the store's figure) but worth knowing:
                    # the store shortened the TTL, so failovers and demotions come sooner.
                    self._emit("warning", "store_shortened_ttl", requested=self.cfg.ttl, granted=renewal.ttl)
                try:
                    await self._with_session(session)
                finally:
                    await self._close_session(session)
        finally:
            await self._set_state(State.FOLLOWER)
            await self._election.close()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await wait_for(self.clock, self._stop.wait(), seconds)

    async def _close_session(self, session: Session) -> None:
        session_id = session.id
        try:
            await self._stoppable(session.close(), self.cfg.effective_request_timeout)
            self._emit("info", "session_closed", session=session_id)
        except SessionExpired:
            self._emit("info", "session_closed", session=session_id, already_expired=True)
        except (StoreUnavailable, StoreForbidden, TimeoutError) as exc:
            # The lease then expires on its own at the store; nothing of ours
            # still acts on it, because we only get here after demoting. We
            # revoke it once the store answers again: its key may head the
            # queue and would otherwise block the others until it expires.
            self._orphans.append(session)
            self._emit("warning", "session_close_failed", session=session_id, error=str(exc) or type(exc).__name__)

    async def _revoke_orphans(self) -> None:
        for session in list(self._orphans):
            session_id = session.id
            try:
                await self._stoppable(session.close(), self.cfg.effective_request_timeout)
            except (StoreUnavailable, StoreForbidden, TimeoutError):
                continue  # still unreachable: next time
            except SessionExpired:
                pass
            self._orphans.remove(session)
            self._emit("info", "orphan_session_revoked", session=session_id)

    async def _with_session(self, session: Session) -> None:
        """Campaign and lead on one session until it is lost or we stop."""
        keepalive = asyncio.create_task(self._keepalive_loop(session), name="keepalive")
        try:
            while not self._stop.is_set() and not self.out_of_election:
                await self._set_state(State.CANDIDATE)
                lead = await self._campaign_once(session, keepalive)
                if lead is None:
                    if keepalive.done():
                        return
                    continue
                reason = await self._lead(lead, keepalive)
                if reason in (Reason.LEASE_LOST, Reason.BACKEND_UNREACHABLE) or self.out_of_election:
                    return
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError, _Lost):
                await keepalive

    async def _campaign_once(self, session: Session, keepalive: asyncio.Task[None]) -> Leadership | None:
        """One campaign attempt. None: try again (or the session is gone)."""
        self._emit("info", "campaigning", session=session.id)
        campaign = asyncio.create_task(
            self._election.campaign(session, self.cfg.candidate_id, self._race_lost), name="campaign"
        )
        stop = asyncio.create_task(self._stop.wait(), name="stop")
        try:
            await asyncio.wait({campaign, keepalive, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if campaign.done():
            try:
                return campaign.result()
            except KeyLost as exc:
                self.counters["candidate_key_lost"] += 1
                self._emit("info", "candidate_key_lost", detail=str(exc))
                return None
            except SessionExpired as exc:
                keepalive.cancel()
                self._session_lost(Reason.LEASE_LOST, str(exc))
                return None
            except StoreForbidden as exc:
                self._forbid(exc)
                keepalive.cancel()
                return None
            except StoreUnavailable as exc:
                self._store_unreachable(StoreCall.CAMPAIGN, exc)
                await self._pause(self.cfg.retry_interval)
                return None
        campaign.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await campaign
        if keepalive.done():
            failure = keepalive.exception()
            if isinstance(failure, _Lost):
                self._session_lost(failure.reason, str(failure))
            elif failure is not None:
                raise failure
        return None

    def _race_lost(self, leader: Leadership) -> None:
        """Queued behind a live leader: normal, not an outage."""
        self.counters["race_lost"] += 1
        self.metrics.race_lost()
        self.current_leader = leader
        self._emit("info", "race_lost", leader=leader.id, leader_token=leader.token)

    def _session_lost(self, reason: Reason, detail: str) -> None:
        self.counters[f"session_lost:{reason.value}"] += 1
        self.metrics.lease_lost(reason, "candidate")
        self._emit("warning", "candidate_session_lost", reason=reason.value, detail=detail)

    async def _keepalive_loop(self, session: Session) -> None:
        """Renew until the store says the lease is gone or demote_at passes.

        Raises _Lost. Every failure is logged and counted; none is swallowed.
        """
        failures = 0
        while True:
            wait = min(self.cfg.retry_interval, self.demote_at - self.clock.now())
            if failures == 0 and wait > 0:
                await self.clock.sleep(wait)
            now = self.clock.now()
            if self.unsafe_ignore_deadline and now >= self.demote_at:
                self.demote_at = now + self.cfg.retry_interval  # pretend: the broken build keeps leading
            if now >= self.demote_at:
                raise _Lost(
                    Reason.BACKEND_UNREACHABLE,
                    f"no renewal acknowledged for {now - self.last_renewal.sent_at:.3f}s"
                    if self.last_renewal
                    else "no renewal",
                )
            try:
                renewal = await self._stoppable(
                    session.keepalive(), min(self.cfg.effective_request_timeout, self.demote_at - now)
                )
            except SessionExpired as exc:
                raise _Lost(Reason.LEASE_LOST, str(exc)) from exc
            except StoreForbidden as exc:
                # Demote the normal way (orchestrator first), then stay out.
                self._forbid(exc)
                raise _Lost(Reason.BACKEND_UNREACHABLE, str(exc)) from exc
            except (StoreUnavailable, TimeoutError) as exc:
                failures += 1
                self.counters["keepalive_failed"] += 1
                self.metrics.keepalive_failed()
                self._store_unreachable(StoreCall.KEEPALIVE, exc)
                self._emit(
                    "warning",
                    "keepalive_failed",
                    failures=failures,
                    seconds_to_demote=round(self.demote_at - self.clock.now(), 3),
                )
                # Retry soon, but never spin: a refused connection fails fast.
                await self.clock.sleep(min(self.cfg.retry_interval / 4, max(0.0, self.demote_at - self.clock.now())))
                continue
            failures = 0
            self.counters["renewals"] += 1
            self.metrics.renewed(self.clock.now() - renewal.sent_at)
            self.backend_up = True
            self._accept(renewal)
            if self.state is State.LEADER and self.grant is not None:
                self.grant = self._next_grant(self._leadership(self.grant))
                self.metrics.leading(self.grant)
                await self.hooks.renewed(self.grant)

    @staticmethod
    def _leadership(grant: Grant) -> Leadership:
        return Leadership(grant.candidate, grant.token, grant.epoch)

    async def _lead(self, lead: Leadership, keepalive: asyncio.Task[None]) -> Reason:
        """Act as leader until something ends it; return why."""
        if self.clock.now() >= self.demote_at:
            # We won, but too late to trust it: our lease may already be gone.
            reason = Reason.BACKEND_UNREACHABLE
            self._emit("warning", "won_too_late", token=lead.token, epoch=lead.epoch)
            await self._election_resign_quietly()
            return reason
        self._resign.clear()
        self.grant = self._next_grant(lead)
        self.counters["elected"] += 1
        self.metrics.leading(self.grant)
        await self._set_state(State.LEADER)
        self._emit(
            "info",
            "elected",
            token=lead.token,
            epoch=lead.epoch,
            valid_for=round(self.grant.valid_for(self.clock.now()), 3),
        )
        await self.hooks.started_leading(self.grant)

        lost = asyncio.create_task(self._own_key_gone(), name="own-key-gone")
        resign = asyncio.create_task(self._resign.wait(), name="resign")
        stop = asyncio.create_task(self._stop.wait(), name="stop")
        try:
            await asyncio.wait({keepalive, lost, resign, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (lost, resign, stop):
                t.cancel()
        reason, detail = self._why_leadership_ended(keepalive, lost, resign)
        grant = self.grant
        self.counters[f"leadership_lost:{reason.value}"] += 1
        if reason in (Reason.LEASE_LOST, Reason.BACKEND_UNREACHABLE):
            self.metrics.lease_lost(reason, "leader")
        self.metrics.leading(None)
        await self._set_state(State.DEMOTING, reason=reason.value, detail=detail)
        try:
            await self.hooks.stopped_leading(grant, reason)
        except KillUnconfirmed as exc:
            self.out_of_election = True
            self.counters["kill_unconfirmed"] += 1
            self._emit("error", "kill_unconfirmed", detail=str(exc))
        finally:
            self.grant = None
        if reason in (Reason.RESIGNED, Reason.SHUTDOWN):
            # Only now that our orchestrator has stopped may a successor start.
            await self._election_resign_quietly()
        self._emit("info", "demoted", reason=reason.value, token=grant.token, epoch=grant.epoch)
        return reason

    def _why_leadership_ended(
        self, keepalive: asyncio.Task[None], lost: asyncio.Task[None], resign: asyncio.Task[bool]
    ) -> tuple[Reason, str]:
        if keepalive.done():
            exc = keepalive.exception()
            if isinstance(exc, _Lost):
                return exc.reason, str(exc)
            if exc is not None:
                raise exc
        if lost.done() and not lost.cancelled():
            exc = lost.exception()
            if exc is not None:
                raise exc
            return Reason.LEASE_LOST, "our candidate key was deleted"
        if resign.done():
            return Reason.RESIGNED, "resign requested"
        return Reason.SHUTDOWN, "stopping"

    async def _own_key_gone(self) -> None:
        """Return when our candidate key is deleted (evicted, or lease gone).

        A failing watch does not demote by itself: the keepalive loop alone
        decides when the store has been silent for too long.
        """
        while True:
            try:
                await self._election.wait_lost()
                return
            except SessionExpired:
                return  # the key went with the session
            except (StoreUnavailable, StoreForbidden) as exc:
                self._store_unreachable(StoreCall.WATCH_OWN_KEY, exc)
                await self.clock.sleep(self.cfg.retry_interval)

    async def _election_resign_quietly(self) -> None:
        try:
            await self._stoppable(self._election.resign(), self.cfg.effective_request_timeout)
        except (StoreUnavailable, StoreForbidden, TimeoutError) as exc:
            # The key goes when the lease does; the successor waits at most TTL.
            self._store_unreachable(StoreCall.RESIGN, exc)
