"""Findings of a hostile review of the kill path, each a regression test.

1/2. The spawn wrapper killed by someone else (subreaper mode): its orphans
     must still be found (they come to the sidecar, a subreaper too) by the
     stop path and by the watchdog, and the dead wrapper's pid is never walked
     again (a stranger may get it).
3.   The dead man's pipe kills a forking tree until it is empty, not in one pass.
4.   A --kill-peer client whose ack arrives after the stop began is stopped too;
     one whose ack arrives after the stop ended is killed at once.
5.   A standby that died just before the sidecar won is replaced, not led with.
7.   ELECTION_SIDECAR_KILL_TREE, documented, is a known setting.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sidecar import proctree
from sidecar.config import unknown_env
from sidecar.model import Reason
from tests.helpers import eventually, wait_until
from tests.integration.test_kill_path import (
    ESCAPER,
    REPO,
    gone,
    grant,
    reap_writers,  # noqa: F401 - a fixture
    supervisor,
    writers,
    writes,
)

# A sidecar reduced to its supervisor (subreaper mode), in its own process: it
# kills its own orchestrator's wrapper as someone else would, then either stops
# the term and reports, or (``freeze``) waits to be frozen so the watchdog acts.
WRAPPER_KILLED = r"""
import asyncio, json, os, signal, sys, time
from sidecar.clock import MonotonicClock
from sidecar.config import Config
from sidecar.model import Grant, Reason
from sidecar.supervisor import Supervisor
from tests.helpers import RecordingSink

