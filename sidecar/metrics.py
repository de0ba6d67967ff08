"""Every metric the sidecar exports, in one place. Documented in docs/metrics.md.

The registry is handed in (tests use a fresh one each); the core never
imports prometheus_client: the elector talks to ``ElectorMetrics``, which
``SidecarMetrics`` implements here. Every series carries ``election`` and
``candidate`` labels, the same names the logs use.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from sidecar import __version__
from sidecar.model import SWITCHOVER_OUTCOMES, ElectorMetrics, Grant, Reason, State, StoreCall

PREFIX = "election_"
RTT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class SidecarMetrics(ElectorMetrics):
    def __init__(
        self,
        registry: CollectorRegistry,
        election: str,
        candidate: str,
        backend: str,
        *,
        priority: int = 0,
        no_lead: bool = False,
    ) -> None:
        base = ["election", "candidate"]
        lv = {"election": election, "candidate": candidate}
        self._lv = lv

        def g(name: str, doc: str, extra: tuple[str, ...] = ()) -> Gauge:
            return Gauge(PREFIX + name, doc, [*base, *extra], registry=registry)

        def c(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(PREFIX + name, doc, [*base, *extra], registry=registry)

        def h(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(PREFIX + name, doc, base, buckets=buckets, registry=registry)

        self.is_leader = g("is_leader", "1 while this candidate holds a valid grant, else 0.").labels(**lv)
        self.epoch = g("leader_epoch", "Epoch (term number) of this candidate's current or last leadership.").labels(
            **lv
        )
        self.token = g("fencing_token", "Fencing token of this candidate's current or last leadership.").labels(**lv)
        self.lease_remaining = g(
            "lease_remaining_seconds", "Seconds until this candidate's grant deadline (0 when not leading)."
        ).labels(**lv)
        self.keepalive_rtt = h(
            "keepalive_rtt_seconds", "Round trip of acknowledged keepalives, from send to answer.", RTT_BUCKETS
        ).labels(**lv)
        self.keepalive_failures = c("keepalive_failures_total", "Keepalives that failed or timed out.").labels(**lv)
        self._transitions = c("transitions_total", "State transitions, by the state entered.", ("to",))
        self._lease_lost = c(
            "lease_lost_total",
            "Leases or sessions lost, or leadership given up for lack of renewals, by reason and role.",
            ("reason", "role"),
        )
        self._switchovers = c(
            "switchovers_total",
            "Switchover requests acted on, by outcome: handed-over (leader demoted for one), step-aside "
            "(a candidate re-queued for the target), completed (the target or next won), expired, target-gone.",
            ("outcome",),
        )
        self._store_errors = c("store_unreachable_total", "Store calls that failed or timed out, by call.", ("during",))
        self.race_lost_total = c("race_lost_total", "Campaigns that found another leader and queued.").labels(**lv)
        self._kills = c(
            "orchestrator_kills_total",
            "Signals sent to the orchestrator on loss; signal=unconfirmed for failed kills.",
            ("signal",),
        )
        self.kill_unconfirmed_gauge = g(
            "kill_unconfirmed",
            "1 while an orchestrator's death is not confirmed: the sidecar stays out of the election.",
        ).labels(**lv)
        self.grant_clients = g("grant_clients", "Clients connected to the grant socket.").labels(**lv)
        self.grant_clients_refused = c(
            "grant_clients_refused_total", "Socket clients refused because their uid is not allowed."
        ).labels(**lv)
        self.backend_up = g("backend_up", "1 if the last store call succeeded, else 0.").labels(**lv)
        self.loop_lag = g(
            "event_loop_lag_seconds", "Latest event-loop lag (how late the lease's renewal timer fired)."
        ).labels(**lv)
        self.loop_lag_hist = h(
            "event_loop_lag_distribution_seconds", "Distribution of event-loop lag samples.", LAG_BUCKETS
        ).labels(**lv)
        self.last_transition = g("last_transition_timestamp_seconds", "Unix time of the last state transition.").labels(
            **lv
        )
        self.seconds_since_renewal = g(
            "seconds_since_renewal",
            "Seconds since the send of the last renewal the store acknowledged (0 when not leading).",
        ).labels(**lv)
        self.renew_deadline = g(
            "renew_deadline_seconds", "Silence after the last acknowledged renewal at which a leader demotes."
        ).labels(**lv)
        self.margin = g(
            "margin_seconds", "Seconds kept between the grant deadline and the earliest lease expiry."
        ).labels(**lv)
        self.orchestrator_up = g(
            "orchestrator_up",
            "1 while this sidecar's orchestrator is there (gate/standby: its child runs; peer: a client that "
            "acknowledged a grant is connected), else 0; always 1 where the sidecar cannot tell (pid file, none).",
        ).labels(**lv)
        self.orchestrator_up.set(1)
        self.lock_delays = c(
            "lock_delays_total",
            "Campaigns that waited because the last leader's key went before its lease could have expired.",
        ).labels(**lv)
        self.lock_delay_seconds = g(
            "lock_delay_seconds", "Length of the last lock-delay wait (seconds), 0 before any."
        ).labels(**lv)
        self.lock_delay_seconds.set(0)
        # Configuration, exported so a dashboard can tell which candidates may take a vacancy.
        self.priority = g(
            "candidate_priority", "This candidate's --priority (higher takes a vacancy first; 0 by default)."
        ).labels(**lv)
        self.priority.set(priority)
        self.no_lead = g("candidate_no_lead", "1 if this candidate runs with --no-lead (never leads), else 0.").labels(
            **lv
        )
        self.no_lead.set(1 if no_lead else 0)
        self.priority_step_asides = c(
            "priority_step_asides_total",
            "Times this candidate reached the head of the queue and re-queued for a live one of higher priority.",
        ).labels(**lv)
        self._store_info = g(
            "store_info", "1, labelled with facts about the store (server version); set at start.", ("version",)
        )
        # The process_* and python_* series every Prometheus client exports: an
        # operator's standard memory / fd / GC panels work on the sidecar too.
        # Registered on our registry, not the global one (fresh per test).
        if registry is not REGISTRY:  # which holds them already; a second registration raises
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        Info(PREFIX + "build", "Build and configuration facts.", registry=registry).info(
            {"version": __version__, "backend": backend, "election": election, "candidate": candidate}
        )
        self.is_leader.set(0)
        self.backend_up.set(0)
        for state in State:
            self._transitions.labels(**lv, to=state.value)
        # Zero series up front, so dashboards and alerts see them before the first event.
        for reason in (r for r in Reason if r.unasked):
            for role in ("leader", "candidate"):
                self._lease_lost.labels(**lv, reason=reason.value, role=role)
        for sig in ("SIGTERM", "SIGKILL", "unconfirmed"):
            self._kills.labels(**lv, signal=sig)
        for during in StoreCall:
            self._store_errors.labels(**lv, during=during)
        for outcome in SWITCHOVER_OUTCOMES:
            self._switchovers.labels(**lv, outcome=outcome)

    # -- ElectorMetrics ---------------------------------------------------

    def transition(self, state: State) -> None:
        self._transitions.labels(**self._lv, to=state.value).inc()
        self.last_transition.set(time.time())

    def leading(self, grant: Grant | None) -> None:
        self.is_leader.set(1 if grant is not None else 0)
        if grant is not None:
            self.token.set(grant.token)
            self.epoch.set(grant.epoch)

    def renewed(self, rtt: float) -> None:
        self.keepalive_rtt.observe(rtt)
        self.backend_up.set(1)

    def keepalive_failed(self) -> None:
        self.keepalive_failures.inc()

    def store_unreachable(self, during: StoreCall) -> None:
        self._store_errors.labels(**self._lv, during=during.value).inc()
        self.backend_up.set(0)

    def race_lost(self) -> None:
        self.race_lost_total.inc()
        self.backend_up.set(1)

    def lease_lost(self, reason: Reason, role: str) -> None:
        self._lease_lost.labels(**self._lv, reason=reason.value, role=role).inc()

    def kill_unconfirmed(self, active: bool) -> None:
        self.kill_unconfirmed_gauge.set(1 if active else 0)

    def lock_delay(self, seconds: float) -> None:
        self.lock_delays.inc()
        self.lock_delay_seconds.set(seconds)

    def switchover(self, outcome: str) -> None:
        self._switchovers.labels(**self._lv, outcome=outcome).inc()

    # -- the rest of the sidecar ------------------------------------------

    def priority_step_aside(self) -> None:
        self.priority_step_asides.inc()

    def store_info(self, version: str) -> None:
        """The store's version, as a label (an alert can name releases with known lease bugs)."""
        self._store_info.labels(**self._lv, version=version or "unknown").set(1)

    def orchestrator_kill(self, signal: str) -> None:
        self._kills.labels(**self._lv, signal=signal).inc()

    def bind(self, remaining: Callable[[], float], clients: Callable[[], int]) -> None:
        """Values read at scrape time from the live sidecar."""
        self.lease_remaining.set_function(remaining)
        self.grant_clients.set_function(clients)

    def bind_renewal(self, since_renewal: Callable[[], float], renew_deadline: float, margin: float = 0.0) -> None:
        """How late renewals are, read at scrape time, next to the deadline they race."""
        self.seconds_since_renewal.set_function(since_renewal)
        self.renew_deadline.set(renew_deadline)
        self.margin.set(margin)

    def bind_orchestrator(self, present: Callable[[], bool]) -> None:
        self.orchestrator_up.set_function(lambda: 1.0 if present() else 0.0)

    def loop_lag_sample(self, lag: float) -> None:
        self.loop_lag.set(lag)
        self.loop_lag_hist.observe(lag)
