"""The watchdog process: kills at the deadline when unfed, at once on EOF, never held up by its log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import sidecar.watchdog
from sidecar import proctree
from tests.helpers import wait_until

WATCHDOG = str(Path(sidecar.watchdog.__file__))


def start_watchdog(stderr: Any = subprocess.PIPE) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-I", "-S", WATCHDOG], stdin=subprocess.PIPE, stderr=stderr)


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def send(wd: subprocess.Popen[bytes], line: str) -> None:
    assert wd.stdin is not None
    wd.stdin.write(line.encode() + b"\n")
    wd.stdin.flush()


def pid_target(pid: int) -> dict[str, Any]:
    return {"kind": "pid", "pid": pid, "start": proctree.start_time(pid)}


def arm(wd: subprocess.Popen[bytes], term_at: float, kill_at: float, *targets: dict[str, Any]) -> None:
    send(wd, "arm " + json.dumps({"term_at": term_at, "kill_at": kill_at, "targets": list(targets)}))


def stubborn() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"], start_new_session=True)


def test_unfed_watchdog_terms_then_kills_at_the_deadline() -> None:
    target = stubborn()
    wd = start_watchdog()
    try:
        t = now()
        arm(wd, t + 0.1, t + 0.4, pid_target(target.pid))
        code = target.wait(5)
        took = now() - t
        assert code == -9 and 0.38 <= took < 2.0
    finally:
        target.kill()
        wd.kill()


def test_several_targets_are_guarded_at_once() -> None:
    targets = [stubborn() for _ in range(3)]
    wd = start_watchdog()
    try:
        t = now()
        arm(wd, t + 0.1, t + 0.3, *(pid_target(p.pid) for p in targets))
        assert [p.wait(5) for p in targets] == [-9, -9, -9]
    finally:
        for p in targets:
            p.kill()
        wd.kill()


def test_feeding_postpones_and_disarm_stops_guarding() -> None:
    target = subprocess.Popen(["sleep", "60"], start_new_session=True)
    wd = start_watchdog()
    try:
        t = now()
        arm(wd, t + 0.3, t + 0.4, pid_target(target.pid))
        end = t + 0.8
        while now() < end:
            t = now()
            send(wd, f"feed {t + 0.3:.6f} {t + 0.4:.6f}")
            time.sleep(0.05)
        assert target.poll() is None, "killed although it was fed"
        send(wd, "disarm")
        time.sleep(0.6)
        assert target.poll() is None, "killed although disarmed"
    finally:
        target.kill()
        wd.kill()


def test_sidecar_death_kills_an_armed_target_at_once() -> None:
    target = subprocess.Popen(["sleep", "60"], start_new_session=True)
    wd = start_watchdog()
    try:
        arm(wd, now() + 60, now() + 60, pid_target(target.pid))
        assert wd.stdin is not None
        wd.stdin.close()  # what the kernel does when the sidecar dies
        assert target.wait(5) == -9
        wait_until(lambda: wd.poll() is not None, 5, what="watchdog exit")
    finally:
        target.kill()
        wd.kill()


def test_a_stalled_stderr_pipe_does_not_delay_the_kill() -> None:
    """stderr is a pipe nobody reads, already full: the watchdog still kills on time."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        while True:
            os.write(w, b"x" * 65536)
    except BlockingIOError:
        pass
    os.set_blocking(w, True)
    target = stubborn()
    wd = start_watchdog(stderr=w)
    try:
        t = now()
        arm(wd, t + 0.1, t + 0.4, pid_target(target.pid))
        code = target.wait(5)
        took = now() - t
        assert code == -9 and took < 2.0
    finally:
        target.kill()
        wd.kill()
        os.close(r)
        os.close(w)


def test_a_reused_pid_is_never_signalled() -> None:
    """A target whose start time no longer matches is a stranger: left alone."""
    target = subprocess.Popen(["sleep", "60"], start_new_session=True)
    wd = start_watchdog()
    try:
        spec = pid_target(target.pid)
        spec["start"] -= 1  # as if the pid now belonged to another process
        arm(wd, now(), now(), spec)
        assert wd.stdin is not None
        wd.stdin.close()
        wait_until(lambda: wd.poll() is not None, 5, what="watchdog exit")
        assert target.poll() is None, "signalled a process that was not its target"
    finally:
        target.kill()
        wd.kill()


def test_garbage_commands_are_logged_not_fatal() -> None:
    wd = start_watchdog()
    try:
        send(wd, "arm {not json")
        send(wd, "arm " + json.dumps({"term_at": 1, "kill_at": 2, "targets": [{"kind": "pgid", "pid": 1}]}))
        send(wd, "feed")
        assert wd.stdin is not None
        wd.stdin.close()
        assert wd.wait(5) == 0
        assert wd.stderr is not None and wd.stderr.read().count(b"watchdog_bad_command") == 3
    finally:
        wd.kill()


def test_a_group_with_child_groups_does_not_hold_up_the_next_targets_kill(tmp_path: Path) -> None:
    """Targets are killed one after another. A killed cgroup that cannot be removed (an
    orchestrator that manages cgroups leaves child groups) must not delay the next SIGKILL:
    compared with the same kill without that group in front, in the same run."""
    if not proctree.cgroup_usable():
        pytest.skip("no writable cgroup v2 group here")
    base = proctree.own_cgroup2_dir()
    assert base is not None
    group = os.path.join(base, f"election-sidecar-test-{os.getpid()}")
    os.mkdir(group)
    os.mkdir(os.path.join(group, "child"))  # the job runner's own group, empty

    def kill_latency(*front: dict[str, Any]) -> float:
        target, wd = stubborn(), start_watchdog()
        try:
            t = now()
            arm(wd, t + 0.1, t + 0.2, *front, pid_target(target.pid))
            assert target.wait(10) == -9
            return now() - (t + 0.2)
        finally:
            target.kill()
            wd.kill()

    try:
        alone = kill_latency()
        behind = kill_latency({"kind": "cgroup", "path": group})
        assert os.path.isdir(group), "the watchdog removed a group that still had a child group"
    finally:
        os.rmdir(os.path.join(group, "child"))
        os.rmdir(group)
    assert behind - alone < sidecar.watchdog.KILL_CONFIRM / 2, (
        f"SIGKILL {behind:.3f}s after the deadline behind a group with child groups, {alone:.3f}s without it"
    )


def test_a_deadline_told_after_it_passed_is_met_at_once_and_not_counted_late() -> None:
    """A sidecar thawed after a freeze can arm for a client that acknowledged the grant it
    still held, whose deadline passed while it was frozen (its first watchdog kill was on
    time). The watchdog kills at once; its punctuality counts from when it was told, and
    the kill line says how late the deadline came. A CI campaign once failed on such a
    line: "watchdog SIGKILL 3.752s after the grant deadline"."""
    target = stubborn()
    wd = start_watchdog()
    try:
        t = now()
        arm(wd, t - 3.8, t - 3.7, pid_target(target.pid))
        assert target.wait(5) == -9
        wd.stdin.close()  # type: ignore[union-attr]
        assert wd.stderr is not None
        lines = [json.loads(x) for x in wd.stderr.read().decode().splitlines() if x.startswith("{")]
        fired = [x for x in lines if x["event"] == "watchdog_fired_kill"]
        assert len(fired) == 1, lines
        assert fired[0]["late_by"] < 0.5, fired[0]
        assert 3.6 < fired[0]["told_after_deadline"] < 5.0, fired[0]
    finally:
        target.kill()
        wd.kill()
        wd.wait()
