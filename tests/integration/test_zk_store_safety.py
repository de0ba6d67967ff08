"""Issue 14, ZooKeeper half: what a renewal proves, and whose session it is.

Each test reproduces one way the old sidecar trusted the store more than the
store deserved, against real servers.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from kazoo.client import KazooClient

from sidecar.backends.base import SessionExpired, StoreUnavailable
from sidecar.backends.zookeeper import ZooKeeperBackend
from sidecar.clock import MonotonicClock
from sidecar.config import Config, validate
from sidecar.elector import Elector
from sidecar_harness.proxy import FaultProxy
from tests.conftest import ZkServer
from tests.contract.conftest import expire_zk_session
from tests.helpers import RecordingSink, eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def stopped_leader(zk_ensemble: ZkServer) -> Iterator[tuple[ZkServer, Any]]:
    """An ensemble whose ZooKeeper leader is frozen (SIGSTOP) once the test asks; thawed after."""
    zk = zk_ensemble.local
    assert zk is not None
    leader = zk.leader()
    assert leader is not None and leader.proc is not None
    yield zk_ensemble, leader
    leader.proc.send_signal(signal.SIGCONT)


async def test_keepalive_is_not_answered_by_a_follower_cut_off_from_the_leader(
    stopped_leader: tuple[ZkServer, Any],
) -> None:
    """Item 2: a follower that lost the leader keeps answering reads for up to
    syncLimit x tickTime (4 s here) while the leader lets our session age; a
    renewal it answers proves nothing. Ours must need the leader."""
    ensemble, leader = stopped_leader
    assert ensemble.local is not None
    follower = next(m for m in ensemble.local.members if m is not leader)
    backend = ZooKeeperBackend([f"127.0.0.1:{follower.client_port}"], MonotonicClock(), request_timeout=1.0)
    session = backend.session(4.0)
    try:
        await session.open()
        await session.keepalive()  # the leader is up: fine
        leader.proc.send_signal(signal.SIGSTOP)
        with pytest.raises((StoreUnavailable, TimeoutError)):
            # Well inside syncLimit x tickTime: the follower still believes it follows.
            await session.keepalive()
    finally:
        leader.proc.send_signal(signal.SIGCONT)
        await session.close()
        await backend.close()


async def test_a_session_kazoo_replaced_after_expiry_is_expired_for_good(zookeeper: ZkServer) -> None:
    """Item 3: kazoo answers an expiry by opening a new session on the same
    client; a keepalive on it would succeed, for a session that owns nothing."""
    backend = ZooKeeperBackend(zookeeper.endpoints, MonotonicClock())
    session = backend.session(3.0)
    try:
        await session.open()
        first = session.client.client_id[0]
        client = session._client
        assert client is not None
        await expire_zk_session(zookeeper, session)
        await eventually(
            lambda: client.client_id is not None and client.client_id[0] != first,
            10,
            what="kazoo to connect a replacement session",
        )
        for _ in range(2):  # and it stays expired
            with pytest.raises(SessionExpired):
                await session.keepalive()
    finally:
        await session.close() if not session.expired else None
        await backend.close()


async def test_an_open_given_up_on_leaves_no_client_behind(zookeeper: ZkServer, monkeypatch: Any) -> None:
    """Item 8: the elector bounds ``open()`` by its request timeout; the kazoo
    client it started must not connect afterwards and keep a session alive."""
    made: list[KazooClient] = []
    original = KazooClient.__init__

    def capture(self: KazooClient, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(KazooClient, "__init__", capture)
    host, port = zookeeper.endpoints[0].rsplit(":", 1)
    proxy = FaultProxy(host, int(port))
    await proxy.start()
    proxy.partition()  # accepted, never answered: the connect hangs
    backend = ZooKeeperBackend([proxy.address], MonotonicClock(), request_timeout=2.0, retry_interval=0.5)
    session = backend.session(3.0)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(session.open(), 0.5)
        proxy.heal()  # the store answers again: an orphaned client would connect now
        assert made
        await eventually(
            lambda: all(c._stopped.is_set() and not c.connected for c in made),
            8,
            what="the abandoned kazoo client to be stopped, not connected",
        )
    finally:
        for c in made:
            await asyncio.to_thread(c.stop)
        await proxy.close()
        await backend.close()


async def test_reconnects_back_off_at_most_the_retry_interval(zookeeper: ZkServer) -> None:
    """Item 8: kazoo's own default backs off to an hour between reconnects."""
    backend = ZooKeeperBackend(zookeeper.endpoints, MonotonicClock(), retry_interval=0.5)
    session = backend.session(3.0)
    try:
        await session.open()
        retry = session.client._conn_retry
        assert retry.max_tries == -1 and retry.max_delay <= 0.5
    finally:
        await session.close()
        await backend.close()


