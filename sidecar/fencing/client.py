"""The library an orchestrator imports to know whether it may act as leader.

Leadership is a grant whose deadline has not passed. The deadline is the
earlier of the grant's ``expires_monotonic`` (CLOCK_MONOTONIC, shared with
the sidecar because both run on one kernel) and the moment the grant was
received plus ``valid_for_ms``. A ``revoke``, a ``follower`` message, the
socket closing, or the deadline passing ends leadership at once, without
asking the sidecar: a frozen or dead sidecar cannot extend it.

Two front ends over one state machine (``GrantState``):

* ``GrantClient``: asyncio. ``async with client.leading() as grant:`` runs
  its body only while leader and cancels it the moment leadership ends.
* ``BlockingGrantClient``: a reader thread, for threaded code.

Both offer ``current()`` (the grant or None), ``token`` and ``check()``
(raise NotLeader), and ``on_lead`` / ``on_lose`` callbacks.

Pass ``token`` to every downstream write, and have the downstream refuse
tokens lower than the highest it has seen: that catches a write that was
already in flight when the deadline passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from sidecar.fencing.protocol import MAX_FRAME, SERVER_TYPES, ProtocolError, decode, encode


class NotLeader(Exception):
    """Raised by check() and friends: do not act as leader now."""


@dataclass(frozen=True)
class ClientGrant:
    election: str
    candidate: str
    token: int
    epoch: int
    seq: int
    valid_until: float  # CLOCK_MONOTONIC seconds; the earlier of the two deadlines


def monotonic() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class GrantState:
    """What the client believes, from messages and the clock alone. No I/O."""

    def __init__(self, clock: Callable[[], float] = monotonic) -> None:
        self.clock = clock
        self.grant: ClientGrant | None = None
        self.last_reason = "not-connected"

    def current(self) -> ClientGrant | None:
        g = self.grant
        if g is not None and self.clock() >= g.valid_until:
            self.grant = None
            self.last_reason = "deadline-passed"
            return None
        return g

    def apply(self, msg: dict[str, Any], received_at: float | None = None) -> ClientGrant | None:
        """Take one server message; return the grant in force afterwards."""
        now = self.clock() if received_at is None else received_at
        kind = msg["type"]
        if kind == "grant":
            valid_until = min(float(msg["expires_monotonic"]), now + msg["valid_for_ms"] / 1000.0)
            old = self.grant
            if old is not None and msg["token"] < old.token:
                # A grant can never go back to an older term; treat as loss.
                self.lose("token-went-backwards")
            else:
                self.grant = ClientGrant(
                    msg["election"], msg["candidate"], msg["token"], msg["epoch"], msg["seq"], valid_until
                )
        elif kind == "follower":
            self.lose("follower")
        elif kind == "revoke":
            self.lose(str(msg["reason"]))
        return self.current()

    def lose(self, reason: str) -> None:
        self.grant = None
        self.last_reason = reason


class _Callbacks:
    def __init__(
        self,
        on_lead: Callable[[ClientGrant], Any] | None,
        on_lose: Callable[[str], Any] | None,
    ) -> None:
        self.on_lead = on_lead
        self.on_lose = on_lose
        self.leading = False

    def transition(self, state: GrantState) -> bool:
        """Fire callbacks on edges; True if leadership just ended."""
        g = state.current()
        if g is not None and not self.leading:
            self.leading = True
            if self.on_lead is not None:
                self.on_lead(g)
        elif g is None and self.leading:
            self.leading = False
            if self.on_lose is not None:
                self.on_lose(state.last_reason)
            return True
        return False


class _ClientBase:
    """What both front ends share: the state machine, callbacks and checks."""

    def __init__(
        self,
        path: str,
        *,
        on_lead: Callable[[ClientGrant], Any] | None = None,
        on_lose: Callable[[str], Any] | None = None,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        self.path = path
        self.state = GrantState(clock)
        self._cb = _Callbacks(on_lead, on_lose)

    def current(self) -> ClientGrant | None:
        """The grant in force, or None."""
        return self.state.current()

    def check(self) -> ClientGrant:
        """The grant in force, or raise NotLeader with the reason."""
        g = self.current()
        if g is None:
            raise NotLeader(self.state.last_reason)
        return g

    @property
    def token(self) -> int:
        return self.check().token


class GrantClient(_ClientBase):
    """asyncio client. ``await client.connect()`` then use ``current()`` etc."""

    def __init__(
        self,
        path: str,
        *,
        on_lead: Callable[[ClientGrant], Any] | None = None,
        on_lose: Callable[[str], Any] | None = None,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        super().__init__(path, on_lead=on_lead, on_lose=on_lose, clock=clock)
        self._changed = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self.closed = asyncio.Event()

    async def connect(self) -> GrantClient:
        reader, self._writer = await asyncio.open_unix_connection(self.path, limit=MAX_FRAME)
        self._reader_task = asyncio.create_task(self._read(reader), name="grant-reader")
        return self

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        if self._writer is not None:
            self._writer.close()

    async def __aenter__(self) -> GrantClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, msg: dict[str, Any]) -> None:
        if self._writer is None:
            raise NotLeader("not connected")
        self._writer.write(encode(msg))
        await self._writer.drain()

    async def resign(self) -> None:
        await self.send({"type": "resign"})

    def _notify(self) -> None:
        self._cb.transition(self.state)
        self._changed.set()
        self._changed = asyncio.Event()

    def _arm_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        g = self.state.current()
        if g is not None:
            loop = asyncio.get_running_loop()
            # loop.time() is CLOCK_MONOTONIC on Linux, the grant's clock.
            self._expiry = loop.call_later(max(0.0, g.valid_until - self.state.clock()), self._notify)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                received = self.state.clock()
                msg = decode(line, SERVER_TYPES)
                self.state.apply(msg, received)
                if msg["type"] == "grant" and self._writer is not None:
                    self._writer.write(encode({"type": "ack", "seq": msg["seq"]}))
                self._arm_expiry()
                self._notify()
        except (ProtocolError, asyncio.LimitOverrunError) as exc:
            self.state.lose(f"protocol-error: {exc}")
        finally:
            if self.state.grant is not None:
                self.state.lose("sidecar-gone")
            else:
                self.state.last_reason = "sidecar-gone"
            self._notify()
            self.closed.set()

    async def wait_leader(self, timeout: float | None = None) -> ClientGrant:
        async with asyncio.timeout(timeout):
            while True:
                g = self.state.current()
                if g is not None:
                    return g
                if self.closed.is_set():
                    raise NotLeader("sidecar-gone")
                await self._changed.wait()

    async def wait_lost(self) -> str:
        while self.state.current() is not None:
            await self._changed.wait()
        return self.state.last_reason

    @contextlib.asynccontextmanager
    async def leading(self, timeout: float | None = None) -> AsyncIterator[ClientGrant]:
        """Wait to lead, run the body while leading; cancel it when that ends.

        Leaving because leadership ended raises NotLeader out of the block.
        """
        grant = await self.wait_leader(timeout)
        task = asyncio.current_task()
        assert task is not None
        fired = False

        async def guard() -> None:
            nonlocal fired
            await self.wait_lost()
            fired = True
            task.cancel()

        watcher = asyncio.create_task(guard())
        try:
            yield grant
        except asyncio.CancelledError:
            if fired and task.uncancel() == 0:
                raise NotLeader(self.state.last_reason) from None
            raise
        finally:
            watcher.cancel()


class BlockingGrantClient(_ClientBase):
    """Thread-based twin of GrantClient for code without an event loop."""

    def __init__(
        self,
        path: str,
        *,
        on_lead: Callable[[ClientGrant], Any] | None = None,
        on_lose: Callable[[str], Any] | None = None,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        super().__init__(path, on_lead=on_lead, on_lose=on_lose, clock=clock)
        self._lock = threading.Condition()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self.closed = threading.Event()

    def connect(self, timeout: float = 5.0) -> BlockingGrantClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(self.path)
        sock.settimeout(None)
        self._sock = sock
        self._thread = threading.Thread(target=self._read, name="grant-reader", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        if self._thread is not None:
            self._thread.join(5)
        if self._timer is not None:
            self._timer.cancel()

    def __enter__(self) -> BlockingGrantClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def current(self) -> ClientGrant | None:
        with self._lock:
            return self.state.current()

    def check(self) -> ClientGrant:
        with self._lock:  # one consistent read of grant and reason (the lock is re-entrant)
            return super().check()

    def send(self, msg: dict[str, Any]) -> None:
        if self._sock is None:
            raise NotLeader("not connected")
        self._sock.sendall(encode(msg))

    def resign(self) -> None:
        self.send({"type": "resign"})

    def wait_leader(self, timeout: float | None = None) -> ClientGrant:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                g = self.state.current()
                if g is not None:
                    return g
                if self.closed.is_set():
                    raise NotLeader("sidecar-gone")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError("not leader within the timeout")
                self._lock.wait(0.1 if left is None else min(left, 0.1))

    def _changed(self) -> None:
        with self._lock:
            self._cb.transition(self.state)
            self._lock.notify_all()
            if self._timer is not None:
                self._timer.cancel()
            g = self.state.grant
            if g is not None:
                self._timer = threading.Timer(max(0.0, g.valid_until - self.state.clock()), self._changed)
                self._timer.daemon = True
                self._timer.start()

    def _read(self) -> None:
        assert self._sock is not None
        buf = b""
        try:
            while True:
                chunk = self._sock.recv(MAX_FRAME)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    received = self.state.clock()
                    msg = decode(line, SERVER_TYPES)
                    with self._lock:
                        self.state.apply(msg, received)
                    if msg["type"] == "grant":
                        self.send({"type": "ack", "seq": msg["seq"]})
                    self._changed()
                if len(buf) > MAX_FRAME:
                    raise ProtocolError("frame exceeds the limit")
        except (OSError, ProtocolError) as exc:
            with self._lock:
                self.state.lose(f"connection-error: {exc}")
        finally:
            with self._lock:
                if self.state.grant is not None:
                    self.state.lose("sidecar-gone")
            self.closed.set()
            self._changed()
