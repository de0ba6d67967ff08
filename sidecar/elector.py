"""The election state machine: FOLLOWER -> CANDIDATE -> LEADER -> DEMOTING.

No lease-based election can by itself guarantee that only one process acts
as leader: a process may pause after it last checked. The elector therefore
trusts nothing but the deadline of its ``Lease`` (sidecar/lease.py), computed
from the *send* time of the last acknowledged renewal (``sidecar.model.Timing``).

Two rules carry the safety argument, and this module is where they hold:

* **Every exit from LEADER goes through one path** (``_lead`` -> ``_demote``):
  a lost lease, a silent store, a deleted key, a resign, a shutdown, a dead
  watchdog, a hook that raised, a bug, a cancellation. Each becomes a
  ``Loss`` value; the ``stopped_leading`` hook stops the orchestrator and
  confirms its death before anything lets a successor start.
* **Nothing hands over while an orchestrator may live.** If the stop hook
  cannot confirm death, the elector neither resigns nor revokes: it abandons
  the lease (the store expires it after its TTL, when our grant is long
  past), stays out of the election, and rejoins by itself once the
  ``ready`` hook says the orchestrator is confirmed gone.

Losing a race and losing the store are different outcomes: the first is
normal queueing (``race_lost``, info), the second is an outage
(``store_unreachable``, warning). Both are counted separately.

The core never imports logging or metrics libraries: an ``EventSink`` and
``ElectorMetrics`` (sidecar/model.py) are handed in, and ``Hooks`` let the caller act on
transitions (publish grants, stop the orchestrator).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from sidecar.backends.base import (
    Backend,
    Election,
    KeyLost,
    LockDelay,
    Renewal,
    Session,
    SessionExpired,
    StoreForbidden,
    StoreUnavailable,
    SwitchoverRequest,
)
from sidecar.clock import Clock, reaped, wait_for
from sidecar.config import Config, ConfigError, check_timing
from sidecar.lease import Lease, LoopProbe, Orphans
from sidecar.model import (
    ElectorMetrics,
    EventSink,
    Grant,
    GuardLost,
    KillUnconfirmed,
    Leadership,
    Loss,
    Reason,
    Snapshot,
    State,
    StoreCall,
    Timing,
)


async def _nothing(*_: object) -> None:
    return None


async def _always_ready() -> str:
    return ""


@dataclass
class Hooks:
    """Async callbacks, each awaited in order; a slow hook delays the elector.

    ``started_leading`` and ``renewed`` may raise: ``GuardLost`` ends the term
    with ``watchdog-lost``, anything else with ``internal-error``; either way
    the orchestrator is stopped first. ``stopped_leading`` returns only once
    the orchestrator is stopped: True (or None: nothing to stop) when its
    death is confirmed, False (or KillUnconfirmed) when not. ``ready`` says
    why the sidecar may not campaign now ("" when it may); it is asked
    before every campaign and, while out of the election, every retry
    interval, so it is where a failed kill is retried and a dead watchdog
    respawned.
    """

    started_leading: Callable[[Grant], Awaitable[None]] = _nothing
    renewed: Callable[[Grant], Awaitable[None]] = _nothing
    stopped_leading: Callable[[Grant, Reason], Awaitable[bool | None]] = _nothing
    ready: Callable[[], Awaitable[str]] = _always_ready


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
        timing: Timing | None = None,
        loop_probe: LoopProbe | None = None,
    ) -> None:
        self._cfg = cfg
        self._loop_probe = loop_probe  # told how late each lease's sleep ends (the loop-lag probe)
        self._backend = backend
        self._clock = clock
        self._hooks = hooks or Hooks()
        self._metrics = metrics or ElectorMetrics()
        self._timing = timing or cfg.timing
        self._log = log
        self._fields = {"election": cfg.election, "candidate": cfg.candidate_id}
        self._election: Election = backend.election(cfg.election)
        self._orphans = Orphans(clock, cfg.effective_request_timeout)
        self._counters: Counter[str] = Counter()
        self._state = State.FOLLOWER
        self._grant: Grant | None = None
        self._lease: Lease | None = None
        self._leader_seen: Leadership | None = None
        self._backend_up = False  # did the last store call succeed?
        self._forbidden = ""  # why the store refused us, if it did: fatal
        self._unfit = ""  # why our timing cannot work with the TTL the store grants: fatal
        self._unrenewed = 0  # sessions in a row that ended before their first renewal
        self._unconfirmed = ""  # an orchestrator whose death is not confirmed: no handover
        self._marker_pending = False  # a confirmed stop whose resign marker the store did not take yet
        self._out = ""  # why we are out of the election now
        self._term: asyncio.Future[Loss] | None = None
        # Resolved by resign(): a future the term's wait watches itself, not an
        # event behind a task (one loop pass less on a handover's path). Not
        # the term's future: a watchdog loss or a failed hook after a resign
        # must still end the term as what it is (a review found it reported
        # as "resigned", and no lease_lost counted).
        self._resign_asked: asyncio.Future[None] | None = None
        self._key_seen = 0.0  # while leading: when the store last confirmed our key (our clock)
        self._key_error = ""  # why the last attempt to confirm it failed
        self._renewal_waiters: list[asyncio.Future[None]] = []  # see _next_renewal
        self._seq = 0
        self._stop = asyncio.Event()
        self._unreported: Callable[[], None] | None = None  # see _report_soon
        self._report_error: Exception | None = None  # what a deferred report raised (_report_failed)

    # -- public control and views ------------------------------------------

    def stop(self) -> None:
        """Leave the election: demote if leading, resign, revoke the lease."""
        self._stop.set()

    def resign(self) -> bool:
        """Hand leadership over; we rejoin the queue at its end. False if not leader."""
        if self._state is not State.LEADER:
            return False
        if self._resign_asked is not None and not self._resign_asked.done():
            self._resign_asked.set_result(None)
        return True

    def guard_lost(self, detail: str) -> None:
        """The watchdog died: end the term now rather than at the next renewal."""
        self._end_term(Loss(Reason.WATCHDOG_LOST, detail))

    @property
    def state(self) -> State:
        return self._state

    @property
    def counters(self) -> Counter[str]:
        """Event counts, for tests and benchmarks (metrics go through ElectorMetrics)."""
        return self._counters

    @property
    def forbidden(self) -> str:
        return self._forbidden

    @property
    def fatal(self) -> str:
        """Why the elector stopped for good (configuration, not an outage), or ""."""
        return self._forbidden or self._unfit

    @property
    def election(self) -> Election:
        return self._election

    @property
    def session(self) -> Session | None:
        """The session we hold now (the CLI and tests name it; the elector alone renews it)."""
        return self._lease.session if self._lease is not None else None

    def snapshot(self) -> Snapshot:
        lease = self._lease
        leading = self._state is State.LEADER and self._grant is not None
        g = self._grant
        return Snapshot(
            election=self._cfg.election,
            candidate=self._cfg.candidate_id,
            at=self._clock.now(),
            state=self._state,
            grant=self._grant if leading else None,
            leader=Leadership(g.candidate, g.token, g.epoch) if leading and g else self._leader_seen,
            demote_at=lease.demote_at if lease is not None else 0.0,
            renewed_at=lease.last.sent_at if lease is not None else 0.0,
            backend_up=self._backend_up,
            out_of_election=self._out,
        )

    # -- reporting -----------------------------------------------------------

    def _emit(self, level: str, event: str, **fields: Any) -> None:
        self._report_now()  # lines keep the order of what they report
        getattr(self._log, level)(event, **self._fields, **fields)

    def _report_soon(self, report: Callable[[], None]) -> None:
        """Report something that already happened at the step's end, or before the next line.

        For the successor's new term: the grant goes to the orchestrator in
        the same step, and the state's counters, metrics and log lines
        ahead of it were 0.1-0.15 ms of a handover's path (bench/RESULTS.md).
        """
        self._report_now()
        self._unreported = report
        asyncio.get_running_loop().call_soon(self._report_now)

    def _report_now(self) -> None:
        report, self._unreported = self._unreported, None
        if report is None:
            return
        try:
            report()
        except Exception as exc:  # raised in the elector's own task (_report_failed), not whoever ran this
            self._report_error = self._report_error or exc

    def _report_failed(self) -> None:
        """Raise what the term's report raised, in the elector's task: it ends the term as a bug of ours."""
        self._report_now()
        error, self._report_error = self._report_error, None
        if error is not None:
            raise error

    def _set_state(self, state: State, **fields: Any) -> None:
        if state is self._state:
            return
        old, self._state = self._state, state
        self._report_transition(old, state, self._grant, fields)

    def _report_transition(self, old: State, state: State, grant: Grant | None, fields: dict[str, Any]) -> None:
        self._counters[f"transition:{state.value}"] += 1
        self._metrics.transition(state)
        token = grant.token if grant else None
        epoch = grant.epoch if grant else None
        self._emit(
            "info", "state_changed", from_state=old.value, to_state=state.value, token=token, epoch=epoch, **fields
        )

    def _store_unreachable(self, where: StoreCall, exc: BaseException) -> None:
        self._counters["store_unreachable"] += 1
        self._backend_up = False
        self._metrics.store_unreachable(where)
        self._emit("warning", "store_unreachable", during=where.value, error=str(exc) or type(exc).__name__)

    # LeaseReport
    def renewal_acknowledged(self, renewal: Renewal) -> None:
        self._counters["renewals"] += 1
        self._metrics.renewed(self._clock.now() - renewal.sent_at)
        self._backend_up = True
        waiters, self._renewal_waiters = self._renewal_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def renewal_failed(self, failures: int, seconds_to_demote: float, exc: BaseException) -> None:
        self._counters["keepalive_failed"] += 1
        self._metrics.keepalive_failed()
        self._store_unreachable(StoreCall.KEEPALIVE, exc)
        self._emit("warning", "keepalive_failed", failures=failures, seconds_to_demote=seconds_to_demote)

    def forbidden_by_store(self, exc: StoreForbidden) -> None:
        self._forbidden = str(exc)
        self._set_out(f"store refused our credentials or rights: {exc}")
        self._emit("error", "store_forbidden", error=str(exc))

    def _set_out(self, why: str) -> None:
        if why != self._out:
            self._out = why
            if why:
                self._emit("warning", "out_of_election", why=why)

    # -- the loop ----------------------------------------------------------

    async def run(self) -> None:
        """Campaign until stop(). Raises only on bugs, never on store outages.

        A store that refuses our credentials or rights (StoreForbidden) ends
        the run: retrying cannot fix configuration (``forbidden`` says why).
        """
        try:
            while not self._stop.is_set() and not self.fatal:
                if not await self._may_campaign():
                    await self._pause(self._cfg.retry_interval)
                    continue
                lease = await self._open_lease()
                if lease is None:
                    await self._pause(self._cfg.retry_interval)
                    continue
                await self._with_lease(lease)
                await self._back_off(lease)
        finally:
            self._set_state(State.FOLLOWER)
            await self._election.close()

    async def _may_campaign(self) -> bool:
        """Ask the hooks whether we may campaign; track why not."""
        why = await self._hooks.ready()
        if self._unconfirmed and not why:
            self._emit("info", "orchestrator_confirmed_stopped", was=self._unconfirmed)
            self._unconfirmed = ""
            self._metrics.kill_unconfirmed(False)
        elif self._unconfirmed and not why.startswith(self._unconfirmed):
            why = f"{self._unconfirmed}; {why}"
        self._set_out(why)
        return not why

    async def _back_off(self, lease: Lease) -> None:
        """Pause before the next session when sessions keep ending unrenewed.

        A store that ends each session at once (a TTL too short for our
        timing, a session expired on arrival) would otherwise get a new
        session per loop turn, as fast as it answers. The first such session
        costs nothing (a lease revoked early is normal); from the second in a
        row the pause starts at the retry interval and doubles up to the TTL.
        A session that renewed even once resets it.
        """
        if lease.renewed or not self._backend_up:
            # Renewed once, or ended because the store stopped answering (an
            # outage, not a store that refuses our sessions): no pause, or the
            # first session after the outage heals would come late and our
            # orphaned key would head the queue for up to a TTL.
            self._unrenewed = 0
            return
        self._unrenewed += 1
        if self._stop.is_set() or self.fatal or self._unrenewed < 2:
            return
        cap = max(self._cfg.ttl, self._cfg.retry_interval)
        seconds = min(cap, self._cfg.retry_interval * 2 ** min(self._unrenewed - 2, 16))
        self._emit("info", "session_backoff", seconds=seconds, sessions_unrenewed=self._unrenewed)
        await self._pause(seconds)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await wait_for(self._clock, self._stop.wait(), seconds)

    async def _open_lease(self) -> Lease | None:
        session = self._backend.session(self._cfg.ttl)
        try:
            renewal = await wait_for(self._clock, session.open(), self._cfg.effective_request_timeout)
        except StoreForbidden as exc:
            self.forbidden_by_store(exc)
            return None
        except (StoreUnavailable, TimeoutError) as exc:
            self._store_unreachable(StoreCall.SESSION_OPEN, exc)
            return None
        lease = Lease(
            session,
            renewal,
            timing=self._timing,
            retry_interval=self._cfg.retry_interval,
            request_timeout=self._cfg.effective_request_timeout,
            clock=self._clock,
            report=self,
            probe=self._loop_probe,
        )
        self._metrics.renewed(self._clock.now() - renewal.sent_at)
        self._backend_up = True
        self._emit("info", "session_opened", session=session.id, ttl=renewal.ttl)
        if self._marker_pending:
            # Once, before the orphan goes: later campaigns have keys of their own.
            self._marker_pending = False
            await self._resign_key()
        revoked, gone = await self._orphans.revoke()
        for orphan in revoked:
            self._emit("info", "orphan_session_revoked", session=orphan)
        for orphan in gone:
            self._emit("info", "orphan_session_expired", session=orphan)
        if renewal.ttl < self._cfg.ttl:
            # Deadlines use the store's figure, so this is safe; but timing
            # planned for the TTL we asked may not fit the one we got (a
            # kill_grace longer than the whole grant leaves nothing to renew
            # in): check it against the granted TTL, as start-up did.
            self._emit("warning", "store_shortened_ttl", requested=self._cfg.ttl, granted=renewal.ttl)
            try:
                check_timing(replace(self._cfg, ttl=renewal.ttl))
            except ConfigError as exc:
                self._unfit = (
                    f"the store granted ttl {renewal.ttl:g}s, not the {self._cfg.ttl:g}s asked, and our timing "
                    f"does not fit it: {exc.field}: {exc.rule}; ask for ttl <= {renewal.ttl:g} or raise the "
                    "store's limit (ZooKeeper: maxSessionTimeout)"
                )
                self._set_out(self._unfit)
                self._emit("error", "store_ttl_unfit", requested=self._cfg.ttl, granted=renewal.ttl, error=self._unfit)
                await self._end_lease(lease)
                return None
        return lease

    async def _with_lease(self, lease: Lease) -> None:
        """Campaign and lead on one lease until it ends, we stop or must step out."""
        self._lease = lease
        lease.start(self._renewed)
        try:
            while not self._stop.is_set() and not self.fatal and not lease.lost.done():
                if not await self._may_campaign():
                    return  # leave the queue (the lease is revoked below); the outer loop waits
                self._set_state(State.CANDIDATE)
                lead = await self._campaign(lease)
                if lead is None:
                    continue
                end, confirmed = await self._lead(lead, lease)
                if not confirmed:
                    return  # no resign, no revoke: the lease is abandoned below
                if end.reason is Reason.BACKEND_UNREACHABLE:
                    # The store is not answering, but it may again at any moment (a
                    # member restarts, quorum returns) and our lease, refreshed by a
                    # new raft leader or revoked as an orphan, can then go before it
                    # would have expired: the successor would wait out a lock-delay.
                    # Our orchestrator is confirmed stopped, so leave the marker now,
                    # or as soon as the store answers, before the orphan is revoked.
                    self._marker_pending = not await self._resign_key()
                    return
                # Our orchestrator is confirmed stopped, so the successor may
                # start now: delete our key and leave the resign marker. After a
                # lost lease the key is gone already, but the marker still spares
                # the successor its lock-delay; if the store did not take it,
                # it is written once more before our orphan lease is revoked.
                # A resign, switchover or shutdown still holds the key: the store
                # may start the successor's term in the same write.
                self._marker_pending = not await self._resign_key(hand_over=not end.reason.unasked)
                if end.reason is Reason.LEASE_LOST:
                    return
        finally:
            self._lease = None
            await self._end_lease(lease)
            self._set_state(State.FOLLOWER)

    async def _end_lease(self, lease: Lease) -> None:
        if self._unconfirmed:
            await lease.abandon()
            self._emit("warning", "session_abandoned", session=lease.id, why=self._unconfirmed)
            return
        if lease.lost.done() and not self._stop.is_set():
            loss = lease.lost.result()
            self._counters[f"session_lost:{loss.reason.value}"] += 1
            if self._state is not State.DEMOTING:
                self._metrics.lease_lost(loss.reason, "candidate")
                self._emit("warning", "candidate_session_lost", reason=loss.reason.value, detail=loss.detail)
        session_id = lease.id
        outcome = await lease.revoke()
        if outcome == "gone":
            self._emit("info", "session_already_gone", session=session_id)
        elif outcome:
            self._emit("info", "session_closed", session=session_id)
        else:
            # The lease expires on its own; nothing of ours still acts on it.
            # Revoked once the store answers again: its key may head the queue.
            self._orphans.add(lease.session)
            self._emit("warning", "session_close_failed", session=session_id)

    async def _campaign(self, lease: Lease) -> Leadership | None:
        """One campaign attempt. None: try again (or the lease is gone)."""
        self._emit("info", "campaigning", session=lease.id)
        campaign = asyncio.create_task(
            self._election.campaign(
                lease.session,
                self._cfg.candidate_id,
                self._race_lost,
                report=self,
                priority=self._cfg.priority,
                no_lead=self._cfg.no_lead,
            ),
            name="campaign",
        )
        stop = asyncio.create_task(self._stop.wait(), name="stop")
        try:
            waits: set[asyncio.Future[Any]] = {campaign, lease.lost, stop}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not campaign.done():
                campaign.cancel()
                await reaped(campaign)
        if campaign.cancelled():
            return None
        try:
            return campaign.result()
        except KeyLost as exc:
            self._counters["candidate_key_lost"] += 1
            self._emit("info", "candidate_key_lost", detail=str(exc))
        except SessionExpired as exc:
            if not lease.lost.done():
                lease.lost.set_result(Loss(Reason.LEASE_LOST, str(exc)))
        except StoreForbidden as exc:
            self.forbidden_by_store(exc)
        except StoreUnavailable as exc:
            self._store_unreachable(StoreCall.CAMPAIGN, exc)
            await self._pause(self._cfg.retry_interval)
        return None

    # CampaignReport
    def lock_delay(self, delay: LockDelay) -> None:
        """The last leader's key went before its grant could have ended: we wait it out."""
        self._counters["lock_delay"] += 1
        self._metrics.lock_delay(delay.seconds)
        self._emit(
            "warning",
            "lock_delay",
            predecessor=delay.predecessor,
            predecessor_token=delay.token,
            seconds=delay.seconds,
            why=delay.why,
        )

    def epoch_record_repaired(self, key: str, found: str) -> None:
        self._counters["epoch_record_repaired"] += 1
        self._emit("warning", "epoch_record_repaired", key=key, found=found)

    def duplicate_candidate_id(self, candidate_id: str, keys: list[str]) -> None:
        self._counters["duplicate_candidate_id"] += 1
        self._emit("warning", "duplicate_candidate_id", keys=keys, hint="give every sidecar its own --candidate-id")

    def switchover(self, verdict: str, request: SwitchoverRequest) -> None:
        """A campaign acted on a switchover request: stepped aside for its target, or settled it."""
        self._counters[f"switchover:{verdict}"] += 1
        self._metrics.switchover(verdict)
        level = "warning" if verdict in ("expired", "target-gone") else "info"
        self._emit(level, "switchover", outcome=verdict, to=request.to, request_id=request.id, by=request.requested_by)

    def priority_step_aside(self, outranked_by: str, priority: int) -> None:
        """At the head of the queue, a live candidate of higher priority takes the vacancy instead of us."""
        self._counters["priority_step_aside"] += 1
        self._metrics.priority_step_aside()
        self._emit(
            "info",
            "priority_step_aside",
            outranked_by=outranked_by,
            their_priority=priority,
            priority=self._cfg.priority,
        )

    def _race_lost(self, leader: Leadership) -> None:
        """Queued behind a live leader: normal, not an outage."""
        self._counters["race_lost"] += 1
        self._metrics.race_lost()
        self._backend_up = True
        self._leader_seen = leader
        self._emit("info", "race_lost", leader=leader.id, leader_token=leader.token)

    # -- leading -----------------------------------------------------------

    def _next_grant(self, lead: Leadership, expires: float) -> Grant:
        self._seq += 1
        return Grant(self._cfg.election, self._cfg.candidate_id, lead.token, lead.epoch, expires, self._seq)

    def _end_term(self, loss: Loss) -> None:
        if self._term is not None and not self._term.done():
            self._term.set_result(loss)

    def _hook_failed(self, where: str, exc: Exception) -> None:
        if isinstance(exc, GuardLost):
            self._end_term(Loss(Reason.WATCHDOG_LOST, str(exc) or "the watchdog is not running"))
        else:
            self._emit("error", "hook_failed", hook=where, error=repr(exc))
            self._end_term(Loss(Reason.INTERNAL_ERROR, f"{where}: {exc!r}"))

    async def _renewed(self) -> None:
        """After each acknowledged renewal: a fresh grant is also a heartbeat."""
        lease, grant = self._lease, self._grant
        if self._state is not State.LEADER or grant is None or lease is None:
            return
        if self._term is not None and self._term.done():
            return  # the term is ending: never extend it
        lead = Leadership(grant.candidate, grant.token, grant.epoch)
        self._grant = self._next_grant(lead, lease.expires)
        self._metrics.leading(self._grant)
        try:
            await self._hooks.renewed(self._grant)
        except Exception as exc:
            self._hook_failed("renewed", exc)

    async def _lead(self, lead: Leadership, lease: Lease) -> tuple[Loss, bool]:
        """Act as leader until something ends it; return why, and whether the
        orchestrator's death was confirmed."""
        if self._clock.now() >= lease.demote_at:
            # We won, but too late to trust it: our lease may already be gone.
            self._emit("warning", "won_too_late", token=lead.token, epoch=lead.epoch)
            await self._resign_key()
            return Loss(Reason.BACKEND_UNREACHABLE, "won after our demote time"), True
        # The campaign's last call (the claim, or the watch event of a handover)
        # confirmed our key a moment ago; counted from no later than the last
        # renewal's send, so a stall between that call and now is not counted
        # as a confirmation (a stall stops the renewals too).
        self._key_seen, self._key_error = min(self._clock.now(), lease.last.sent_at), ""
        self._term = asyncio.get_running_loop().create_future()
        self._resign_asked = asyncio.get_running_loop().create_future()
        grant = self._grant = self._next_grant(lead, lease.expires)
        self._counters["elected"] += 1
        was, self._state = self._state, State.LEADER
        now = self._clock.now()
        valid_for = round(lease.expires - now, 3)
        # "elected" keeps the instant it describes: the time stamp of its line
        # is the store-level end of a handover (bench.py).
        mono = round(now, 6)

        def elected() -> None:
            self._metrics.leading(grant)
            if was is not State.LEADER:
                self._report_transition(was, State.LEADER, grant, {"mono": mono})
            self._emit("info", "elected", token=lead.token, epoch=lead.epoch, valid_for=valid_for, mono=mono)

        self._report_soon(elected)
        cancelled = False
        try:
            try:
                await self._hooks.started_leading(grant)
            except Exception as exc:
                self._hook_failed("started_leading", exc)
            self._report_failed()
            end = await self._until_term_ends(lease)
        except asyncio.CancelledError:
            cancelled = True
            end = Loss(Reason.SHUTDOWN, "cancelled")
        except Exception as exc:  # a bug of ours: still stop the orchestrator first
            self._emit("error", "leader_loop_failed", error=repr(exc))
            end = Loss(Reason.INTERNAL_ERROR, repr(exc))
        confirmed = await _uncancellable(self._demote(self._grant or grant, end))
        if cancelled:
            raise asyncio.CancelledError
        return end, confirmed

    async def _until_term_ends(self, lease: Lease) -> Loss:
        assert self._term is not None and self._resign_asked is not None
        resign = self._resign_asked
        key = asyncio.create_task(self._own_key_gone(), name="own-key-gone")
        stop = asyncio.create_task(self._stop.wait(), name="stop")
        switch = asyncio.create_task(self._switchover_requested(), name="switchover")
        unconfirmed = asyncio.create_task(self._key_unconfirmed(lease), name="key-unconfirmed")
        try:
            waits: set[asyncio.Future[Any]] = {lease.lost, self._term, key, resign, stop, switch, unconfirmed}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (key, stop, switch, unconfirmed):
                t.cancel()
        if lease.lost.done():
            return lease.lost.result()
        if self._term.done():
            return self._term.result()
        if key.done() and not key.cancelled():
            key.result()  # a bug in the watch surfaces here, and ends the term through _demote
            return Loss(Reason.LEASE_LOST, "our candidate key was deleted")
        if unconfirmed.done() and not unconfirmed.cancelled():
            unconfirmed.result()
            why = f" ({self._key_error})" if self._key_error else ""
            detail = f"the store has not confirmed our candidate key for {self._key_budget(lease):.3g}s{why}"
            return Loss(Reason.BACKEND_UNREACHABLE, detail)
        if resign.done():
            return Loss(Reason.RESIGNED, "resign requested")
        if switch.done() and not switch.cancelled():
            req = switch.result()  # a bug in the watch surfaces here, and ends the term through _demote
            to = req.to or "the next candidate"
            return Loss(Reason.SWITCHOVER, f"switchover to {to} requested by {req.requested_by} (id {req.id})")
        return Loss(Reason.SHUTDOWN, "stopping")

    async def _demote(self, grant: Grant, end: Loss) -> bool:
        """The one exit from LEADER: stop the orchestrator, confirm it, report."""
        try:
            self._report_failed()  # the term's own report first: its leader metrics must not land after ours
        except Exception as exc:  # cancelled before _lead raised it: the term ends anyway, so say why
            self._emit("error", "leader_loop_failed", error=repr(exc))
        self._end_term(end)
        self._counters[f"leadership_lost:{end.reason.value}"] += 1
        if end.reason.unasked:
            self._metrics.lease_lost(end.reason, "leader")
        if end.reason is Reason.SWITCHOVER:
            self._counters["switchover:handed-over"] += 1
            self._metrics.switchover("handed-over")
        self._metrics.leading(None)
        self._set_state(State.DEMOTING, reason=end.reason.value, detail=end.detail)
        detail = ""
        try:
            confirmed = await self._hooks.stopped_leading(grant, end.reason) is not False
            if not confirmed:
                detail = "the stop hook could not confirm the orchestrator stopped"
        except KillUnconfirmed as exc:
            confirmed, detail = False, str(exc)
        except Exception as exc:  # we cannot know it stopped: treat as unconfirmed
            confirmed, detail = False, f"stop hook failed: {exc!r}"
        finally:
            self._grant = None
            self._term = None
            self._resign_asked = None
        if not confirmed:
            self._unconfirmed = f"orchestrator not confirmed stopped: {detail}"
            self._counters["kill_unconfirmed"] += 1
            self._metrics.kill_unconfirmed(True)
            self._emit("error", "kill_unconfirmed", detail=detail, token=grant.token, epoch=grant.epoch)
            self._set_out(self._unconfirmed)
        self._emit(
            "info", "demoted", reason=end.reason.value, token=grant.token, epoch=grant.epoch, confirmed=confirmed
        )
        return confirmed

    async def _own_key_gone(self) -> None:
        """Return when our candidate key is deleted (evicted, or lease gone).

        A failing watch does not demote by itself; what it no longer
        confirms does (``_key_unconfirmed``).
        """
        while True:
            try:
                await self._election.wait_lost(self._key_confirmed)
                return
            except SessionExpired:
                return  # the key went with the session
            except (StoreUnavailable, StoreForbidden) as exc:
                self._key_error = str(exc) or type(exc).__name__
                self._store_unreachable(StoreCall.WATCH_OWN_KEY, exc)
                # Try again at the lease's own retry pace, or at once when the
                # store answers a renewal: the read riding a renewal is lost
                # with the connection a member failover cuts, and a wait of a
                # whole interval behind it ended terms the lease kept (review).
                await self._next_renewal(self._cfg.retry_interval / 4)

    async def _next_renewal(self, longest: float) -> None:
        """Return at the next acknowledged renewal, or after ``longest`` seconds."""
        renewed = asyncio.get_running_loop().create_future()
        self._renewal_waiters.append(renewed)
        try:
            with contextlib.suppress(TimeoutError):
                await wait_for(self._clock, renewed, longest)
        finally:
            with contextlib.suppress(ValueError):
                self._renewal_waiters.remove(renewed)

    def _key_confirmed(self, age: float) -> None:
        """The store showed our key present, in a call sent ``age`` seconds ago."""
        self._key_seen = max(self._key_seen, self._clock.now() - age)
        self._key_error = ""

    def _key_budget(self, lease: Lease) -> float:
        """How long after a confirmation's send we may lead without another."""
        return self._timing.grant_validity(lease.last.ttl) - self._timing.kill_grace

    async def _key_unconfirmed(self, lease: Lease) -> None:
        """Return once the store has not confirmed our key for ``_key_budget``.

        Renewals alone do not keep a term: a store that renews our lease but
        fails every read of our key (a role that lost its read right: etcd
        does not check rights on keepalives) would let us lead on after an
        operator deleted the key, and the successor leads once its
        lock-delay's cap passes, which assumes we saw the delete. The cap is
        TTL + retry_interval after the successor saw the delete, and we were
        last shown the key before it: stopped by that confirmation's send +
        TTL*(1-drift) - margin (this budget, then kill_grace), we are gone
        first, as a grant from a renewal sent then would be. The budget is
        the grant's, not renew_deadline: a confirmation rides a renewal and
        so comes a read later, and renew_deadline ended terms in member
        failovers the lease survived (review).
        """
        while True:
            left = self._key_seen + self._key_budget(lease) - self._clock.now()
            if left <= 0:
                return
            await self._clock.sleep(left)

    async def _switchover_requested(self) -> SwitchoverRequest:
        """Return a pending switchover request that someone queued can fulfil.

        Like the own-key watch, a failing watch never demotes by itself.
        """
        while True:
            try:
                return await self._election.wait_switchover(self._cfg.candidate_id)
            except (StoreUnavailable, StoreForbidden, SessionExpired) as exc:
                self._store_unreachable(StoreCall.WATCH_SWITCHOVER, exc)
                await self._clock.sleep(self._cfg.retry_interval)

    async def _resign_key(self, *, hand_over: bool = False) -> bool:
        """Delete our key and leave the resign marker; False if the store did not answer."""
        try:
            to = await wait_for(
                self._clock, self._election.resign(hand_over=hand_over), self._cfg.effective_request_timeout
            )
        except (StoreUnavailable, StoreForbidden, SessionExpired, TimeoutError) as exc:
            # The key goes when the lease does; the successor waits at most TTL.
            # (SessionExpired: a ZooKeeper session that is gone cannot write the
            # marker; the successor's lock-delay then ends with the session.)
            self._store_unreachable(StoreCall.RESIGN, exc)
            return False
        if to:
            # The successor's term started in our own write: it leads on its watch event alone.
            self._counters["handed_over"] += 1
            self._emit("info", "handed_over", to=to)
        return True


async def _uncancellable(aw: Awaitable[bool]) -> bool:
    """Run ``aw`` to the end even if we are cancelled meanwhile.

    The stop path must finish: a cancellation halfway through would let the
    caller revoke the lease while the orchestrator may still run. The
    cancellation is delivered again once it is done.
    """
    task = asyncio.ensure_future(aw)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                result = task.result()
                break
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result
