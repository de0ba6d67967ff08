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
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sidecar.fencing.oneshot import request
from sidecar_harness.fleet import FAST_TIMING, SidecarProcess
from sidecar_harness.localstore import LocalMember

if TYPE_CHECKING:
    from sidecar_harness.faults import Campaign

TTL = FAST_TIMING["ttl"]
HOLD_LONG = TTL + 1.0  # long enough for any lease of the frozen or cut-off side to expire

Heal = Callable[[], Awaitable[None]]
View = dict[str, Any] | None


async def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Injected:
    """What an injection did: its target, how to heal it, how long to hold it first."""

    target: str
    heal: Heal = _nothing
    hold: float = 0.0


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

    def moves(self, target: str, leader: str | None) -> bool:
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

        return Injected(leader.candidate, cont, HOLD_LONG + extra_hold)

    return freeze


async def resign(c: Campaign, leader: SidecarProcess | None, view: View) -> Injected:
    if leader is None:
        return NOTHING
    with contextlib.suppress(OSError, ValueError):
        await asyncio.to_thread(request, str(leader.socket_path), {"type": "resign"}, 2.0)
    return Injected(leader.candidate)


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


FAULTS: list[Fault] = [
    Fault("sidecar-kill", sidecar_kill),
    Fault("sidecar-stop", _freeze(0.0), backends=("etcd",)),
    # On ZooKeeper a freeze past the session timeout is a real server-side expiry.
    Fault("zk-session-expiry", _freeze(1.0), backends=("zookeeper",)),
    Fault("orchestrator-kill", _signal_orchestrator(signal.SIGKILL), failover="always"),
    Fault("orchestrator-stop", _signal_orchestrator(signal.SIGSTOP), failover="never"),
    Fault("resign", resign, failover="always"),
    Fault("member-kill", member_kill),
    Fault("leader-member-kill", leader_member_kill),
    Fault("quorum-loss", quorum_loss),
    Fault("partition", _links("partition")),
    Fault("slow-link", _links("slow"), failover="never"),
]
BY_KIND: dict[str, Fault] = {f.kind: f for f in FAULTS}
CATALOGUE: dict[str, list[str]] = {
    backend: [f.kind for f in FAULTS if backend in f.backends] for backend in ("etcd", "zookeeper")
}
