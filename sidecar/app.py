"""Wires one sidecar together: backend, elector, grant socket, signals.

This is the only place where the core meets the process: it decides what a
transition does (publish a grant, revoke it) and how the process stops.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import signal
from dataclasses import astuple
from typing import Any

from prometheus_client import CollectorRegistry

from sidecar import __version__
from sidecar.backends import connect
from sidecar.backends.base import BackendError
from sidecar.clock import Clock, MonotonicClock
from sidecar.config import Config, allowed_uids, socket_gid
from sidecar.elector import Elector, Hooks
from sidecar.fencing.server import GrantServer
from sidecar.http_api import HttpApi, leader_view
from sidecar.loopmon import LoopMonitor
from sidecar.metrics import SidecarMetrics
from sidecar.model import EventSink, Grant, Reason, State, Timing
from sidecar.orphan import OrphanGuard
from sidecar.supervisor import Supervisor


class NeverDemote(Timing):
    """The deliberately broken build's timing: a silent store never demotes the leader."""

    def demote_at(self, sent_at: float, ttl: float, anchor: float | None = None) -> float:
        return math.inf


class Sidecar:
    def __init__(
        self, cfg: Config, log: EventSink, clock: Clock | None = None, command: list[str] | None = None
    ) -> None:
        self.cfg = cfg
        self.log = log
        self.clock = clock or MonotonicClock()
        self.server: GrantServer | None = None
        self.elector: Elector | None = None
        self.registry = CollectorRegistry()
        self.metrics = SidecarMetrics(
            self.registry, cfg.election, cfg.candidate_id, cfg.backend, priority=cfg.priority, no_lead=cfg.no_lead
        )
        self.loopmon = LoopMonitor(self.metrics.loop_lag_sample, self.clock)
        self.http: HttpApi | None = None
        self.supervisor = Supervisor(
            cfg,
            command or [],
            log,
            self.clock,
            on_orchestrator_exit=self._orchestrator_gone,
            on_kill=self.metrics.orchestrator_kill,
            on_guard_lost=self._guard_lost,
            adopt_orphans=True,  # this process has no children but the watchdog and the wrappers
        )

    def _guard_lost(self, detail: str) -> None:
        if self.elector is not None:
            self.elector.guard_lost(detail)

    def _orchestrator_gone(self) -> None:
        if self.elector is not None and self.elector.resign():
            self.log.warning("resigning_without_orchestrator")

    async def _on_started(self, grant: Grant) -> None:
        await self.supervisor.started_leading(grant)
        if self.server is not None:
            await self.server.publish_grant(grant)

    async def _on_renewed(self, grant: Grant) -> None:
        await self.supervisor.renewed(grant)
        if self.server is not None:
            await self.server.publish_grant(grant)

    async def _on_stopped(self, grant: Grant, reason: Reason) -> bool:
        if self.clock.now() < grant.expires_monotonic:
            # Tell cooperative clients first: they stop at once, before signals.
            if self.server is not None:
                await self.server.publish_revoke(reason.value)
            return await self.supervisor.stopped_leading(grant, reason)
        # The grant is already over (we were frozen or stuck past it): a
        # successor may lead. A revoke now would only be a cue to a client that
        # misbehaves on revoke; stop the orchestrator first (SIGKILL at once,
        # the deadline having passed), then tell the clients.
        confirmed = await self.supervisor.stopped_leading(grant, reason)
        if self.server is not None:
            await self.server.publish_revoke(reason.value)
        return confirmed

    async def status(self) -> dict[str, Any]:
        """The socket's `status` answer: the same view as /leader, plus the orchestrator."""
        assert self.elector is not None
        snap = self.elector.snapshot()
        out = leader_view(snap)
        if snap.grant is not None:
            out.update(token=snap.grant.token, epoch=snap.grant.epoch, valid_for_ms=out["deadline"]["valid_for_ms"])
        out["orchestrator"] = {
            "mode": self.supervisor.mode,
            "pid": self.supervisor.child.pid if self.supervisor.child else None,
        }
        return out

    def _resign(self) -> bool:
        assert self.elector is not None
        accepted = self.elector.resign()
        self.log.info("resign_requested", accepted=accepted)
        return accepted

    async def _describe_store(self, backend: object) -> None:
        """Log the store's version and export it as a label; never a reason not to start."""
        describe = getattr(backend, "describe", None)  # optional: etcd tells its version
        if describe is None:
            return
        try:
            facts: dict[str, str] = await asyncio.wait_for(describe(), self.cfg.effective_request_timeout)
        except (BackendError, TimeoutError) as exc:
            self.log.warning("store_version_unknown", error=str(exc) or type(exc).__name__)
            facts = {}
        bugs = facts.pop("known_bugs", "")
        self.log.info("store_version", backend=self.cfg.backend, **facts)
        if bugs:
            # Safety does not rest on these (docs/design.md), but an operator
            # should know the release they run has them, and upgrade.
            self.log.warning("store_version_has_known_bugs", version=facts.get("version"), bugs=bugs)
        self.metrics.store_info(facts.get("version", ""))
        late = self.cfg.ttl * (1 - self.cfg.drift) - self.cfg.renew_deadline
        if self.cfg.backend == "etcd" and late < 2:
            # A renewal sent this late leaves under 2 s of lease; a successor
            # polling a lease that then vanishes cannot tell it from an expiry
            # (docs/design.md 1b, "Residual"): fine for demos, not production.
            self.log.warning("late_renewal_window", seconds_left=round(late, 3), advice="use --ttl 5 or more")

    async def run(self) -> int:
        backend = await connect(self.cfg, self.clock)
        await self._describe_store(backend)
        hooks = Hooks(
            started_leading=self._on_started,
            renewed=self._on_renewed,
            stopped_leading=self._on_stopped,
            ready=self.supervisor.ready,
        )
        timing = self.cfg.timing
        if os.environ.get("ELECTION_SIDECAR_UNSAFE_IGNORE_DEADLINE") == "1":
            # A deliberately broken build, so tests can show the fault checker fails.
            timing = NeverDemote(*astuple(timing))
            self.supervisor.watchdog_enabled = False
            self.log.error("unsafe_ignore_deadline", detail="self-fencing disabled: for checker tests only")
        self.elector = Elector(
            self.cfg, backend, self.clock, self.log, hooks, metrics=self.metrics, timing=timing, loop_probe=self.loopmon
        )
        elector = self.elector
        self.metrics.bind(
            remaining=lambda: elector.snapshot().remaining,
            clients=lambda: len(self.server.peers) if self.server else 0,
        )
        self._bind_operator_metrics(elector)
        orphans = self._orphan_guard(elector)
        self.loopmon.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            if self.cfg.socket:
                self.server = GrantServer(
                    self.cfg.socket,
                    election=self.cfg.election,
                    candidate=self.cfg.candidate_id,
                    version=__version__,
                    log=self.log,
                    on_resign=self._resign,
                    status=self.status,
                    mode=0o660 if self.cfg.socket_group else 0o600,
                    group=socket_gid(self.cfg),
                    clock=self.clock,
                    allow_uids=allowed_uids(self.cfg),
                    on_refused=self.metrics.grant_clients_refused.inc,
                    on_acked=self.supervisor.peer_acked,
                )
                await self.server.start()
            await self.supervisor.start()
            if self.cfg.http_addr:
                self.http = HttpApi(self.cfg, self.elector, self.loopmon, self.registry)
                port = await self.http.start(self.cfg.http_addr)
                self.log.info("http_listening", addr=self.cfg.http_addr, port=port)
            self.log.info(
                "sidecar_started",
                version=__version__,
                backend=self.cfg.backend,
                endpoints=list(self.cfg.endpoints),
                ttl=self.cfg.ttl,
            )
            # What start-up built (modules, protobuf's and kazoo's, the metrics
            # registry: some 38,000 objects) lives as long as the process. A
            # full collection walks all of it (8-16 ms measured on a shared core),
            # landing on whatever the sidecar does then, a handover's critical
            # path included. Frozen, they are out of the collector's way; the
            # objects made from here on are collected as usual.
            gc.freeze()
            guard = asyncio.create_task(orphans.run())
            try:
                await self.elector.run()
            finally:
                guard.cancel()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.supervisor.close()
            if self.http is not None:
                await self.http.close()
            await self.loopmon.stop()
            if self.server is not None:
                await self.server.close()
            await backend.close()
        self.log.info("sidecar_stopped")
        return 2 if self.elector.fatal else 0

    def _bind_operator_metrics(self, elector: Elector) -> None:
        def since_renewal() -> float:
            snap = elector.snapshot()
            return snap.at - snap.renewed_at if snap.state is State.LEADER and snap.renewed_at else 0.0

        self.metrics.bind_renewal(since_renewal, self.cfg.renew_deadline, self.cfg.margin)
        self.metrics.bind_orchestrator(self._orchestrator_present)

    def _orchestrator_present(self) -> bool:
        mode = self.supervisor.mode
        if mode in ("gate", "standby"):
            child = self.supervisor.child
            return child is not None and child.returncode is None
        if mode == "peer":
            return self._acked_clients() > 0
        return True  # pid file or no kill target: nothing to tell from here

    def _acked_clients(self) -> int:
        # Only a client that acknowledged a grant is an orchestrator; a CLI asking for status is not.
        return sum(1 for p in self.server.peers.values() if p.acked_seq > 0) if self.server else 0

    def _orphan_guard(self, elector: Elector) -> OrphanGuard:
        # Peer mode only: gate and standby resign when their own child exits.
        after = self.cfg.effective_orphan_resign_after if self.supervisor.mode == "peer" else 0.0
        return OrphanGuard(
            self.clock,
            after,
            leading=lambda: elector.state is State.LEADER,
            clients=self._acked_clients,
            resign=elector.resign,
            warn=self.log.warning,
        )

    def _on_signal(self, sig: signal.Signals) -> None:
        self.log.info("signal_received", signal=sig.name)
        assert self.elector is not None
        self.elector.stop()
