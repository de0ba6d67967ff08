"""The README's first command, end to end: the demo passes and cleans up."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
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
    # A private TMPDIR: what the demo leaves behind is told apart from other runs on the machine.
    # Short, so the sockets under it stay within the AF_UNIX path limit.
    private = Path(tempfile.mkdtemp(prefix="es-demo-"))
    private.chmod(0o755)  # the demo's PostgreSQL runs as its own user and must reach its data dir
    res = subprocess.run(
        [sys.executable, "-m", "sidecar", "demo", "--backend", backend, "--fenced-store", fenced_store,
         "--duration", "8"],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "TMPDIR": str(private)},
    )  # fmt: skip
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    assert "verdict: PASS" in out
    for step in ("SIGKILL", "SIGSTOP", "resign"):
        assert ">>> " in out and step in out
    assert "no stale token accepted" in out and "never overlapping" in out
    left = sorted(private.iterdir())
    assert not left, f"the demo left files behind: {left}"
    private.rmdir()
    leftover = subprocess.run(["pgrep", "-f", str(private)], capture_output=True, check=False)
    assert leftover.returncode == 1, f"orchestrators still running: {leftover.stdout!r}"
