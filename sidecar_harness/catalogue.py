"""The fault catalogue as data: one entry per kind, drawn by the campaign.

Each ``Fault`` names the stores it applies to, whether it is meant to move
leadership (so the campaign measures a failover), and an ``inject`` function
that applies it and returns how to heal it and how long to hold it. Adding a
fault kind is adding one function and one entry to ``FAULTS``; the campaign
(sidecar_harness/faults.py) has no branch per kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sidecar.fencing.oneshot import request
from sidecar_harness.fleet import FAST_TIMING, SidecarProcess
from sidecar_harness.localstore import LocalMember
from sidecar_harness.localzk import TICK_MS

if TYPE_CHECKING:
    from sidecar_harness.faults import Campaign

TTL = FAST_TIMING["ttl"]
HOLD_LONG = TTL + 1.0  # long enough for any lease of the frozen or cut-off side to expire
# A frozen leader is held until its successor's orchestrator has surely started
# acting (a Python process takes a second or more to start on a loaded machine),
# so an orchestrator that outlives its grant overlaps it and the checker sees it.
HOLD_FROZEN = TTL + 3.0
# Past the lease / session timeout and past ZooKeeper's syncLimit (20 ticks of
# 200 ms: 4 s), after which a follower cut from its leader drops its clients.
HOLD_ISOLATED = HOLD_LONG + 2.0

Heal = Callable[[], Awaitable[None]]
View = dict[str, Any] | None


async def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Injected:
    """What an injection did: its target, how to heal it, how long to hold it first.

    ``problems``: what the fault itself found wrong (filled by the inject or
    heal function; the campaign reports them with the fault).
    """

    target: str
    heal: Heal = _nothing
    hold: float = 0.0
    problems: list[str] = field(default_factory=list)
    # When the fault took effect (CLOCK_MONOTONIC), if later than the call:
    # failover and demotion are measured from here.
    cut_at: float | None = None


NOTHING = Injected("none")
Inject = Callable[["Campaign", SidecarProcess | None, View], Awaitable[Injected]]


@dataclass(frozen=True)
class Fault:
    kind: str
    inject: Inject
    # "if-leader": leadership should move when the target is the leader;
    # "always": it should move whoever the target is; "never": it should stay.
    failover: Literal["if-leader", "always", "never"] = "if-leader"
    backends: tuple[str, ...] = ("etcd", "zookeeper")
    # The store's members must talk to each other through fault proxies
    # (sidecar_harness/peerlinks.py): the campaign starts them so when drawn.
    peer_links: bool = False

    def moves(self, target: str, leader: str | None) -> bool:
        if target in ("none", "gone"):
            return False  # nothing was injected
        if self.failover == "always":
            return True
        return self.failover == "if-leader" and leader is not None and target.split("/", maxsplit=1)[0] == leader


# -- sidecars -------------------------------------------------------------------


async def sidecar_kill(c: Campaign, leader: SidecarProcess | None, view: View) -> Injected:
    if leader is None:
        return NOTHING
    leader.signal(signal.SIGKILL)

    async def restart() -> None:
        if leader.proc is not None:
            await asyncio.to_thread(leader.proc.wait)
        leader.start(c.sidecar_env)
        await asyncio.to_thread(leader.wait_socket)

    return Injected(leader.candidate, restart, HOLD_LONG)


def _freeze(extra_hold: float) -> Inject:
    async def freeze(c: Campaign, leader: SidecarProcess | None, view: View) -> Injected:
        if leader is None:
            return NOTHING
        leader.signal(signal.SIGSTOP)
        c.frozen.add(leader.candidate)

        async def cont() -> None:
            leader.signal(signal.SIGCONT)
            c.frozen.discard(leader.candidate)

        return Injected(leader.candidate, cont, HOLD_FROZEN + extra_hold)

    return freeze


async def resign(c: Campaign, leader: SidecarProcess | None, view: View) -> Injected:
    if leader is None:
        return NOTHING
    with contextlib.suppress(OSError, ValueError):
        await asyncio.to_thread(request, str(leader.socket_path), {"type": "resign"}, 2.0)
    return Injected(leader.candidate)


async def switchover(c: Campaign, leader: SidecarProcess | None, view: View) -> Injected:
    """Issue 17: an operator moves leadership to a named candidate through the store.
    The leader stops its orchestrator first; candidates ahead of the target step aside."""
    if leader is None:
        return NOTHING
    from sidecar.backends.base import SwitchoverRequest

    queued = [
        cand
        for cand in await c.election.candidates()
        if cand.id != leader.candidate and not cand.stale and not cand.no_lead  # the CLI refuses a no-lead target
    ]
    if not queued:
        return NOTHING
    target = c.rng.choice(queued).id
    request = SwitchoverRequest(target, "validate", f"fault-{c.rng.randrange(1 << 30):x}", time.time(), 10.0)
    await c.election.request_switchover(request)
    return Injected(f"{leader.candidate}->{target}")


# -- orchestrators ----------------------------------------------------------------


def _signal_orchestrator(sig: int) -> Inject:
    async def hit(c: Campaign, leader: SidecarProcess | None, view: View) -> Injected:
        pid = ((view or {}).get("orchestrator") or {}).get("pid")
        if leader is None or not pid:
            return NOTHING
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return Injected("gone")

        async def cont() -> None:
            if sig == signal.SIGSTOP:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

        return Injected(f"{leader.candidate}/orchestrator", cont, 1.0)

    return hit


def _watchdog_of(sidecar: SidecarProcess) -> int | None:
    """The pid of the sidecar's watchdog: its child running watchdog.py."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            cmdline = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        if ppid == sidecar.pid and b"watchdog.py" in cmdline:
            return int(entry.name)
    return None


