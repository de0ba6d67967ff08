"""Event-loop lag: how late a timer fires. Exported, and read by /healthz.

Anything that blocks the loop (a sync call, a long computation) delays
renewals and grant heartbeats; this makes it visible before it matters.

The probe is a timer the sidecar has anyway: the lease's sleep between
renewals (sidecar/lease.py) reports when it was due and when it woke. A probe
of our own waking 10 times a second was most of an idle sidecar's CPU. Only
while no lease is attached (out of the election, no session open) does the
monitor run a slow timer of its own, so the lag never goes unmeasured.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sidecar.clock import Clock, MonotonicClock

FALLBACK_INTERVAL = 1.0  # seconds between our own probes while no lease sleeps for us


class LoopMonitor:
    def __init__(
        self,
        sample: Callable[[float], None] | None = None,
        clock: Clock | None = None,
        *,
        interval: float = FALLBACK_INTERVAL,
    ) -> None:
        # Due times and wake-ups are read on one clock: give the lease's.
        self._clock = clock or MonotonicClock()
        self.lag = 0.0
        self.last_tick = self._clock.now()
        self._sample = sample
        self._interval = interval
        self._due: float | None = None  # when the pending probe timer should fire
        self._attached = 0  # leases probing for us now
        self._unattached = asyncio.Event()
        self._unattached.set()
        self._task: asyncio.Task[None] | None = None

    # -- the probe a lease drives (sidecar.lease.LoopProbe) ------------------

    def attach(self) -> None:
        """A lease will report its sleeps: our own timer stands down."""
        self._attached += 1
        self._unattached.clear()

    def detach(self) -> None:
        self._attached = max(0, self._attached - 1)
        if not self._attached:
            self._due = None
            self._unattached.set()

    def sleeping(self, due: float) -> None:
        """A timer due at ``due`` (on our clock) is pending."""
        self._due = due

    def woke(self, due: float) -> None:
        """The timer due at ``due`` fired now: its lateness is the loop's lag."""
        now = self._clock.now()
        self._due = None
        self.lag = max(0.0, now - due)
        self.last_tick = now
        if self._sample is not None:
            self._sample(self.lag)

    def cancelled(self) -> None:
        """The pending timer was cancelled: it tells nothing about the loop."""
        self._due = None

    # -- our own timer, only while no lease probes ------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-monitor")

    async def _run(self) -> None:
        while True:
            await self._unattached.wait()
            due = self._clock.now() + self._interval
            self.sleeping(due)
            await self._clock.sleep(self._interval)
            if self._attached:
                continue  # a lease took over meanwhile; its sleeps are the probe now
            self.woke(due)

    def stalled_for(self) -> float:
        """Seconds the pending probe timer is overdue (0 if none is, or it is on time).

        A stalled loop cannot run the timer, so /healthz (served once the loop
        moves again, possibly before the timer's callback) sees the stall here
        before ``lag`` is updated.
        """
        due = self._due
        return 0.0 if due is None else max(0.0, self._clock.now() - due)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
