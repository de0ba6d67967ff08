"""Deadline enforcement that lives outside the sidecar's process.

The sidecar starts this as ``python -I -S watchdog.py`` with a pipe on its
stdin and feeds it after every acknowledged renewal. It needs nothing but the
standard library and runs in its own session (a signal to the sidecar's
process group does not reach it). Commands, one per line:

* ``arm {"term_at": T, "kill_at": K, "targets": [...]}``: guard these
  targets (replacing any before); times are CLOCK_MONOTONIC seconds. A
  target is ``{"kind": "cgroup", "path": P}`` (every process in a cgroup v2
  group), ``{"kind": "tree", "pid": N, "start": S}`` (every descendant of
  the spawn wrapper N, a child subreaper) or ``{"kind": "pid", "pid": N,
  "start": S}`` (one process we did not start). ``start`` is the process's
  start time from /proc: a pidfd is opened at once and kept only if it still
  matches, so pid reuse cannot make us signal a stranger.
* ``feed <term_at> <kill_at>``: a renewal moved the deadline.
* ``disarm``: the targets stopped (confirmed by the sidecar); guard nothing.

If the sidecar stops feeding (frozen by SIGSTOP, stuck), the watchdog sends
SIGTERM at ``term_at`` and SIGKILL at ``kill_at``, the grant's own deadline,
to every descendant. If the sidecar dies (EOF on stdin), the targets are
SIGKILLed at once: nobody is left to renew, so nothing they do is backed by a
lease. A deadline that had already passed when it was given (the sidecar,
thawed, arms for a client that acknowledged the grant it still held) is met
at once; ``late_by`` in the kill's log line counts from the deadline or from
when we were told of it, whichever came later, and ``told_after_deadline``
says by how much a deadline came late.

Signal first, log after, and never block on the log: a log line goes to a
bounded queue drained by a thread, and is dropped when the queue is full, so
a stalled stderr pipe (shared with the sidecar) cannot delay a kill.

Every pod runs one of these for as long as its sidecar leads, so it imports
only what it uses: no importlib.util, threading or contextlib (``_thread``
and plain try/except do the same here), 0.4 MiB of RSS between them.
"""

from __future__ import annotations

import _thread
import json
import os
import select
import signal
import sys
import time
from collections import deque
from types import ModuleType

KILL_CONFIRM = 2.0  # seconds to keep re-killing a tree until it is empty


def _load_proctree() -> ModuleType:
    # -I keeps our directory off sys.path: put it there just for this import
    # (the sibling, not the package, which would pull in its __init__).
    # Nothing in it shadows a standard module, and it is taken off at once.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        return __import__("proctree")
    finally:
        del sys.path[0]


proctree = _load_proctree()


