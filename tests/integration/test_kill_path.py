"""The process side of the kill path, with real processes and no store.

An orchestrator that ignores SIGTERM and forks a helper that leaves its
process group (setsid, or a daemon's double fork); both write
``pid monotonic_ns`` to a file every 5 ms. The stop path must reach the
helper: after ``stopped_leading`` returns True nothing writes any more, and
the watchdog alone (sidecar SIGKILLed or SIGSTOPped) kills the helper too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecar import proctree
from sidecar.clock import MonotonicClock
from sidecar.config import Config
from sidecar.fencing.server import GrantServer
from sidecar.model import Grant, GuardLost, Reason
from sidecar.supervisor import Supervisor
from tests.helpers import RecordingSink, eventually, wait_until

REPO = Path(__file__).resolve().parents[2]

ESCAPER = r"""
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
out, how = sys.argv[1], sys.argv[2]
if os.fork() == 0:
    os.setsid()
    if how == "double-fork" and os.fork() != 0:
        os._exit(0)
fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
while True:
    os.write(fd, f"{os.getpid()} {time.monotonic_ns()}\n".encode())
    time.sleep(0.005)
"""

# An orchestrator that manages cgroups (a job runner): it moves a worker into a
# child group of its own group; the worker finishes its batch (ignores SIGTERM).
CGROUP_MANAGER = r"""
import os, signal, sys, time
out = sys.argv[1]
me = open("/proc/self/cgroup").read().split("0::", 1)[1].strip()
point = sys.argv[2]
sub = os.path.join(point + me, "worker")
os.mkdir(sub)
if os.fork() == 0:
    with open(os.path.join(sub, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    while True:
        os.write(fd, f"{os.getpid()} {time.monotonic_ns()}\n".encode())
        time.sleep(0.005)
signal.pause()
"""

# A sidecar reduced to its supervisor, in its own process, so a test can
# SIGKILL or SIGSTOP it and leave the watchdog alone on guard.
RUNNER = r"""
import asyncio, json, sys, time
from sidecar.clock import MonotonicClock
from sidecar.config import Config
from sidecar.model import Grant
from sidecar.supervisor import Supervisor
from tests.helpers import RecordingSink

async def main() -> None:
    out, escape, mechanism, valid_for, escaper = sys.argv[1:6]
    sup = Supervisor(
        Config(kill_grace=0.2), [sys.executable, "-c", escaper, out, escape], RecordingSink(), MonotonicClock(),
        on_orchestrator_exit=lambda: None, on_kill=lambda what: None, on_guard_lost=lambda detail: None,
        tree=mechanism,
    )
    await sup.start()
    now = time.clock_gettime(time.CLOCK_MONOTONIC)
    grant = Grant("e", "c", 1, 1, now + float(valid_for), 1)
    await sup.started_leading(grant)
    assert sup.watchdog.proc is not None
    print(json.dumps({"deadline": grant.expires_monotonic, "watchdog": sup.watchdog.proc.pid}), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def mechanisms() -> list[Any]:
    return [
        pytest.param(
            "cgroup",
            marks=pytest.mark.skipif(not proctree.cgroup_usable(), reason="no writable cgroup v2 group here"),
        ),
        "subreaper",
    ]


def writes(path: Path) -> list[tuple[int, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out.append((int(parts[0]), int(parts[1])))
    return out


def writers(path: Path) -> set[int]:
    return {pid for pid, _ in writes(path)}


def gone(pid: int) -> bool:
    st = proctree.proc_stat(pid)
    return st is None or st[0] in ("Z", "X")


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def supervisor(command: list[str], mechanism: str | None, **cfg: Any) -> Supervisor:
    return Supervisor(
        Config(kill_grace=0.3, **cfg),
        command,
        RecordingSink(),
        MonotonicClock(),
        on_orchestrator_exit=lambda: None,
        on_kill=lambda what: None,
        on_guard_lost=lambda detail: None,
        tree=mechanism,
    )


def grant(valid_for: float = 30.0) -> Grant:
    return Grant("e", "c", 7, 3, now() + valid_for, 1)


@pytest.fixture
def reap_writers(tmp_path: Path) -> Iterator[Path]:
    out = tmp_path / "writes"
    yield out
    for pid in writers(out):  # never leave an escaped helper behind, whatever failed
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("escape", ["setsid", "double-fork"])
@pytest.mark.parametrize("mechanism", mechanisms())
async def test_confirmed_stop_means_no_descendant_writes_any_more(
    reap_writers: Path, mechanism: str, escape: str
) -> None:
    out = reap_writers
    sup = supervisor([sys.executable, "-c", ESCAPER, str(out), escape], mechanism)
    await sup.start()
    try:
        g = grant()
        await sup.started_leading(g)
        await eventually(lambda: len(writers(out)) >= 2, 10, what="the orchestrator and its escaped helper writing")
        assert await sup.stopped_leading(g, Reason.RESIGNED) is True
        returned = time.monotonic_ns()
        alive = [pid for pid in writers(out) if not gone(pid)]
        assert not alive, f"stopped_leading confirmed death but {alive} still run"
        assert max(ns for _, ns in writes(out)) < returned
        base = proctree.own_cgroup2_dir()
        if mechanism == "cgroup" and base is not None:
            left = [n for n in os.listdir(base) if n.startswith(f"election-sidecar-{os.getpid()}-")]
            assert not left, f"cgroup left behind: {left}"
    finally:
        await sup.close()


def start_runner(out: Path, escape: str, mechanism: str, valid_for: float) -> tuple[subprocess.Popen[str], Any]:
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(out), escape, mechanism, str(valid_for), ESCAPER],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert runner.stdout is not None
    info = json.loads(runner.stdout.readline())
    return runner, info


@pytest.mark.parametrize("fault", ["SIGKILL", "SIGSTOP"])
@pytest.mark.parametrize("mechanism", mechanisms())
def test_watchdog_alone_kills_the_escaped_helper(reap_writers: Path, mechanism: str, fault: str) -> None:
    out = reap_writers
    runner, info = start_runner(out, "setsid", mechanism, valid_for=1.5)
    try:
        wait_until(lambda: len(writers(out)) >= 2, 10, what="the orchestrator and its escaped helper writing")
        os.kill(runner.pid, getattr(signal, fault))
        # SIGKILL: the watchdog sees EOF and kills at once. SIGSTOP: nobody
        # feeds it, so it kills at the grant's deadline.
        wait_until(lambda: all(gone(p) for p in writers(out)), 10, what="every writer to be killed")
        last = max(ns for _, ns in writes(out)) / 1e9
        # The watchdog's own lateness is measured elsewhere; here: nothing far past the deadline.
        assert last < info["deadline"] + 0.25, f"wrote {last - info['deadline']:.3f}s after the deadline"
    finally:
        runner.kill()
        runner.wait()
        if not gone(info["watchdog"]):
            os.kill(info["watchdog"], signal.SIGKILL)


@pytest.mark.parametrize("mechanism", mechanisms())
def test_the_orchestrator_dies_with_its_watchdog_while_the_sidecar_is_frozen(
    reap_writers: Path, mechanism: str
) -> None:
    """Issue 13, item 1 (second half): sidecar frozen, then its watchdog killed. Nothing is
    left to enforce the deadline, so the orchestrator tree must go with the watchdog
    (the dead man's pipe in sidecar/spawn.py), long before its 30 s grant ends."""
    out = reap_writers
    runner, info = start_runner(out, "setsid", mechanism, valid_for=30.0)
    try:
        wait_until(lambda: len(writers(out)) >= 2, 10, what="the orchestrator and its escaped helper writing")
        os.kill(runner.pid, signal.SIGSTOP)
        killed_at = now()
        os.kill(info["watchdog"], signal.SIGKILL)
        wait_until(lambda: all(gone(p) for p in writers(out)), 10, what="every writer to die with the watchdog")
        last = max(ns for _, ns in writes(out)) / 1e9
        assert last < info["deadline"] - 20, "the orchestrator outlived its watchdog until near its deadline"
        assert last - killed_at < 5
    finally:
        runner.kill()
        runner.wait()


async def test_kill_peer_reaches_a_client_that_hung_up_on_revoke(tmp_path: Path) -> None:
    """A --kill-peer client that closes its socket on revoke and keeps acting is still killed."""
    sock = tmp_path / "grant.sock"
    sup = supervisor([], None, kill_peer=True, socket=str(sock))

    async def status() -> dict[str, Any]:
        return {}

    server = GrantServer(
        str(sock),
        election="e",
        candidate="c",
        version="t",
        log=RecordingSink(),
        on_resign=lambda: False,
        status=status,
        on_acked=sup.peer_acked,
    )
    await server.start()
    await sup.start()
    record = tmp_path / "record.jsonl"
    toy = await asyncio.create_subprocess_exec(
        *[
            sys.executable,
            "-m",
            "sidecar_harness.toy_orchestrator",
            "--socket",
            str(sock),
            "--store",
            str(tmp_path / "store.db"),
            "--record",
            str(record),
            "--ignore-sigterm",
            "--close-socket-on-revoke",
            "--interval",
            "0.005",
        ],
        cwd=REPO,
    )

    def kinds() -> list[str]:
        if not record.exists():
            return []
        return [json.loads(line)["kind"] for line in record.read_text().splitlines() if line.strip()]

    try:
        await eventually(lambda: len(server.peers) == 1, 10, what="the toy to connect")
        g = grant()
        await sup.started_leading(g)
        await server.publish_grant(g)
        await eventually(lambda: "act" in kinds(), 10, what="the toy to act on its grant")
        await server.publish_revoke(Reason.RESIGNED.value)
        await eventually(lambda: "hiding" in kinds(), 10, what="the toy to hang up and keep acting")
        assert await sup.stopped_leading(g, Reason.RESIGNED) is True
        assert gone(toy.pid), "the client that hung up is still running"
    finally:
        if toy.returncode is None:
            toy.kill()
        await toy.wait()
        await sup.close()
        await server.close()


async def test_a_dead_watchdog_is_reported_at_once_and_respawned_by_ready(tmp_path: Path) -> None:
    lost: list[str] = []
    sup = Supervisor(
        Config(kill_grace=0.3),
        [sys.executable, "-c", "import time; time.sleep(60)"],
        RecordingSink(),
        MonotonicClock(),
        on_orchestrator_exit=lambda: None,
        on_kill=lambda what: None,
        on_guard_lost=lost.append,
        tree="subreaper",
    )
    await sup.start()
    try:
        assert sup.watchdog.proc is not None
        os.kill(sup.watchdog.proc.pid, signal.SIGKILL)
        await eventually(lambda: bool(lost), 5, what="on_guard_lost")
        with pytest.raises(GuardLost):
            await sup.started_leading(grant())
        assert await sup.ready() == ""
        assert sup.watchdog.alive
        g = grant()
        await sup.started_leading(g)
        assert await sup.stopped_leading(g, Reason.WATCHDOG_LOST) is True
    finally:
        await sup.close()


async def test_stopped_leading_works_with_the_watchdog_dead(reap_writers: Path) -> None:
    out = reap_writers
    sup = supervisor([sys.executable, "-c", ESCAPER, str(out), "setsid"], "subreaper")
    await sup.start()
    try:
        g = grant()
        await sup.started_leading(g)
        await eventually(lambda: len(writers(out)) >= 2, 10, what="writers")
        assert sup.watchdog.proc is not None
        os.kill(sup.watchdog.proc.pid, signal.SIGKILL)
        await eventually(lambda: not sup.watchdog.alive, 5, what="the watchdog to die")
        assert await sup.stopped_leading(g, Reason.WATCHDOG_LOST) is True
        assert all(gone(p) for p in writers(out))
    finally:
        await sup.close()


async def test_ready_retries_an_unconfirmed_kill_until_it_is_confirmed() -> None:
    class Stubborn:
        """Survives the first SIGKILL (as a process in uninterruptible sleep would)."""

        def __init__(self) -> None:
            self.kills = 0

        def describe(self) -> str:
            return "stubborn"

        def signal(self, sig: int) -> None:
            self.kills += sig == signal.SIGKILL

        async def confirm_dead(self, timeout: float) -> bool:
            await asyncio.sleep(0)
            return self.kills >= 2

        def watchdog_targets(self) -> list[dict[str, Any]]:
            return []

        def release(self) -> None:
            pass

    sup = supervisor([], None)
    sup.unconfirmed = Stubborn()
    assert "stubborn: not confirmed dead" in await sup.ready()
    assert sup.unconfirmed is not None, "forgot a target that may still run"
    assert await sup.ready() == ""
    assert sup.unconfirmed is None


async def test_a_group_left_by_an_earlier_process_with_our_pid_does_not_stop_the_start(tmp_path: Path) -> None:
    """A SIGKILLed sidecar can leave an empty cgroup behind (its tasks still exiting when it
    was removed), and pids are reused: a later sidecar with the same pid must still start
    its orchestrator. Seen in CI: the new leader's start failed with FileExistsError and it
    demoted, so a switchover landed on someone else."""
    if not proctree.cgroup_usable():
        pytest.skip("no cgroup v2 hierarchy of ours to create groups in")
    base = proctree.own_cgroup2_dir()
    assert base is not None
    leftovers = [os.path.join(base, f"election-sidecar-{os.getpid()}-{n}") for n in (1, 2)]
    for path in leftovers:
        os.mkdir(path)
    sup = supervisor([sys.executable, "-c", "import time; time.sleep(60)"], "cgroup")
    try:
        await sup.start()
        g = grant()
        await sup.started_leading(g)  # raised FileExistsError on the old naming
        assert sup.child is not None and sup.child.returncode is None
        assert await sup.stopped_leading(g, Reason.RESIGNED) is True
    finally:
        await sup.close()
        for path in leftovers:
            with contextlib.suppress(OSError):
                os.rmdir(path)


async def test_a_worker_in_a_child_group_is_stopped_before_the_stop_is_confirmed(reap_writers: Path) -> None:
    """The group's own cgroup.procs does not list tasks in its child groups: a stop was
    confirmed, and the watchdog disarmed, while such a worker went on writing (found by
    review: 190 writes after the confirmed stop)."""
    if not proctree.cgroup_usable():
        pytest.skip("no writable cgroup v2 group here")
    mount = proctree.cgroup2_mount()
    assert mount is not None
    out = reap_writers
    sup = supervisor([sys.executable, "-c", CGROUP_MANAGER, str(out), mount[0]], "cgroup")
    await sup.start()
    try:
        g = grant()
        await sup.started_leading(g)
        await eventually(lambda: bool(writers(out)), 10, what="the worker writing")
        assert await sup.stopped_leading(g, Reason.RESIGNED) is True
        returned = time.monotonic_ns()
        alive = [pid for pid in writers(out) if not gone(pid)]
        assert not alive, f"stopped_leading confirmed the stop but worker {alive} in a child group still runs"
        assert max(ns for _, ns in writes(out)) < returned
    finally:
        await sup.close()
        base = proctree.own_cgroup2_dir() or ""
        for name in os.listdir(base) if base else []:  # the worker's group keeps ours from being removed
            if name.startswith(f"election-sidecar-{os.getpid()}-"):
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(base, name, "worker"))
                    os.rmdir(os.path.join(base, name))


STANDBY_ONCE_CRASHING = r"""
import os, sys, time
record, flag = sys.argv[1], sys.argv[2]
if not os.environ.get("ELECTION_TOKEN") and not os.path.exists(flag):
    open(flag, "w").close()
    sys.exit(3)  # the first standby crashes once
with open(record, "a") as f:
    f.write(f"{os.getpid()}\n")
time.sleep(60)
"""


async def test_a_term_won_while_a_crashed_standby_is_replaced_runs_one_orchestrator(tmp_path: Path) -> None:
    """The standby crashes; while its replacement is being spawned the election is won. Found
    by review: begin_term saw the dead standby and spawned the leader's own, the replacement
    spawned too, and one of the two ran untracked (never stopped)."""
    record, flag = tmp_path / "pids", tmp_path / "crashed"
    sup = supervisor([sys.executable, "-c", STANDBY_ONCE_CRASHING, str(record), str(flag)], None, standby=True)
    spawn, calls = sup._spawn, 0
    replacing, go_on = asyncio.Event(), asyncio.Event()

    async def held(grant: Grant | None) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # the replacement of the crashed standby: hold it in flight
            replacing.set()
            await go_on.wait()
        return await spawn(grant)

    sup._spawn = held  # type: ignore[method-assign]
    sup.strategy.spawn = held  # type: ignore[attr-defined]
    await sup.start()

    def recorded() -> list[int]:
        return [int(p) for p in record.read_text().split()] if record.exists() else []

    def running() -> list[int]:
        return [p for p in recorded() if not gone(p)]

    spawning: asyncio.Lock = sup.strategy._spawning  # type: ignore[attr-defined]
    try:
        await asyncio.wait_for(replacing.wait(), 10)
        g = grant()
        term = asyncio.create_task(sup.started_leading(g))
        # The term begins while the replacement is in flight: it waits for the spawn lock.
        await eventually(lambda: bool(spawning._waiters), 10, what="the term waiting on the spawn in flight")
        go_on.set()
        await asyncio.wait_for(term, 10)
        async with spawning:
            pass  # every spawn queued behind the term is done
        # Each orchestrator spawned (all but the first, which crashed before recording) wrote its pid.
        await eventually(lambda: len(recorded()) == calls - 1, 10, what="every spawned orchestrator recorded")
        assert calls == 2, f"{calls} spawns: the term started an orchestrator of its own"
        assert len(running()) == 1, f"{len(running())} orchestrators run for one term: {running()}"
        assert await sup.stopped_leading(g, Reason.RESIGNED) is True
    finally:
        await sup.close()
        for pid in running():
            os.kill(pid, signal.SIGKILL)
