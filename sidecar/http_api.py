"""HTTP endpoints: /metrics, /healthz, /readyz, /leader, /leader/ready (aiohttp, on the sidecar's loop).

/healthz fails when the loop stalls or when the elector still believes it
leads although its renewals stopped (the mistake of kubernetes#71730: a
health check that stays green while leadership is dead). /readyz follows
store connectivity and whether we take part in the election. /leader is this sidecar's own view, with token and
deadline, never a bare name.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from sidecar.config import Config
from sidecar.elector import Elector
from sidecar.loopmon import LoopMonitor
from sidecar.model import Snapshot, State

MAX_LOOP_LAG = 1.0  # seconds; beyond this renewals and heartbeats are at risk


def health(snap: Snapshot, loop: LoopMonitor, cfg: Config) -> list[str]:
    """Reasons the sidecar process itself is unhealthy (restart it); empty when healthy.

    Being out of the election is not one of them: a sidecar that could not
    confirm its orchestrator's death must stay up and out (a restart would
    put it straight back into the election); /readyz reports that.
    """
    problems = []
    lag_limit = min(MAX_LOOP_LAG, cfg.retry_interval)
    if loop.lag > lag_limit or loop.stalled_for() > lag_limit:
        problems.append(f"event loop lagging {max(loop.lag, loop.stalled_for()):.3f}s (limit {lag_limit:g}s)")
    if snap.past_demote > 0:
        problems.append(f"still leader {snap.past_demote:.3f}s past its renew deadline: renewals stopped")
    return problems


def readiness(snap: Snapshot) -> list[str]:
    """Reasons the sidecar is not taking part in the election now; empty when it is."""
    problems = []
    if not snap.backend_up:
        problems.append("the store did not answer the last call")
    if snap.out_of_election:
        problems.append(f"out of the election: {snap.out_of_election}")
    return problems


def leader_view(snap: Snapshot) -> dict[str, Any]:
    """This sidecar's view of who leads: with token and deadline, never a bare name."""
    view: dict[str, Any] = {
        "election": snap.election,
        "candidate": snap.candidate,
        "state": snap.state.value,
        "leader": None,
    }
    if snap.grant is not None:
        g = snap.grant
        view["leader"] = {"id": g.candidate, "token": g.token, "epoch": g.epoch}
        view["deadline"] = {
            "expires_monotonic": round(g.expires_monotonic, 6),
            "valid_for_ms": int(snap.remaining * 1000),
        }
    elif snap.leader is not None:
        lead = snap.leader
        # What this candidate last saw while queueing; may be out of date.
        view["leader"] = {"id": lead.id, "token": lead.token, "epoch": lead.epoch or None}
    if snap.out_of_election:
        view["out_of_election"] = snap.out_of_election
    return view


class HttpApi:
    def __init__(self, cfg: Config, elector: Elector, loop: LoopMonitor, registry: CollectorRegistry) -> None:
        self.cfg = cfg
        self.elector = elector
        self.loop = loop
        self.registry = registry
        self._runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/leader", self.leader)
        app.router.add_get("/leader/ready", self.leader_ready)
        return app

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        problems = health(self.elector.snapshot(), self.loop, self.cfg)
        return _json({"ok": not problems, "problems": problems}, 503 if problems else 200)

    async def readyz(self, request: web.Request) -> web.Response:
        problems = readiness(self.elector.snapshot())
        return _json({"ok": not problems, "backend": self.cfg.backend, "problems": problems}, 503 if problems else 200)

    async def leader_ready(self, request: web.Request) -> web.Response:
        """200 on the leader only (Patroni's /primary): a Service or LB health check follows the leader."""
        state = self.elector.state
        leading = state is State.LEADER
        return _json({"leader": leading, "state": state.value}, 200 if leading else 503)

    async def leader(self, request: web.Request) -> web.Response:
        return _json(leader_view(self.elector.snapshot()), 200)

    async def start(self, addr: str) -> int:
        host, _, port = addr.rpartition(":")
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host or "0.0.0.0", int(port))
        await site.start()
        self.port = int(self._runner.addresses[0][1])  # the real port when 0 was asked for
        return self.port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _json(body: dict[str, Any], status: int) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")
