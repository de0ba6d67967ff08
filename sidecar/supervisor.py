"""Starting, stopping and, when it must, killing the orchestrator.

Targets, chosen by flags:

* gate mode (``run -- CMD``): CMD starts only while we lead, in its own
  process group, with ELECTION_TOKEN / _EPOCH / _ID / _SOCKET / _NAME set;
* standby mode (``--standby -- CMD``): CMD always runs and learns from the
  socket; after a loss it is stopped like a gated one and started again;
* ``--kill-pidfile PATH``: a process we did not start, named by a pid file;
* ``--kill-peer``: the processes connected to the grant socket that have
  acknowledged a grant (their pids come from SO_PEERCRED).

On loss: SIGTERM, SIGKILL at ``min(now + kill_grace, grant deadline)``,
then confirm death (waitpid for our child, pidfd otherwise, and no live
member left in the process group). Only then does the hook return and the
elector campaign again; a death that cannot be confirmed raises
KillUnconfirmed, which keeps the sidecar out of the election.

A watchdog process (sidecar/watchdog.py) is fed every renewal, so the
deadline is enforced even when this process is frozen or killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from sidecar.clock import Clock
from sidecar.config import Config
from sidecar.model import EventSink, Grant, KillUnconfirmed, Reason

KILL_CONFIRM_TIMEOUT = 2.0  # after SIGKILL, how long death may take to show
RESTART_BACKOFF = 1.0


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ..."; comm may hold spaces and parens.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append(int(entry.name))
    return out


async def wait_pid_gone(pid: int, timeout: float) -> bool:
    """True once ``pid`` has exited, using a pidfd (no polling, no pid reuse race)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(fd, readable)
    try:
        async with asyncio.timeout(timeout):
            await gone
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
        os.close(fd)


class Target(Protocol):
    def describe(self) -> str: ...

    def watchdog_spec(self) -> tuple[str, int] | None: ...

    def signal(self, sig: int) -> None: ...

    async def wait_dead(self, timeout: float) -> bool: ...


class ChildGroup:
    """Our own child, leader of its own process group."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    def describe(self) -> str:
        return f"process group {self.proc.pid}"

    def watchdog_spec(self) -> tuple[str, int] | None:
        return ("pgid", self.proc.pid)

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    async def wait_dead(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self.proc.wait()
                while group_members(self.proc.pid):
                    # A grandchild outlived its parent: it is still ours to stop.
                    self.signal(signal.SIGKILL)
                    await asyncio.sleep(0.01)
            return True
        except TimeoutError:
            return False


class Pids:
    """Processes we did not start: from a pid file, or socket peers."""

    def __init__(self, pids: list[int], origin: str) -> None:
        self.pids = pids
        self.origin = origin

    def describe(self) -> str:
        return f"pids {self.pids} from {self.origin}"

    def watchdog_spec(self) -> tuple[str, int] | None:
        return ("pid", self.pids[0]) if len(self.pids) == 1 else None

    def signal(self, sig: int) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    async def wait_dead(self, timeout: float) -> bool:
        results = await asyncio.gather(*(wait_pid_gone(p, timeout) for p in self.pids))
        return all(results)


def read_pidfile(path: str) -> list[int]:
    text = Path(path).read_text().strip()
    pid = int(text.split()[0])
    if pid <= 1:
        raise ValueError(f"{path}: refusing to signal pid {pid}")
    return [pid]


class Watchdog:
    """The sidecar's end of the watchdog pipe."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.disabled = True  # until started

    async def start(self) -> None:
        self.disabled = False
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            str(Path(__file__).with_name("watchdog.py")),
            stdin=asyncio.subprocess.PIPE,
            start_new_session=True,
        )

    def _send(self, line: str) -> None:
        if self.proc is None and self.disabled:
            return
        if self.proc is None or self.proc.stdin is None or self.proc.returncode is not None:
            raise KillUnconfirmed("the watchdog is not running; the deadline would be unguarded")
        self.proc.stdin.write(line.encode() + b"\n")

    def arm(self, spec: tuple[str, int], term_at: float, kill_at: float) -> None:
        self._send(f"arm {spec[0]} {spec[1]} {term_at:.6f} {kill_at:.6f}")

    def feed(self, term_at: float, kill_at: float) -> None:
        self._send(f"feed {term_at:.6f} {kill_at:.6f}")

    def disarm(self) -> None:
        self._send("disarm")

    async def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None and self.proc.returncode is None:
            with contextlib.suppress(KillUnconfirmed, OSError):
                self.disarm()
            self.proc.stdin.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self.proc.wait()


