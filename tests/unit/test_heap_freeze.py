"""The heap start-up built is frozen before the election starts.

A full collection walked the ~38,000 objects of the sidecar's modules,
gRPC's and kazoo's: 8-16 ms per collection measured in the switchover
benchmark's sidecars, landing on whatever they did then, a handover's
critical path included (bench/RESULTS.md). Frozen, the same collections took
0.2-1.5 ms.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest

from sidecar.app import Sidecar
from sidecar.config import Config
from sidecar.elector import Elector
from tests.helpers import RecordingSink


async def test_the_start_up_heap_is_frozen_before_the_election_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))

    async def run(self: Any) -> None:
        calls.append("election")

    monkeypatch.setattr(Elector, "run", run)
    cfg = Config(backend="memory", election="freeze", candidate_id="a", socket="", http_addr="")
    await Sidecar(cfg, RecordingSink()).run()
    assert calls == ["freeze", "election"]
