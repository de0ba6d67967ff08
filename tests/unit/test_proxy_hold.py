"""FaultProxy's silent partition (hold), with real loopback sockets.

A hold must look like a black-holed link: connections stay open (no FIN,
no RST), nothing moves either way, a connect during the hold never reaches
the far side, and on heal the held bytes go through, late but intact.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from sidecar_harness.localzk import election_greeting
from sidecar_harness.peerlinks import socket_owner
from sidecar_harness.proxy import FaultProxy
from tests.helpers import eventually

QUIET = 0.4  # how long "nothing arrives" is watched for: a deadline, not a sleep


@dataclass
class Upstream:
    """An echo server that counts the connections it has seen."""

    server: asyncio.Server | None = None
    accepted: int = 0
    received: bytearray = field(default_factory=bytearray)

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        while data := await reader.read(65536):
            self.received += data
            writer.write(data)
            await writer.drain()
        writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    up.server = await asyncio.start_server(up._echo, "127.0.0.1", 0)
    yield up
    up.server.close()


async def nothing_within(reader: asyncio.StreamReader, seconds: float = QUIET) -> bool:
    """True when no byte and no EOF arrive within ``seconds``: the link is silent, not closed."""
    try:
        await asyncio.wait_for(reader.read(1), seconds)
    except TimeoutError:
        return True
    return False


async def test_hold_stops_both_directions_keeps_the_connection_and_heal_delivers(upstream: Upstream) -> None:
    proxy = FaultProxy("127.0.0.1", upstream.port)
    await proxy.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"before")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(6), 5) == b"before"

        proxy.hold()
        writer.write(b"during")
        await writer.drain()
        # Silent: no echo, no EOF, no reset; upstream sees nothing new.
        assert await nothing_within(reader)
        assert bytes(upstream.received) == b"before"
        assert not reader.at_eof() and not writer.is_closing()

        # A connect during the hold succeeds locally but never reaches upstream.
        r2, w2 = await asyncio.open_connection("127.0.0.1", proxy.port)
        w2.write(b"new")
        await w2.drain()
        assert await nothing_within(r2)
        assert upstream.accepted == 1

        proxy.heal()
        # The held bytes were kept, not swallowed: they arrive, in order, on the same connections.
        assert await asyncio.wait_for(reader.readexactly(6), 5) == b"during"
        assert await asyncio.wait_for(r2.readexactly(3), 5) == b"new"
        assert upstream.accepted == 2
        for w in (writer, w2):
            w.close()
    finally:
        await proxy.close()


async def test_held_sender_blocks_when_buffers_fill(upstream: Upstream) -> None:
    """The proxy stops reading: a sender that keeps writing is eventually stopped by TCP flow control."""
    proxy = FaultProxy("127.0.0.1", upstream.port)
    await proxy.start()
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        await eventually(lambda: proxy.connections == 1, 5, what="the proxy to accept")
        proxy.hold()
        blob = b"x" * 65536
        blocked = False
        for _ in range(200):  # at most 12.5 MiB: far beyond loopback socket buffers
            writer.write(blob)
            try:
                await asyncio.wait_for(writer.drain(), 0.2)
            except TimeoutError:
                blocked = True
                break
        assert blocked, "a held link swallowed 12.5 MiB: it must push back, not drain"
        assert not writer.is_closing()
        writer.transport.abort()
    finally:
        await proxy.close()


async def test_hold_by_dialer_cuts_only_that_dialer(upstream: Upstream) -> None:
    """With ``identify``, ``hold(["a"])`` stops a's connections and lets b's flow."""
    names: dict[int, str] = {}
    proxy = FaultProxy("127.0.0.1", upstream.port, identify=lambda peer_port, _our: names.get(peer_port))
    await proxy.start()
    try:
        conns = {}
        for name in ("a", "b"):
            sock = socket.create_connection(("127.0.0.1", proxy.port))
            names[sock.getsockname()[1]] = name
            conns[name] = await asyncio.open_connection(sock=sock)
        await eventually(lambda: sorted(d or "" for d in proxy.dialers()) == ["a", "b"], 5, what="both identified")
        proxy.hold(["a"])
        for name, (_r, w) in conns.items():
            w.write(name.encode())
            await w.drain()
        assert await asyncio.wait_for(conns["b"][0].readexactly(1), 5) == b"b"
        assert await nothing_within(conns["a"][0])
        proxy.heal()
        assert await asyncio.wait_for(conns["a"][0].readexactly(1), 5) == b"a"
        for _r, w in conns.values():
            w.close()
    finally:
        await proxy.close()


async def test_socket_owner_names_the_process_holding_the_dialing_socket() -> None:
    """What PeerLinks uses to tell etcd members apart on one proxy: /proc, not the protocol."""
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, (_, peer_port) = listener.accept()
        try:
            owner = await asyncio.to_thread(socket_owner, peer_port, port, {os.getpid(): "me"})
            assert owner == "me"
            assert await asyncio.to_thread(socket_owner, peer_port, port, {1: "init"}) is None
        finally:
            client.close()
            accepted.close()
    finally:
        listener.close()


async def test_zookeeper_election_greeting_loses_its_address() -> None:
    """The 3.5+ greeting names the sender's own election address, which a peer dials back
    directly; forwarded as the sid alone, the peer dials back through its zoo.cfg (the proxy)."""
    addr = b"127.0.0.1:3888"
    reader = asyncio.StreamReader()
    reader.feed_data((-65535).to_bytes(8, "big", signed=True) + (3).to_bytes(8, "big") + len(addr).to_bytes(4, "big"))
    reader.feed_data(addr + b"notification")
    reader.feed_eof()
    assert await election_greeting(reader) == (3).to_bytes(8, "big")
    assert await reader.read() == b"notification"  # the rest flows untouched
    old = asyncio.StreamReader()
    old.feed_data((2).to_bytes(8, "big"))
    assert await election_greeting(old) == (2).to_bytes(8, "big")
