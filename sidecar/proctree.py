"""Every descendant of the orchestrator, not a process group.

A child can ``setsid()`` or double-fork out of any process group, so the
stop path tracks the whole tree by one of two mechanisms:

* ``cgroup``: a cgroup v2 group per orchestrator. The spawn wrapper
  (``sidecar/spawn.py``) writes its own pid into ``cgroup.procs`` and then
  execs the command, so every process forked from then on is born inside.
  ``cgroup.kill`` SIGKILLs the whole group atomically, forks in flight
  included; death is confirmed when ``cgroup.procs`` is empty.
* ``subreaper``: where no group can be created (a Kubernetes pod mounts the
  cgroup fs read-only), the spawn wrapper makes itself a child subreaper
  (``PR_SET_CHILD_SUBREAPER``), starts the command as its child and reaps.
  Orphans reparent to the wrapper instead of init, so "the orchestrator" is
  exactly the wrapper's descendants, found by walking the ppid field of
  ``/proc/*/stat``. The wrapper exits only once it has no child left, so its
  exit confirms the whole tree is gone.

This module is standard library only: the watchdog (run with ``python -I -S``)
loads it as a sibling file, so both ends kill by the same code. It sticks to
modules the watchdog loads anyway (plain try/except, not contextlib).
"""

from __future__ import annotations

import os
import select
import signal
import time

PR_SET_CHILD_SUBREAPER = 36
MECHANISMS = ("cgroup", "subreaper")
ENV_MECHANISM = "ELECTION_SIDECAR_KILL_TREE"  # auto (default) | cgroup | subreaper


def set_child_subreaper() -> None:
    """Make this process the reaper of its orphaned descendants."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime in clock ticks) of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    fields = raw[raw.rfind(")") + 2 :].split()
    if len(fields) < 20:
        return None
    return fields[0], int(fields[1]), int(fields[19])


def start_time(pid: int) -> int | None:
    st = proc_stat(pid)
    return st[2] if st is not None else None


def _live(state: str) -> bool:
    return state not in ("Z", "X", "x")


def descendants(root: int, exclude: frozenset[int] = frozenset()) -> list[int]:
    """Live (non-zombie) descendants of ``root``, from the ppid field of every process,
    leaving out the processes in ``exclude`` and everything below them."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = proc_stat(int(name))
        if st is not None and _live(st[0]):
            children.setdefault(st[1], []).append(int(name))
    out: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child in exclude:
                continue
            out.append(child)
            todo.append(child)
    return out


def open_pidfd(pid: int, expect_start: int | None = None) -> int | None:
    """A pidfd for ``pid``, or None if it is gone or is no longer the process we meant.

    The pidfd is opened before the start time is compared: if it still
    matches, the fd names the process we meant and pid reuse cannot fool a
    later signal sent through it.
    """
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if expect_start is not None and start_time(pid) != expect_start:
        os.close(fd)
        return None
    return fd


def pidfd_signal(fd: int, sig: int) -> None:
    try:  # noqa: SIM105 (no contextlib: the watchdog loads this)
        signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        pass


def pidfd_exited(fd: int) -> bool:
    """True once the process behind ``fd`` has exited (a pidfd polls readable then)."""
    ready, _, _ = select.select([fd], [], [], 0)
    return bool(ready)


def signal_tree(root: int, sig: int, exclude: frozenset[int] = frozenset()) -> int:
    """Send ``sig`` to every live descendant of ``root``; how many were signalled.

    Each pid is opened as a pidfd and only signalled if it is still a child of
    ``root`` or of a process we already found: a pid reused by a stranger
    between the scan and the signal is left alone.
    """
    tree = {root}
    sent = 0
    for pid in descendants(root, exclude):
        fd = open_pidfd(pid)
        if fd is None:
            continue
        try:
            st = proc_stat(pid)
            if st is None or st[1] not in tree:
                continue
            tree.add(pid)
            pidfd_signal(fd, sig)
            sent += 1
        finally:
            os.close(fd)
    return sent


def kill_tree(root: int, timeout: float, exclude: frozenset[int] = frozenset()) -> bool:
    """SIGKILL every descendant of ``root`` until none is left (blocking; for the watchdog)."""
    deadline = time.monotonic() + timeout
    while signal_tree(root, signal.SIGKILL, exclude):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# -- cgroup v2 -------------------------------------------------------------