class Supervisor:
    def __init__(
        self,
        cfg: Config,
        command: list[str],
        log: EventSink,
        clock: Clock,
        *,
        peers: Callable[[], list[int]] | None = None,
        on_orchestrator_exit: Callable[[], Any] | None = None,
        on_kill: Callable[[str], None] | None = None,
        on_guard_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.command = command
        self.log = log
        self.clock = clock
        self.peers = peers
        self.on_exit = on_orchestrator_exit
        self.watchdog = Watchdog()
        self.child: asyncio.subprocess.Process | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._stopping = False
        self._leading = False
        self._on_kill = on_kill
        self.watchdog_enabled = True

    @property
    def mode(self) -> str:
        if self.command:
            return "standby" if self.cfg.standby else "gate"
        if self.cfg.kill_pidfile:
            return "pidfile"
        if self.cfg.kill_peer:
            return "peer"
        return "none"

    async def start(self) -> None:
        if self.mode == "none":
            return
        if self.watchdog_enabled:
            await self.watchdog.start()
        if self.mode == "standby":
            await self._spawn(None)

    async def _spawn(self, grant: Grant | None) -> None:
        env = dict(os.environ)
        env.update(ELECTION_NAME=self.cfg.election, ELECTION_ID=self.cfg.candidate_id, ELECTION_SOCKET=self.cfg.socket)
        if grant is not None:
            env.update(
                ELECTION_TOKEN=str(grant.token),
                ELECTION_EPOCH=str(grant.epoch),
                ELECTION_DEADLINE_MONOTONIC=f"{grant.expires_monotonic:.6f}",
            )
        self.child = await asyncio.create_subprocess_exec(*self.command, env=env, start_new_session=True)
        self.log.info(
            "orchestrator_started",
            pid=self.child.pid,
            mode=self.mode,
            token=grant.token if grant else None,
            mono=round(self.clock.now(), 6),
        )
        self._reaper = asyncio.create_task(self._watch_child(self.child))

    async def _watch_child(self, child: asyncio.subprocess.Process) -> None:
        code = await child.wait()
        if self._stopping or child is not self.child:
            return
        self.log.warning("orchestrator_exited", pid=child.pid, code=code, leading=self._leading)
        if self._leading and self.on_exit is not None:
            self.on_exit()  # leadership without its orchestrator is useless: hand it over
        elif self.mode == "standby":
            await asyncio.sleep(RESTART_BACKOFF)
            if not self._stopping and self.child is child:
                await self._spawn(None)

    def _target(self) -> Target | None:
        if self.mode in ("gate", "standby"):
            return ChildGroup(self.child) if self.child is not None else None
        if self.mode == "pidfile":
            return Pids(read_pidfile(self.cfg.kill_pidfile), self.cfg.kill_pidfile)
        if self.mode == "peer" and self.peers is not None:
            pids = [p for p in self.peers() if p > 1 and p != os.getpid()]
            return Pids(pids, "socket peers") if pids else None
        return None

    def _count(self, what: str) -> None:
        if self._on_kill is not None:
            self._on_kill(what)

    def _deadlines(self, grant: Grant) -> tuple[float, float]:
        return grant.expires_monotonic - self.cfg.kill_grace, grant.expires_monotonic

    # -- elector hooks --------------------------------------------------

    async def started_leading(self, grant: Grant) -> None:
        self._leading = True
        if self.mode == "none":
            return
        if self.mode == "gate":
            await self._spawn(grant)
        try:
            target = self._target()
        except (OSError, ValueError) as exc:
            self.log.warning("kill_target_unknown", error=str(exc))
            return
        spec = target.watchdog_spec() if target else None
        if spec is not None:
            self.watchdog.arm(spec, *self._deadlines(grant))

    async def renewed(self, grant: Grant) -> None:
        if self.mode != "none":
            self.watchdog.feed(*self._deadlines(grant))

    async def stopped_leading(self, grant: Grant, reason: Reason) -> bool:
        self._leading = False
        if self.mode == "none":
            return True
        try:
            target = self._target()
        except (OSError, ValueError) as exc:
            raise KillUnconfirmed(f"cannot name the orchestrator to stop: {exc}") from exc
        if target is not None:
            await self._terminate(target, grant, reason)
        self.watchdog.disarm()
        if self.mode == "standby" and not self._stopping:
            await self._spawn(None)
        return True

    async def ready(self) -> str:
        """Why we may not campaign now ("" when we may)."""
        return ""

    async def _terminate(self, target: Target, grant: Grant, reason: Reason) -> None:
        started = self.clock.now()
        kill_at = min(started + self.cfg.kill_grace, grant.expires_monotonic)
        if self.mode in ("gate", "standby"):
            self.child = None  # from here on its exit is expected, not a crash
        self.log.info("orchestrator_stopping", target=target.describe(), reason=reason.value, signal="SIGTERM")
        target.signal(signal.SIGTERM)
        self._count("SIGTERM")
        how = "SIGTERM"
        if not await target.wait_dead(max(0.0, kill_at - self.clock.now())):
            how = "SIGKILL"
            self._count("SIGKILL")
            self.log.warning(
                "orchestrator_sigkill", target=target.describe(), late=round(self.clock.now() - kill_at, 6)
            )
            target.signal(signal.SIGKILL)
            if not await target.wait_dead(KILL_CONFIRM_TIMEOUT):
                self._count("unconfirmed")
                raise KillUnconfirmed(f"{target.describe()} still alive {KILL_CONFIRM_TIMEOUT}s after SIGKILL")
        self.log.info(
            "orchestrator_stopped",
            target=target.describe(),
            by=how,
            took=round(self.clock.now() - started, 6),
            mono=round(self.clock.now(), 6),
            before_deadline=round(grant.expires_monotonic - self.clock.now(), 6),
        )

    async def close(self) -> None:
        """Stop everything we started (the elector already demoted, if it led)."""
        self._stopping = True
        child = self.child
        if child is not None and child.returncode is None:
            target = ChildGroup(child)
            target.signal(signal.SIGTERM)
            if not await target.wait_dead(self.cfg.kill_grace):
                target.signal(signal.SIGKILL)
                await target.wait_dead(KILL_CONFIRM_TIMEOUT)
        if self._reaper is not None:
            self._reaper.cancel()
        await self.watchdog.close()