async def main() -> None:
    out, valid_for, then, escaper = sys.argv[1:5]
    sup = Supervisor(
        Config(kill_grace=0.3), [sys.executable, "-c", escaper, out, "setsid"], RecordingSink(), MonotonicClock(),
        on_orchestrator_exit=lambda: None, on_kill=lambda what: None, on_guard_lost=lambda detail: None,
        tree="subreaper", adopt_orphans=True,
    )
    await sup.start()
    now = time.clock_gettime(time.CLOCK_MONOTONIC)
    grant = Grant("e", "c", 1, 1, now + float(valid_for), 1)
    await sup.started_leading(grant)
    tree = sup.strategy.child()
    while len({line.split()[0] for line in open(out)} if os.path.exists(out) else ()) < 2:
        await asyncio.sleep(0.01)
    os.kill(tree.proc.pid, signal.SIGKILL)  # someone else kills the spawn wrapper
    await tree.proc.wait()
    info = {"deadline": grant.expires_monotonic, "watchdog": sup.watchdog.proc.pid, "wrapper": tree.proc.pid}
    if then == "stop":
        info["confirmed"] = await sup.stopped_leading(grant, Reason.RESIGNED)
    print(json.dumps(info), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def run_wrapper_killed(out: Path, valid_for: float, then: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    runner = subprocess.Popen(
        [sys.executable, "-c", WRAPPER_KILLED, str(out), str(valid_for), then, ESCAPER],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert runner.stdout is not None
    return runner, json.loads(runner.stdout.readline())


def test_a_killed_wrapper_leaves_no_orphan_acting_after_a_confirmed_stop(reap_writers: Path) -> None:  # noqa: F811
    out = reap_writers
    runner, info = run_wrapper_killed(out, 30.0, "stop")
    try:
        assert info["confirmed"] is True, "the stop could not confirm the orphans' death"
        returned = time.monotonic_ns()
        alive = [pid for pid in writers(out) if not gone(pid)]
        assert not alive, f"stop confirmed but {alive} still run"
        assert max(ns for _, ns in writes(out)) < returned
    finally:
        runner.kill()
        runner.wait()


def test_the_watchdog_finds_a_killed_wrappers_orphans_under_a_frozen_sidecar(reap_writers: Path) -> None:  # noqa: F811
    out = reap_writers
    runner, info = run_wrapper_killed(out, 1.5, "freeze")
    try:
        os.kill(runner.pid, signal.SIGSTOP)
        wait_until(lambda: all(gone(p) for p in writers(out)), 10, what="the watchdog to kill the orphans")
        last = max(ns for _, ns in writes(out)) / 1e9
        assert last < info["deadline"] + 0.25, f"wrote {last - info['deadline']:.3f}s after the deadline"
    finally:
        runner.kill()
        runner.wait()
        if not gone(info["watchdog"]):
            os.kill(info["watchdog"], signal.SIGKILL)


FORKER = r"""
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
out = sys.argv[1]
while True:  # a worker every 3 ms, each writing until killed
    if os.fork() == 0:
        fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        while True:
            os.write(fd, f"{os.getpid()} {time.monotonic_ns()}\n".encode())
            time.sleep(0.01)
    time.sleep(0.003)
"""


def test_the_dead_mans_pipe_kills_a_forking_tree_until_it_is_empty(reap_writers: Path) -> None:  # noqa: F811
    out = reap_writers
    guard_r, guard_w = os.pipe()
    wrapper = subprocess.Popen(
        [sys.executable, "-I", "-S", str(REPO / "sidecar/spawn.py"), "--guard", str(guard_r), "subreaper",
         "--", sys.executable, "-c", FORKER, str(out)],
        pass_fds=(guard_r,), start_new_session=True,
    )  # fmt: skip
    os.close(guard_r)
    try:
        wait_until(lambda: len(writers(out)) >= 20, 10, what="the orchestrator to fork workers")
        os.close(guard_w)  # the watchdog died
        wait_until(lambda: wrapper.poll() is not None, 10, what="the wrapper to end with its tree")
        alive = [pid for pid in writers(out) if not gone(pid)]
        assert not alive, f"{len(alive)} workers survived the dead man's pipe"
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
        wrapper.wait()


async def test_a_late_ack_joins_the_stop_and_one_after_it_is_killed(tmp_path: Path) -> None:
    sup = supervisor([], None, kill_peer=True, socket=str(tmp_path / "g.sock"))
    stubborn = [
        sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
        "time.sleep(60)",
    ]  # fmt: skip
    procs = [await asyncio.create_subprocess_exec(*stubborn, stdout=asyncio.subprocess.PIPE) for _ in range(3)]
    for p in procs:  # SIGTERM is ignored from here on
        assert p.stdout is not None and await p.stdout.readline() == b"ready\n"
    first, late, after = procs
    await sup.start()
    try:
        g = grant()
        await sup.started_leading(g)
        sup.peer_acked(first.pid)
        stopping = asyncio.create_task(sup.stopped_leading(g, Reason.RESIGNED))
        # The stop has begun (SIGTERM sent, waiting out kill_grace), not ended.
        await eventually(lambda: sup._stopping_target is not None, 5, what="the stop to begin")
        assert not stopping.done()
        sup.peer_acked(late.pid)  # its ack was read only now
        assert await stopping is True
        assert gone(first.pid) and gone(late.pid), "a client whose ack came during the stop survived it"
        sup.peer_acked(after.pid)  # an ack of the ended term
        await eventually(lambda: gone(after.pid), 5, what="the late acker to be killed")
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
            await p.wait()
        await sup.close()


async def test_a_standby_that_died_before_the_win_is_replaced(tmp_path: Path) -> None:
    sup = supervisor([sys.executable, "-c", "import time; time.sleep(60)"], "subreaper", standby=True)
    await sup.start()
    try:
        tree = sup.strategy.child()
        assert tree is not None
        # The standby crashes (its wrapper then exits by itself). Never kill a
        # wrapper in this process: see Supervisor's adopt_orphans.
        await eventually(lambda: bool(proctree.descendants(tree.pid)), 5, what="the standby to start")
        for pid in proctree.descendants(tree.pid):
            os.kill(pid, signal.SIGKILL)
        await tree.proc.wait()
        await sup.started_leading(grant())
        leading = sup.strategy.child()
        assert leading is not None and leading.proc.returncode is None, "leading with a dead standby"
    finally:
        await sup.close()


def test_the_documented_kill_tree_setting_is_known() -> None:
    assert unknown_env({"ELECTION_SIDECAR_KILL_TREE": "subreaper"}) == []


async def test_a_process_with_other_children_never_walks_them_as_orphans() -> None:
    """Only the sidecar adopts a killed wrapper's orphans: in a process with other
    children (here the test runner, with its own bystander child) a killed wrapper
    must not make every other child of ours look like the orchestrator's orphan."""
    bystander = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")
    sup = supervisor([sys.executable, "-c", "import time; time.sleep(60)"], "subreaper")
    await sup.start()
    try:
        await sup.started_leading(grant())
        tree = sup.strategy.child()
        assert tree is not None
        tree.proc.kill()  # the wrapper dies by a signal
        await tree.proc.wait()
        await sup.stopped_leading(grant(), Reason.RESIGNED)
        await sup.close()
        assert bystander.returncode is None and not gone(bystander.pid), (
            "a child of ours that was never the orchestrator's was killed"
        )
    finally:
        # Only what this test started: never "every child of the test runner",
        # which holds the session's etcd and ZooKeeper servers too. The killed
        # wrapper's orphan went to init and ends with its sleep.
        if bystander.returncode is None:
            bystander.kill()
        await bystander.wait()
