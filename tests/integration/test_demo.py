"""The README's first command, end to end: the demo passes and cleans up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


# Each backend once, and each fenced store once (PostgreSQL: stale writes measured on a real database).
@pytest.mark.parametrize(("backend", "fenced_store"), [("etcd", "sqlite"), ("zookeeper", "postgres")])
def test_demo_fails_over_three_ways_and_leaves_nothing_behind(
    backend: str, fenced_store: str, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue("etcd" if backend == "etcd" else "zookeeper")  # fails in CI if the server is missing
    if fenced_store == "postgres":
        request.getfixturevalue("postgres")
    before = set(Path("/tmp").glob("election-sidecar-*"))
    res = subprocess.run(
        [sys.executable, "-m", "sidecar", "demo", "--backend", backend, "--fenced-store", fenced_store,
         "--duration", "8"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    assert "verdict: PASS" in out
    for step in ("SIGKILL", "SIGSTOP", "resign"):
        assert ">>> " in out and step in out
    assert "no stale token accepted" in out and "never overlapping" in out
    assert set(Path("/tmp").glob("election-sidecar-*")) <= before, "the demo left files behind"
    leftover = subprocess.run(["pgrep", "-f", "sidecar_harness.toy_orchestrator"], capture_output=True, check=False)
    assert leftover.returncode == 1, f"orchestrators still running: {leftover.stdout!r}"
