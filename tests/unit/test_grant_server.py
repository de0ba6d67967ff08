"""The sidecar's socket server: what clients get, and what bad clients get."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.clock import FakeClock
from sidecar.fencing.protocol import MAX_FRAME, encode
from sidecar.fencing.server import GrantServer, grant_to_message
from sidecar.model import Grant
from tests.helpers import RecordingSink, eventually, fill, stuck_client


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def next(self) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), 2)
        assert line, "connection closed"
        out: dict[str, Any] = json.loads(line)
        return out

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 2) == b""

    async def send(self, raw: bytes) -> None:
        self.writer.write(raw)
        await self.writer.drain()


CLOCK = FakeClock(100.0)
ACKED: list[int] = []  # the pids the server was told acknowledged a grant (its kill targets)


@pytest.fixture
async def served() -> AsyncIterator[tuple[GrantServer, RecordingSink]]:
    sink = RecordingSink()
    CLOCK._now = 100.0
    ACKED.clear()

    async def status() -> dict[str, Any]:
        return {"state": "leader"}

    with tempfile.TemporaryDirectory() as d:
        srv = GrantServer(
            str(Path(d) / "g.sock"),
            election="e",
            candidate="c",
            version="t",
            log=sink,
            on_resign=lambda: True,
            status=status,
            clock=CLOCK,
            on_acked=ACKED.append,
        )
        await srv.start()
        yield srv, sink
        await srv.close()


async def connect(srv: GrantServer) -> Conn:
    r, w = await asyncio.open_unix_connection(str(srv.path))
    c = Conn(r, w)
    assert (await c.next())["type"] == "hello"
    return c


def a_grant(seq: int = 1) -> Grant:
    return Grant("e", "c", token=5, epoch=1, expires_monotonic=102.5, seq=seq)


async def test_socket_is_private_and_clients_get_state_then_grants(served: tuple[GrantServer, RecordingSink]) -> None:
    srv, _ = served
    assert stat.S_IMODE(os.stat(srv.path).st_mode) == 0o600
    c = await connect(srv)
    assert (await c.next())["type"] == "follower"
    await srv.publish_grant(a_grant())
    g = await c.next()
    assert g["type"] == "grant" and g["token"] == 5 and g["valid_for_ms"] == 2500 and g["seq"] == 1
    await c.send(b'{"v":1,"type":"ack","seq":1}\n')
    await eventually(lambda: any(p.acked_seq == 1 for p in srv.peers.values()), what="ack recorded")
    late = await connect(srv)
    assert (await late.next())["type"] == "grant", "a client connecting mid-term gets the grant at once"
    await srv.publish_revoke("resigned")
    assert (await c.next()) == {"v": 1, "type": "revoke", "reason": "resigned"}


@pytest.mark.parametrize(
    "bad",
    [
        b"this is not json\n",
        b'{"v":1,"type":"launch-missiles"}\n',
        b'{"v":2,"type":"status"}\n',
        b'{"v":1,"type":"ack","seq":"x"}\n',
        b'{"v":1,"type":"status","pad":"' + b"x" * MAX_FRAME + b'"}\n',
        b'{"v":1,"type":"sta',  # half a line, then EOF
    ],
)
async def test_bad_client_gets_one_error_and_others_keep_being_served(
    served: tuple[GrantServer, RecordingSink], bad: bytes
) -> None:
    srv, sink = served
    good = await connect(srv)
    await good.next()
    bad_conn = await connect(srv)
    await bad_conn.next()
    await bad_conn.send(bad)
    if not bad.endswith(b"\n"):
        bad_conn.writer.write_eof()
    err = await bad_conn.next()
    assert err["type"] == "error" and err["error"]
    assert await bad_conn.closed()
    assert sink.of("client_protocol_error")
    await srv.publish_grant(a_grant(seq=2))
    assert (await good.next())["seq"] == 2
    assert len(srv.peers) == 1


async def test_resign_and_status_requests(served: tuple[GrantServer, RecordingSink]) -> None:
    srv, _ = served
    c = await connect(srv)
    await c.next()
    await c.send(b'{"v":1,"type":"resign"}\n')
    assert await c.next() == {"v": 1, "type": "ok", "accepted": True}
    await c.send(b'{"v":1,"type":"status"}\n')
    assert (await c.next())["state"] == "leader"


async def test_stale_socket_file_is_replaced_but_other_files_are_not() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "g.sock"
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(str(path))
        dead.close()  # a crashed sidecar leaves this behind
        kwargs: dict[str, Any] = {
            "election": "e", "candidate": "c", "version": "t", "log": RecordingSink(),
            "on_resign": lambda: False, "status": None,
        }  # fmt: skip
        srv = GrantServer(str(path), **kwargs)
        await srv.start()
        with pytest.raises(FileExistsError, match="in use"):
            await GrantServer(str(path), **kwargs).start()
        await srv.close()
        path.write_text("not a socket")
        with pytest.raises(FileExistsError, match="not a socket"):
            await GrantServer(str(path), **kwargs).start()


async def test_a_client_connecting_later_is_told_the_time_left_then(served: tuple[GrantServer, RecordingSink]) -> None:
    """valid_for_ms is computed at each send: a cached grant re-sent 2 s later says 0.5 s, not 2.5 s."""
    srv, _ = served
    await srv.publish_grant(a_grant())
    CLOCK._now += 2.0  # an outage: no renewal, the grant ages
    late = await connect(srv)
    g = await late.next()
    assert g["type"] == "grant" and g["valid_for_ms"] == 500, g


async def test_a_client_connecting_after_the_deadline_is_not_handed_the_dead_grant(
    served: tuple[GrantServer, RecordingSink],
) -> None:
    """A sidecar frozen past its grant's deadline still holds the grant until it runs again.

    A client that connects meanwhile (an orchestrator restarted after the
    watchdog killed the last one) must be told there is no grant, not be
    sent the dead one: it would acknowledge it, become a kill target, re-arm
    the watchdog and be killed at once for a term it could never act in.
    """
    srv, _ = served
    await srv.publish_grant(a_grant())  # valid until 102.5
    CLOCK._now = 102.5  # the deadline, reached while the loop was frozen
    late = await connect(srv)
    first = await late.next()
    if first["type"] == "grant":  # as every client does (sidecar/fencing/client.py)
        await late.send(json.dumps({"v": 1, "type": "ack", "seq": first["seq"]}).encode() + b"\n")
    await late.send(b'{"v": 1, "type": "status"}\n')
    assert (await late.next())["type"] == "status"  # a round trip: any ack was handled before it
    assert ACKED == [], "the client was made a kill target for a dead grant"
    assert first["type"] == "follower" and first["leader"] is False, first
    # Once renewed, the same client is told of the new grant as usual.
    await srv.publish_grant(Grant("e", "c", token=5, epoch=1, expires_monotonic=105.0, seq=2))
    renewed = await late.next()
    assert renewed["type"] == "grant" and renewed["valid_for_ms"] == 2500, renewed


async def test_a_grant_reaches_every_clients_socket_in_the_step_that_publishes_it(
    served: tuple[GrantServer, RecordingSink],
) -> None:
    """Issue 16: on a handover the leader's revoke and the successor's grant are on the
    path. A task per client wrote each copy a loop pass later; now publishing finishes
    without giving the loop a pass, the frames already in the clients' sockets."""
    srv, _ = served
    clients = [await connect(srv) for _ in range(2)]
    for c in clients:
        assert (await c.next())["type"] == "follower"
    await eventually(lambda: len(srv.peers) == 2, what="both clients registered")
    for kind in ("grant", "revoke"):
        publishing = srv.publish_grant(a_grant()) if kind == "grant" else srv.publish_revoke("resigned")
        try:
            publishing.send(None)
            raise AssertionError("publishing waited for a loop pass")
        except StopIteration:
            pass
        finally:
            publishing.close()
        assert [(await c.next())["type"] for c in clients] == [kind, kind]


