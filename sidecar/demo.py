"""`election-sidecar demo`: a failover you can watch, on a throwaway etcd.

Starts etcd and N sidecars, prints who leads with which token and epoch,
SIGKILLs the leader's sidecar (the successor takes over after about one
TTL), then asks the new leader to resign (the next one takes over at once),
prints a one-line verdict and removes everything it started, also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.backends import connect
from sidecar.backends.base import Leadership
from sidecar.clock import MonotonicClock
from sidecar.config import Config
from sidecar.fencing.oneshot import request
from sidecar.fleet import SidecarProcess
from sidecar.localetcd import LocalEtcd


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
    def __init__(self, candidates: int, duration: float, ttl: int, workdir: Path) -> None:
        self.n = candidates
        self.duration = duration
        self.ttl = ttl
        self.workdir = workdir
        self.etcd = LocalEtcd(1)
        self.sidecars: list[SidecarProcess] = []
        self.w = Watch()

    def by_id(self, candidate: str) -> SidecarProcess:
        return next(s for s in self.sidecars if s.candidate == candidate)

    async def sample(self, election: Any) -> Leadership | None:
        leader: Leadership | None = await election.leader()
        live = [s for s in self.sidecars if s.alive]
        views = await asyncio.gather(*(asyncio.to_thread(s.status, 1.0) for s in live))
        claimers = [s for s, v in zip(live, views, strict=True) if v and v.get("state") == "leader"]
        if len(claimers) > 1:
            # Two answers a few milliseconds apart can straddle a handover;
            # a real double leader is still there when asked again.
            again = await asyncio.gather(*(asyncio.to_thread(s.status, 1.0) for s in claimers))
            claimers = [s for s, v in zip(claimers, again, strict=True) if v and v.get("state") == "leader"]
        self.w.max_claimers = max(self.w.max_claimers, len(claimers))
        if len(claimers) > 1:
            self.w.problems.append(f"t+{self.w.t():.1f}s: {', '.join(s.candidate for s in claimers)} all claim to lead")
        if leader != self.w.leader and (leader is None or leader.epoch):
            self.w.leader = leader
            self.w.changes.append((self.w.t(), leader))
            states = "  ".join(
                f"{s.candidate}={(v or {}).get('state', 'down') if s.alive else 'killed'}"
                for s, v in zip(self.sidecars, await self._views(), strict=True)
            )
            who = "no leader" if leader is None else f"leader {leader.id}  token {leader.token}  epoch {leader.epoch}"
            _say(f"  t+{self.w.t():5.1f}s  {who:<42} [{states}]")
        return leader

    async def _views(self) -> list[dict[str, Any] | None]:
        return list(
            await asyncio.gather(*(asyncio.to_thread(s.status, 1.0) if s.alive else _none() for s in self.sidecars))
        )

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

    async def script(self) -> list[str]:
        cfg = Config(endpoints=tuple(self.etcd.endpoints), election="demo")
        backend = await connect(cfg, MonotonicClock())
        try:
            election = backend.election("demo")
            first, took = await self.wait_leader(election, None, 10)
            if first is None:
                return ["no leader was elected within 10s"]
            _say(f"first leader seen {took:.2f}s after every sidecar was listening on its socket")
            await self.idle(election, self.duration * 0.25)

            victim = self.by_id(first.id)
            _say(
                f">>> t+{self.w.t():5.1f}s  SIGKILL {victim.candidate} (pid {victim.pid}), the leader: "
                "no goodbye, its lease must run out"
            )
            victim.signal(signal.SIGKILL)
            second, took = await self.wait_leader(election, first, self.ttl + 5)
            if second is None:
                return [f"no successor within {self.ttl + 5}s of killing the leader"]
            _say(f"failover: {_moved(first, second)} in {took:.2f}s (TTL {self.ttl}s)")
            outcome = [f"SIGKILL failover {took:.2f}s"]
            if not (second.token > first.token and second.epoch > first.epoch):
                self.w.problems.append("token or epoch did not increase after the failover")
            await self.idle(election, self.duration * 0.25)

            _say(f">>> t+{self.w.t():5.1f}s  resign {second.id} through its socket: it hands over at once")
            t = time.monotonic()
            await asyncio.to_thread(request, str(self.by_id(second.id).socket_path), {"type": "resign"})
            third, _ = await self.wait_leader(election, second, 5)
            took = time.monotonic() - t
            if third is None:
                return [*outcome, "no successor within 5s of a resign"]
            _say(f"handover: {_moved(second, third)} in {took * 1000:.0f}ms")
            outcome.append(f"resign handover {took * 1000:.0f}ms")
            if not (third.token > second.token and third.epoch > second.epoch):
                self.w.problems.append("token or epoch did not increase after the resign")
            await self.idle(election, max(0.0, self.duration - self.w.t()))
            return outcome
        finally:
            await backend.close()

    def start(self) -> None:
        _say(f"election-sidecar demo: a throwaway etcd and {self.n} sidecars (TTL {self.ttl}s) in {self.workdir}")
        self.etcd.start()
        _say(f"etcd is up at {self.etcd.endpoints[0]} ({self.etcd.binary})")
        for i in range(self.n):
            s = SidecarProcess(f"sidecar-{i}", self.workdir, self.etcd.endpoints, "demo", demo_timing(self.ttl))
            self.sidecars.append(s.start())
        for s in self.sidecars:
            s.wait_socket()
        self.w = Watch()

    def stop(self) -> None:
        for s in self.sidecars:
            s.stop(timeout=5)
        self.etcd.stop()


async def _none() -> None:
    return None


def run_demo(candidates: int = 3, duration: float = 20.0, ttl: int = 3, keep: bool = False) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="election-sidecar-demo-"))
    demo = Demo(candidates, duration, ttl, workdir)
    code = 1
    try:
        demo.start()
        outcome = asyncio.run(demo.script())
        problems = demo.w.problems
        ok = not problems and len(outcome) == 2
        detail = "; ".join(outcome + problems)
        _say(
            f"verdict: {'PASS' if ok else 'FAIL'}: {len(demo.w.changes)} leader changes, "
            f"at most {demo.w.max_claimers} sidecar claimed to lead at any sample; {detail}"
        )
        code = 0 if ok else 1
    except KeyboardInterrupt:
        _say("interrupted: stopping everything the demo started")
        code = 130
    except (RuntimeError, TimeoutError, OSError) as exc:
        _say(f"verdict: FAIL: {exc}")
        for s in demo.sidecars:
            _say(f"  {s.candidate}: {s.tail(3)}")
    finally:
        demo.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
        _say("cleaned up: etcd and sidecars stopped, temporary files removed")
    return code
