"""Starting, stopping and, when it must, killing the orchestrator.

The kill target is chosen once, from the flags, as a strategy:

* gate (``run -- CMD``): CMD starts only while we lead, with ELECTION_TOKEN
  / _EPOCH / _ID / _SOCKET / _NAME set;
* standby (``--standby -- CMD``): CMD always runs and learns from the
  socket; after a loss it is stopped like a gated one and started again;
* pidfile (``--kill-pidfile PATH``): a process we did not start; a pidfd is
  opened when the term starts;
* peers (``--kill-peer``): every socket client that acknowledged a grant
  this term (the grant server reports each ack); a pidfd is opened for each
  and kept even if it hangs up;
* none.

"The orchestrator" is every descendant of what we started, not a process
group (sidecar/proctree.py): a cgroup v2 group where we may create one,
else a child-subreaper spawn wrapper whose descendants we walk. Processes we
did not start (pidfile, peers) are signalled through pidfds, so pid reuse
can never hit a stranger; their descendants are out of our reach.

On loss: SIGTERM, SIGKILL at ``min(now + kill_grace, grant deadline)``,
then confirm that no descendant is left. Signal first, log after: nothing
on this path waits on a log line before a signal is sent. A death that
cannot be confirmed leaves the watchdog armed and the target remembered;
``ready()`` keeps retrying it and keeps the sidecar out of the election
until it is confirmed.

A watchdog process (sidecar/watchdog.py) is fed every renewal, so the
deadline is enforced even when this process is frozen or killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from sidecar import proctree
from sidecar.clock import Clock
from sidecar.config import Config
from sidecar.model import EventSink, Grant, GuardLost, Reason

KILL_CONFIRM_TIMEOUT = 2.0  # after SIGKILL, how long death may take to show
READY_CONFIRM_TIMEOUT = 0.5  # per ready() retry of an unconfirmed kill
RESTART_BACKOFF = 1.0
POLL = 0.005
WATCHDOG = str(Path(__file__).with_name("watchdog.py"))
SPAWN = str(Path(__file__).with_name("spawn.py"))


async def _until(cond: Callable[[], bool], timeout: float, each: Callable[[], None] | None = None) -> bool:
    """Poll ``cond`` until true or ``timeout``; ``each`` runs before every check."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if each is not None:
            each()
        if cond():
            return True
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(POLL)


class Target(Protocol):
    """What one term's stop path acts on."""

    def describe(self) -> str: ...

    def signal(self, sig: int) -> None:
        """Send ``sig`` to every process of the target; never blocks on I/O, never raises."""

    async def confirm_dead(self, timeout: float) -> bool:
        """True once no process of the target is left; False at ``timeout``."""

    def watchdog_targets(self) -> list[dict[str, Any]]: ...

    def release(self) -> None:
        """Free what we hold for it (fds, cgroup directory) once it is confirmed dead."""


