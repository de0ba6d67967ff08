"""One store session while we hold it: renewal, deadline, and loss as a value.

A ``Lease`` renews its session every ``retry_interval`` and keeps the
deadlines of the last acknowledged renewal (``sidecar.model.Timing``: from
the request's *send* time, with the TTL the store returned). It never raises
to its owner: when it can no longer vouch for the session, ``lost`` resolves
to a ``Loss``:

* ``lease-lost``: the store says the lease is gone;
* ``backend-unreachable``: no renewal was acknowledged before ``demote_at``
  (the store may never answer again; we stop trusting it on our own clock).

How it ends is the owner's choice, and the difference is the whole safety
argument: ``revoke()`` tells the store (our keys go at once, so only after
our orchestrator is confirmed stopped), ``abandon()`` only stops renewing, so
the store expires the lease after its TTL — the one way out while an
orchestrator may still live.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from sidecar.backends.base import Renewal, Session, SessionExpired, StoreForbidden, StoreUnavailable
from sidecar.clock import Clock, wait_for
from sidecar.model import Loss, Reason, Timing


class LeaseReport(Protocol):
    """Where a lease reports what happened (the elector: logs, counters, metrics)."""

    def renewal_acknowledged(self, renewal: Renewal) -> None: ...

    def renewal_failed(self, failures: int, seconds_to_demote: float, exc: BaseException) -> None: ...

    def forbidden_by_store(self, exc: StoreForbidden) -> None: ...


class LoopProbe(Protocol):
    """Told how late our sleeps end (sidecar.loopmon.LoopMonitor): the loop-lag probe.

    Times are on the lease's clock. A lease sleeps between renewals anyway, so
    measuring that sleep costs no wake-up of its own.
    """

    def attach(self) -> None: ...

    def detach(self) -> None: ...

    def sleeping(self, due: float) -> None: ...

    def woke(self, due: float) -> None: ...

    def cancelled(self) -> None: ...


class Lease:
    def __init__(
        self,
        session: Session,
        first: Renewal,
        *,
        timing: Timing,
        retry_interval: float,
        request_timeout: float,
        clock: Clock,
        report: LeaseReport,
        probe: LoopProbe | None = None,
    ) -> None:
        self.session = session
        self._probe = probe
        self._timing = timing
        self._retry = retry_interval
        self._request_timeout = request_timeout
        self._clock = clock
        self._report = report
        self.lost: asyncio.Future[Loss] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None
        self.last: Renewal = first
        self.expires = 0.0
        self.demote_at = 0.0
        self.renewed = False  # has the store acknowledged a renewal after the first?
        self._accept(first)

    @property
    def id(self) -> str:
        return self.session.id

    def _accept(self, renewal: Renewal) -> None:
        self.last = renewal
        self.expires = self._timing.expires(renewal.anchor, renewal.ttl)
        self.demote_at = self._timing.demote_at(renewal.sent_at, renewal.ttl, renewal.anchor)

    def start(self, on_renewed: Callable[[], Awaitable[None]]) -> None:
        """Renew in the background; ``on_renewed`` runs after each acknowledged renewal."""
        self._task = asyncio.create_task(self._keep(on_renewed), name=f"lease-{self.id}")

    def _lose(self, reason: Reason, detail: str) -> None:
        if not self.lost.done():
            self.lost.set_result(Loss(reason, detail))

    async def _keep(self, on_renewed: Callable[[], Awaitable[None]]) -> None:
        # Attached here, not in start(): a task cancelled before its first
        # step never runs its body, so the finally below would never detach.
        if self._probe is not None:
            self._probe.attach()
        try:
            await self._renew(on_renewed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A bug (or a surprise from a client library) must end the lease
            # loudly, never leave it unrenewed with ``lost`` unresolved: the
            # owner would go on trusting a deadline nobody extends or checks.
            # The loss carries the error to the owner, who logs and demotes on it.
            self._lose(Reason.INTERNAL_ERROR, f"renewal failed: {exc!r}")
        finally:
            if self._probe is not None:
                self._probe.detach()  # no more sleeps of ours: the monitor probes by itself again

    async def _sleep(self, seconds: float) -> None:
        """Sleep, telling the loop probe when we were due and when we woke."""
        probe = self._probe
        if probe is None:
            await self._clock.sleep(seconds)
            return
        due = self._clock.now() + max(0.0, seconds)
        probe.sleeping(due)
        try:
            await self._clock.sleep(seconds)
        except BaseException:
            probe.cancelled()
            raise
        probe.woke(due)

    async def _renew(self, on_renewed: Callable[[], Awaitable[None]]) -> None:
        failures = 0
        while not self.lost.done():
            # Never sleep past half the time left: a store that grants less
            # than we planned for (a short TTL) must still be renewed in time.
            wait = min(self._retry, (self.demote_at - self._clock.now()) / 2)
            if failures == 0 and wait > 0:
                await self._sleep(wait)
            now = self._clock.now()
            if now >= self.demote_at:
                self._lose(Reason.BACKEND_UNREACHABLE, f"no renewal acknowledged for {now - self.last.sent_at:.3f}s")
                return
            try:
                renewal = await wait_for(
                    self._clock, self.session.keepalive(), min(self._request_timeout, self.demote_at - now)
                )
            except SessionExpired as exc:
                self._lose(Reason.LEASE_LOST, str(exc))
                return
            except StoreForbidden as exc:
                self._report.forbidden_by_store(exc)
                self._lose(Reason.BACKEND_UNREACHABLE, str(exc))
                return
            except (StoreUnavailable, TimeoutError) as exc:
                failures += 1
                self._report.renewal_failed(failures, round(self.demote_at - self._clock.now(), 3), exc)
                # Retry soon, but never spin: a refused connection fails fast.
                await self._sleep(min(self._retry / 4, max(0.0, self.demote_at - self._clock.now())))
                continue
            failures = 0
            self.renewed = True
            self._accept(renewal)
            self._report.renewal_acknowledged(renewal)
            await on_renewed()

    async def _stop_renewing(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # wait(), not await: the task's own cancellation is expected, ours
            # (the caller being cancelled meanwhile) must still reach the caller.
            await asyncio.wait({task})

    async def revoke(self) -> str:
        """Stop renewing and revoke at the store (our keys go with it).

        "closed" when the store confirmed; "gone" when it had ended the lease
        already (told apart so a log line never claims a revoke that did not
        happen); "" when it could not be reached: the caller keeps it as an orphan.
        """
        await self._stop_renewing()
        try:
            await wait_for(self._clock, self.session.close(), self._request_timeout)
        except SessionExpired:
            return "gone"
        except (StoreUnavailable, StoreForbidden, TimeoutError):
            return ""
        return "closed"

    async def abandon(self) -> None:
        """Stop renewing without telling the store: the lease lapses after its TTL."""
        await self._stop_renewing()
        await self.session.abandon()


class Orphans:
    """Leases we could not revoke (store down) but that nothing of ours uses any more.

    They would expire by themselves; revoking them once the store answers
    lets their keys stop heading the queue before that.
    """

    def __init__(self, clock: Clock, request_timeout: float) -> None:
        self._clock = clock
        self._timeout = request_timeout
        self._sessions: list[Session] = []

    def add(self, session: Session) -> None:
        self._sessions.append(session)

    async def revoke(self) -> tuple[list[str], list[str]]:
        """Try each orphan once more: (ids the store revoked now, ids it says were already gone).

        The two are told apart so a log line never claims a revoke that did
        not happen (a ZooKeeper session that expired meanwhile).
        """
        revoked: list[str] = []
        gone: list[str] = []
        for session in list(self._sessions):
            session_id = session.id
            try:
                await wait_for(self._clock, session.close(), self._timeout)
            except (StoreUnavailable, StoreForbidden, TimeoutError):
                continue  # still unreachable: next time
            except SessionExpired:
                gone.append(session_id)
            else:
                revoked.append(session_id)
            self._sessions.remove(session)
        return revoked, gone
