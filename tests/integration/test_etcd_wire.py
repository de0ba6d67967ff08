"""The etcd transport (sidecar/backends/etcd_wire.py) against a real etcd and members that fail.

A member that refuses, or accepts and then never answers, costs one call:
the next call goes to the next endpoint. A keepalive that gets no answer in
time moves the next renewal too, so one silent member cannot hold a lease
hostage while the others would renew it.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings
from collections.abc import AsyncIterator

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from sidecar.backends import etcd as etcd_backend
from sidecar.backends.base import StoreUnavailable
from sidecar.backends.etcd import EtcdBackend, _KeptWatch
from sidecar.backends.etcd_messages import pb
from sidecar.backends.etcd_wire import RpcError, TransportError, Wire, watch_call
from sidecar.clock import MonotonicClock
from sidecar_harness.localstore import free_ports
from tests.conftest import EtcdServer

pytestmark = pytest.mark.integration


@pytest.fixture
async def silent() -> AsyncIterator[str]:
    """An endpoint that accepts connections, reads what it is sent and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"127.0.0.1:{port}"
    for w in held:
        w.close()  # its reader sees the end, and the handler returns
    server.close()


def refused() -> str:
    """An endpoint nothing listens on."""
    port = free_ports(1)[0]
    with socket.socket() as s:  # still free: connecting is refused
        assert s.connect_ex(("127.0.0.1", port)) != 0
    return f"127.0.0.1:{port}"


async def test_a_refused_member_costs_one_call(etcd: EtcdServer) -> None:
    wire = Wire([refused(), *etcd.endpoints])
    try:
        with pytest.raises(TransportError):
            await wire.kv.get("wire-probe", timeout=2)
        resp = await wire.kv.get("wire-probe", timeout=2)
        assert resp.header.revision > 0
    finally:
        wire.close()


async def test_a_member_that_never_answers_costs_one_deadline(etcd: EtcdServer, silent: str) -> None:
    wire = Wire([silent, *etcd.endpoints])
    try:
        with pytest.raises(TimeoutError):
            await wire.kv.get("wire-probe", timeout=0.3)
        resp = await wire.kv.get("wire-probe", timeout=2)
        assert resp.header.revision > 0
    finally:
        wire.close()


async def test_a_keepalive_without_an_answer_moves_the_next_renewal(etcd: EtcdServer, silent: str) -> None:
    """The session is granted on the live member, then its connection goes to a silent one
    (as after a failover elsewhere): the renewal that times out there moves the next one back."""
    backend = await EtcdBackend([*etcd.endpoints, silent], MonotonicClock(), request_timeout=0.5).connect()
    try:
        session = backend.session(10)
        await session.open()
        await session.keepalive()
        backend.wire.failed(backend.wire.channel())  # the live member's connection goes: next is the silent one
        # The stream on the closed connection fails at once; the next renewal goes to
        # the silent member and times out; the one after that is answered.
        failures: list[str] = []
        for _ in range(3):
            try:
                renewal = await session.keepalive()
                break
            except StoreUnavailable as exc:
                failures.append(str(exc))
        else:
            pytest.fail(f"no renewal answered after {failures}")
        assert renewal.ttl > 0
        assert len(failures) == 2 and "TimeoutError" in failures[1], failures
        await session.close()
    finally:
        await backend.close()


async def test_a_cancelled_stream_ends_and_reading_it_raises_cancelled(etcd: EtcdServer) -> None:
    wire = Wire(etcd.endpoints)
    try:
        call = wire.stream(
            "/etcdserverpb.Watch/Watch",
            pb.WatchRequest,
            pb.WatchResponse,
            pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"wire-watch")),
        )
        created = await asyncio.wait_for(call.read(), 5)
        assert created.created
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(call.read(), 1)
        await asyncio.wait_for(_until(call.done), 5)
    finally:
        wire.close()


async def test_a_stream_made_just_before_its_connection_failed_does_not_dial_it_again(etcd: EtcdServer) -> None:
    """grpclib dials a closed channel again on its next use: a watch set up just before
    another call's failure closed its connection must go to the next member, not reopen
    a connection to the failed one that nothing would ever close (a review found one)."""
    wire = Wire([*etcd.endpoints, *etcd.endpoints])
    try:
        first = wire.channel()
        call = watch_call(wire, pb.WatchCreateRequest(key=b"wire-orphan"))
        wire.failed(first)  # say, a re-read on the same connection timed out
        created = await asyncio.wait_for(call.read(), 5)
        assert created.created
        assert not first._connected
        call.cancel()
    finally:
        wire.close()


