"""The orchestrator-side client: deadline math on a fake clock, and the
async and blocking front ends against a scripted socket server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.fencing.client import BlockingGrantClient, GrantClient, GrantState, NotLeader, monotonic
from sidecar.fencing.protocol import encode, grant_message
from tests.helpers import eventually, wait_until


def grant(token: int = 7, expires: float = 110.0, valid_for_ms: int = 5000, seq: int = 1) -> dict[str, Any]:
    msg = grant_message(
        election="e", candidate="c", token=token, epoch=2, expires_monotonic=expires, valid_for_ms=valid_for_ms, seq=seq
    )
    return {"v": 1, **msg}


class FakeTime:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_deadline_is_the_earlier_of_expiry_and_receipt_plus_validity() -> None:
    t = FakeTime(100.0)
    s = GrantState(t)
    g = s.apply(grant(expires=110.0, valid_for_ms=5000))
    assert g is not None and g.valid_until == 105.0  # receipt + valid_for wins
    t.now = 104.999
    assert s.current() is not None
    t.now = 105.0
    assert s.current() is None and s.last_reason == "deadline-passed"

    s2 = GrantState(t)
    t.now = 100.0
    g2 = s2.apply(grant(expires=102.5, valid_for_ms=5000))
    assert g2 is not None and g2.valid_until == 102.5  # the sidecar's absolute deadline wins


def test_a_late_delivered_grant_is_already_expired() -> None:
    t = FakeTime(120.0)  # received long after the sidecar's deadline of 110
    s = GrantState(t)
    assert s.apply(grant(expires=110.0)) is None


@pytest.mark.parametrize(
    ("msg", "reason"),
    [
        ({"v": 1, "type": "revoke", "reason": "lease-lost"}, "lease-lost"),
        ({"v": 1, "type": "follower", "leader": False}, "follower"),
        (grant(token=3, seq=2), "token-went-backwards"),
    ],
)
def test_loss_is_immediate(msg: dict[str, Any], reason: str) -> None:
    t = FakeTime()
    s = GrantState(t)
    s.apply(grant(token=7))
    assert s.apply(msg) is None
    assert s.last_reason == reason


def test_renewal_moves_the_deadline() -> None:
    t = FakeTime(100.0)
    s = GrantState(t)
    s.apply(grant(expires=103.0, seq=1))
    t.now = 102.0
    s.apply(grant(expires=105.0, seq=2))
    t.now = 104.0
    g = s.current()
    assert g is not None and g.seq == 2


class ScriptedServer:
    """A socket that sends what the test tells it to, like a sidecar would."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.writers: list[asyncio.StreamWriter] = []
        self.received: list[dict[str, Any]] = []
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._serve, path=self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        writer.write(encode({"type": "hello", "election": "e", "candidate": "c", "version": "t"}))
        while line := await reader.readline():
            self.received.append(json.loads(line))

    async def send(self, msg: dict[str, Any]) -> None:
        for w in self.writers:
            w.write(encode({k: v for k, v in msg.items() if k != "v"}))
            await w.drain()

    async def drop(self) -> None:
        for w in self.writers:
            w.close()
        self.writers.clear()

    async def close(self) -> None:
        await self.drop()
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    with tempfile.TemporaryDirectory() as d:
        s = ScriptedServer(str(Path(d) / "s.sock"))
        await s.start()
        yield s
        await s.close()


async def test_async_client_leads_acks_and_loses_on_eof(server: ScriptedServer) -> None:
    events: list[str] = []
    client = await GrantClient(
        server.path, on_lead=lambda g: events.append(f"lead {g.token}"), on_lose=events.append
    ).connect()
    try:
        await eventually(lambda: bool(server.writers), what="connection")
        with pytest.raises(NotLeader):
            client.check()
        await server.send(grant(expires=monotonic() + 5))
        g = await client.wait_leader(2)
        assert client.token == 7 and g.epoch == 2
        await eventually(lambda: {"v": 1, "type": "ack", "seq": 1} in server.received, what="ack")
        await server.drop()  # the sidecar died
        await eventually(lambda: client.current() is None, what="loss on EOF")
        assert events == ["lead 7", "sidecar-gone"]
    finally:
        await client.close()


async def test_async_client_loses_at_deadline_without_any_message(server: ScriptedServer) -> None:
    client = await GrantClient(server.path).connect()
    try:
        await eventually(lambda: bool(server.writers), what="connection")
        await server.send(grant(expires=monotonic() + 0.15, valid_for_ms=10_000))
        await client.wait_leader(2)
        reason = await asyncio.wait_for(client.wait_lost(), 2)
        assert reason == "deadline-passed"
    finally:
        await client.close()


async def test_leading_block_is_cancelled_on_revoke(server: ScriptedServer) -> None:
    client = await GrantClient(server.path).connect()
    progressed = asyncio.Event()
    try:
        await eventually(lambda: bool(server.writers), what="connection")
        await server.send(grant(expires=monotonic() + 5))

        async def work() -> None:
            async with client.leading(timeout=2):
                progressed.set()
                await asyncio.sleep(30)  # would run on without the guard

        task = asyncio.create_task(work())
        await asyncio.wait_for(progressed.wait(), 2)
        await server.send({"v": 1, "type": "revoke", "reason": "resigned"})
        with pytest.raises(NotLeader, match="resigned"):
            await asyncio.wait_for(task, 2)
    finally:
        await client.close()


async def test_blocking_client_follows_grants_revokes_and_deadlines(server: ScriptedServer) -> None:
    loop = asyncio.get_running_loop()
    lost: list[str] = []
    client = await loop.run_in_executor(None, lambda: BlockingGrantClient(server.path, on_lose=lost.append).connect())
    try:
        await eventually(lambda: bool(server.writers), what="connection")
        await server.send(grant(expires=monotonic() + 0.3, valid_for_ms=10_000))
        await loop.run_in_executor(None, client.wait_leader, 2)
        assert client.token == 7
        t = time.monotonic()
        await loop.run_in_executor(None, lambda: wait_until(lambda: client.current() is None, 2))
        assert time.monotonic() - t < 1.0
        await eventually(lambda: lost == ["deadline-passed"], what="on_lose")
        await server.send(grant(token=8, expires=monotonic() + 5, seq=2))
        await loop.run_in_executor(None, client.wait_leader, 2)
        await server.send({"v": 1, "type": "revoke", "reason": "shutdown"})
        await loop.run_in_executor(None, lambda: wait_until(lambda: client.current() is None, 2))
        with pytest.raises(NotLeader, match="shutdown"):
            client.check()
    finally:
        with contextlib.suppress(Exception):
            await loop.run_in_executor(None, client.close)
