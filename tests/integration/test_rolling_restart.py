"""Issue 15: a rolling restart of three sidecars does not leave the election
leaderless for long.

Drives what the kubelet does to each pod in turn: SIGTERM the sidecar (it
resigns, then revokes its lease), start the replacement, next. A sampler
reads every sidecar's own view through its socket the whole time; the
longest stretch with no leader is compared with the gap after a SIGKILLed
leader, measured in the same run (which waits out the lease). Whether two
ever led at once is judged from each sidecar's own log, whose monotonic
stamps bracket its terms; a sampling pass reads sidecars one after another
and can see both ends of a handover that fell between two of its reads.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from sidecar_harness.fleet import SidecarProcess
from tests.helpers import wait_until
from tests.integration.conftest import Fleet, log_events

pytestmark = pytest.mark.integration


class Sampler(threading.Thread):
    """Who leads, sampled continuously: (monotonic time, leaders)."""

    def __init__(self, fleet: Fleet) -> None:
        super().__init__(daemon=True)
        self.fleet = fleet
        self.samples: list[tuple[float, list[str]]] = []
        self.overlaps: list[str] = []
        self.handed_mid_pass = 0  # two claims in one pass, not true together
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            claims = self.fleet.claimers()
            self.samples.append((time.monotonic(), [s.candidate for s, _ in claims]))
            if len(claims) > 1:
                self.judge(claims)

    def judge(self, claims: list[tuple[SidecarProcess, dict[str, Any]]]) -> None:
        """Whether claims read one after another were ever true at once.

        A pass reads the sidecars in turn: one read as leader may have handed
        over before the next was read (with no orchestrator to stop, that takes
        a few ms). Read again after the last claim: one still leading in the
        same term (same token) led throughout, so it led together with the last.
        """
        last, _ = claims[-1]
        together = [last.candidate]
        for s, view in claims[:-1]:
            again = s.status()
            if again and again.get("state") == "leader" and again.get("token") == view.get("token"):
                together.append(s.candidate)
        if len(together) > 1:
            self.overlaps.append(f"{together} (tokens {[v.get('token') for _, v in claims]})")
        else:
            self.handed_mid_pass += 1

    def leader_seen_after(self, since: float) -> float:
        """When this thread first saw a leader after ``since``.

        The test's own wait sees a new leader before this thread's next
        sample does; a gap measured before then would still be open and
        would count as none.
        """
        found: list[float] = []

        def seen() -> bool:
            found[:] = [t for t, leaders in list(self.samples) if t > since and leaders][:1]
            return bool(found)

        wait_until(seen, 5, what="the sampler to see a leader")
        return found[0]

    def longest_gap(self, since: float, until: float) -> float:
        longest, start = 0.0, None
        for t, leaders in self.samples:
            if t < since or t > until:
                continue
            if not leaders and start is None:
                start = t
            elif leaders and start is not None:
                longest, start = max(longest, t - start), None
        assert start is None, f"the leaderless stretch from {start:.3f} had not ended by {until:.3f}"
        return longest


def terms(s: SidecarProcess, died: float = math.inf) -> list[tuple[float, float, str]]:
    """When the sidecar led, from its own log's monotonic stamps.

    It logs becoming leader after its claim committed and leaving before it
    lets the store move on, so two sidecars' terms overlap only if they
    truly led at once. A term still open ends when the process died.
    """
    out, start = [], None
    for e in log_events(s, "state_changed"):
        if e.get("to_state") == "leader":
            start = e["mono"]
        elif e.get("from_state") == "leader" and start is not None:
            out.append((start, e["mono"], s.candidate))
            start = None
    if start is not None:
        out.append((start, died if not s.alive else math.inf, s.candidate))
    return out


def exited(s: SidecarProcess) -> Callable[[], bool]:
    return lambda: not s.alive


def test_rolling_restart_hands_over_within_a_fraction_of_a_ttl(fleet: Fleet, workdir: Path, measure: object) -> None:
    olds = fleet.start(3)
    fleet.wait_one_leader()
    sampler = Sampler(fleet)
    sampler.start()
    try:
        t0 = time.monotonic()
        for i, old in enumerate(olds):
            old.signal(signal.SIGTERM)
            wait_until(exited(old), 15, what=f"{old.candidate} to exit after SIGTERM")
            new = SidecarProcess(f"r{i}", workdir, fleet.server.endpoints, fleet.election).start()
            fleet.sidecars.append(new)
            new.wait_socket()
            fleet.wait_one_leader()
        t1 = time.monotonic()
        rolling_gap = sampler.longest_gap(t0, sampler.leader_seen_after(t1))

        # The peer: a leader that dies without handing over (SIGKILL) is replaced only after its lease.
        leader, _ = fleet.wait_one_leader()
        t2 = time.monotonic()
        leader.signal(signal.SIGKILL)
        killed = time.monotonic()
        new, _ = fleet.wait_one_leader(timeout=20, unlike=leader.candidate)
        kill_gap = sampler.longest_gap(t2, sampler.leader_seen_after(time.monotonic()))
    finally:
        sampler.done.set()
        sampler.join(5)
    assert callable(measure)
    steps = sorted(b[0] - a[0] for a, b in zip(sampler.samples, sampler.samples[1:], strict=False))
    resolution = steps[len(steps) // 2]
    measure(
        "rolling restart of 3 sidecars: longest leaderless gap",
        f"{rolling_gap * 1000:.0f} ms (sampled every {resolution * 1000:.0f} ms)",
    )
    measure("same run, SIGKILLed leader: leaderless gap", f"{kill_gap * 1000:.0f} ms")
    measure("same run, handovers that fell between two reads of one sampling pass", str(sampler.handed_mid_pass))
    assert not sampler.overlaps, f"two sidecars led at once: {sampler.overlaps}"
    led = sorted(t for s in fleet.sidecars for t in terms(s, died=killed if s is leader else math.inf))
    assert {leader.candidate, new.candidate} <= {t[2] for t in led}, led  # the terms around the SIGKILL at least
    for a, b in pairwise(led):
        assert a[1] < b[0], f"{a[2]} led until {a[1]:.6f}, {b[2]} from {b[0]:.6f}"
    assert kill_gap > 0
    assert rolling_gap * 5 < kill_gap, (rolling_gap, kill_gap)
