"""The fault campaign: `election-sidecar validate`.

Starts a 3-member etcd cluster (or a 3-server ZooKeeper ensemble), N
sidecars each supervising a toy orchestrator, and a fault-injecting TCP
proxy between every sidecar and every store member. Then injects faults
drawn from the catalogue with a seeded RNG (the seed is printed; the same
seed replays the same sequence of choices), heals each, and measures:

* failover time: fault injected -> a different sidecar leads (when the
  fault hit the leader);
* recovery: fault healed -> exactly one leader again, which must take at
  most TTL + 1 s.

At the end the checker (sidecar_harness/checker.py) reads what every
orchestrator recorded and the fenced store: no overlapping terms, no stale
token accepted, no act after its deadline. Leader claims are compared with
the store's view at every stable sample. Output: a verdict, counts per
fault type, failover distributions, as a table and as JSON.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sidecar.backends import connect
from sidecar.backends.base import BackendError
from sidecar.clock import MonotonicClock
from sidecar.config import Config
from sidecar_harness.catalogue import BY_KIND, CATALOGUE, TTL
from sidecar_harness.checker import check
from sidecar_harness.fenced_store import HarnessStore
from sidecar_harness.fleet import FAST_TIMING, SidecarProcess, claiming, harness_process, statuses
from sidecar_harness.localetcd import LocalEtcd
from sidecar_harness.localstore import last_words
from sidecar_harness.localzk import LocalZooKeeper
from sidecar_harness.proxy import FaultProxy

SAMPLE = 0.05


def revive_exited(cluster: LocalEtcd | LocalZooKeeper) -> list[str]:
    """Store members that exited on their own, each named with its last words, then started again.

    Every fault that kills a member starts it again in its heal, so after a
    heal each member must be running: one that is not crashed (etcd 3.5.1
    panics on a cancelled read-only txn, which we once sent). Not noticed,
    it would read as an unexplained outage in a later fault.
    """
    dead = [m for m in cluster.members if not m.alive]
    problems = [f"store member {m.name} exited on its own: {last_words(m.log_path)}" for m in dead]
    for m in dead:
        cluster.start_member(m)
    if dead:
        cluster.wait_healthy(60.0)
    return problems


def events_before(lines: list[str], at: int, n: int = 10) -> str:
    """The ``n`` log events before line ``at`` and the event there, as "event@+seconds" relative to it.

    A late watchdog kill seen in CI had nothing else to explain it once the
    work directory was gone; these say what the sidecar and its watchdog
    did just before (armed, fed, respawned, frozen, demoted).
    """

    def parsed(line: str) -> dict[str, Any] | None:
        try:
            d = json.loads(line)
        except ValueError:
            return None
        return d if isinstance(d, dict) and "event" in d else None

    last = parsed(lines[at]) or {}
    t = last.get("mono")
    # In the order of their ``mono``, not of the file: the sidecar's info
    # lines reach the shared stderr up to 20 ms late (sidecar/log.py), so
    # some that came before the kill line in time follow it in the file. A
    # line without a clock keeps its place behind the line before it.
    keyed: list[tuple[float, int, dict[str, Any]]] = []
    before = float("-inf")
    for i in range(max(0, at - 4 * n), min(len(lines), at + 4 * n + 1)):
        d = parsed(lines[i])
        if d is None:
            continue
        mono = d.get("mono")
        if isinstance(mono, int | float):
            before = float(mono)
        elif i > at:
            continue
        if i > at and not (isinstance(t, int | float) and before <= t):
            continue
        keyed.append((before, i, d))
    keyed.sort(key=lambda k: (k[0], k[1]))
    events = [d for _, _, d in keyed]
    out = []
    for d in events:
        mono = d.get("mono")
        when = f"{mono - t:+.3f}s" if isinstance(mono, int | float) and isinstance(t, int | float) else "?"
        extra = ",".join(f"{k}={d[k]}" for k in ("kill_at", "late_by", "reason", "state") if k in d)
        out.append(f"{d['event']}@{when}" + (f"[{extra}]" if extra else ""))
    return "; ".join(out[-(n + 1) :])


@dataclass
class FaultResult:
    n: int
    kind: str
    target: str
    leader_before: str | None
    token_before: int | None
    failover_s: float | None = None
    # Fault -> the leader before it no longer claims (unless it was frozen).
    demoted_s: float | None = None
    recovered_s: float | None = None
    leader_after: str | None = None
    token_after: int | None = None
    problems: list[str] = field(default_factory=list)
    # CLOCK_MONOTONIC, like the sidecars' log lines and the orchestrators'
    # records, so the HTML timeline can draw the fault window among them.
    injected_mono: float | None = None
    healed_mono: float | None = None


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def distribution(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 3),
        "p99": round(_pct(values, 0.99), 3),
        "max": round(max(values), 3),
    }


class Campaign:
    def __init__(
        self,
        backend: str = "etcd",
        *,
        candidates: int = 5,
        faults: int = 30,
        seed: int | None = None,
        workdir: Path | None = None,
        progress: bool = True,
        broken: bool = False,
        kinds: list[str] | None = None,
        fenced_store: str = "sqlite",
        out: Callable[[str], None] = print,
    ) -> None:
        self.backend = backend
        self.n = candidates
        self.faults = faults
        self.seed = seed if seed is not None else random.SystemRandom().randrange(1, 2**31)
        self.rng = random.Random(self.seed)
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="election-sidecar-validate-"))
        self.progress = progress
        self.broken = broken
        self.kinds = kinds or CATALOGUE[backend]
        self.out = out
        # Peer-link proxies only when a drawn fault needs them: every other kind
        # runs on the store exactly as before.
        peer = any(BY_KIND[k].peer_links for k in self.kinds)
        self.cluster: LocalEtcd | LocalZooKeeper = (
            LocalEtcd(3, peer_proxies=peer) if backend == "etcd" else LocalZooKeeper(3, peer_proxies=peer)
        )
        self.proxies: dict[str, list[FaultProxy]] = {}
        self.sidecars: list[SidecarProcess] = []
        self.results: list[FaultResult] = []
        self.disagreements: list[str] = []
        self.samples = 0
        self.frozen: set[str] = set()  # SIGSTOPped: not asked, they cannot answer
        self.peer_toys: dict[str, subprocess.Popen[bytes] | None] = {}  # --kill-peer sidecars' orchestrators
        # A --no-lead candidate beside the fleet (no fault aims at it): the
        # campaign fails if it is ever elected or its orchestrator ever starts.
        self.no_lead: SidecarProcess | None = None
        self.election: Any = None
        self.fenced = HarnessStore(fenced_store, self.workdir)

    # -- set-up -----------------------------------------------------------

    @property
    def store_path(self) -> str:
        return self.fenced.spec

    @property
    def sidecar_env(self) -> dict[str, str]:
        return {"ELECTION_SIDECAR_UNSAFE_IGNORE_DEADLINE": "1"} if self.broken else {}

    def record_path(self, name: str) -> Path:
        return self.workdir / f"{name}.jsonl"

    async def start(self) -> None:
        await asyncio.to_thread(self.cluster.start)
        await asyncio.to_thread(self.fenced.start)
        for i in range(self.n):
            name = f"s{i}"
            proxies = []
            for m in self.cluster.members:
                p = FaultProxy("127.0.0.1", m.client_port)
                await p.start()
                proxies.append(p)
            self.proxies[name] = proxies
            # (Not in the broken build: its orchestrators act on ELECTION_TOKEN, which a socket client lacks.)
            peer = i == self.n - 1 and self.n >= 4 and not self.broken
            # One orchestrator (s1) never fences itself and ignores SIGTERM: only the
            # sidecar's kill path and its watchdog stand between it and an overlap.
            hostile = ["--no-self-fence", "--ignore-sigterm"] if i == 1 and not self.broken else []
            sc = SidecarProcess(
                name, self.workdir, [p.address for p in proxies], "campaign", dict(FAST_TIMING),
                backend=self.backend, command=[] if peer else self.toy_argv(name, *hostile),
                extra_args=["--kill-peer"] if peer else [], log_relay=True,
                # s2 tracks its orchestrator as a pod must (no writable cgroup): the subreaper path.
                env={"ELECTION_SIDECAR_KILL_TREE": "subreaper"} if i == 2 else {},
            )  # fmt: skip
            self.sidecars.append(sc)
            if peer:
                self.peer_toys[name] = None
            sc.start(self.sidecar_env)
        if not self.broken:
            name = "s-nolead"
            self.no_lead = SidecarProcess(
                name, self.workdir, list(self.cluster.endpoints), "campaign", dict(FAST_TIMING),
                backend=self.backend, command=self.toy_argv(name), extra_args=["--no-lead"],
            )  # fmt: skip
            self.no_lead.start()
        for sc in self.sidecars:
            await asyncio.to_thread(sc.wait_socket)
        if self.no_lead is not None:
            await asyncio.to_thread(self.no_lead.wait_socket)
        self.ensure_peer_toys()
        cfg = Config(backend=self.backend, endpoints=tuple(self.cluster.endpoints), election="campaign")
        self._backend = await connect(cfg, MonotonicClock())
        self.election = self._backend.admin("campaign")

    def toy_argv(self, name: str, *extra: str, record: str = "") -> list[str]:
        return [
            sys.executable, "-m", "sidecar_harness.toy_orchestrator",
            "--store", self.store_path, "--record", str(self.record_path(record or name)), "--id", name,
            *(["--no-self-fence"] if self.broken else []), *extra,
        ]  # fmt: skip

    def ensure_peer_toys(self) -> None:
        """(Re)start the orchestrators of the --kill-peer sidecars: socket clients that,
        on revoke, hang up and go on acting with their last token until killed."""
        for name, proc in self.peer_toys.items():
            if proc is not None and proc.poll() is None:
                continue
            sock = str(next(sc for sc in self.sidecars if sc.candidate == name).socket_path)
            argv = self.toy_argv(name, "--socket", sock, "--close-socket-on-revoke", "--ignore-sigterm")
            self.peer_toys[name] = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL)

    async def stop(self) -> None:
        for proc in self.peer_toys.values():
            if proc is not None and proc.poll() is None:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        for sc in self.sidecars:
            sc.signal(signal.SIGCONT)
            sc.resume_log()
        others = [self.no_lead] if self.no_lead is not None else []
        await asyncio.gather(*(asyncio.to_thread(sc.stop, 10) for sc in [*self.sidecars, *others]))
        for proxies in self.proxies.values():
            for p in proxies:
                await p.close()
        if getattr(self, "_backend", None) is not None:
            await self._backend.close()
        await asyncio.to_thread(self.cluster.stop)

    # -- observing --------------------------------------------------------

    async def claims(self) -> list[tuple[SidecarProcess, dict[str, Any]]]:
        return claiming(self.sidecars, await statuses(self.sidecars, self.frozen))

    async def store_leader(self) -> tuple[str, int] | None:
        try:
            lead = await asyncio.wait_for(self.election.leader(), 2)
        except (BackendError, TimeoutError):
            return None
        return (lead.id, lead.token) if lead is not None else None

    async def wait_single_leader(
        self, timeout: float, unlike: str | None = None
    ) -> tuple[float, str | None, int | None]:
        """Seconds until exactly one sidecar (other than ``unlike``) leads, stably."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            claim = await self.claims()
            if len(claim) == 1 and claim[0][0].candidate != unlike:
                took = time.monotonic() - t0
                s, view = claim[0]
                await self.compare_with_store(s.candidate, int(view["token"]))
                return took, s.candidate, int(view["token"])
            await asyncio.sleep(SAMPLE)
        return timeout, None, None

    async def compare_with_store(self, candidate: str, token: int) -> None:
        """A stable sidecar view must match the store's."""
        for _ in range(20):
            store = await self.store_leader()
            self.samples += 1
            if store == (candidate, token):
                return
            await asyncio.sleep(SAMPLE)  # the store may not have caught up with a handover yet
        self.disagreements.append(f"sidecar {candidate} leads with token {token}; store says {store}")

    def leader_sidecar(self, name: str | None) -> SidecarProcess | None:
        return next((s for s in self.sidecars if s.candidate == name), None)

    # -- the run ----------------------------------------------------------

    async def one(self, n: int, kind: str) -> FaultResult:
        claim = await self.claims()
        leader, view = claim[0] if len(claim) == 1 else (None, None)
        r = FaultResult(n, kind, "", leader.candidate if leader else None, int(view["token"]) if view else None)
        t0 = r.injected_mono = time.monotonic()
        fault = BY_KIND[kind]
        injected = await fault.inject(self, leader, view)
        r.target, heal, hold = injected.target, injected.heal, injected.hold
        if injected.cut_at is not None:
            t0 = r.injected_mono = injected.cut_at
        hits_leader = fault.moves(r.target, r.leader_before)
        # During the hold, watch for the failover (a different sidecar leading).
        end = t0 + hold
        while time.monotonic() < end or (
            hits_leader and r.failover_s is None and time.monotonic() < t0 + hold + TTL + 2
        ):
            claim = await self.claims()
            if len(claim) > 1:
                r.problems.append(f"{len(claim)} sidecars claim leadership: {[s.candidate for s, _ in claim]}")
            if hits_leader and r.failover_s is None and len(claim) == 1 and claim[0][0].candidate != r.leader_before:
                r.failover_s = round(time.monotonic() - t0, 3)
            if (
                r.demoted_s is None
                and r.leader_before is not None
                and r.leader_before not in self.frozen
                and all(s.candidate != r.leader_before for s, _ in claim)
            ):
                r.demoted_s = round(time.monotonic() - t0, 3)
            if time.monotonic() >= end and not hits_leader:
                break
            await asyncio.sleep(SAMPLE)
        await heal()
        r.problems += injected.problems  # what the fault itself found (filled by its inject or heal)
        r.problems += await asyncio.to_thread(revive_exited, self.cluster)
        r.healed_mono = time.monotonic()
        self.ensure_peer_toys()
        took, r.leader_after, r.token_after = await self.wait_single_leader(TTL + 10)
        r.recovered_s = round(took, 3)
        if r.leader_after is None:
            r.problems.append("no single leader 10 s after heal")
        elif took > TTL + 1.0:
            r.problems.append(f"single leader only {took:.2f}s after heal (limit TTL + 1 = {TTL + 1:g}s)")
        if r.token_after is not None and r.token_before is not None and r.token_after < r.token_before:
            r.problems.append(f"token went backwards: {r.token_before} -> {r.token_after}")
        return r

    def _bar(self, done: int, r: FaultResult) -> None:
        if not self.progress:
            return
        width = 24
        filled = int(width * done / self.faults)
        fail = f"failover {r.failover_s:.2f}s " if r.failover_s is not None else ""
        if r.demoted_s is not None:
            fail = f"demoted {r.demoted_s:.2f}s " + fail
        verdict = "ok" if not r.problems else "PROBLEM: " + "; ".join(r.problems)
        self.out(
            f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.faults} {r.kind:<19} {r.target:<16} "
            f"{fail}recovered {r.recovered_s:.2f}s {verdict}"
        )

    async def run(self) -> dict[str, Any]:
        self.out(
            f"validate: {self.backend}, {self.n} sidecars, {self.faults} faults, seed {self.seed} "
            f"(replay: --seed {self.seed}), TTL {TTL:g}s, fenced store {self.fenced.kind}, work dir {self.workdir}"
        )
        try:
            # Inside: a start that fails halfway (a sidecar that exits on a bad
            # setting) left its store's members running after the run ended
            # (a CI run left six etcd and ZooKeeper ensembles behind).
            await self.start()
            await self.wait_single_leader(30)
            for i in range(1, self.faults + 1):
                kind = self.rng.choice(self.kinds)
                r = await self.one(i, kind)
                self.results.append(r)
                self._bar(i, r)
                await asyncio.sleep(0.3)
        finally:
            await self.stop()
        return self.report()

    def report(self) -> dict[str, Any]:
        v = check(sorted(self.workdir.glob("s*.jsonl")), self.store_path, min_terms=2)
        violations = list(v.violations) + list(self.disagreements)
        for r in self.results:
            violations += [f"fault {r.n} ({r.kind}): {p}" for p in r.problems]
        kills_late = []
        if self.no_lead is not None:
            log = self.no_lead.log_path.read_text(errors="replace") if self.no_lead.log_path.exists() else ""
            if '"elected"' in log:
                violations.append(f"{self.no_lead.candidate}: a --no-lead candidate was elected")
            record = self.record_path(self.no_lead.candidate)
            if record.exists() and record.read_text().strip():
                violations.append(f"{self.no_lead.candidate}: a --no-lead candidate's orchestrator started")
        for sc in self.sidecars:
            lines = sc.log_path.read_text(errors="replace").splitlines()
            for i, line in enumerate(lines):
                if '"kill_unconfirmed"' in line:
                    violations.append(f"{sc.candidate}: an orchestrator kill was not confirmed")
                if '"watchdog_fired_kill"' in line:
                    late = json.loads(line).get("late_by", 0)
                    kills_late.append(late)
                    if late >= FAST_TIMING["margin"]:
                        violations.append(
                            f"{sc.candidate}: watchdog SIGKILL {late:.3f}s after the grant deadline"
                            f" (what led up to it: {events_before(lines, i)})"
                        )
        per_kind: dict[str, dict[str, Any]] = {}
        for kind in sorted({r.kind for r in self.results}):
            rs = [r for r in self.results if r.kind == kind]
            per_kind[kind] = {
                "count": len(rs),
                "problems": sum(bool(r.problems) for r in rs),
                "failover_s": distribution([r.failover_s for r in rs if r.failover_s is not None]),
                "demoted_s": distribution([r.demoted_s for r in rs if r.demoted_s is not None]),
                "recovery_s": distribution([r.recovered_s for r in rs if r.recovered_s is not None]),
            }
        return {
            "verdict": "PASS" if not violations else "FAIL",
            "backend": self.backend,
            "fenced_store": self.fenced.kind,
            "seed": self.seed,
            "sidecars": self.n,
            "faults": len(self.results),
            "ttl_s": TTL,
            "violations": violations,
            "checker": v.summary(),
            "store_comparisons": self.samples,
            "watchdog_kill_late_s_max": round(max(kills_late), 4) if kills_late else None,
            "per_fault": per_kind,
            "failover_s": distribution([r.failover_s for r in self.results if r.failover_s is not None]),
            "recovery_s": distribution([r.recovered_s for r in self.results if r.recovered_s is not None]),
            "results": [asdict(r) for r in self.results],
        }