def _watchdog_kill(freeze_sidecar: bool) -> Inject:
    """Issue 13, item 1: the leader's watchdog dies (alone, or with its sidecar frozen)."""

    async def kill(c: Campaign, leader: SidecarProcess | None, view: View) -> Injected:
        pid = _watchdog_of(leader) if leader is not None else None
        if leader is None or pid is None:
            return NOTHING
        if freeze_sidecar and leader.candidate in c.peer_toys:
            # A --kill-peer orchestrator is a process we did not start: with its
            # watchdog dead and its sidecar frozen (possibly between the revoke
            # and the SIGKILL), nothing of ours can stop one that misbehaves on
            # revoke. A known limit (docs/design.md, section 5), not drawn here.
            return NOTHING
        os.kill(pid, signal.SIGKILL)
        if not freeze_sidecar:
            return Injected(f"{leader.candidate}/watchdog", hold=1.0)
        leader.signal(signal.SIGSTOP)
        c.frozen.add(leader.candidate)

        async def cont() -> None:
            leader.signal(signal.SIGCONT)
            c.frozen.discard(leader.candidate)

        return Injected(f"{leader.candidate}/watchdog+sidecar", cont, HOLD_FROZEN)

    return kill


async def orchestrator_escape(c: Campaign, leader: SidecarProcess | None, view: View) -> Injected:
    """Issue 13, item 3: the orchestrator starts a setsid() child that ignores SIGTERM and
    acts on its token until killed; then leadership moves. Only a stop path that tracks
    every descendant stops it before the successor acts."""
    pid = ((view or {}).get("orchestrator") or {}).get("pid")
    if leader is None or not pid:
        return NOTHING
    os.kill(pid, signal.SIGUSR1)
    await asyncio.sleep(0.5)  # let the escaped child start acting
    with contextlib.suppress(OSError, ValueError):
        await asyncio.to_thread(request, str(leader.socket_path), {"type": "resign"}, 2.0)
    return Injected(f"{leader.candidate}/escaped-child", hold=1.0)


