"""Revoke first while the grant still runs; kill first once it is over.

A revoke before the signals lets a cooperative orchestrator stop at once. But
a sidecar that demotes after its grant ended (it was frozen or stuck past the
deadline) may already have a successor: a revoke then only cues a client that
misbehaves on revoke (hangs up and goes on acting) to act beside it, so the
orchestrator is stopped before anyone is told.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sidecar.app import Sidecar
from sidecar.clock import FakeClock
from sidecar.config import Config
from sidecar.fencing.server import GrantServer
from sidecar.model import Grant, Reason
from tests.helpers import RecordingSink, fill, stuck_client


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


async def test_a_client_that_stopped_reading_does_not_hold_up_the_orchestrators_stop(tmp_path: Path) -> None:
    """Nothing on the kill path may wait on I/O it does not control. A socket client
    that stopped reading (frozen, wedged) held the revoke, and the stop behind it,
    until it was dropped WRITE_TIMEOUT later; the stop must come first."""
    clock = FakeClock(100.0)
    sink = RecordingSink()
    sidecar = Sidecar(Config(http_addr=""), sink, clock)

    async def status() -> dict[str, Any]:
        return {}

    server = GrantServer(
        str(tmp_path / "g.sock"),
        election="e",
        candidate="c",
        version="t",
        log=sink,
        on_resign=lambda: False,
        status=status,
        clock=clock,
    )
    await server.start()
    try:
        async with stuck_client(server):
            grant = Grant("e", "c", 7, 1, clock.now() + 2.0, 1)
            await server.publish_grant(grant)
            fill(server)
            dropped_at_stop: list[bool] = []

            class Supervisor:
                async def stopped_leading(self, grant: Grant, reason: Reason) -> bool:
                    dropped_at_stop.append("client_dropped" in sink.names())
                    return True

            fake: Any = Supervisor()
            sidecar.server, sidecar.supervisor = server, fake
            assert await sidecar._on_stopped(grant, Reason.LEASE_LOST) is True
            assert dropped_at_stop == [False], "the stop waited until the stuck client was dropped"
    finally:
        await server.close()
