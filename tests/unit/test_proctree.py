"""Descendant tracking: the ppid walk, the cgroup2 mount lookup, the mechanism choice."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sidecar import proctree
from tests.helpers import wait_until

ESCAPE = "import os, time\nif os.fork() == 0:\n    os.setsid()\ntime.sleep(60)\n"


def test_descendants_include_a_child_that_left_the_session() -> None:
    proc = subprocess.Popen([sys.executable, "-c", ESCAPE])
    try:
        wait_until(lambda: len(proctree.descendants(proc.pid)) == 1, 5, what="the setsid child")
        (child,) = proctree.descendants(proc.pid)
        assert os.getsid(child) != os.getsid(proc.pid)
        assert proctree.signal_tree(proc.pid, 9) == 1
        wait_until(lambda: not proctree.descendants(proc.pid), 5, what="the child to die")
    finally:
        proc.kill()
        proc.wait()


def test_the_cgroup2_mount_comes_from_mountinfo() -> None:
    mount = proctree.cgroup2_mount()
    if mount is None:
        pytest.skip("no cgroup2 mounted here")
    point, _ = mount
    assert os.path.exists(os.path.join(point, "cgroup.procs"))


def test_the_mechanism_can_be_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(proctree.ENV_MECHANISM, "subreaper")
    assert proctree.choose_mechanism() == "subreaper"
    assert proctree.choose_mechanism("cgroup") == "cgroup"
    monkeypatch.setenv(proctree.ENV_MECHANISM, "pgroup")
    with pytest.raises(ValueError, match="auto, cgroup or subreaper"):
        proctree.choose_mechanism()