def render(report: dict[str, Any]) -> str:
    w = max([20, *(len(k) for k in report["per_fault"])])
    ck = report["checker"]
    overlaps = sum("overlap" in x for x in report["violations"])
    stale = sum("stale write accepted" in x for x in report["violations"])
    lines = [
        f"verdict: {report['verdict']}  ({report['backend']}, {report['faults']} faults, seed {report['seed']}, "
        f"fenced store {report['fenced_store']}, "
        f"{report['sidecars']} sidecars, TTL {report['ttl_s']:g}s)",
        f"orchestrator terms {ck['leaderships']}, overlapping pairs {overlaps}, smallest gap {ck['min_gap_ms']} ms; "
        f"writes accepted {ck['writes_accepted']}, stale writes refused {ck['stale_writes_refused']}, "
        f"stale writes accepted {stale}; store comparisons {report['store_comparisons']}",
        "",
        f"{'FAULT':<{w}} {'COUNT':>5} {'PROBLEMS':>8}  {'FAILOVER p50/p99/max s':<26} {'RECOVERY p50/p99/max s':<26}",
    ]

    def d(x: dict[str, float] | None) -> str:
        return "-" if not x else f"{x['p50']:.2f}/{x['p99']:.2f}/{x['max']:.2f}"

    for kind, row in report["per_fault"].items():
        lines.append(
            f"{kind:<{w}} {row['count']:>5} {row['problems']:>8}  {d(row['failover_s']):<26} {d(row['recovery_s']):<26}"
        )
    lines.append(
        f"{'all':<{w}} {report['faults']:>5} {'':>8}  {d(report['failover_s']):<26} {d(report['recovery_s']):<26}"
    )
    if report["violations"]:
        lines += ["", "violations:", *(f"  - {v}" for v in report["violations"][:50])]
    return "\n".join(lines)


