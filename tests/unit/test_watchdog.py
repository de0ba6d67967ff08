"""The watchdog process: kills at the deadline when unfed, at once on EOF."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import sidecar.watchdog
from tests.helpers import wait_until

WATCHDOG = str(Path(sidecar.watchdog.__file__))


def start_watchdog() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-I", WATCHDOG], stdin=subprocess.PIPE, stderr=subprocess.PIPE)


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def send(wd: subprocess.Popen[bytes], line: str) -> None:
    assert wd.stdin is not None
    wd.stdin.write(line.encode() + b"\n")
    wd.stdin.flush()


def test_unfed_watchdog_terms_then_kills_at_the_deadline() -> None:
    target = subprocess.Popen(["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"], start_new_session=True)
    wd = start_watchdog()
    try:
        t = now()
        send(wd, f"arm pgid {target.pid} {t + 0.1:.6f} {t + 0.4:.6f}")
        code = target.wait(5)
        took = now() - t
        assert code == -9 and 0.38 <= took < 2.0
    finally:
        target.kill()
        wd.kill()


def test_feeding_postpones_and_disarm_stops_guarding() -> None:
    target = subprocess.Popen(["sleep", "60"], start_new_session=True)
    wd = start_watchdog()
    try:
        t = now()
        send(wd, f"arm pgid {target.pid} {t + 0.3:.6f} {t + 0.4:.6f}")
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
        send(wd, f"arm pgid {target.pid} {now() + 60:.6f} {now() + 60:.6f}")
        assert wd.stdin is not None
        wd.stdin.close()  # what the kernel does when the sidecar dies
        assert target.wait(5) == -9
        wait_until(lambda: wd.poll() is not None, 5, what="watchdog exit")
    finally:
        target.kill()
        wd.kill()


def test_garbage_commands_are_logged_not_fatal() -> None:
    wd = start_watchdog()
    try:
        send(wd, "arm pgid notanumber 1 2")
        send(wd, "feed")
        assert wd.stdin is not None
        wd.stdin.close()
        assert wd.wait(5) == 0
        assert wd.stderr is not None and b"watchdog_bad_command" in wd.stderr.read()
    finally:
        wd.kill()