async def test_a_granted_ttl_the_timing_cannot_use_stops_with_one_line(zookeeper: ZkServer) -> None:
    """Item 5: asked 60 s, granted 4 s (20 ticks of 200 ms). Timing planned for
    60 s (kill_grace 12 s) leaves nothing to renew in: the old elector opened a
    session, gave up on it at once and opened the next, never leading."""
    cfg = validate(
        Config(
            backend="zookeeper", endpoints=tuple(zookeeper.endpoints), election="ttl-unfit", candidate_id="a",
            ttl=60, renew_deadline=36, retry_interval=12, kill_grace=12, margin=0.5, request_timeout=2,
        )
    )  # fmt: skip
    backend = ZooKeeperBackend(zookeeper.endpoints, MonotonicClock(), request_timeout=2.0, retry_interval=12)
    sink = RecordingSink()
    e = Elector(cfg, backend, MonotonicClock(), sink)
    task = asyncio.create_task(e.run())
    try:
        await asyncio.wait_for(asyncio.shield(task), 15)
    finally:
        e.stop()
        await asyncio.wait_for(task, 15)
        await backend.close()
    assert "granted ttl 4s" in e.fatal and "60s asked" in e.fatal, e.fatal
    assert "\n" not in e.fatal
    assert len(sink.of("session_opened")) == 1
    assert sink.of("store_ttl_unfit")


async def test_the_store_version_is_known_without_a_session(zookeeper: ZkServer) -> None:
    """Item 3 (issue 14): the version is logged and exported as on etcd, asked
    with `srvr` (allowed by default, unlike kazoo's `envi`) and no session."""
    backend = ZooKeeperBackend(zookeeper.endpoints, MonotonicClock())
    try:
        facts = await backend.describe()
    finally:
        await backend.close()
    assert facts["version"].startswith("3."), facts
    assert facts["version"].count(".") == 2 and "-" not in facts["version"], facts


async def test_an_unknown_version_is_one_line_not_a_failure() -> None:
    backend = ZooKeeperBackend(["127.0.0.1:1"], MonotonicClock(), request_timeout=1.0)
    with pytest.raises(StoreUnavailable) as err:
        await backend.describe()
    assert "\n" not in str(err.value) and "127.0.0.1:1" in str(err.value)


async def test_status_names_a_candidate_whose_liveness_node_is_gone(zookeeper: ZkServer) -> None:
    """The lock-delay reads a missing liveness node as "that session ended". One
    deleted by hand under a live leader removes the protection against a later
    delete of its candidate node; `status` must say so while it can be mended."""
    backend = ZooKeeperBackend(zookeeper.endpoints, MonotonicClock())
    session = backend.session(3.0)
    election = backend.election("liveness-gone")
    try:
        await session.open()
        await election.campaign(session, "c0")
        admin = backend.admin("liveness-gone")
        assert await admin.problems() == []
        path = election.liveness_path(int(session.id, 16))
        kc = KazooClient(hosts=",".join(zookeeper.endpoints))
        kc.start(5)
        try:
            kc.delete(path)  # what an operator's zkCli `delete` does
        finally:
            kc.stop()
            kc.close()
        problems = await admin.problems()
        assert len(problems) == 1 and path in problems[0] and "restart that sidecar" in problems[0], problems
    finally:
        await session.close()
        await backend.close()
