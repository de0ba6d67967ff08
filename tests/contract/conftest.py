"""One backend contract, three stores: the fixtures that make a backend.

Every test in tests/contract runs once per backend (memory, etcd,
ZooKeeper). A backend that fails one is a bug, never a skip.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace

import pytest

from sidecar.backends.base import Backend, Session
from sidecar.backends.etcd import EtcdBackend
from sidecar.backends.zookeeper import ZooKeeperBackend, ZooKeeperSession, _four_letter
from sidecar.clock import MonotonicClock
from sidecar.config import Config, validate
from sidecar.elector import Elector
from sidecar.model import State
from sidecar_harness.memory import MemoryBackend, MemoryStore
from tests.conftest import EtcdServer, ZkServer
from tests.helpers import RecordingSink, eventually

# Short but safe timing (ttl 3 s fits ZooKeeper's 0.4-4 s window at tick 200 ms).
TIMING = {"ttl": 3.0, "renew_deadline": 1.5, "retry_interval": 0.5, "kill_grace": 0.5, "margin": 0.5}


@dataclass
class Contender:
    """A backend under test, and the electors running on it."""

    kind: str
    backend: Backend
    cfg: Config
    kill_session: Callable[[Session], Awaitable[None]]
    # The store's write counter (etcd revision, ZooKeeper zxid): what a candidate's writes cost it.
    store_revision: Callable[[], Awaitable[int]]
    clock: MonotonicClock = field(default_factory=MonotonicClock)
    electors: list[Elector] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def join(self, n: int, **changes: object) -> list[Elector]:
        """``changes``: Config fields for these candidates (priority, no_lead)."""
        new = []
        for _ in range(n):
            e = Elector(
                replace(self.cfg, candidate_id=f"{self.kind}-{len(self.electors)}", **changes),  # type: ignore[arg-type]
                self.backend,
                self.clock,
                RecordingSink(),
            )
            self.electors.append(e)
            new.append(e)
            self.tasks.append(asyncio.create_task(e.run()))
            # Join one at a time so the queue order is known: wait until the store
            # lists its key (the elector says CANDIDATE before its campaign has
            # registered, and a later joiner could register first).
            cid = e._cfg.candidate_id

            async def listed(cid: str = cid) -> bool:
                return cid in {c.id for c in await self.backend.admin(self.cfg.election).candidates()}

            await eventually(listed, what=f"candidate {cid} registered in the store")
        return new

    def leaders(self) -> list[Elector]:
        return [e for e in self.electors if e.state is State.LEADER]

    async def one_leader(self, unlike: Elector | None = None, timeout: float = 10) -> Elector:
        await eventually(
            lambda: (
                len(self.leaders()) == 1
                and self.leaders()[0] is not unlike
                and self.leaders()[0].snapshot().grant is not None
            ),
            timeout,
            what=f"one {self.kind} leader",
        )
        return self.leaders()[0]

    async def close(self) -> None:
        for e in self.electors:
            e.stop()
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 15)
        await self.backend.close()


@pytest.fixture(params=["memory", "etcd", "zookeeper"])
async def contender(request: pytest.FixtureRequest, election_name: str) -> AsyncIterator[Contender]:
    kind = request.param
    clock = MonotonicClock()
    reaper: asyncio.Task[None] | None = None
    backend: Backend
    kill: Callable[[Session], Awaitable[None]]
    if kind == "memory":
        store = MemoryStore(clock)
        reaper = asyncio.create_task(store.run_reaper())
        backend = MemoryBackend(store)

        async def kill(session: Session) -> None:
            await store.revoke(int(session.id, 16))

        async def revision() -> int:
            return store.revision

    elif kind == "etcd":
        etcd: EtcdServer = request.getfixturevalue("etcd")
        etcd_backend = await EtcdBackend(etcd.endpoints, clock).connect()
        backend = etcd_backend

        async def kill(session: Session) -> None:
            # What the server does when a lease runs out, done now.
            await etcd_backend.lease.revoke(int(session.id, 16))

        async def revision() -> int:
            return int((await etcd_backend.kv.get("contract-revision-probe")).header.revision)

    else:
        zk: ZkServer = request.getfixturevalue("zookeeper")
        backend = ZooKeeperBackend(zk.endpoints, clock)

        async def kill(session: Session) -> None:
            assert isinstance(session, ZooKeeperSession)
            await expire_zk_session(zk, session)

        async def revision() -> int:
            # The server's last zxid, from srvr (no session, so no write of its own).
            host, _, port = zk.endpoints[0].rpartition(":")
            answer = await _four_letter(host, int(port), b"srvr", 5.0)
            return int(answer.split("Zxid: ", 1)[1].split()[0], 16)

    cfg = validate(Config(backend=kind, election=election_name, **TIMING))  # type: ignore[arg-type]
    c = Contender(kind, backend, cfg, kill, revision, clock)
    yield c
    await c.close()
    if reaper is not None:
        reaper.cancel()


async def expire_zk_session(zk: ZkServer, session: ZooKeeperSession) -> None:
    """Real server-side expiry: a second client joins the session, then closes it."""
    from kazoo.client import KazooClient

    session_id, password = session.client.client_id
    twin = KazooClient(hosts=",".join(zk.endpoints), client_id=(session_id, password))
    await asyncio.to_thread(twin.start, 5)
    await asyncio.to_thread(twin.stop)
    await asyncio.to_thread(twin.close)
