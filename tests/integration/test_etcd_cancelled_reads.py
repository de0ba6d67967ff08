"""Our reads must never take the store down when we give up on them.

etcd 3.5.0 to 3.5.4 panic, and the member exits, when a client cancels a
read-only txn while its ranges run (etcd-io/etcd#14110, fixed in 3.5.5). Every
call of ours carries a deadline and a stop cancels whatever is in flight, so a
sidecar that read the queue in one read-only txn could kill a member: CI lost
its session etcd that way ("connection refused" for every later test). A
private member here, since the old code kills it; a queue large enough that a
range is still running when a short deadline cancels it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sidecar.backends.base import StoreUnavailable
from sidecar.backends.etcd import EtcdBackend
from sidecar.clock import MonotonicClock
from sidecar_harness.localetcd import LocalEtcd
from sidecar_harness.localstore import last_words

pytestmark = pytest.mark.integration
KEYS, BATCH = 25_600, 128
CALLS = 300


@pytest.fixture
def member() -> Iterator[LocalEtcd]:
    with LocalEtcd(1) as store:
        yield store


async def test_reads_that_time_out_leave_the_member_running(member: LocalEtcd, election_name: str) -> None:
    fill = EtcdBackend(member.endpoints, MonotonicClock(), request_timeout=30.0)
    await fill.connect()
    kv = fill.kv
    for b in range(KEYS // BATCH):
        ops = [kv.txn_op_put(f"{election_name}/{b:04x}{i:04x}", "x" * 100) for i in range(BATCH)]
        await kv.txn(compare=[], success=ops, failure=[])
    # A deadline far shorter than a range over the whole queue takes.
    hasty = EtcdBackend(member.endpoints, MonotonicClock(), request_timeout=0.003)
    await hasty.connect()
    election = hasty.election(election_name)
    timed_out = 0
    try:
        for _ in range(CALLS):
            for read in (election._queue_read, election._read_at_once):
                try:
                    await read()
                except StoreUnavailable:
                    timed_out += 1
        assert timed_out, "no read ran out of time: the queue is too small to show anything"
        m = member.members[0]
        assert m.alive, f"the member exited after {timed_out} reads timed out: {last_words(m.log_path)}"
        assert (await kv.get(f"{election_name}.epoch")).header.revision > 0, "the member stopped answering"
    finally:
        await hasty.close()
        await fill.close()


async def test_keys_that_only_share_the_name_never_reach_our_reads(member: LocalEtcd, election_name: str) -> None:
    """``NAME.cache/...`` (an application's keys) or ``NAME.eu/...`` (another election)
    share our records' prefix. Read along with them, past gRPC's 4 MiB message limit
    every read of this election failed (RESOURCE_EXHAUSTED), for good."""
    fill = EtcdBackend(member.endpoints, MonotonicClock(), request_timeout=30.0)
    await fill.connect()
    try:
        for i in range(5):
            await fill.kv.put(f"{election_name}.cache/{i}", "x" * 1_000_000)
        election = fill.election(election_name)
        queue, _, _ = await election._queue_read()
        assert queue == []
        record, marker, request, _ = await election._read_at_once()
        assert marker is None and request is None, (record, marker, request)
    finally:
        await fill.close()


async def test_a_fenced_txn_of_reads_only_is_refused_before_it_is_sent(member: LocalEtcd, election_name: str) -> None:
    from sidecar.fencing.adapters.etcd import EtcdFence

    fence = await EtcdFence.connect(member.endpoints, election_name, keep_history=False)
    kv = fence.kv
    try:
        assert fence.client.lease is not None
        lease = (await fence.client.lease.grant(30)).ID
        token = int((await kv.put(f"{election_name}/{lease:x}", "leader", lease=lease)).header.revision)
        before = int((await kv.get("x")).header.revision)
        with pytest.raises(ValueError, match="must put or delete"):
            async with fence.transaction(token) as tx:
                tx.ops.append(tx.kv.txn_op_get(f"{election_name}.epoch"))
        assert int((await kv.get("x")).header.revision) == before
        async with fence.transaction(token) as tx:  # a write still commits
            tx.put(f"{election_name}.data", "v")
        assert (await kv.get(f"{election_name}.data")).kvs[0].value == b"v"
    finally:
        await fence.client.close()
