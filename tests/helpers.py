"""Small shared test helpers: an event recorder and condition waits with deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sidecar.fencing.server import GrantServer


class RecordingSink:
    """An EventSink that keeps every event for assertions."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def _add(self, level: str, event: str, fields: dict[str, Any]) -> None:
        self.events.append((level, event, fields))

    def info(self, event: str, **fields: Any) -> None:
        self._add("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._add("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._add("error", event, fields)

    def names(self) -> list[str]:
        return [e[1] for e in self.events]

    def of(self, name: str) -> list[dict[str, Any]]:
        return [f for _, e, f in self.events if e == name]


async def eventually(
    cond: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> None:
    """Poll ``cond`` until true; fail with ``what`` after ``timeout`` real seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = cond()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def wait_until(
    cond: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> None:
    """Blocking twin of ``eventually`` for synchronous tests."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def grant_of(elector: Any) -> Any:
    """The elector's current grant; fails the test if it holds none."""
    grant = elector.snapshot().grant
    assert grant is not None, f"{elector.snapshot().candidate} holds no grant (state {elector.state})"
    return grant


@contextlib.asynccontextmanager
async def stuck_client(srv: GrantServer) -> AsyncIterator[socket.socket]:
    """The socket's only client, registered: one that never reads, with a small receive
    buffer, so the server's writes back up."""
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(str(srv.path))
    try:
        await eventually(lambda: len(srv.peers) == 1, what="stuck client registered")
        yield stuck
    finally:
        stuck.close()


def fill(srv: GrantServer) -> None:
    """Queue more for every client than its socket takes, so the next broadcast is behind."""
    for peer in srv.peers.values():
        peer.writer.write(b"x" * 1024 * 1024 + b"\n")
