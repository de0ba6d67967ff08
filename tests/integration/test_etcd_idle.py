"""Issue 16 (idle cost): an idle sidecar's periodic re-reads ride its renewal.

The transport wakes for every burst of calls (gRPC's C-core threads did so
on a backoff, whatever the burst's size), so an idle sidecar costs CPU per
burst, not per call. The leader's
own-key and view re-reads, a waiting candidate's queue read and a no-lead
candidate's re-read therefore go out when the sidecar's keepalive is
acknowledged (``EtcdBackend.next_renewal``), not on timers of their own.

Here the retry interval is 30 s, so a read within the test's deadline after
a keepalive can only be one that the keepalive set off: on the code before,
each loop slept its own 30 s and these tests time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Coroutine
from dataclasses import replace
from functools import partial
from typing import Any

import pytest

from sidecar.backends import connect
from sidecar.backends.base import SessionExpired, StoreUnavailable
from sidecar.backends.etcd import SPAN_MAX_KEYS, EtcdBackend, EtcdElection, EtcdSession
from sidecar.backends.etcd_wire import TransportError, as_bytes
from sidecar.clock import MonotonicClock
from sidecar_harness.fleet import fast_config
from tests.conftest import EtcdServer
from tests.helpers import eventually

pytestmark = pytest.mark.integration


class Env:
    def __init__(self, backend: EtcdBackend, election: str) -> None:
        self.backend, self.election = backend, election
        self.sessions: list[EtcdSession] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.keys_read: list[str] = []  # the first key of each read
        self.ranges_read: list[tuple[bytes, bytes]] = []  # each read's [key, range end); a single key: end b""
        self.started: list[tuple[bytes, bytes]] = []  # the same, as each read is sent
        kv = backend.kv
        get = kv.get

        async def counted(key: str | bytes, *args: Any, range_end: str | bytes | None = None, **kwargs: Any) -> Any:
            self.started.append((as_bytes(key), as_bytes(range_end or b"")))
            resp = await get(key, *args, range_end=range_end, **kwargs)
            # Once answered: the reader goes on to wait again.
            self.keys_read.append(key if isinstance(key, str) else key.decode())
            self.ranges_read.append((as_bytes(key), as_bytes(range_end or b"")))
            return resp

        kv.get = counted

    async def session(self) -> EtcdSession:
        s = self.backend.session(10)
        await s.open()
        self.sessions.append(s)
        return s

    def start(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self.tasks.append(task)
        return task

    def reads_of(self, key: str, *, sent: bool = False) -> int:
        """Reads answered (``sent``: sent) that covered ``key``: of it alone, or of a range holding it."""
        k = key.encode()
        return sum(low == k if not end else low <= k < end for low, end in (self.started if sent else self.ranges_read))


@pytest.fixture
async def env(etcd: EtcdServer, election_name: str) -> AsyncIterator[Env]:
    cfg = replace(fast_config(election_name), endpoints=tuple(etcd.endpoints), retry_interval=30.0)
    backend = await connect(cfg, MonotonicClock())
    assert isinstance(backend, EtcdBackend)
    e = Env(backend, election_name)
    yield e
    for t in e.tasks:
        t.cancel()
    await asyncio.gather(*e.tasks, return_exceptions=True)
    for s in e.sessions:
        with contextlib.suppress(SessionExpired):
            await s.close()
    await backend.close()


async def read_again_after_keepalive(env: Env, session: EtcdSession, keys: list[str], first: int = 1) -> None:
    """Each of ``keys`` has been read ``first`` times; after one keepalive each is read again."""
    await eventually(lambda: all(env.reads_of(k) >= first for k in keys), 5, what=f"first reads of {keys}")
    before = {k: env.reads_of(k) for k in keys}
    await session.keepalive()
    await eventually(
        lambda: all(env.reads_of(k) > before[k] for k in keys), 10, what=f"re-reads of {keys} after a keepalive"
    )


async def test_the_leaders_own_key_and_view_are_re_read_when_its_keepalive_is_answered(env: Env) -> None:
    session = await env.session()
    a: EtcdElection = env.backend.election(env.election)
    await a.campaign(session, "a")
    env.start(a.wait_lost())
    env.start(a.wait_switchover("a"))
    own, request = a._key, a._switch_key
    await read_again_after_keepalive(env, session, [own, request])
    # Another keepalive, another pass: the loops wait for the next one each time.
    await read_again_after_keepalive(env, session, [own, request])


async def test_the_leaders_two_waits_share_one_read_per_renewal(env: Env) -> None:
    """Issue 16 (idle CPU is per call on grpclib): the own-key wait and the switchover wait
    each re-read on the renewal, and the view's one range holds our key. Before, every
    pass read our key twice: alone, and again in the view's read of the queue."""
    session = await env.session()
    a: EtcdElection = env.backend.election(env.election)
    await a.campaign(session, "a")
    env.start(a.wait_lost())
    env.start(a.wait_switchover("a"))
    own = a._key
    await eventually(lambda: env.reads_of(own) >= 1, 5, what="the first read")
    assert env.reads_of(own, sent=True) == 1, "the two waits made a first read each"
    for _ in range(2):
        sent = env.reads_of(own, sent=True)
        answered = env.reads_of(own)
        await session.keepalive()
        # Both waits wake on the same renewal, a loop turn apart: long before any
        # answer, both have sent whatever they read.
        await eventually(partial(more_reads, env, own, answered), 10, what="the re-read after a keepalive")
        reads = env.reads_of(own, sent=True) - sent
        assert reads == 1, f"our key was read {reads} times for one renewal"