def run_campaign(
    backend: str, *, candidates: int, faults: int, seed: int | None, report_path: str, progress: bool, keep: bool,
    broken: bool = False, kinds: list[str] | None = None, fenced_store: str = "sqlite",
    html_path: str = "",
) -> int:  # fmt: skip
    harness_process()
    c = Campaign(
        backend, candidates=candidates, faults=faults, seed=seed, progress=progress, broken=broken, kinds=kinds,
        fenced_store=fenced_store,
    )  # fmt: skip
    html_written = None
    try:
        report = asyncio.run(c.run())
        if html_path:  # now: it reads the logs in the work dir, which goes below
            from sidecar_harness.report_html import write_campaign

            html_written = write_campaign(html_path, report, c.workdir, [s.candidate for s in c.sidecars], render)
    except KeyboardInterrupt:
        print("interrupted: everything the campaign started was stopped")
        return 130
    finally:
        c.fenced.stop()  # the report has read its history by now
        if not keep:
            shutil.rmtree(c.workdir, ignore_errors=True)
    text = render(report)
    print(text)
    if report_path:
        Path(report_path).write_text(json.dumps(report, indent=2))
        print(f"report written to {report_path}")
    if keep:
        print(f"logs and records kept in {c.workdir}")
    if html_written:
        print(f"HTML timeline written to {html_written}")
    return 0 if report["verdict"] == "PASS" else 1
