"""A store member cut from its peers, silently, while its clients still reach it (issue 14).

The peer links go through fault proxies (sidecar_harness/peerlinks.py); a
hold keeps every connection open and moves nothing. What must hold: the
isolated member still accepts clients, but no write through it commits,
while the other two keep a quorum; after heal it serves writes again.
"""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss
from kazoo.handlers.threading import KazooTimeoutError

from sidecar_harness.localetcd import EtcdNotFound, LocalEtcd, Member
from sidecar_harness.localzk import LocalZooKeeper, Server, ZooKeeperNotFound, four_letter
from tests.conftest import missing
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


def etcd_put(m: Member, key: str, timeout: float = 2.0) -> bool:
    """A write through member ``m``'s own gRPC gateway: True once it committed."""
    body = {"key": base64.b64encode(key.encode()).decode(), "value": base64.b64encode(b"v").decode()}
    req = urllib.request.Request(f"http://127.0.0.1:{m.client_port}/v3/kv/put", data=json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return "header" in json.loads(resp.read())
    except (OSError, ValueError, urllib.error.HTTPError):
        return False


@pytest.fixture
def etcd3() -> Iterator[LocalEtcd]:
    try:
        cluster = LocalEtcd(3, peer_proxies=True).start()
    except EtcdNotFound as exc:
        missing(str(exc))
        raise
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def zk3() -> Iterator[LocalZooKeeper]:
    try:
        ensemble = LocalZooKeeper(3, peer_proxies=True).start()
    except ZooKeeperNotFound as exc:
        missing(str(exc))
        raise
    try:
        yield ensemble
    finally:
        ensemble.stop()


def all_links_proxied(zk: LocalZooKeeper) -> bool:
    """3 election links and 2 followers' quorum links, each on a proxy that names its dialer."""
    assert zk.links is not None
    names = {s.name for s in zk.members}
    seen = [(target, d) for target, ds in zk.links.dialers().items() for d in ds]
    return len(seen) == 5 and all(d in names and d != t for t, d in seen)


def test_etcd_member_cut_from_its_peers_answers_clients_but_commits_nothing(etcd3: LocalEtcd, measure: Any) -> None:
    assert etcd3.links is not None
    leader = etcd3.leader()
    m = next(x for x in etcd3.members if x is not leader)
    others = [x for x in etcd3.members if x is not m]
    assert etcd_put(m, "before")

    etcd3.links.isolate(m.name)
    t0 = time.monotonic()
    # (a) still reachable: it accepts connections and answers what it can answer alone.
    socket.create_connection(("127.0.0.1", m.client_port), timeout=1).close()
    with urllib.request.urlopen(f"http://127.0.0.1:{m.client_port}/version", timeout=2) as resp:
        assert b"etcdserver" in resp.read()
    # (b) no quorum write through it, while the other two commit.
    assert not etcd_put(m, "during")
    wait_until(lambda: etcd_put(others[0], "majority"), 10, 0.1, "a write through the majority")
    wait_until(lambda: not etcd3.healthy(m), 10, 0.1, "the isolated member to report itself unhealthy")
    measure("etcd member isolated", f"writes through it fail; its /health false {time.monotonic() - t0:.2f}s after")

    etcd3.links.heal()
    wait_until(lambda: etcd_put(m, "after", timeout=1.0), 20, 0.2, "a write through the healed member")


def zk_write_commits(s: Server, path: str, wait: float) -> bool:
    client = KazooClient(hosts=s.endpoint, timeout=4.0)
    try:
        client.start(timeout=wait)
        client.create_async(path, b"x").get(timeout=wait)
        return True
    except Exception:
        return False
    finally:
        client.stop()
        client.close()


def test_zookeeper_server_cut_from_its_peers_answers_clients_but_commits_nothing(
    zk3: LocalZooKeeper, measure: Any
) -> None:
    assert zk3.links is not None
    # ZooKeeper dials back to the election address in a peer's greeting; the proxies strip
    # it, so even those links land on a proxy, and an isolation leaves no link behind.
    # 30 s, not 10: one CI run under load timed out at 10 s. The links seen go in the
    # message, so a failure says whether a link was missing, extra or unnamed.
    try:
        wait_until(lambda: all_links_proxied(zk3), 30, 0.1, "every peer link through an identifying proxy")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; links now (member: dialers): {zk3.links.dialers()}") from None
    leader = zk3.leader()
    m = next(s for s in zk3.members if s is not leader)
    other = next(s for s in zk3.members if s is not m)
    client = KazooClient(hosts=m.endpoint, timeout=4.0)
    client.start(timeout=10)
    try:
        client.create("/before", b"x")
        zk3.links.isolate(m.name)
        t0 = time.monotonic()
        # (a) still reachable: ruok answers, the follower still says it follows.
        assert four_letter(m.client_port, "ruok") == "imok"
        assert zk3.mode(m) == "follower"
        # (b) a write through it is forwarded to the leader and never commits: no answer
        # within 2 s, or the connection dropped (ZooKeeper answers a session's requests in
        # order, so the client's heartbeat ping queued behind the write goes unanswered too,
        # and kazoo may give up on the connection first, depending on when it last pinged).
        with pytest.raises((KazooTimeoutError, ConnectionLoss)):
            client.create_async("/during", b"x").get(timeout=2.0)
        assert zk_write_commits(other, "/majority", 10)
        wait_until(lambda: zk3.mode(m) != "follower", 15, 0.1, "the isolated follower to stop following")
        measure("ZooKeeper server isolated", f"served as follower for {time.monotonic() - t0:.2f}s after the cut")
    finally:
        client.stop()
        client.close()
    zk3.links.heal()
    wait_until(lambda: zk_write_commits(m, "/after", 2.0), 30, 0.2, "a write through the healed server")