def more_reads(env: Env, key: str, than: int) -> bool:
    return env.reads_of(key) > than


async def test_a_waiting_candidate_re_reads_the_queue_when_its_keepalive_is_answered(env: Env) -> None:
    a: EtcdElection = env.backend.election(env.election)
    await a.campaign(await env.session(), "a")
    b: EtcdElection = env.backend.election(env.election)
    session = await env.session()
    queued = asyncio.Event()
    env.start(b.campaign(session, "b", lambda _: queued.set()))
    await asyncio.wait_for(queued.wait(), 5)
    # Its second read comes at once: the head is new to it, so it polls the
    # head's lease beside the watch and looks again a moment later. From
    # then on it waits for its renewal.
    await read_again_after_keepalive(env, session, [b._epoch_key], first=2)
    await read_again_after_keepalive(env, session, [b._epoch_key], first=3)


async def test_a_waiting_candidate_keeps_its_watch_over_quiet_re_reads(env: Env) -> None:
    """Issue 16 (idle CPU is per call on grpclib): a stream set up and reset every
    interval cost an idle candidate as much as a call. Before, each re-read set up a new one."""
    a: EtcdElection = env.backend.election(env.election)
    await a.campaign(await env.session(), "a")
    b: EtcdElection = env.backend.election(env.election)
    watches: list[bytes] = []
    watch_stream = env.backend.watch_stream

    def counted(key: bytes, *args: Any, **kwargs: Any) -> Any:
        watches.append(key)
        return watch_stream(key, *args, **kwargs)

    env.backend.watch_stream = counted  # type: ignore[method-assign]
    session = await env.session()
    queued = asyncio.Event()
    led = env.start(b.campaign(session, "b", lambda _: queued.set()))
    await asyncio.wait_for(queued.wait(), 5)
    await read_again_after_keepalive(env, session, [b._epoch_key], first=2)
    await read_again_after_keepalive(env, session, [b._epoch_key], first=3)
    assert len(watches) == 1, f"{len(watches)} watches set up for one predecessor over three reads"
    # A new predecessor is a new watch: the kept one follows one key only.
    await a.resign()
    await asyncio.wait_for(led, 5)
    assert b._pred is None, "b leads, and the watch it kept is closed"


async def test_a_no_lead_candidate_re_reads_when_its_keepalive_is_answered(env: Env) -> None:
    a: EtcdElection = env.backend.election(env.election)
    await a.campaign(await env.session(), "a")
    c: EtcdElection = env.backend.election(env.election)
    session = await env.session()
    env.start(c.campaign(session, "c", no_lead=True))
    await eventually(lambda: bool(c_key(env, c)), 5, what="the no-lead key registered")
    await read_again_after_keepalive(env, session, [c_key(env, c)])