async def test_a_member_that_cannot_serve_moves_new_calls_on_but_keeps_its_streams(etcd: EtcdServer) -> None:
    """UNAVAILABLE ("leader changed", "no leader") from a member: the next calls go to the
    next endpoint, but the keepalive stream and watches already on it go on (a review saw
    one "leader changed" close the leader's keepalive stream with it), and the connection
    closes when the last of them ends."""
    wire = Wire([*etcd.endpoints, *etcd.endpoints])
    try:
        first = wire.channel()
        call = watch_call(wire, pb.WatchCreateRequest(key=b"wire-moved"))
        assert (await asyncio.wait_for(call.read(), 5)).created
        mapped = wire.error(GRPCError(Status.UNAVAILABLE, "etcdserver: leader changed"), first)
        assert isinstance(mapped, RpcError) and mapped.code == "UNAVAILABLE"
        assert wire.channel() is not first
        await wire.kv.put("wire-moved", "v", timeout=2)  # on the next endpoint
        event = await asyncio.wait_for(call.read(), 5)  # the watch, still on the first
        assert [bytes(e.kv.key) for e in event.events] == [b"wire-moved"]
        assert first._connected
        call.cancel()
        await asyncio.wait_for(_until(lambda: not first._connected), 5)
    finally:
        wire.close()


async def test_close_leaves_no_connection_open(etcd: EtcdServer) -> None:
    """A CLI command's backend closes when the command ends: grpclib warns, through the
    event loop's error log, of a connected channel collected unclosed (the CLI's stderr
    carried that line once close() dropped its last reference before closing it)."""
    wire = Wire(etcd.endpoints)
    await wire.kv.get("wire-probe", timeout=2)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        wire.close()
        gc.collect()
    assert not [w for w in seen if "Unclosed connection" in str(w.message)], [str(w.message) for w in seen]
    with pytest.raises(TransportError, match="closed"):
        await wire.kv.get("wire-probe", timeout=2)  # and none is dialled after


async def _until(cond: object) -> None:
    assert callable(cond)
    while not cond():
        await asyncio.sleep(0.01)


async def test_a_stream_reset_later_answers_nothing_after_its_cancel(etcd: EtcdServer) -> None:
    """Until its reset the stream still takes answers: none of them is read."""
    wire = Wire(etcd.endpoints)
    try:
        call = watch_call(wire, pb.WatchCreateRequest(key=b"wire-later"))
        assert (await asyncio.wait_for(call.read(), 5)).created
        call.cancel(reset_after=1.0)
        await wire.kv.put("wire-later", "v", timeout=2)  # the stream, still open, takes the event
        await asyncio.wait_for(_until(lambda: call._answers.qsize() >= 2), 5)  # behind the cancel
        for _ in range(2):  # read twice: the event is never read out after the cancel
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(call.read(), 1)
        assert not call.done()
        await asyncio.wait_for(_until(call.done), 5)  # and it is reset
    finally:
        wire.close()


async def test_a_kept_watch_closed_in_a_step_is_reset_after_the_passes_behind_it(
    etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """grpclib's reset of a stream is 0.15-0.26 ms of work on the loop: in the pass right
    behind the successor's close of its predecessor's watch, it came before the step
    that hands the term to the elector (resign to the successor's grant 0.16-0.37 ms
    longer, interleaved A/B)."""
    monkeypatch.setattr(etcd_backend, "STREAM_RESET_DELAY", 1.0)  # far beyond a few passes, even on a busy machine
    wire = Wire(etcd.endpoints)
    try:
        call = watch_call(wire, pb.WatchCreateRequest(key=b"wire-kept"))
        watch = _KeptWatch(call, lambda answer: None)
        await asyncio.wait_for(_until(lambda: call._stream is not None), 5)
        watch.close()
        for _ in range(10):
            await asyncio.sleep(0)  # the passes right behind the close
        assert not call.done(), "the stream was reset in the passes right behind its close"
        await asyncio.wait_for(_until(call.done), 5)
    finally:
        wire.close()


async def test_a_stream_cancelled_before_its_task_started_is_never_opened(etcd: EtcdServer) -> None:
    """A watch closed in the step that made it: nothing to reset later, so nothing is
    dialled or opened (a review saw one connection dialled and one stream opened)."""
    wire = Wire(etcd.endpoints)
    try:
        call = watch_call(wire, pb.WatchCreateRequest(key=b"wire-unstarted"))
        _KeptWatch(call, lambda answer: None).close()
        for _ in range(10):
            await asyncio.sleep(0)
        assert call.done() and call._channel is None
    finally:
        wire.close()
