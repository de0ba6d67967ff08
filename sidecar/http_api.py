"""HTTP endpoints: /metrics, /healthz, /readyz, /leader (aiohttp, on the sidecar's loop).

/healthz fails when the loop stalls or when the elector still believes it
leads although its renewals stopped (the mistake of kubernetes#71730: a
health check that stays green while leadership is dead). /readyz follows
store connectivity. /leader is this sidecar's own view, with token and
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
from sidecar.model import State

MAX_LOOP_LAG = 1.0  # seconds; beyond this renewals and heartbeats are at risk


def health(elector: Elector, loop: LoopMonitor, cfg: Config) -> list[str]:
    """Reasons the sidecar is unhealthy; empty when healthy."""
    problems = []
    lag_limit = min(MAX_LOOP_LAG, cfg.retry_interval)
    if loop.lag > lag_limit or loop.stalled_for() > lag_limit:
        problems.append(f"event loop lagging {max(loop.lag, loop.stalled_for()):.3f}s (limit {lag_limit:g}s)")
    now = elector.clock.now()
    if elector.state is State.LEADER and now > elector.demote_at:
        problems.append(f"still leader {now - elector.demote_at:.3f}s past its renew deadline: renewals stopped")
    if elector.out_of_election:
        problems.append("out of the election: an orchestrator kill could not be confirmed")
    return problems


def leader_view(elector: Elector, cfg: Config) -> dict[str, Any]:
    view: dict[str, Any] = {
        "election": cfg.election,
        "candidate": cfg.candidate_id,
        "state": elector.state.value,
        "leader": None,
    }
    g = elector.grant
    if elector.state is State.LEADER and g is not None:
        view["leader"] = {"id": g.candidate, "token": g.token, "epoch": g.epoch}
        view["deadline"] = {
            "expires_monotonic": round(g.expires_monotonic, 6),
            "valid_for_ms": int(elector.remaining() * 1000),
        }
    elif elector.current_leader is not None:
        lead = elector.current_leader
        # What this candidate last saw while queueing; may be out of date.
        view["leader"] = {"id": lead.id, "token": lead.token, "epoch": lead.epoch or None}
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
        return app

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        problems = health(self.elector, self.loop, self.cfg)
        return _json({"ok": not problems, "problems": problems}, 503 if problems else 200)

    async def readyz(self, request: web.Request) -> web.Response:
        up = self.elector.backend_up
        return _json({"ok": up, "backend": self.cfg.backend}, 200 if up else 503)

    async def leader(self, request: web.Request) -> web.Response:
        return _json(leader_view(self.elector, self.cfg), 200)

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