class Tree:
    """An orchestrator we spawned, with every descendant it ever forks.

    In the subreaper case the spawn wrapper is the tree's root. If someone
    else kills it, its orphans reparent to the nearest subreaper above it:
    the sidecar, which is one too for that reason. The tree is then every
    descendant of the sidecar except ``others()`` (the watchdog, and the
    wrapper of a newer orchestrator) and what runs below them.
    """

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        cgroup: proctree.Cgroup | None,
        others: Callable[[], frozenset[int]] | None = None,
        leftovers: list[proctree.Cgroup] | None = None,
    ) -> None:
        self.proc = proc
        self.cgroup = cgroup
        self.leftovers = leftovers  # where a group we could not remove yet goes, to be retried
        self.start = proctree.start_time(proc.pid)
        # Held so that, once the wrapper has exited, its pid (free for reuse
        # once reaped) is never walked again: a stranger could have it.
        self.root_fd = proctree.open_pidfd(proc.pid)
        self.others = others
        self.killed = False
        self.expected_exit = False  # set once we stop it: its exit is then no crash
        self._orphans: set[int] = set()

    def _root_alive(self) -> bool:
        return self.root_fd is not None and not proctree.pidfd_exited(self.root_fd)

    def _orphan_walk(self, sig: int | None) -> list[int]:
        """Processes of this tree left behind by a killed wrapper (now the sidecar's children).

        Only when the wrapper was killed (a wrapper that exited by itself had
        no child left) and only in a sidecar that adopts orphans.
        """
        if self.others is None or (self.proc.returncode or 0) >= 0:
            return []
        exclude = self.others() | {self.proc.pid}
        if sig is not None:
            proctree.signal_tree(os.getpid(), sig, exclude)
        found = proctree.descendants(os.getpid(), exclude)
        self._orphans.update(found)
        return found

    @property
    def pid(self) -> int:
        return self.proc.pid

    def describe(self) -> str:
        if self.cgroup is not None:
            return f"orchestrator {self.pid} and every process in cgroup {self.cgroup.path}"
        return f"every descendant of spawn wrapper {self.pid} (child subreaper)"

    def signal(self, sig: int) -> None:
        if sig == signal.SIGKILL:
            self.killed = True
        try:
            if self.cgroup is not None:
                self.cgroup.signal(sig)
                # Also our child itself, in case it has not joined the group yet.
                if self.proc.returncode is None:
                    self.proc.send_signal(sig)
            elif self._root_alive():
                # Never the wrapper: it exits by itself once its tree is empty.
                proctree.signal_tree(self.pid, sig)
            else:
                self._orphan_walk(sig)
        except OSError:
            pass  # a vanished cgroup or process: confirm_dead decides

    def empty(self) -> bool:
        if self.proc.returncode is None:
            return False
        if self.cgroup is not None:
            # populated: every task of the group and the groups below it,
            # exiting ones too (the same the tasks listed would tell, and more).
            return not self.cgroup.populated()
        # A wrapper that exited by itself had no child left. One that was
        # killed left orphans with us: the tree is empty once none is left.
        if (self.proc.returncode or 0) < 0 and self._orphan_walk(None):
            return False
        self._reap_orphans()
        return True

    def _reap_orphans(self) -> None:
        # They became our children when the wrapper died; nobody else waits for them.
        for pid in list(self._orphans):
            with contextlib.suppress(ChildProcessError, OSError):
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    continue
            self._orphans.discard(pid)

    async def confirm_dead(self, timeout: float) -> bool:
        # After SIGKILL, keep killing: a process that was forking when we
        # scanned may have a child we have not seen yet.
        again: Callable[[], None] | None = (lambda: self.signal(signal.SIGKILL)) if self.killed else None
        return await _until(self.empty, timeout, again)

    def watchdog_targets(self) -> list[dict[str, Any]]:
        if self.cgroup is not None:
            return [{"kind": "cgroup", "path": self.cgroup.path}]
        if self.start is None:
            return []
        spec: dict[str, Any] = {"kind": "tree", "pid": self.pid, "start": self.start}
        if self.others is not None:
            spec["orphans_to"] = os.getpid()  # where a killed wrapper's orphans go (see Tree)
        return [spec]

    def release(self) -> None:
        if self.cgroup is not None and not self.cgroup.remove() and self.leftovers is not None:
            self.leftovers.append(self.cgroup)
        if self.root_fd is not None:
            os.close(self.root_fd)
            self.root_fd = None


