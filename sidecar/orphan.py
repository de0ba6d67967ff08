"""Resign a leadership nobody uses: peer mode without an orchestrator.

In gate and standby mode the sidecar owns the orchestrator and resigns when
its child exits. In peer mode the orchestrator is whoever connects to the
grant socket and acknowledges a grant; when none has been connected for
``after`` seconds, this sidecar leads for nothing while a healthy peer
(with an orchestrator) waits, so it hands leadership over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sidecar.clock import Clock


class OrphanGuard:
    def __init__(
        self,
        clock: Clock,
        after: float,
        *,
        leading: Callable[[], bool],
        clients: Callable[[], int],
        resign: Callable[[], bool],
        warn: Callable[..., Any] | None = None,
    ) -> None:
        self.clock = clock
        self.after = after
        self.leading = leading
        self.clients = clients
        self.resign = resign
        self.warn = warn
        self.resigns = 0

    @property
    def enabled(self) -> bool:
        return self.after > 0

    async def run(self) -> None:
        if not self.enabled:
            return
        step = min(1.0, self.after / 4)  # checks are cheap; this bounds how late a resign can be
        # The last moment at which an orchestrator was there, or we did not lead:
        # the wait starts afresh with each leadership and each orchestrator.
        last_needed = self.clock.now()
        while True:
            await self.clock.sleep(step)
            now = self.clock.now()
            if not self.leading() or self.clients() > 0:
                last_needed = now
            elif now - last_needed >= self.after and self.resign():
                self.resigns += 1
                if self.warn is not None:
                    self.warn("resigning_without_orchestrator", alone_for=round(now - last_needed, 3))
                last_needed = now
