"""What every throwaway store (etcd members, ZooKeeper servers) shares.

A ``LocalStore`` is a set of member processes on loopback ports, each with
a log file in one temporary directory that ``stop()`` removes. The demo,
the fault campaign and the tests only use what is declared here, so they
work on either store without knowing which.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self

from sidecar_harness.peerlinks import PeerLinks

# Where the kernel picks the source ports of outgoing connections (Linux's
# default when /proc cannot say). A listening port picked by binding port 0
# comes from this same range, so a server restarted, or a ZooKeeper election
# listener that rebinds after an error, can find its port taken by some
# client's connection and exit (ZooKeeper: code 14 after three tries).
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_DEFAULT_EPHEMERAL = (32768, 60999)


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's range for outgoing connections' source ports."""
    try:
        lo, hi = (int(x) for x in path.read_text().split())
    except (OSError, ValueError):
        return _DEFAULT_EPHEMERAL
    return (lo, hi) if 0 < lo <= hi <= 65535 else _DEFAULT_EPHEMERAL


def listening_port_range(ephemeral: tuple[int, int]) -> range:
    """The wider stretch of unprivileged ports outside ``ephemeral``; empty if there is none."""
    lo, hi = ephemeral
    below = range(max(1024, lo - 16384), lo)
    above = range(hi + 1, 65536)
    return max(below, above, key=len)


def free_ports(n: int, rng: random.Random | None = None) -> list[int]:
    """``n`` distinct loopback ports that were free a moment ago, outside the ephemeral range.

    Falls back to the kernel's choice (port 0) when no port outside the range
    is free after a few hundred tries.
    """
    rng = rng or random.Random()
    span = listening_port_range(ephemeral_range())
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            socks.append(_bind_free(span, rng))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _bind_free(span: range, rng: random.Random) -> socket.socket:
    for _ in range(300 if span else 0):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", rng.choice(span)))
            return s
        except OSError:
            s.close()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


def log_tail(path: Path, lines: int = 5) -> str:
    """The last lines of a process's log on one line, for error messages."""
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def last_words(path: Path) -> str:
    """Why a store process exited, from its log: its last panic or fatal line, else its last lines."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    marks = ('"level":"panic"', '"level":"fatal"', " FATAL ", " ERROR ", "panic:")
    for line in reversed(lines):
        if any(m in line for m in marks):
            return line[:800]
    return " | ".join(lines[-5:])[:800]


@dataclass
class LocalMember:
    """One store process: its name, its client endpoint and its log."""

    name: str
    client_port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class LocalStore(Protocol):
    """A store the harness can start, fault and stop (etcd or ZooKeeper)."""

    members: Sequence[LocalMember]
    # Fault proxies between members, when the store was started with them.
    links: PeerLinks | None

    @property
    def endpoints(self) -> list[str]: ...

    def start(self, timeout: float = ...) -> Self: ...

    def wait_healthy(self, timeout: float = ..., members: list[LocalMember] | None = None) -> None: ...

    def leader(self) -> LocalMember | None: ...

    def tail(self, m: LocalMember, lines: int = 5) -> str: ...

    def kill(self, m: LocalMember, sig: int = signal.SIGKILL) -> None: ...

    def start_member(self, m: LocalMember) -> None: ...

    def stop(self) -> None: ...


class ProcessGroup:
    """Start/stop/kill shared by the local stores; subclasses spawn members."""

    _tmp: Path | None
    members: Sequence[LocalMember]
    links: PeerLinks | None

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def tail(self, m: LocalMember, lines: int = 5) -> str:
        return log_tail(m.log_path, lines)

    def kill(self, m: LocalMember, sig: int = signal.SIGKILL) -> None:
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                m.proc.wait(timeout=10)

    def _respawn(self, m: LocalMember) -> None:
        raise NotImplementedError

    def start_member(self, m: LocalMember) -> None:
        """Start a killed member again without waiting (quorum may still be missing)."""
        if not m.alive:
            self._respawn(m)

    def stop(self) -> None:
        for m in self.members:
            self.kill(m)
        if self.links is not None:
            self.links.close()
            self.links = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> Self:
        start = getattr(self, "start")  # noqa: B009 - each store's start() takes its own timeout default
        started: Self = start()
        return started

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spawn_logged(argv: list[str], log_path: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a server in its own session with stdout and stderr appended to its log."""
    log = log_path.open("ab")
    try:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd)
    finally:
        log.close()