class Pidfds:
    """Processes we did not start, each held by a pidfd (pid reuse cannot fool us)."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.fds: dict[int, tuple[int, int]] = {}  # pid -> (pidfd, start time)
        self.unknown = ""  # why we could not name the target, if we could not

    def add(self, pid: int) -> bool:
        """Hold ``pid``; True if it is new (a dead pid is simply not added)."""
        if pid <= 1 or pid == os.getpid() or pid in self.fds:
            return False
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return False  # already dead: nothing to stop
        start = proctree.start_time(pid)
        if start is None:
            os.close(fd)
            return False
        self.fds[pid] = (fd, start)
        return True

    def describe(self) -> str:
        return f"pids {sorted(self.fds)} from {self.origin}"

    def signal(self, sig: int) -> None:
        for fd, _ in self.fds.values():
            with contextlib.suppress(OSError):
                proctree.pidfd_signal(fd, sig)

    async def confirm_dead(self, timeout: float) -> bool:
        if self.unknown:
            return False
        return await _until(lambda: all(proctree.pidfd_exited(fd) for fd, _ in self.fds.values()), timeout)

    def watchdog_targets(self) -> list[dict[str, Any]]:
        return [{"kind": "pid", "pid": pid, "start": start} for pid, (_, start) in self.fds.items()]

    def release(self) -> None:
        for fd, _ in self.fds.values():
            os.close(fd)
        self.fds.clear()


class PidfileTarget(Pidfds):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path
        self.load()

    def load(self) -> None:
        try:
            pid = int(Path(self.path).read_text().split()[0])
            if pid <= 1:
                raise ValueError(f"refusing to signal pid {pid}")
        except (OSError, ValueError, IndexError) as exc:
            self.unknown = f"cannot name the orchestrator from {self.path}: {exc}"
            return
        self.unknown = ""
        self.add(pid)

    def signal(self, sig: int) -> None:
        if self.unknown:
            self.load()  # it may have been written since the term started
        super().signal(sig)


# -- the kill-target strategies, chosen once --------------------------------


class Strategy:
    """No target: nothing to start, nothing to stop, no watchdog."""

    mode = "none"
    guarded = False

    async def start(self) -> None:
        pass

    async def begin_term(self, grant: Grant) -> Target | None:
        return None

    def acked(self, target: Target | None, pid: int) -> bool:
        return False

    async def after_stop(self) -> None:
        pass

    def child(self) -> Tree | None:
        return None


class ChildStrategy(Strategy):
    guarded = True

    def __init__(self, spawn: Callable[[Grant | None], Awaitable[Tree]]) -> None:
        self.spawn = spawn
        self.tree: Tree | None = None

    def child(self) -> Tree | None:
        return self.tree


class GateChild(ChildStrategy):
    mode = "gate"

    async def begin_term(self, grant: Grant) -> Target | None:
        self.tree = await self.spawn(grant)
        return self.tree

    async def after_stop(self) -> None:
        self.tree = None


class StandbyChild(ChildStrategy):
    mode = "standby"

    def __init__(self, spawn: Callable[[Grant | None], Awaitable[Tree]]) -> None:
        super().__init__(spawn)
        # One spawn at a time. A term won while a crashed standby was being
        # replaced started a second orchestrator beside the new standby, and
        # the one not held in self.tree ran untracked: never stopped, and its
        # crash never noticed.
        self._spawning = asyncio.Lock()

    async def start(self) -> None:
        async with self._spawning:
            self.tree = await self.spawn(None)

    async def begin_term(self, grant: Grant) -> Target | None:
        async with self._spawning:
            if self.tree is None or self.tree.proc.returncode is not None:
                # Won while the standby was down (between its crash and its restart):
                # lead with a fresh one rather than with no orchestrator at all.
                self.tree = await self.spawn(grant)
            return self.tree

    async def after_stop(self) -> None:
        async with self._spawning:
            self.tree = await self.spawn(None)

    async def replace(self, crashed: Tree, wanted: Callable[[], bool]) -> None:
        """A new standby for one that crashed, unless a term or a stop has replaced it meanwhile."""
        async with self._spawning:
            if self.tree is crashed and wanted():
                self.tree = await self.spawn(None)


class PidfileStrategy(Strategy):
    mode = "pidfile"
    guarded = True

    def __init__(self, path: str) -> None:
        self.path = path

    async def begin_term(self, grant: Grant) -> Target | None:
        return PidfileTarget(self.path)


class PeersStrategy(Strategy):
    mode = "peer"
    guarded = True

    async def begin_term(self, grant: Grant) -> Target | None:
        return Pidfds("socket peers")

    def acked(self, target: Target | None, pid: int) -> bool:
        return isinstance(target, Pidfds) and target.add(pid)


class Watchdog:
    """The sidecar's end of the watchdog pipe."""

    def __init__(self, on_lost: Callable[[str], None]) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self._on_lost = on_lost
        self._watcher: asyncio.Task[None] | None = None
        self._closing = False
        # Read end of the dead man's pipe: only the watchdog holds the write end,
        # so orchestrators spawned with it die with the watchdog (sidecar/spawn.py).
        self.guard_fd = -1

    async def start(self) -> None:
        self._closing = False
        guard_r, guard_w = os.pipe()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",  # no user site, no PYTHON* env, not our directory on sys.path
                "-S",  # no site: it imports only what it needs
                WATCHDOG,
                stdin=asyncio.subprocess.PIPE,
                start_new_session=True,
                pass_fds=(guard_w,),
            )
        except BaseException:
            os.close(guard_r)
            raise
        finally:
            os.close(guard_w)  # from now on the watchdog holds the only write end
        if self.guard_fd >= 0:
            os.close(self.guard_fd)
        self.guard_fd = guard_r
        self._watcher = asyncio.create_task(self._watch(self.proc), name="watchdog-exit")

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if not self._closing and proc is self.proc:
            self._on_lost(f"the watchdog (pid {proc.pid}) exited with status {code}")

    @property
    def alive(self) -> bool:
        p = self.proc
        return p is not None and p.returncode is None and p.stdin is not None and not p.stdin.is_closing()

    def _send(self, line: str) -> None:
        if not self.alive:
            raise GuardLost("the watchdog is not running; the deadline is unguarded")
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(line.encode() + b"\n")  # buffered by the transport: never blocks
        except (OSError, RuntimeError) as exc:
            raise GuardLost(f"cannot reach the watchdog: {exc}") from exc

    def arm(self, targets: list[dict[str, Any]], term_at: float, kill_at: float) -> None:
        import json

        self._send("arm " + json.dumps({"term_at": term_at, "kill_at": kill_at, "targets": targets}))

    def feed(self, term_at: float, kill_at: float) -> None:
        self._send(f"feed {term_at:.6f} {kill_at:.6f}")

    def disarm(self) -> None:
        self._send("disarm")

    async def close(self, *, disarm: bool) -> None:
        """Stop it. Without ``disarm``, EOF makes it SIGKILL whatever it guards."""
        self._closing = True
        if self.proc is None:
            return
        if self.alive:
            if disarm:
                with contextlib.suppress(GuardLost):
                    self.disarm()
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self.proc.wait()
        if self._watcher is not None:
            self._watcher.cancel()


