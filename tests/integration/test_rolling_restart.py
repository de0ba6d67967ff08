"""Issue 15: a rolling restart of three sidecars does not leave the election
leaderless for long.

Drives what the kubelet does to each pod in turn: SIGTERM the sidecar (it
resigns, then revokes its lease), start the replacement, next. A sampler
reads every sidecar's own view through its socket the whole time; the
longest stretch with no leader is compared with the gap after a SIGKILLed
leader, measured in the same run (which waits out the lease).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sidecar_harness.fleet import SidecarProcess
from tests.helpers import wait_until
from tests.integration.conftest import Fleet

pytestmark = pytest.mark.integration


class Sampler(threading.Thread):
    """Who leads, sampled continuously: (monotonic time, leaders)."""

    def __init__(self, fleet: Fleet) -> None:
        super().__init__(daemon=True)
        self.fleet = fleet
        self.samples: list[tuple[float, list[str]]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            leaders = [s.candidate for s, _ in self.fleet.claimers()]
            self.samples.append((time.monotonic(), leaders))

    def longest_gap(self, since: float, until: float) -> float:
        longest, start = 0.0, None
        for t, leaders in self.samples:
            if t < since or t > until:
                continue
            if not leaders and start is None:
                start = t
            elif leaders and start is not None:
                longest, start = max(longest, t - start), None
        return longest

    def max_leaders(self) -> int:
        return max(len(leaders) for _, leaders in self.samples)


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
        rolling_gap = sampler.longest_gap(t0, t1)

        # The peer: a leader that dies without handing over (SIGKILL) is replaced only after its lease.
        leader, _ = fleet.wait_one_leader()
        t2 = time.monotonic()
        leader.signal(signal.SIGKILL)
        fleet.wait_one_leader(timeout=20, unlike=leader.candidate)
        kill_gap = sampler.longest_gap(t2, time.monotonic() + 1)
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
    assert sampler.max_leaders() <= 1, "two sidecars claimed leadership at once"
    assert kill_gap > 0
    assert rolling_gap * 5 < kill_gap, (rolling_gap, kill_gap)