def c_key(env: Env, c: EtcdElection) -> str:
    return next((k for k in env.keys_read if k.startswith(c._no_lead_prefix)), "")


async def test_a_cancelled_waiter_leaves_the_shared_renewal_future_to_the_others(env: Env) -> None:
    """Waiters share one future per renewal: a cancelled wait must not cancel it for everyone."""
    session = await env.session()
    lease = int(session.id, 16)
    fut = env.backend.next_renewal(lease)
    waiters = [asyncio.ensure_future(asyncio.wait({fut}, timeout=30)) for _ in range(2)]
    await asyncio.sleep(0)
    waiters[0].cancel()
    await asyncio.gather(waiters[0], return_exceptions=True)
    assert not fut.cancelled()
    await session.keepalive()
    done, _ = await asyncio.wait_for(waiters[1], 5)
    assert fut in done
    assert env.backend.next_renewal(lease) is not fut, "a renewal answered: the next wait is for the next one"


async def test_a_renewal_wakes_the_re_reads_of_its_own_lease_only(env: Env) -> None:
    """Elections sharing a backend (the contract tests, a fleet in one process) must not
    re-read on each other's renewals: N of them would make N^2 reads per interval.
    A hostile review measured 722 gets/s for 10 electors on one backend this way."""
    mine, other = await env.session(), await env.session()
    mine_next = env.backend.next_renewal(int(mine.id, 16))
    other_next = env.backend.next_renewal(int(other.id, 16))
    await other.keepalive()
    assert other_next.done() and not mine_next.done()
    await mine.keepalive()
    assert mine_next.done()


async def test_a_session_that_ends_wakes_its_waiters(env: Env) -> None:
    """Closed, abandoned or found expired: its waiters read now (and find their key gone) rather than
    sit out the fallback interval."""
    closed, abandoned = await env.session(), await env.session()
    waits = [env.backend.next_renewal(int(s.id, 16)) for s in (closed, abandoned)]
    await closed.close()
    await abandoned.abandon()
    env.sessions.remove(closed)
    assert all(w.done() for w in waits)


RENEWING_SIDECAR_BACKEND = """
import asyncio, sys, threading
from sidecar.backends.etcd import EtcdBackend
from sidecar.clock import MonotonicClock

async def main():
    backend = await EtcdBackend(sys.argv[1:], MonotonicClock()).connect()
    session = backend.session(10)
    await session.open()
    for _ in range(3):
        await session.keepalive()
    await backend.election("idle-threads").leader()
    print(threading.active_count(), "grpc" in sys.modules, flush=True)
    await session.close()
    await backend.close()

asyncio.run(main())
"""


async def test_the_transport_runs_no_threads_and_loads_no_grpc(etcd: EtcdServer) -> None:
    """gRPC's C-core threads woke 20-30 times a second after every burst of calls: a bare
    grpc.aio client renewing every 2 s cost 0.12-0.16 % of a core and 43 MiB, the idle
    budget of a whole sidecar (bench/transport_floor.py). The etcd backend renews, reads
    and closes on the event loop's thread alone, without importing grpc."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RENEWING_SIDECAR_BACKEND, *etcd.endpoints, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    threads, grpc_loaded = out.decode().split()
    assert (int(threads), grpc_loaded) == (1, "False")


async def test_a_span_read_answers_as_the_separate_ranges_do_and_splits_when_crowded(env: Env) -> None:
    """One Range over an election's keys (EtcdBackend.span) drops what sorts between them
    and was not asked for; once others' keys crowd the span it reads range by range."""
    b, name = env.backend, env.election
    await b.kv.put(f"{name}.epoch", "e")
    await b.kv.put(f"{name}/1", "q1")
    await b.kv.put(f"{name}.ttl/1", "10")  # ours, not asked for
    await b.kv.put(f"{name}.other", "x")  # another election's key, between
    reads: list[tuple[str, str | bytes | None]] = [(f"{name}/", f"{name}0"), (f"{name}.epoch", None)]

    def values(kvs: list[list[Any]]) -> list[list[bytes]]:
        return [[bytes(kv.value) for kv in r] for r in kvs]

    apart, _ = await b.snapshot("test", reads)
    before = len(env.ranges_read)
    together, revision = await b.span("test", reads)
    assert values(together) == values(apart) == [[b"q1"], [b"e"]]
    assert len(env.ranges_read) == before + 1 and revision > 0
    for i in range(70):
        await b.kv.put(f"{name}.other/{i:03}", "x")
    crowded, _ = await b.span("test", reads)  # reads the span once more, then range by range
    assert values(crowded) == values(apart)
    before = len(env.ranges_read)
    await b.span("test", reads)
    assert len(env.ranges_read) == before + len(reads), "a crowded span is read again"
    # A few large values crowd a span as well as many keys do.
    other = f"{name}-big"
    await b.kv.put(f"{other}.epoch", "e")
    await b.kv.put(f"{other}.eu/1", "x" * 100_000)
    big: list[tuple[str, str | bytes | None]] = [(f"{other}/", f"{other}0"), (f"{other}.epoch", None)]
    await b.span("test", big)
    before = len(env.ranges_read)
    assert values((await b.span("test", big))[0]) == [[], [b"e"]]
    assert len(env.ranges_read) == before + len(big), "100 kB not asked for are read on every pass"