def _now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class Log:
    """Log lines to stderr without ever blocking the caller."""

    def __init__(self, fd: int = 2, capacity: int = 256) -> None:
        self.fd = fd
        self.lines: deque[bytes] = deque()
        self.capacity = capacity
        self.dropped = 0
        self.mutex = _thread.allocate_lock()  # guards lines, dropped, started
        # Held while the writer may sleep; released by __call__ to wake it. A
        # release that finds it already free just means the writer has work.
        self.wake = _thread.allocate_lock()
        self.wake.acquire()
        self.started = False  # the writer thread, started on first use

    def __call__(self, event: str, **fields: object) -> None:
        fields.update(event=event, level="warning" if event.startswith("watchdog_fired") else "info")
        fields.update(component="watchdog", mono=round(_now(), 6))
        # Same shape as the sidecar's structlog lines, so one parser reads both.
        fields["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self.mutex:
            if not self.started:
                _thread.start_new_thread(self._drain, ())  # dies with the process (os._exit)
                self.started = True
            if len(self.lines) >= self.capacity:
                self.dropped += 1
                return
            if self.dropped:
                self.lines.append(json.dumps({"event": "watchdog_log_dropped", "lines": self.dropped}).encode() + b"\n")
                self.dropped = 0
            self.lines.append(json.dumps(fields).encode() + b"\n")
        if self.wake.locked():
            try:  # noqa: SIM105 (no contextlib here, see the module doc)
                self.wake.release()
            except RuntimeError:
                pass  # another caller released it first: the writer wakes either way

    def _drain(self) -> None:
        while True:
            with self.mutex:
                line = self.lines.popleft() if self.lines else None
            if line is None:
                self.wake.acquire()  # until __call__ adds a line (at once if it did meanwhile)
                continue
            try:  # noqa: SIM105 (no contextlib here, see the module doc)
                os.write(self.fd, line)  # may block for ever on a stalled pipe: only this thread waits
            except OSError:
                pass

    def flush(self, timeout: float) -> None:
        """Give the writer up to ``timeout`` to empty the queue (at exit)."""
        end = _now() + timeout
        while _now() < end:
            with self.mutex:
                if not self.lines:
                    return
            time.sleep(0.005)


log = Log()


class Target:
    def __init__(self, spec: dict[str, int | float | str]) -> None:
        self.kind = str(spec["kind"])
        self.fd: int | None = None
        self.path = ""
        self.pid = 0
        self.orphans_to = 0
        if self.kind == "cgroup":
            self.path = str(spec["path"])
            self.cgroup = proctree.Cgroup(self.path)
        elif self.kind in ("tree", "pid"):
            self.pid = int(spec["pid"])
            self.orphans_to = int(spec.get("orphans_to", 0))
            # None: already gone (or a stranger now has its pid): nothing to guard.
            self.fd = proctree.open_pidfd(self.pid, int(spec["start"]))
        else:
            raise ValueError(f"unknown target kind {self.kind!r}")

    def name(self) -> str:
        return self.path or f"{self.kind} {self.pid}"

    def signal(self, sig: int) -> None:
        """One pass: never waits, so the next target is signalled at once (see settle)."""
        if self.kind == "cgroup":
            self.cgroup.signal(sig)  # SIGKILL: cgroup.kill, forks in flight included
        elif self.fd is not None and self.kind == "tree":
            found = self._tree_root()
            if found is not None:
                proctree.signal_tree(found[0], sig, found[1])
        elif self.fd is not None:
            proctree.pidfd_signal(self.fd, sig)

    def settle(self) -> None:
        """After every target had its SIGKILL: make sure, and tidy up (may take up to KILL_CONFIRM)."""
        if self.kind == "cgroup":
            # The sidecar may be dead and never remove the group: once empty, we
            # do. Exiting tasks keep it busy a moment after cgroup.procs is
            # empty; a group with child groups never could be removed, so wait
            # for the tasks ("populated 0", which counts every task below the
            # group, exiting ones too), not for rmdir.
            end = _now() + KILL_CONFIRM
            while self.cgroup.populated() and _now() < end:
                time.sleep(0.005)
            self.cgroup.remove()
        elif self.fd is not None and self.kind == "tree":
            found = self._tree_root()
            if found is not None:
                proctree.kill_tree(found[0], KILL_CONFIRM, found[1])  # re-kills forks in flight

    def _tree_root(self) -> tuple[int, frozenset[int]] | None:
        """Where the tree hangs (root, pids to leave out), or None when it is out of reach."""
        assert self.fd is not None
        # The wrapper itself is left alone: it exits once its tree is empty.
        if not proctree.pidfd_exited(self.fd):
            return self.pid, frozenset()
        # The wrapper is gone. Never walk its pid: a stranger may have it.
        # If the sidecar adopts orphans (it says so in the spec), a killed
        # wrapper's orphans went to it: the tree is now the sidecar's
        # descendants but us. Otherwise, or if the sidecar is gone too
        # (they went to init), they are out of our reach.
        if not self.orphans_to or os.getppid() != self.orphans_to:
            return None
        return self.orphans_to, frozenset({os.getpid()})

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Guard:
    def __init__(self) -> None:
        self.targets: list[Target] = []
        self.term_at = 0.0
        self.kill_at = 0.0
        self.told_at = 0.0  # when the current deadline reached us
        self.termed = False

    @property
    def armed(self) -> bool:
        return bool(self.targets)

    def send(self, sig: int) -> list[str]:
        """Signal every target; returns their names (for the log line, written after)."""
        errors = []
        for t in self.targets:
            try:
                t.signal(sig)
            except OSError as exc:
                errors.append(f"{t.name()}: {exc}")
        if sig == signal.SIGKILL:
            # Only now the waits: a target stuck in uninterruptible sleep must
            # not hold up the SIGKILL of the ones after it.
            for t in self.targets:
                try:
                    t.settle()
                except OSError as exc:
                    errors.append(f"{t.name()}: {exc}")
        return errors

    def clear(self) -> None:
        for t in self.targets:
            t.close()
        self.targets = []

    def handle(self, line: str) -> None:
        verb, _, rest = line.strip().partition(" ")
        if not verb:
            return
        if verb == "arm":
            spec = json.loads(rest)
            term_at, kill_at = float(spec["term_at"]), float(spec["kill_at"])
            targets = [Target(t) for t in spec["targets"]]
            self.clear()
            self.targets, self.term_at, self.kill_at, self.termed = targets, term_at, kill_at, False
            self.told_at = _now()
            log("watchdog_armed", targets=[t.name() for t in targets], kill_at=kill_at)
        elif verb == "feed":
            parts = rest.split()
            if len(parts) != 2:
                raise ValueError("feed needs term_at kill_at")
            self.term_at, self.kill_at = float(parts[0]), float(parts[1])
            self.told_at = _now()
            self.termed = False
        elif verb == "disarm" and not rest:
            self.clear()
        else:
            raise ValueError("unknown command")

    def tick(self) -> None:
        if not self.armed:
            return
        now = _now()
        if now >= self.kill_at:
            names = [t.name() for t in self.targets]
            errors = self.send(signal.SIGKILL)
            # Late against what we could have met: a deadline told to us after
            # it passed is met at once, and says so separately.
            late = round(now - max(self.kill_at, self.told_at), 6)
            told_late = round(max(0.0, self.told_at - self.kill_at), 6)
            self.clear()
            told = {"told_after_deadline": told_late} if told_late else {}
            log("watchdog_fired_kill", targets=names, late_by=late, **told, errors=errors)
        elif now >= self.term_at and not self.termed:
            errors = self.send(signal.SIGTERM)
            self.termed = True
            log("watchdog_fired_term", targets=[t.name() for t in self.targets], errors=errors)

    def timeout(self) -> float | None:
        if not self.armed:
            return None
        nxt = self.kill_at if self.termed else min(self.term_at, self.kill_at)
        return max(0.0, nxt - _now())


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only the sidecar's EOF ends us
    guard = Guard()
    fd = sys.stdin.fileno()
    buf = b""
    while True:
        ready, _, _ = select.select([fd], [], [], guard.timeout())
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                if guard.armed:
                    names = [t.name() for t in guard.targets]
                    errors = guard.send(signal.SIGKILL)
                    guard.clear()
                    log("watchdog_fired_sidecar_gone", targets=names, errors=errors)
                log.flush(0.5)
                return 0
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode(errors="replace")
                try:
                    guard.handle(text)
                except (ValueError, KeyError, TypeError) as exc:
                    log("watchdog_bad_command", line=text[:200], error=str(exc))
        guard.tick()


if __name__ == "__main__":
    code = main()
    # A daemon log thread stuck on a stalled pipe must not hold the exit.
    os._exit(code)
