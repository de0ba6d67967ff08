"""Event-loop lag: how late a short timer fires. Exported, and read by /healthz.

Anything that blocks the loop (a sync call, a long computation) delays
renewals and grant heartbeats; this makes it visible before it matters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

INTERVAL = 0.1


class LoopMonitor:
    def __init__(self, sample: Callable[[float], None] | None = None) -> None:
        self.lag = 0.0
        self.last_tick = time.monotonic()
        self._sample = sample
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-monitor")

    async def _run(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(INTERVAL)
            now = time.monotonic()
            self.lag = max(0.0, now - t0 - INTERVAL)
            self.last_tick = now
            if self._sample is not None:
                self._sample(self.lag)

    def stalled_for(self) -> float:
        """Seconds since the monitor last ran beyond its interval (0 if on time)."""
        return max(0.0, time.monotonic() - self.last_tick - INTERVAL)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
