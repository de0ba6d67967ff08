"""`election-sidecar demo`: a failover you can watch, on a throwaway etcd or ZooKeeper.

Starts the store and N sidecars, prints who leads with which token and epoch,
SIGKILLs the leader's sidecar (the successor takes over after about one
TTL), then asks the new leader to resign (the next one takes over at once),
prints a one-line verdict and removes everything it started, also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.backends import connect
from sidecar.backends.base import BackendError
from sidecar.clock import MonotonicClock
from sidecar.config import Config
from sidecar.fencing.oneshot import request
from sidecar.model import Leadership
from sidecar_harness.checker import check
from sidecar_harness.fenced_store import HarnessStore
from sidecar_harness.fleet import SidecarProcess, claiming, harness_process, statuses
from sidecar_harness.localetcd import LocalEtcd
from sidecar_harness.localzk import LocalZooKeeper


def demo_timing(ttl: int) -> dict[str, float]:
    """Timing that satisfies every rule of config.validate() for this TTL."""
    return {
        "ttl": ttl,
        "renew_deadline": ttl / 2,
        "retry_interval": round(ttl / 6, 3),
        "kill_grace": round(ttl / 6, 3),
        "margin": round(ttl / 6, 3),
    }


@dataclass
class Watch:
    t0: float = field(default_factory=time.monotonic)
    leader: Leadership | None = None
    changes: list[tuple[float, Leadership | None]] = field(default_factory=list)
    max_claimers: int = 0
    problems: list[str] = field(default_factory=list)

    def t(self) -> float:
        return time.monotonic() - self.t0


def _moved(a: Leadership, b: Leadership) -> str:
    return f"{a.id} -> {b.id}, token {a.token} -> {b.token}, epoch {a.epoch} -> {b.epoch}"


def _say(line: str) -> None:
    print(line, flush=True)


class Demo:
    def __init__(
        self, candidates: int, duration: float, ttl: int, workdir: Path, backend: str = "etcd", *,
        fenced_store: str = "sqlite",
    ) -> None:  # fmt: skip
        self.n = candidates
        self.duration = duration
        self.ttl = ttl
        self.workdir = workdir
        self.backend = backend
        self.store_server: LocalEtcd | LocalZooKeeper = LocalEtcd(1) if backend == "etcd" else LocalZooKeeper(1)
        self.sidecars: list[SidecarProcess] = []
        self.w = Watch()
        self.outcome: list[str] = []
        self.frozen: set[str] = set()  # SIGSTOPped: not asked, they cannot answer
        self.fenced = HarnessStore(fenced_store, workdir)
        # (step, target, start, end, seconds to a successor) in CLOCK_MONOTONIC, for the HTML timeline.
        self.windows: list[tuple[str, str, float, float, float | None]] = []

    @property
    def store(self) -> str:
        return self.fenced.spec

    def verdict(self) -> tuple[bool, str]:
        records = check(sorted(self.workdir.glob("orchestrator-*.jsonl")), self.store, min_terms=2)
        problems = self.w.problems + records.violations
        gap = min(records.gaps) * 1000 if records.gaps else float("nan")
        text = (
            f"{len(self.w.changes)} leaders, at most {self.w.max_claimers} sidecar claimed to lead at once; "
            f"{len(records.intervals)} orchestrator terms, never overlapping (smallest gap {gap:.0f} ms), "
            f"{records.accepted} token-stamped writes accepted, no stale token accepted; {'; '.join(self.outcome)}"
        )
        if problems:
            text = "; ".join(problems)
        ok = not problems and len(self.outcome) == 3 and len(records.intervals) >= 2
        return ok, text

    def thaw(self) -> None:
        for name in self.frozen:
            self.by_id(name).signal(signal.SIGCONT)
        self.frozen.clear()

    def by_id(self, candidate: str) -> SidecarProcess:
        return next(s for s in self.sidecars if s.candidate == candidate)

    async def sample(self, election: Any) -> Leadership | None:
        leader: Leadership | None = await election.leader()
        views = await statuses(self.sidecars, self.frozen)
        claimers = [s for s, _ in claiming(self.sidecars, views)]
        if len(claimers) > 1:
            # Two answers a few milliseconds apart can straddle a handover;
            # a real double leader is still there when asked again.
            claimers = [s for s, _ in claiming(claimers, await statuses(claimers))]
        self.w.max_claimers = max(self.w.max_claimers, len(claimers))
        if len(claimers) > 1:
            self.w.problems.append(f"t+{self.w.t():.1f}s: {', '.join(s.candidate for s in claimers)} all claim to lead")
        if leader != self.w.leader and (leader is None or leader.epoch):
            self.w.leader = leader
            self.w.changes.append((self.w.t(), leader))
            states = "  ".join(
                f"{s.candidate}={self._state_word(s, v)}" for s, v in zip(self.sidecars, views, strict=True)
            )
            who = "no leader" if leader is None else f"leader {leader.id}  token {leader.token}  epoch {leader.epoch}"
            _say(f"  t+{self.w.t():5.1f}s  {who:<42} [{states}]")
        return leader

    def _state_word(self, s: SidecarProcess, view: dict[str, Any] | None) -> str:
        if not s.alive:
            return "killed"
        if s.candidate in self.frozen:
            return "frozen"
        return str((view or {}).get("state", "silent"))

    async def wait_leader(
        self, election: Any, unlike: Leadership | None, timeout: float
    ) -> tuple[Leadership | None, float]:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            leader = await self.sample(election)
            if leader is not None and leader.epoch and (unlike is None or leader.token != unlike.token):
                return leader, time.monotonic() - start
            await asyncio.sleep(0.005)
        return None, timeout

    async def idle(self, election: Any, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await self.sample(election)
            await asyncio.sleep(0.25)

    async def _step(self, election: Any, leader: Leadership, what: str, act: Any, timeout: float) -> Leadership | None:
        """Disrupt the leader with ``act``, wait for its successor, report."""
        _say(f">>> t+{self.w.t():5.1f}s  {what}")
        t = time.monotonic()
        await act(self.by_id(leader.id))
        successor, _ = await self.wait_leader(election, leader, timeout)
        took = time.monotonic() - t
        self.windows.append((what.split(" ", 1)[0], leader.id, t, time.monotonic(), took if successor else None))
        if successor is None:
            self.w.problems.append(f"no successor within {timeout:.0f}s of: {what}")
            return None
        _say(f"    new leader after {took * 1000:.0f} ms: {_moved(leader, successor)}")
        self.outcome.append(f"{what.split(' ', 1)[0]} {took * 1000:.0f} ms")
        if not (successor.token > leader.token and successor.epoch > leader.epoch):
            self.w.problems.append(f"token or epoch did not increase after: {what}")
        return successor

    async def script(self) -> None:
        cfg = Config(backend=self.backend, endpoints=tuple(self.store_server.endpoints), election="demo")
        backend = await connect(cfg, MonotonicClock())

        async def sigkill(s: SidecarProcess) -> None:
            s.signal(signal.SIGKILL)

        async def sigstop(s: SidecarProcess) -> None:
            s.signal(signal.SIGSTOP)
            self.frozen.add(s.candidate)

        async def resign(s: SidecarProcess) -> None:
            await asyncio.to_thread(request, str(s.socket_path), {"type": "resign"})

        steps = [
            (sigkill, "SIGKILL {id}'s sidecar: its watchdog kills the orchestrator at once; the lease runs out"),
            (sigstop, "SIGSTOP {id}'s sidecar: frozen, it cannot revoke; its watchdog kills the orchestrator "
             "by the grant deadline, before the lease can expire"),
            (resign, "resign {id} through its socket: orchestrator stopped first, then the key goes"),
        ]  # fmt: skip
        try:
            election = backend.admin("demo")
            leader, took = await self.wait_leader(election, None, 10)
            if leader is None:
                self.w.problems.append("no leader was elected within 10s")
                return
            _say(f"first leader seen {took:.2f}s after every sidecar was listening on its socket")
            for act, what in steps:
                await self.idle(election, self.duration / (len(steps) + 1))
                nxt = await self._step(election, leader, what.format(id=leader.id), act, self.ttl + 5)
                self.thaw()  # back as a candidate; its grant long expired
                if nxt is None:
                    return
                leader = nxt
            # Long enough for the last orchestrator to act, so its term is checked too.
            await self.idle(election, max(2.0, self.duration - self.w.t()))
        finally:
            self.thaw()
            await backend.close()

    def start(self) -> None:
        what = "etcd" if self.backend == "etcd" else "ZooKeeper"
        _say(f"election-sidecar demo: a throwaway {what} and {self.n} sidecars (TTL {self.ttl}s) in {self.workdir}")
        self.store_server.start()
        _say(f"{what} is up at {self.store_server.endpoints[0]}")
        self.fenced.start()
        _say(f"the orchestrators write to a fenced store: {self.fenced.describe()}")
        for i in range(self.n):
            toy = [
                sys.executable, "-m", "sidecar_harness.toy_orchestrator",
                "--store", self.store, "--record", str(self.workdir / f"orchestrator-{i}.jsonl"),
            ]  # fmt: skip
            s = SidecarProcess(
                f"sidecar-{i}",
                self.workdir,
                self.store_server.endpoints,
                "demo",
                demo_timing(self.ttl),
                backend=self.backend,
                command=toy,
            )
            self.sidecars.append(s.start())
        for s in self.sidecars:
            s.wait_socket()
        self.w = Watch()

    def stop(self) -> None:
        for s in self.sidecars:
            s.stop(timeout=5)
        self.store_server.stop()


def run_demo(
    candidates: int = 3,
    duration: float = 20.0,
    ttl: int = 3,
    keep: bool = False,
    backend: str = "etcd",
    *,
    fenced_store: str = "sqlite",
    report: str = "",
) -> int:
    harness_process()
    workdir = Path(tempfile.mkdtemp(prefix="election-sidecar-demo-"))
    demo = Demo(candidates, duration, ttl, workdir, backend, fenced_store=fenced_store)
    code = 1
    written = None
    try:
        demo.start()
        asyncio.run(demo.script())
        demo.stop()
        ok, text = demo.verdict()
        _say(f"verdict: {'PASS' if ok else 'FAIL'}: {text}")
        code = 0 if ok else 1
        if report:  # now: it reads the logs in the work dir, which goes below
            from sidecar_harness.report_html import write_demo

            written = write_demo(
                report, workdir=workdir, candidates=[s.candidate for s in demo.sidecars], windows=demo.windows,
                ok=ok, verdict=text,
            )  # fmt: skip
    except KeyboardInterrupt:
        _say("interrupted: stopping everything the demo started")
        code = 130
    except (RuntimeError, TimeoutError, OSError, BackendError) as exc:
        _say(f"verdict: FAIL: {exc}")
        for s in demo.sidecars:
            _say(f"  {s.candidate}: {s.tail(3)}")
    finally:
        demo.stop()
        demo.fenced.stop()  # after the verdict: the checker reads the store's history
        if keep:
            _say(f"cleaned up: store and sidecars stopped; logs and records kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            _say("cleaned up: store and sidecars stopped, temporary files removed")
    if written:
        _say(f"HTML timeline written to {written}")
    return code