def fail_span_reads(env: Env) -> list[bytes]:
    """Make every span read (one Range with SPAN_MAX_KEYS as its limit) fail as a timeout would;
    return the first keys of the reads failed."""
    failed: list[bytes] = []
    get = env.backend.kv.get

    async def failing(key: str | bytes, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("limit") == SPAN_MAX_KEYS:
            failed.append(as_bytes(key))
            raise TransportError("127.0.0.1:0: injected: deadline passed")
        return await get(key, *args, **kwargs)

    env.backend.kv.get = failing  # type: ignore[method-assign]
    return failed


async def test_a_span_that_cannot_be_read_whole_is_read_apart_from_then_on(env: Env) -> None:
    """Review finding: others' values inside the span (150 MiB under NAME.x/) made every span read
    time out, for ever. A failed span read falls back to the separate ranges at once and, as
    they answered, the span is read apart from then on (tried whole again, a crowded span cost
    each sidecar hundreds of MiB each time: a second review)."""
    b, name = env.backend, env.election
    await b.kv.put(f"{name}.epoch", "e")
    await b.kv.put(f"{name}/1", "q1")
    reads: list[tuple[str, str | bytes | None]] = [(f"{name}/", f"{name}0"), (f"{name}.epoch", None)]
    failed = fail_span_reads(env)
    got, _ = await b.span("test", reads)
    assert [[bytes(kv.value) for kv in r] for r in got] == [[b"q1"], [b"e"]]
    assert len(failed) == 1
    await b.span("test", reads)
    assert len(failed) == 1, "a span that failed was tried whole again"


async def test_a_store_that_is_away_does_not_split_a_span(env: Env) -> None:
    """Second review: a blip split the span for good, and its saving with it."""
    b, name = env.backend, env.election
    reads: list[tuple[str, str | bytes | None]] = [(f"{name}/", f"{name}0"), (f"{name}.epoch", None)]
    get = b.kv.get

    async def away(*_: Any, **__: Any) -> Any:
        raise TransportError("127.0.0.1:0: injected: connection refused")

    b.kv.get = away  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await b.span("test", reads)
    b.kv.get = get  # type: ignore[method-assign]
    before = len(env.ranges_read)
    await b.span("test", reads)
    assert len(env.ranges_read) == before + 1, "the span is read apart after the store came back"


async def test_a_leader_whose_span_reads_fail_still_sees_its_key_deleted(env: Env) -> None:
    """Review finding (two leaders): with every span read failing, a leader whose key an
    operator deleted never saw it go, and its successor led beside it after the lock-delay."""
    session = await env.session()
    a: EtcdElection = env.backend.election(env.election)
    await a.campaign(session, "a")
    fail_span_reads(env)
    await env.backend.kv.delete(a._key)

    async def until_noticed() -> None:
        while True:  # as the elector does (_own_key_gone): a failed wait is logged and tried again
            with contextlib.suppress(StoreUnavailable):
                return await a.wait_lost()
            await asyncio.sleep(0.1)

    await asyncio.wait_for(until_noticed(), 5)