async def test_a_client_that_stopped_reading_does_not_hold_up_the_revoke(
    served: tuple[GrantServer, RecordingSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The revoke is on the kill path (the orchestrator's stop comes after it). A client
    that stopped reading held it for WRITE_TIMEOUT before it was dropped; now the revoke
    is done in the step that publishes it, and that client is waited for beside it."""
    monkeypatch.setattr("sidecar.fencing.server.WRITE_TIMEOUT", 0.3)
    srv, sink = served
    async with stuck_client(srv):
        await srv.publish_grant(a_grant())
        fill(srv)
        revoking = srv.publish_revoke("lease-lost")
        try:
            revoking.send(None)
            raise AssertionError("the revoke waited for a client that does not read")
        except StopIteration:
            pass
        finally:
            revoking.close()
        assert "client_dropped" not in sink.names()
        # Still dropped once it has not read for WRITE_TIMEOUT.
        await eventually(lambda: not srv.peers, what="stuck client dropped")
        assert "client_dropped" in sink.names()


def behind_below_high_water(srv: GrantServer, margin: int) -> asyncio.WriteTransport:
    """The only client's transport holding what its socket did not take, ``margin``
    bytes under the high-water mark: behind, but a drain returns at once."""
    transport = next(iter(srv.peers.values())).writer.transport
    while transport.get_write_buffer_size() == 0:  # the kernel's buffer is full from here
        transport.write(b"x" * 1024 + b"\n")
    need = transport.get_write_buffer_limits()[1] - margin - transport.get_write_buffer_size()
    transport.write(b"y" * (need - 1) + b"\n")
    return transport


async def test_a_revoke_in_the_pass_after_a_wait_ended_is_still_waited_for(
    served: tuple[GrantServer, RecordingSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review: a wait that had ended stayed listed until its done-callback, one loop
    pass later, and a broadcast in that pass was not waited for. When that was the
    term's revoke, a client that never read was never dropped."""
    monkeypatch.setattr("sidecar.fencing.server.WRITE_TIMEOUT", 0.3)
    srv, sink = served
    async with stuck_client(srv):
        frame = len(encode(grant_to_message(a_grant(), CLOCK.now())))
        behind_below_high_water(srv, margin=frame + 10)
        await srv.publish_grant(a_grant())  # behind, under high water: its wait ends at once
        await asyncio.sleep(0)  # that wait runs and ends; its done-callback is one pass away
        await srv.publish_grant(a_grant(2))  # over high water now
        await srv.publish_revoke("lease-lost")  # the term's last frame
        await eventually(lambda: not srv.peers, timeout=3.0, what="the stuck client dropped")
        assert sink.names().count("client_dropped") == 1


async def test_a_dropped_client_that_still_does_not_read_is_let_go_of(
    served: tuple[GrantServer, RecordingSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review: a drop closed the writer gracefully, which waits to flush to the very
    client that does not read. Its descriptor, its buffer and the task serving it stayed
    for as long as it lived, outside MAX_CLIENTS: a local client could repeat it without
    bound. A drop ends the connection at once."""
    monkeypatch.setattr("sidecar.fencing.server.WRITE_TIMEOUT", 0.2)
    srv, sink = served
    async with stuck_client(srv):
        fill(srv)
        await srv.publish_revoke("lease-lost")
        await eventually(lambda: "client_dropped" in sink.names(), what="the stuck client dropped")
        await eventually(lambda: "client_disconnected" in sink.names(), timeout=3.0, what="the connection let go of")


async def test_a_client_that_hangs_up_while_waited_for_is_not_reported_dropped(
    served: tuple[GrantServer, RecordingSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It left of its own accord (client_disconnected); a drop warning for it as well
    would send an operator looking for a wedged orchestrator that does not exist."""
    monkeypatch.setattr("sidecar.fencing.server.WRITE_TIMEOUT", 0.2)
    srv, sink = served
    async with stuck_client(srv) as stuck:
        fill(srv)
        await srv.publish_revoke("lease-lost")
        stuck.close()
    await eventually(lambda: "client_disconnected" in sink.names(), what="the hang-up seen")
    await eventually(lambda: not srv._draining, what="the wait on it over")
    assert "client_dropped" not in sink.names(), sink.names()


async def test_a_client_that_connects_and_hangs_up_at_once_is_no_warning(
    served: tuple[GrantServer, RecordingSink],
) -> None:
    """A probe that connects and closes (a check that the socket answers) met the
    hello's write with a reset, and every one was logged as a dropped client, a
    warning an operator would chase. It is a disconnect like any other."""
    srv, sink = served
    for _ in range(20):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(srv.path))
        probe.close()
    await eventually(lambda: sink.names().count("client_disconnected") == 20, what="every probe's hang-up seen")
    assert "client_dropped" not in sink.names(), sink.names().count("client_dropped")


async def test_a_wait_that_fails_for_a_reason_of_ours_is_said_and_still_drops_the_client(
    served: tuple[GrantServer, RecordingSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug under the wait (not the client's doing) is logged as an error, never left
    as an unretrieved task exception, and the client does not stay half served."""
    srv, sink = served
    async with stuck_client(srv):
        fill(srv)

        async def broken(self: asyncio.StreamWriter) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(asyncio.StreamWriter, "drain", broken)
        await srv.publish_revoke("lease-lost")
        await eventually(lambda: not srv.peers, what="the client dropped")
        assert [f["error"] for f in sink.of("client_drain_failed")] == ["RuntimeError('a bug')"]


async def test_a_client_connecting_while_a_stuck_client_is_waited_for_never_gets_the_old_grant(
    served: tuple[GrantServer, RecordingSink],
) -> None:
    """While a client that does not read is still being waited for after a revoke, a
    client that connects must be told it is not leader, not handed the old grant."""
    srv, _ = served
    async with stuck_client(srv):
        await srv.publish_grant(a_grant())
        fill(srv)
        await srv.publish_revoke("lease-lost")
        assert len(srv.peers) == 1, "the stuck client should still be waited for, not yet dropped"
        late = await connect(srv)
        first = await late.next()
        assert first["type"] == "follower" and first["leader"] is False, first