def cgroup2_mount() -> tuple[str, str] | None:
    """(mount point, root inside the hierarchy) of the cgroup2 mount, from mountinfo.

    Never a fixed path: a hybrid host mounts v2 beside the v1 controllers
    (e.g. /sys/fs/cgroup/unified), a pure v2 host at /sys/fs/cgroup.
    """
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        if right.split()[:1] == ["cgroup2"]:
            fields = left.split()
            return _unescape(fields[4]), _unescape(fields[3])
    return None


def _unescape(s: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal.
    for code, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        s = s.replace(code, ch)
    return s


def own_cgroup2_dir() -> str | None:
    """Our own cgroup v2 directory, where we may create child groups."""
    mount = cgroup2_mount()
    if mount is None:
        return None
    point, root = mount
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            path = line[3:]
            rel = os.path.relpath(path, root) if root != "/" else path.lstrip("/")
            if rel.startswith(".."):
                return None  # our cgroup lies outside what is mounted here
            return os.path.join(point, rel) if rel not in (".", "") else point
    return None


class Cgroup:
    """One cgroup v2 group holding one orchestrator and all its descendants."""

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def create(cls, name: str) -> Cgroup:
        """Create a group under our own; OSError when we may not (read-only fs, no v2)."""
        base = own_cgroup2_dir()
        if base is None:
            raise OSError("no cgroup v2 hierarchy of ours is mounted")
        path = os.path.join(base, name)
        os.mkdir(path)
        if not os.path.exists(os.path.join(path, "cgroup.kill")):
            os.rmdir(path)
            raise OSError(f"{path}: no cgroup.kill (kernel before 5.14)")
        return cls(path)

    def procs(self) -> list[int]:
        """Every task in the group and in the groups below it: an orchestrator
        that manages cgroups (a job runner) moves its workers into child groups,
        which the group's own cgroup.procs does not list."""
        out: list[int] = []
        for where, _, _ in os.walk(self.path):
            try:
                with open(os.path.join(where, "cgroup.procs")) as f:
                    out += [int(p) for p in f.read().split()]
            except FileNotFoundError:
                continue
        return out

    def populated(self) -> bool:
        """Whether a task still counts in the group or below it (exiting ones too: rmdir waits for them)."""
        try:
            with open(os.path.join(self.path, "cgroup.events")) as f:
                return "populated 1" in f.read()
        except FileNotFoundError:
            return False

    def kill(self) -> None:
        """SIGKILL every member, forks in flight included."""
        try:
            with open(os.path.join(self.path, "cgroup.kill"), "w") as f:
                f.write("1")
        except FileNotFoundError:
            pass

    def signal(self, sig: int) -> None:
        if sig == signal.SIGKILL:
            self.kill()
            return
        for pid in self.procs():
            # A member read from cgroup.procs a moment ago: open a pidfd and
            # check it is still a member, so a reused pid is never signalled.
            fd = open_pidfd(pid)
            if fd is None:
                continue
            try:
                if pid in self.procs():
                    pidfd_signal(fd, sig)
            finally:
                os.close(fd)

    def remove(self) -> bool:
        """Remove the group if it is empty; False if it is not (yet).

        Right after its last member died the kernel may still count tasks that
        are exiting (EBUSY): the supervisor retries such a group at its next
        spawn and at close, the watchdog waits for ``populated 0``.
        """
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True


def cgroup_usable() -> bool:
    """Whether we may create a group of our own here (tries, then removes it)."""
    try:
        Cgroup.create(f"election-sidecar-probe-{os.getpid()}").remove()
    except OSError:
        return False
    return True


def choose_mechanism(requested: str | None = None) -> str:
    """cgroup where we may create a group, else subreaper; ``requested`` or the env var overrides."""
    want = requested or os.environ.get(ENV_MECHANISM, "auto") or "auto"
    if want in MECHANISMS:
        return want
    if want != "auto":
        raise ValueError(f"{ENV_MECHANISM}={want!r}: expected auto, cgroup or subreaper")
    return "cgroup" if cgroup_usable() else "subreaper"
