"""Revoke first while the grant still runs; kill first once it is over.

A revoke before the signals lets a cooperative orchestrator stop at once. But
a sidecar that demotes after its grant ended (it was frozen or stuck past the
deadline) may already have a successor: a revoke then only cues a client that
misbehaves on revoke (hangs up and goes on acting) to act beside it, so the
orchestrator is stopped before anyone is told.
"""

from __future__ import annotations

from typing import Any

from sidecar.app import Sidecar
from sidecar.clock import FakeClock
from sidecar.config import Config
from sidecar.model import Grant, Reason
from tests.helpers import RecordingSink


class Recorder:
    def __init__(self, order: list[str]) -> None:
        self.order = order

    async def publish_revoke(self, reason: str) -> None:
        self.order.append("revoke")

    async def stopped_leading(self, grant: Grant, reason: Reason) -> bool:
        self.order.append("stop")
        return True


async def order_for(expires_in: float) -> list[str]:
    clock = FakeClock(100.0)
    sidecar = Sidecar(Config(http_addr=""), RecordingSink(), clock)
    order: list[str] = []
    fake: Any = Recorder(order)
    sidecar.server = fake
    sidecar.supervisor = fake
    grant = Grant("e", "c", 7, 1, clock.now() + expires_in, 1)
    assert await sidecar._on_stopped(grant, Reason.LEASE_LOST) is True
    return order


async def test_a_live_grant_is_revoked_before_the_orchestrator_is_signalled() -> None:
    assert await order_for(2.0) == ["revoke", "stop"]


async def test_a_grant_already_over_is_killed_before_anyone_is_told() -> None:
    assert await order_for(-0.5) == ["stop", "revoke"]