async def revoke_race(c: Campaign, leader: SidecarProcess | None, view: View) -> Injected:
    """Issue 13, item 4: socket clients connect while the leader revokes. One that kept
    the old grant without the revoke would act beside the successor."""
    if leader is None:
        return NOTHING
    late = [
        await asyncio.create_subprocess_exec(
            *c.toy_argv(leader.candidate, "--socket", str(leader.socket_path), record=f"{leader.candidate}-late{i}"),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
        for i in range(3)
    ]
    await asyncio.sleep(0.12)  # about a Python start-up: they connect while the revoke goes out
    with contextlib.suppress(OSError, ValueError):
        await asyncio.to_thread(request, str(leader.socket_path), {"type": "resign"}, 2.0)

    async def stop_late() -> None:
        for proc in late:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    return Injected(f"{leader.candidate}/late-clients", stop_late, 1.5)


async def log_stall(c: Campaign, leader: SidecarProcess | None, view: View) -> Injected:
    """Issue 13, item 6: the log pipe the sidecar and its watchdog share stops draining,
    then the sidecar freezes: the watchdog must still kill on time."""
    if leader is None:
        return NOTHING
    await asyncio.to_thread(leader.stall_log)
    leader.signal(signal.SIGSTOP)
    c.frozen.add(leader.candidate)

    async def heal() -> None:
        leader.resume_log()
        leader.signal(signal.SIGCONT)
        c.frozen.discard(leader.candidate)

    return Injected(f"{leader.candidate}/log-pipe", heal, HOLD_FROZEN)


async def peer_hides(c: Campaign, leader: SidecarProcess | None, view: View) -> Injected:
    """Issue 13, item 5: a --kill-peer leader resigns; its orchestrator hangs up on the
    revoke and goes on acting. Only the pidfd taken at its ack reaches it."""
    if leader is None or leader.candidate not in c.peer_toys:
        return NOTHING
    with contextlib.suppress(OSError, ValueError):
        await asyncio.to_thread(request, str(leader.socket_path), {"type": "resign"}, 2.0)
    return Injected(f"{leader.candidate}/peer", hold=1.0)


# -- the store ----------------------------------------------------------------


async def _kill_members(c: Campaign, victims: list[LocalMember], hold: float) -> Injected:
    cluster = c.cluster
    for m in victims:
        await asyncio.to_thread(cluster.kill, m)

    async def restart() -> None:
        for m in victims:
            await asyncio.to_thread(cluster.start_member, m)
        await asyncio.to_thread(cluster.wait_healthy, 60.0)

    return Injected("store " + ",".join(m.name for m in victims), restart, hold)


def _live(c: Campaign) -> list[LocalMember]:
    return [m for m in c.cluster.members if m.alive]


async def member_kill(c: Campaign, leader: SidecarProcess | None, view: View) -> Injected:
    store_leader = await asyncio.to_thread(c.cluster.leader)
    others = [m for m in _live(c) if m is not store_leader] or _live(c)
    return await _kill_members(c, [c.rng.choice(others)], 1.0)


async def leader_member_kill(c: Campaign, leader: SidecarProcess | None, view: View) -> Injected:
    store_leader = await asyncio.to_thread(c.cluster.leader)
    return await _kill_members(c, [store_leader] if store_leader else _live(c)[:1], 1.0)


async def quorum_loss(c: Campaign, leader: SidecarProcess | None, view: View) -> Injected:
    return await _kill_members(c, c.rng.sample(_live(c), 2), HOLD_LONG)


async def _carrier(c: Campaign, sidecar: SidecarProcess, window: float = 1.0) -> LocalMember | None:
    """The member carrying most of ``sidecar``'s store traffic: bytes through its client
    proxies over ``window`` seconds (kazoo uses one member; etcd's gRPC channel spreads
    calls over all three, and its keepalive and watch streams each sit on one)."""
    proxies = c.proxies[sidecar.candidate]
    before = [p.forwarded for p in proxies]
    await asyncio.sleep(window)
    moved = [p.forwarded - b for p, b in zip(proxies, before, strict=True)]
    if not any(moved):
        return None
    return c.cluster.members[moved.index(max(moved))]


async def member_isolate(c: Campaign, leader: SidecarProcess | None, view: View) -> Injected:
    """Issue 14: the member the leader sidecar talks to is cut from its peers, silently
    (connections open, nothing moves), while its clients still reach it. Its renewals
    must fail (ZooKeeper: the renewal `multi` needs the leader; etcd: keepalives are
    forwarded to the raft leader, watches require one) and the leader must demote
    before its session or lease ends on the majority side.

    The leader's own links to the other members are held too, for the same span: it
    then reaches that member alone, as a sidecar given only its host's member would.
    Otherwise etcd's client simply sends its next keepalive to a healthy member (it
    does: measured), and nothing about the isolated member is tested."""
    links = c.cluster.links
    if links is None:
        return NOTHING
    victim = await _carrier(c, leader) if leader is not None else None
    victim = victim or c.rng.choice(list(c.cluster.members))
    pinned = []
    if leader is not None:
        pinned = [p for p, m in zip(c.proxies[leader.candidate], c.cluster.members, strict=True) if m is not victim]
    for p in pinned:
        p.hold()
    await asyncio.to_thread(links.isolate, victim.name)
    cut_at = time.monotonic()

    async def heal() -> None:
        await asyncio.to_thread(links.heal)
        for p in pinned:
            p.heal()
        await asyncio.to_thread(c.cluster.wait_healthy, 60.0)

    return Injected(f"store {victim.name}", heal, HOLD_ISOLATED, cut_at=cut_at)


# -- the network --------------------------------------------------------------


def _links(kind: Literal["partition", "slow"]) -> Inject:
    async def cut(c: Campaign, leader: SidecarProcess | None, view: View) -> Injected:
        victim = leader if (leader and kind == "partition") else c.rng.choice(c.sidecars)
        proxies = c.proxies[victim.candidate]
        for p in proxies:
            if kind == "partition":
                p.partition()
            else:
                p.slow(0.3)

        async def heal() -> None:
            for p in proxies:
                p.heal()

        return Injected(victim.candidate, heal, HOLD_LONG if kind == "partition" else 2.0)

    return cut


# -- the store's data (issue 14) ----------------------------------------------


async def _etcdctl(c: Campaign, *args: str) -> None:
    """What an operator types: etcdctl against the cluster, bounded in time."""
    from sidecar_harness.localetcd import find_binary

    proc = await asyncio.create_subprocess_exec(
        find_binary("etcdctl"), "--endpoints", ",".join(c.cluster.endpoints), "--command-timeout=3s", *args,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.wait_for(proc.wait(), 10)


async def _zk(c: Campaign, op: Callable[[Any], object]) -> None:
    """What an operator does with zkCli: one plain kazoo client, its own session, bounded in time."""
    from kazoo.client import KazooClient

    def run() -> None:
        zk = KazooClient(hosts=",".join(c.cluster.endpoints))
        zk.start(5)
        try:
            op(zk)
        finally:
            zk.stop()
            zk.close()

    await asyncio.wait_for(asyncio.to_thread(run), 10)


def _deleteall(path: str) -> Callable[[Any], None]:
    """zkCli's `deleteall`: children first, then the node. Candidates queue again at
    once, so the final delete may find new children: each retry removes those too."""
    from kazoo.exceptions import NoNodeError, NotEmptyError

    def run(zk: Any) -> None:
        for _ in range(10):
            try:
                zk.delete(path, recursive=True)
                return
            except NoNodeError:
                return
            except NotEmptyError:
                continue

    return run


async def _leader_key(c: Campaign, leader: SidecarProcess) -> str | None:
    """The leader's candidate key as the store lists it (the oldest with its id)."""
    with contextlib.suppress(Exception):
        for cand in await asyncio.wait_for(c.election.candidates(), 3):
            if cand.id == leader.candidate:
                return str(cand.key)
    return None


def _key_gone(how: Literal["delete", "revoke", "prefix"]) -> Inject:
    """The leader's key vanishes long before its lease could expire: `etcdctl del` of
    the key, `etcdctl lease revoke` of its lease, or `etcdctl del --prefix` of the whole
    election (zkCli `deleteall`; the epoch record goes too on etcd). Its successor must wait out
    the lease (or the leader's confirmed stop), not the key."""

    async def cut(c: Campaign, leader: SidecarProcess | None, view: View) -> Injected:
        key = await _leader_key(c, leader) if leader is not None else None
        if leader is None or key is None:
            return NOTHING
        if how == "prefix":
            # Of a frozen leader: its orchestrator acts on to its grant's deadline
            # (the watchdog's kill), so a successor that leads on the key alone overlaps.
            leader.signal(signal.SIGSTOP)
            c.frozen.add(leader.candidate)
            if c.backend == "zookeeper":
                await _zk(c, _deleteall("/campaign"))
            else:  # every key of the election, the epoch record and the resign marker among them
                await _etcdctl(c, "del", "--prefix", "campaign")

            async def cont() -> None:
                leader.signal(signal.SIGCONT)
                c.frozen.discard(leader.candidate)

            return Injected(f"{leader.candidate}/election-deleted", cont, HOLD_FROZEN)
        if how == "delete" and c.backend == "zookeeper":
            await _zk(c, lambda zk: zk.delete(key))  # zkCli's `delete`
        elif how == "delete":
            await _etcdctl(c, "del", key)
        else:
            await _etcdctl(c, "lease", "revoke", key.rsplit("/", 1)[1])
        return Injected(f"{leader.candidate}/key", hold=1.0)

    return cut


async def evict_frozen(c: Campaign, leader: SidecarProcess | None, view: View) -> Injected:
    """`evict --force` of a SIGSTOPped leader: its orchestrator keeps its grant until the
    watchdog kills it at the deadline; the successor must not lead before then."""
    if leader is None:
        return NOTHING
    key = await _leader_key(c, leader)
    if key is None:
        return NOTHING
    leader.signal(signal.SIGSTOP)
    c.frozen.add(leader.candidate)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "evict", "--force", "--candidate", leader.candidate, "--key", key,
        "--backend", c.backend, "--endpoints", ",".join(c.cluster.endpoints), "--election", "campaign",
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.wait_for(proc.wait(), 20)

    async def cont() -> None:
        leader.signal(signal.SIGCONT)
        c.frozen.discard(leader.candidate)

    return Injected(f"{leader.candidate}/evicted-frozen", cont, HOLD_FROZEN)


async def epoch_corrupt(c: Campaign, leader: SidecarProcess | None, view: View) -> Injected:
    """`etcdctl put NAME.epoch garbage`, then a handover: the next winner must repair
    the record, not crash on it."""
    if leader is None:
        return NOTHING
    if c.backend == "zookeeper":
        await _zk(c, lambda zk: zk.set("/campaign.epoch", b"garbage"))
    else:
        await _etcdctl(c, "put", "campaign.epoch", "garbage")
    with contextlib.suppress(OSError, ValueError):
        await asyncio.to_thread(request, str(leader.socket_path), {"type": "resign"}, 2.0)
    return Injected(f"{leader.candidate}/epoch-record", hold=1.0)


async def epoch_forged(c: Campaign, leader: SidecarProcess | None, view: View) -> Injected:
    """A well-formed epoch record written by hand naming the next in line, at the
    leader's own epoch, while the leader leads (a script "repairing" the record, a
    restore from a backup); then, on ZooKeeper, a touch of the leader's node (its
    watch fires) and, on both, the leader's resign.

    A hostile review found a claim that decided on the record alone leading
    beside the leader on the touch, and on the same epoch a second time after
    the resign. Only the handover's own write (record and marker at one
    zxid / revision) starts a term: nobody else may lead before the resign,
    and whoever leads after it leads above the leader's epoch.
    """
    if leader is None or not view or not isinstance(view.get("epoch"), int):
        return NOTHING
    epoch = int(view["epoch"])
    queued = [
        cand
        for cand in await c.election.candidates()
        if cand.id != leader.candidate and not (cand.stale or cand.no_lead or cand.foreign)
    ]
    if not queued:
        return NOTHING
    target = min(queued, key=lambda cand: cand.token)
    forged: dict[str, Any] = {"epoch": epoch, "token": target.token, "leader": target.id, "key": target.key}
    if c.backend == "zookeeper":
        leader_key = await _leader_key(c, leader)

        def forge(zk: Any) -> None:
            _, stat = zk.get(target.key)
            forged["lease"] = int(stat.ephemeralOwner)
            zk.set("/campaign.epoch", json.dumps(forged).encode())
            if leader_key is not None:
                data, _ = zk.get(leader_key)
                zk.set(leader_key, data)  # a touch: the next in line's watch fires, the leader still leads

        with contextlib.suppress(Exception):  # the target or the leader's node gone meanwhile: still forged
            await _zk(c, forge)
    else:
        forged["lease"] = int(target.key.rsplit("/", 1)[1], 16)
        await _etcdctl(c, "put", "campaign.epoch", json.dumps(forged))
    since = {sc.candidate: _log_size(sc) for sc in c.sidecars}
    # Long enough for a woken next in line to read and decide; any term it
    # started here overlaps the leader's acting orchestrator (the checker).
    await asyncio.sleep(0.5)
    # Unless the leader's own term ended meanwhile (then the checker judges the overlap).
    ended = bool(_events(leader, "demoted", since[leader.candidate]))
    problems = [
        f"{sc.candidate} led on a record written by hand, beside {leader.candidate}"
        for sc in c.sidecars
        if sc is not leader and not ended and _events(sc, "elected", since[sc.candidate])
    ]
    resigned = {sc.candidate: _log_size(sc) for sc in c.sidecars}
    cut_at = time.monotonic()  # failover is measured from the resign, not from the forgery
    with contextlib.suppress(OSError, ValueError):
        await asyncio.to_thread(request, str(leader.socket_path), {"type": "resign"}, 2.0)

    async def check() -> None:
        end = time.monotonic() + TTL + 5
        while time.monotonic() < end:
            for sc in c.sidecars:
                for ev in _events(sc, "elected", resigned.get(sc.candidate, 0)):
                    if int(ev.get("epoch", 0)) <= epoch:
                        problems.append(
                            f"{sc.candidate} led at epoch {ev.get('epoch')} after a record forged at {epoch}: "
                            "an epoch led twice"
                        )
                    return
            await asyncio.sleep(0.1)

    return Injected(f"{leader.candidate}/epoch-forged->{target.id}", check, 0.5, problems, cut_at=cut_at)


# -- mixed fleets (issue 16) ---------------------------------------------------

FOREIGN = "outsider"  # the plain recipe's value: a candidate id like any other to status and switchover


class _Foreign:
    """A candidate that is not ours: `etcdctl elect` on etcd, kazoo's `Election` recipe
    on ZooKeeper. It knows nothing of epochs, markers or grants."""

    def __init__(self, c: Campaign) -> None:
        self.c = c
        self.led = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None
        self._stop = threading.Event()
        self._thread: asyncio.Future[None] | None = None
        self._election: Any = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.c.backend == "etcd":
            from sidecar_harness.localetcd import find_binary

            self.proc = await asyncio.create_subprocess_exec(
                find_binary("etcdctl"), "--endpoints", ",".join(self.c.cluster.endpoints),
                "elect", "campaign", FOREIGN,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )  # fmt: skip

            async def watch_stdout() -> None:
                assert self.proc is not None and self.proc.stdout is not None
                if await self.proc.stdout.readline():  # it prints its key once it leads
                    self.led.set()

            self._thread = asyncio.ensure_future(watch_stdout())
            return

        from kazoo.client import KazooClient

        def run() -> None:  # in a thread of its own, like any kazoo user
            zk = KazooClient(hosts=",".join(self.c.cluster.endpoints))
            zk.start(5)
            try:
                self._election = zk.Election("/campaign", FOREIGN)

                def lead() -> None:
                    loop.call_soon_threadsafe(self.led.set)
                    self._stop.wait(30)

                with contextlib.suppress(Exception):  # cancelled before it led
                    self._election.run(lead)
            finally:
                zk.stop()
                zk.close()

        self._thread = asyncio.ensure_future(asyncio.to_thread(run))

    async def stop(self) -> None:
        """Resign as the recipe does (etcdctl on SIGINT; kazoo when the function returns)."""
        self._stop.set()
        if self._election is not None:
            self._election.cancel()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._thread is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._thread, 10)


async def foreign_leader(c: Campaign, leader: SidecarProcess | None, view: View) -> Injected:
    """A mixed fleet: a plain `etcdctl elect` (kazoo `Election`) candidate joins, an
    operator switches leadership over to it, it leads a moment and resigns.

    Our leader must hand over to it like to anyone (stopping its orchestrator
    first), and when it leaves, the next sidecar must lead at once: its exit
    is a clean resign of a candidate that never held a grant, not a lost
    lease, so no lock-delay may follow it (a claim path that trusted only
    its own markers would wait a TTL here)."""
    if leader is None:
        return NOTHING
    from sidecar.backends.base import SwitchoverRequest

    foreign, problems = _Foreign(c), []
    await foreign.start()
    end = time.monotonic() + 10
    while time.monotonic() < end and not any(x.id == FOREIGN for x in await c.election.candidates()):
        await asyncio.sleep(0.05)
    request = SwitchoverRequest(FOREIGN, "validate", f"fault-{c.rng.randrange(1 << 30):x}", time.time(), 10.0)
    await c.election.request_switchover(request)
    try:
        await asyncio.wait_for(foreign.led.wait(), TTL + 5)
    except TimeoutError:
        problems.append(f"the switchover to {FOREIGN} (a plain recipe candidate) did not land in {TTL + 5:g}s")
    else:
        # The recipe holds no grant the checker could see: ask the sidecars instead.
        # Our leader demotes before its key goes, so none may still claim to lead.
        claim = await c.claims()
        if claim:
            problems.append(f"{FOREIGN} leads while {[s.candidate for s, _ in claim]} still claim to")
    marks = {s.candidate: _log_size(s) for s in c.sidecars}

    async def leave() -> None:
        await foreign.stop()
        for s in c.sidecars:
            for e in _events(s, "lock_delay", marks.get(s.candidate, 0)):
                problems.append(f"{s.candidate} sat out a lock-delay after {FOREIGN} resigned: {e.get('why')}")

    return Injected(f"{leader.candidate}->{FOREIGN}", leave, 1.0, problems)


# -- ZooKeeper sessions (issue 14) ---------------------------------------------

# ZooKeeper's default maxSessionTimeout is 20 ticks; localzk.py does not change it.
ZK_MAX_SESSION = 20 * TICK_MS / 1000


def _log_size(sc: SidecarProcess) -> int:
    return sc.log_path.stat().st_size if sc.log_path.exists() else 0


def _events(sc: SidecarProcess, event: str, since: int = 0) -> list[dict[str, Any]]:
    """The sidecar's log lines of ``event``, from byte ``since`` (its log is appended to across restarts)."""
    out = []
    with sc.log_path.open("rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            if isinstance(rec, dict) and rec.get("event") == event:
                out.append(rec)
    return out


async def short_ttl(c: Campaign, leader: SidecarProcess | None, view: View) -> Injected:
    """Sidecars asking for a session longer than the ensemble's maxSessionTimeout.

    One whose timing fits the granted TTL must run safely on it: it is walked
    to the head of the queue (by resigning whoever leads) and frozen past the
    granted session; its orchestrator's acts go to the checker like everyone's.
    One whose timing cannot fit must refuse with one line and exit 2.
    """
    granted = ZK_MAX_SESSION
    fit = dict(FAST_TIMING, ttl=granted * 2)  # granted 4 s: 4*0.99 - 0.5 - 1.5 >= 0.5, it fits
    unfit = dict(FAST_TIMING, ttl=granted * 15, renew_deadline=granted * 9, retry_interval=3.0, kill_grace=3.0)
    endpoints = list(c.cluster.endpoints)
    ok = SidecarProcess(
        "sttl", c.workdir, endpoints, "campaign", fit, backend=c.backend, command=c.toy_argv("sttl"), log_relay=True
    )
    bad = SidecarProcess("sttl-unfit", c.workdir, endpoints, "campaign", unfit, backend=c.backend)
    problems: list[str] = []
    ok_from, bad_from = _log_size(ok), _log_size(bad)  # the same names run again in later faults
    ok.start(c.sidecar_env)
    bad.start(c.sidecar_env)
    await asyncio.to_thread(ok.wait_socket)
    c.sidecars.append(ok)
    # The one that cannot fit: one line, exit 2, no traceback.
    try:
        assert bad.proc is not None
        code: int | None = await asyncio.wait_for(asyncio.to_thread(bad.proc.wait), 20)
    except TimeoutError:
        code = None
        problems.append(f"a sidecar asking ttl {unfit['ttl']:g}s of a {granted:g}s maximum still runs after 20 s")
        bad.stop()
    with bad.log_path.open("rb") as f:
        f.seek(bad_from)
        text = f.read().decode(errors="replace")
    if code is not None and code != 2:
        problems.append(f"unfit ttl: exit {code}, expected 2")
    if len(_events(bad, "store_ttl_unfit", bad_from)) != 1 or "Traceback" in text:
        problems.append(f"unfit ttl: expected one store_ttl_unfit line and no traceback: {text[-300:]!r}")
    # The one that fits: make it lead, then freeze it past its granted session.
    led = False
    for _ in range(2 * len(c.sidecars)):  # each resign moves the queue on by one
        claim = await c.claims()
        if len(claim) == 1 and claim[0][0] is ok:
            led = True
            break
        if len(claim) == 1:
            with contextlib.suppress(OSError, ValueError):
                await asyncio.to_thread(request, str(claim[0][0].socket_path), {"type": "resign"}, 2.0)
            await c.wait_single_leader(TTL + 2, unlike=claim[0][0].candidate)
        else:
            await c.wait_single_leader(TTL + 2)
    granted_seen = [e.get("ttl") for e in _events(ok, "session_opened", ok_from)]
    if not granted_seen or granted_seen[-1] != granted:
        problems.append(f"sttl asked {fit['ttl']:g}s, expected a {granted:g}s session, saw {granted_seen}")
    if not led:
        problems.append("sttl never came to lead: its short session was not exercised")
    else:
        ok.signal(signal.SIGSTOP)
        c.frozen.add(ok.candidate)

    async def heal() -> None:
        ok.signal(signal.SIGCONT)
        c.frozen.discard(ok.candidate)
        c.sidecars.remove(ok)
        await asyncio.to_thread(ok.stop)
        if _events(ok, "kill_unconfirmed", ok_from):
            problems.append("sttl: an orchestrator kill was not confirmed")

    return Injected("sttl/short-ttl" if led else "none", heal, HOLD_FROZEN - TTL + granted if led else 0.0, problems)


async def session_replaced(c: Campaign, leader: SidecarProcess | None, view: View) -> Injected:
    """The leader's session expires server-side while its kazoo client lives, and
    kazoo reconnects at once: the server says "expired" and kazoo opens a
    replacement session on the same client. The sidecar must treat that as
    the end of its session (it owns nothing) and open its own.

    The expiry comes from cutting the leader's links past the session timeout
    (the harness has no other honest way: forcing an expiry needs the
    session's password, which the sidecar never writes anywhere); the links
    heal the moment the ensemble has ended the session (its liveness node is
    gone), so the reconnect races nothing but the expiry itself.
    """
    opened = _events(leader, "session_opened") if leader is not None else []
    if leader is None or not opened:
        return NOTHING
    session = str(opened[-1]["session"])
    liveness = f"/campaign.sessions/{session}"
    proxies = c.proxies[leader.candidate]
    for p in proxies:
        p.partition()
    gone: list[bool] = []

    def until_gone(zk: Any) -> None:  # in _zk's thread, on one client of its own
        deadline = time.monotonic() + ZK_MAX_SESSION + 3
        while time.monotonic() < deadline:
            if zk.exists(liveness) is None:
                gone.append(True)
                return
            time.sleep(0.1)

    with contextlib.suppress(Exception):  # whatever happens, the links heal below
        await _zk(c, until_gone)
    for p in proxies:
        p.heal()
    problems = [] if gone else [f"session {session} was not expired by the ensemble within {ZK_MAX_SESSION + 3:g}s"]

    async def check() -> None:
        end = time.monotonic() + TTL + 3
        while time.monotonic() < end:
            if any(str(e.get("session")) != session for e in _events(leader, "session_opened")[len(opened) :]):
                return
            await asyncio.sleep(0.1)
        problems.append(f"{leader.candidate} did not open a session of its own after {session} was replaced")

    return Injected(f"{leader.candidate}/session", check, 0.5, problems)


FAULTS: list[Fault] = [
    Fault("sidecar-kill", sidecar_kill),
    Fault("sidecar-stop", _freeze(0.0), backends=("etcd",)),
    # On ZooKeeper a freeze past the session timeout is a real server-side expiry.
    Fault("zk-session-expiry", _freeze(1.0), backends=("zookeeper",)),
    Fault("orchestrator-kill", _signal_orchestrator(signal.SIGKILL), failover="always"),
    Fault("orchestrator-stop", _signal_orchestrator(signal.SIGSTOP), failover="never"),
    Fault("resign", resign, failover="always"),
    Fault("switchover", switchover, failover="always"),
    Fault("member-kill", member_kill),
    Fault("leader-member-kill", leader_member_kill),
    Fault("quorum-loss", quorum_loss),
    Fault("partition", _links("partition")),
    Fault("slow-link", _links("slow"), failover="never"),
    Fault("watchdog-kill", _watchdog_kill(freeze_sidecar=False), failover="always"),
    Fault("watchdog-kill-sidecar-stop", _watchdog_kill(freeze_sidecar=True)),
    Fault("orchestrator-escape", orchestrator_escape, failover="always"),
    Fault("revoke-race", revoke_race, failover="always"),
    Fault("log-stall", log_stall),
    Fault("peer-hides", peer_hides, failover="always"),
    Fault("key-delete", _key_gone("delete"), failover="always"),
    Fault("lease-revoke", _key_gone("revoke"), failover="always", backends=("etcd",)),
    # An operator "cleaning up" the election under a frozen leader: every candidate queues again.
    Fault("prefix-delete", _key_gone("prefix")),
    Fault("evict-frozen-leader", evict_frozen),
    Fault("epoch-corrupt", epoch_corrupt, failover="always"),
    Fault("epoch-forged", epoch_forged, failover="always"),
    # etcd grants what is asked above its 2 s minimum; ZooKeeper clamps to maxSessionTimeout.
    Fault("store-short-ttl", short_ttl, failover="always", backends=("zookeeper",)),
    Fault("session-replaced", session_replaced, backends=("zookeeper",)),
    Fault("member-isolate", member_isolate, failover="always", peer_links=True),
    # Leadership goes to a candidate that is not a sidecar, so no sidecar "fails over"
    # during the hold; what counts is the recovery after it resigns (the heal).
    Fault("foreign-leader", foreign_leader, failover="never"),
]
BY_KIND: dict[str, Fault] = {f.kind: f for f in FAULTS}
CATALOGUE: dict[str, list[str]] = {
    backend: [f.kind for f in FAULTS if backend in f.backends] for backend in ("etcd", "zookeeper")
}