def choose_strategy(cfg: Config, command: list[str], spawn: Callable[[Grant | None], Awaitable[Tree]]) -> Strategy:
    if command:
        return StandbyChild(spawn) if cfg.standby else GateChild(spawn)
    if cfg.kill_pidfile:
        return PidfileStrategy(cfg.kill_pidfile)
    if cfg.kill_peer:
        return PeersStrategy()
    return Strategy()


class Supervisor:
    def __init__(
        self,
        cfg: Config,
        command: list[str],
        log: EventSink,
        clock: Clock,
        *,
        on_orchestrator_exit: Callable[[], Any],
        on_kill: Callable[[str], None],
        on_guard_lost: Callable[[str], None],
        tree: str | None = None,
        adopt_orphans: bool = False,
    ) -> None:
        """``tree`` picks how descendants are tracked: "cgroup", "subreaper", or None for
        $ELECTION_SIDECAR_KILL_TREE, else auto (cgroup where we may create one).

        ``adopt_orphans`` (the sidecar process sets it): in subreaper mode this
        process becomes a subreaper too, and a killed wrapper's orphans are
        found as "our descendants but the watchdog and the current wrapper".
        That is only true of a process whose children are ours alone: never
        set it in a process that has other children (a test runner)."""
        self._adopt_orphans = adopt_orphans
        self._stopping_target: Target | None = None
        self.cfg = cfg
        self.command = command
        self.log = log
        self.clock = clock
        self._on_exit = on_orchestrator_exit
        self._on_kill = on_kill
        self._on_guard_lost = on_guard_lost
        self._tree_request = tree
        self.mechanism = ""  # decided at start(), for spawned orchestrators only
        self.strategy = choose_strategy(cfg, command, self._spawn)
        self.watchdog = Watchdog(self._guard_lost)
        self.watchdog_enabled = True
        self._target: Target | None = None  # this term's
        self._grant: Grant | None = None
        self.unconfirmed: Target | None = None  # a stop we could not confirm
        self._leading = False
        self._stopping = False
        self._spawned = 0
        # Our groups' names. The pid says whose they are; the random part
        # keeps them apart from groups an earlier process with our pid left
        # behind (pids are reused; a SIGKILLed sidecar's empty group can stay).
        self._group_prefix = f"election-sidecar-{os.getpid()}-{secrets.token_hex(3)}"
        self._leftover_groups: list[proctree.Cgroup] = []
        self._watchers: set[asyncio.Task[None]] = set()

    @property
    def mode(self) -> str:
        return self.strategy.mode

    @property
    def child(self) -> asyncio.subprocess.Process | None:
        tree = self.strategy.child()
        return tree.proc if tree is not None else None

    def _guarded(self) -> bool:
        return self.strategy.guarded and self.watchdog_enabled

    def _guard_lost(self, detail: str) -> None:
        self.log.error("watchdog_lost", detail=detail)
        self._on_guard_lost(detail)

    async def start(self) -> None:
        if self.command:
            self.mechanism = proctree.choose_mechanism(self._tree_request)
            if self.mechanism == "subreaper" and self._adopt_orphans:
                # If the spawn wrapper is killed, its orphans come to us, not to init (see Tree).
                proctree.set_child_subreaper()
            self.log.info("orchestrator_tree", mechanism=self.mechanism)
        if self._guarded():
            await self.watchdog.start()
        await self.strategy.start()

    # -- spawning ---------------------------------------------------------

    async def _spawn(self, grant: Grant | None) -> Tree:
        env = dict(os.environ)
        env.update(ELECTION_NAME=self.cfg.election, ELECTION_ID=self.cfg.candidate_id, ELECTION_SOCKET=self.cfg.socket)
        if grant is not None:
            env.update(
                ELECTION_TOKEN=str(grant.token),
                ELECTION_EPOCH=str(grant.epoch),
                ELECTION_DEADLINE_MONOTONIC=f"{grant.expires_monotonic:.6f}",
            )
        self._spawned += 1
        cgroup = None
        if self.mechanism == "cgroup":
            # Groups of earlier terms that were still busy when released. Only
            # those: a listing would also find a group whose spawn is in flight.
            self._leftover_groups[:] = [g for g in self._leftover_groups if not g.remove()]
            cgroup = proctree.Cgroup.create(f"{self._group_prefix}-{self._spawned}")
            how = ["cgroup", cgroup.path]
        else:
            how = ["subreaper"]
        guard = self.watchdog.guard_fd if self._guarded() and self.watchdog.alive else -1
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-S", SPAWN, *(["--guard", str(guard)] if guard >= 0 else []), *how,
            "--", *self.command, env=env, start_new_session=True, pass_fds=(guard,) if guard >= 0 else (),
        )  # fmt: skip
        tree = Tree(proc, cgroup, self._other_children if self._adopt_orphans else None, self._leftover_groups)
        self.log.info(
            "orchestrator_started",
            pid=proc.pid,
            mode=self.mode,
            mechanism=self.mechanism,
            token=grant.token if grant else None,
            mono=round(self.clock.now(), 6),
        )
        task = asyncio.create_task(self._watch_child(tree), name=f"orchestrator-{proc.pid}")
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)
        return tree

    def _other_children(self) -> frozenset[int]:
        """Our children that are not an orchestrator tree being stopped: the watchdog
        and the current orchestrator's wrapper (a tree asks, to leave them out)."""
        out = set()
        if self.watchdog.proc is not None:
            out.add(self.watchdog.proc.pid)
        child = self.strategy.child()
        if child is not None and child.proc.returncode is None:
            out.add(child.proc.pid)
        return frozenset(out)

    async def _watch_child(self, tree: Tree) -> None:
        code = await tree.proc.wait()
        if self._stopping or tree.expected_exit or tree is not self.strategy.child():
            return
        self.log.warning("orchestrator_exited", pid=tree.pid, code=code, leading=self._leading)
        if self._leading:
            self._on_exit()  # leadership without its orchestrator is useless: hand it over
        elif isinstance(self.strategy, StandbyChild):
            await asyncio.sleep(RESTART_BACKOFF)
            if self._stopping or self.strategy.tree is not tree or self._leading:
                return
            # A daemon it left behind must not outlive it beside the new standby.
            tree.signal(signal.SIGKILL)
            if not await tree.confirm_dead(KILL_CONFIRM_TIMEOUT):
                self._count("unconfirmed")
                self.unconfirmed = tree
                self.log.error("orchestrator_kill_unconfirmed", target=tree.describe())
                return
            tree.release()
            await self.strategy.replace(tree, lambda: not (self._stopping or self._leading))

    # -- elector hooks ------------------------------------------------------

    def _deadlines(self, grant: Grant) -> tuple[float, float]:
        return grant.expires_monotonic - self.cfg.kill_grace, grant.expires_monotonic

    def _check_guard(self) -> None:
        if self._guarded() and not self.watchdog.alive:
            raise GuardLost("the watchdog is not running; the deadline is unguarded")

    def _arm(self) -> None:
        if not self._guarded() or self._target is None or self._grant is None:
            return
        targets = self._target.watchdog_targets()
        if targets:
            self.watchdog.arm(targets, *self._deadlines(self._grant))

    async def started_leading(self, grant: Grant) -> None:
        self._leading = True
        self._grant = grant
        if self.mode == "none":
            return
        self._check_guard()  # spawn nothing that would run unguarded
        self._target = await self.strategy.begin_term(grant)
        if isinstance(self._target, PidfileTarget) and self._target.unknown:
            self.log.warning("kill_target_unknown", error=self._target.unknown)
        self._arm()

    def peer_acked(self, pid: int) -> None:
        """The client ``pid`` acknowledged a grant: it is a target from now on, for the
        whole term, even if it hangs up (held by a pidfd, so pid reuse cannot fool us).

        An ack can arrive after the stop has begun (sent before the revoke,
        read after it): the client then joins the target being stopped, which
        SIGKILLs and confirms every pid it holds. One that arrives after the
        stop finished acknowledges a grant of an ended term: the client may be
        acting on it beside a successor, so it is SIGKILLed at once.
        """
        if self._leading:
            if self.strategy.acked(self._target, pid):
                try:
                    self._arm()
                except GuardLost as exc:
                    self.log.error("watchdog_arm_failed", pid=pid, error=str(exc))
            return
        if self.mode != "peer":
            return
        if self._stopping_target is not None:
            if self.strategy.acked(self._stopping_target, pid):
                self.log.warning("late_ack_joins_the_stop", pid=pid)
            return
        fd = proctree.open_pidfd(pid)
        if fd is not None:
            try:
                proctree.pidfd_signal(fd, signal.SIGKILL)
            finally:
                os.close(fd)
            self._count("SIGKILL")
            self.log.warning("late_ack_killed", pid=pid, detail="acknowledged a grant of a term that has ended")

    async def renewed(self, grant: Grant) -> None:
        self._grant = grant
        if self._guarded() and self._target is not None:
            self.watchdog.feed(*self._deadlines(grant))

    async def stopped_leading(self, grant: Grant, reason: Reason) -> bool:
        self._leading = False
        target, self._target = self._target, None
        if target is None:
            self._disarm()
            return True
        if isinstance(target, Tree):
            target.expected_exit = True
        self._stopping_target = target  # late acks join it (peer_acked)
        try:
            if not await self._terminate(target, grant, reason):
                self.unconfirmed = target  # the watchdog stays armed; ready() retries
                return False
        finally:
            self._stopping_target = None
        await self._confirmed(target)
        return True

    async def _confirmed(self, target: Target) -> None:
        target.release()
        self._disarm()
        if not self._stopping:
            await self.strategy.after_stop()

    def _disarm(self) -> None:
        if self._guarded() and self.watchdog.alive:
            with contextlib.suppress(GuardLost):
                self.watchdog.disarm()

    def _count(self, what: str) -> None:
        self._on_kill(what)

    async def _terminate(self, target: Target, grant: Grant, reason: Reason) -> bool:
        """SIGTERM, SIGKILL at min(now + kill_grace, deadline), confirm. Signal first, log after."""
        started = self.clock.now()
        kill_at = min(started + self.cfg.kill_grace, grant.expires_monotonic)
        target.signal(signal.SIGTERM)
        self._count("SIGTERM")
        self.log.info("orchestrator_stopping", target=target.describe(), reason=reason.value, signal="SIGTERM")
        how = "SIGTERM"
        if not await target.confirm_dead(max(0.0, kill_at - self.clock.now())):
            target.signal(signal.SIGKILL)
            late = self.clock.now() - kill_at
            how = "SIGKILL"
            self._count("SIGKILL")
            self.log.warning("orchestrator_sigkill", target=target.describe(), late=round(late, 6))
            if not await target.confirm_dead(KILL_CONFIRM_TIMEOUT):
                self._count("unconfirmed")
                self.log.error(
                    "orchestrator_kill_unconfirmed",
                    target=target.describe(),
                    detail=f"still alive {KILL_CONFIRM_TIMEOUT}s after SIGKILL; the watchdog stays armed",
                )
                return False
        self.log.info(
            "orchestrator_stopped",
            target=target.describe(),
            by=how,
            took=round(self.clock.now() - started, 6),
            mono=round(self.clock.now(), 6),
            before_deadline=round(grant.expires_monotonic - self.clock.now(), 6),
        )
        return True

    async def ready(self) -> str:
        """ "" when we may campaign; else why not, after trying to fix it."""
        if self._guarded() and not self.watchdog.alive and not self._stopping:
            try:
                await self.watchdog.start()
            except OSError as exc:
                return f"the watchdog cannot start: {exc}"
            self.log.info("watchdog_restarted", pid=self.watchdog.proc.pid if self.watchdog.proc else None)
        target = self.unconfirmed
        if target is not None:
            target.signal(signal.SIGKILL)
            if not await target.confirm_dead(READY_CONFIRM_TIMEOUT):
                return f"{target.describe()}: not confirmed dead after SIGKILL"
            self.unconfirmed = None
            self.log.info("orchestrator_stopped", target=target.describe(), by="SIGKILL", late=True)
            await self._confirmed(target)
        return ""

    async def close(self) -> None:
        """Stop what we started (the elector already demoted).

        With a target still unconfirmed the watchdog is not disarmed: closing
        its pipe makes it SIGKILL what it guards as it exits.
        """
        self._stopping = True
        tree = self.strategy.child()
        if tree is not None and self.unconfirmed is None and not tree.empty():
            tree.expected_exit = True
            tree.signal(signal.SIGTERM)
            if not await tree.confirm_dead(self.cfg.kill_grace):
                tree.signal(signal.SIGKILL)
                if not await tree.confirm_dead(KILL_CONFIRM_TIMEOUT):
                    self.unconfirmed = tree
            if self.unconfirmed is None:
                tree.release()
        for task in list(self._watchers):
            task.cancel()
        if self.unconfirmed is not None and self._guarded() and self.watchdog.alive:
            # Hand it to the watchdog, due now: it SIGKILLs it when its pipe closes.
            now = self.clock.now()
            with contextlib.suppress(GuardLost):
                self.watchdog.arm(self.unconfirmed.watchdog_targets(), now, now)
        if self._guarded():
            await self.watchdog.close(disarm=self.unconfirmed is None)
        for group in self._leftover_groups:  # a last try for groups still busy when released
            group.remove()
