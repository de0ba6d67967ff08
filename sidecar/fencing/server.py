"""The sidecar's end of the grant protocol: a Unix socket server.

It tells every connected client who leads, resends the grant on every
renewal (so a grant is also a heartbeat) and sends ``revoke`` the moment
leadership ends. One misbehaving client gets one ``error`` and is dropped;
the others are not affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.clock import Clock, MonotonicClock
from sidecar.fencing.protocol import CLIENT_TYPES, MAX_FRAME, ProtocolError, decode, encode, grant_message
from sidecar.model import EventSink, Grant

WRITE_TIMEOUT = 1.0  # a client that does not read for this long is dropped
FRAME_TIMEOUT = 5.0  # a started frame must end within this
MAX_CLIENTS = 64


@dataclass
class Peer:
    pid: int
    uid: int
    gid: int
    writer: asyncio.StreamWriter
    acked_seq: int = 0


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end, from the kernel."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def grant_to_message(grant: Grant, now: float) -> dict[str, Any]:
    """The grant as sent at ``now``: valid_for_ms is what is left then, never a cached figure."""
    return grant_message(
        election=grant.election,
        candidate=grant.candidate,
        token=grant.token,
        epoch=grant.epoch,
        expires_monotonic=round(grant.expires_monotonic, 6),
        valid_for_ms=int(grant.valid_for(now) * 1000),
        seq=grant.seq,
    )


def check_socket_dir(directory: Path) -> None:
    """Refuse a directory where anyone could swap our socket for theirs."""
    st = directory.stat()
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        raise FileExistsError(
            f"{directory} is world-writable without the sticky bit: anyone could replace the socket; "
            "use a private directory (e.g. an emptyDir shared only by the pod's containers)"
        )


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket file left by a crashed sidecar, never anything else."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise FileExistsError(f"{path} is in use by a running process")


class GrantServer:
    def __init__(
        self,
        path: str,
        *,
        election: str,
        candidate: str,
        version: str,
        log: EventSink,
        on_resign: Callable[[], bool],
        status: Callable[[], Awaitable[dict[str, Any]]],
        mode: int = 0o600,
        group: int | None = None,
        allow_uids: set[int] | None = None,
        on_refused: Callable[[], None] | None = None,
        clock: Clock | None = None,
        on_acked: Callable[[int], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self._hello = {"type": "hello", "election": election, "candidate": candidate, "version": version}
        self._log = log
        self._on_resign = on_resign
        self._status = status
        self._mode = mode
        self._group = group
        self._server: asyncio.AbstractServer | None = None
        self._clock = clock or MonotonicClock()
        # What a client is told on connect: the live grant, or that we follow.
        self._grant: Grant | None = None
        self.peers: dict[int, Peer] = {}
        self._ids = 0
        # Our own user, and root (which can open the socket anyway).
        self._allow_uids = (allow_uids or set()) | {os.getuid(), 0}
        self._on_refused = on_refused
        # The waits for clients behind on a broadcast, by client (_drain_beside).
        self._draining: dict[int, asyncio.Task[None]] = {}
        # Told the pid of every client a grant frame is sent to, before the send:
        # from then on that client may act as leader, so it is a kill target.
        self._on_acked = on_acked

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        check_socket_dir(self.path.parent)
        _remove_stale_socket(self.path)
        old = os.umask(0o177)  # no window in which the socket is wider than 0600
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_FRAME)
        finally:
            os.umask(old)
        if self._group is not None:
            os.chown(self.path, -1, self._group)
        os.chmod(self.path, self._mode)
        self._log.info("socket_listening", path=str(self.path), mode=oct(self._mode))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._draining.values()):
                task.cancel()
            for peer in list(self.peers.values()):
                peer.writer.transport.abort()  # not close: see _drop
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        self.path.unlink(missing_ok=True)

    # -- publishing -----------------------------------------------------

    def current(self) -> bytes:
        """The state message for a client now (computed per send: valid_for_ms shrinks).

        A grant whose deadline has passed is not sent: a sidecar that was
        frozen past it still holds the grant until its loop runs again and
        revokes, and a client connecting meanwhile (a restarted orchestrator)
        would acknowledge it, become a kill target and re-arm the watchdog,
        which kills it at once for a grant it could never act on. It is told
        what it would be told a moment later: no grant.
        """
        now = self._clock.now()
        if self._grant is None or self._grant.valid_for(now) <= 0:
            return encode({"type": "follower", "leader": False})
        return encode(grant_to_message(self._grant, now))

    async def publish_grant(self, grant: Grant) -> None:
        self._grant = grant
        await self._broadcast(encode(grant_to_message(grant, self._clock.now())))

    async def publish_revoke(self, reason: str) -> None:
        # Switch first: a client that connects from here on is told "follower"
        # and never sees the old grant; everyone already connected (a snapshot
        # taken after the switch) gets the revoke.
        self._grant = None
        await self._broadcast(encode({"type": "revoke", "reason": reason}))

    async def _broadcast(self, frame: bytes) -> None:
        # Every client's copy goes to its socket in this step: a task per
        # client (gather) wrote each one a loop pass later, and a handover's
        # revoke and grant are on its path. A client whose socket did not
        # take it all is waited for beside, never here: a revoke is on the
        # kill path, and a client that stopped reading (frozen, wedged) held
        # the revoke, and the orchestrator's stop behind it, for
        # WRITE_TIMEOUT. The revoke is only a cue; the stop is what ends the
        # term. Its frames stay queued in order, so it still reads the revoke
        # after the grant if it wakes, or it is dropped.
        for peer_id in list(self.peers):
            if not self._write(peer_id, frame):
                self._drain_beside(peer_id)

    def _drain_beside(self, peer_id: int) -> None:
        """Wait for a client that is behind in a task of its own (one per client at a time)."""
        running = self._draining.get(peer_id)
        if running is not None and not running.done():
            return  # it waits until what was queued behind it is taken too (_drain)
        # A finished wait stays listed until its done-callback, a loop pass
        # later: a broadcast in that pass gets a wait of its own, or a revoke
        # queued then would never be waited for and its client never dropped.
        task = asyncio.get_running_loop().create_task(self._drain(peer_id))
        self._draining[peer_id] = task
        task.add_done_callback(lambda done: self._forget_drain(peer_id, done))

    def _forget_drain(self, peer_id: int, done: asyncio.Task[None]) -> None:
        if self._draining.get(peer_id) is done:
            del self._draining[peer_id]

    async def _send(self, peer_id: int, frame: bytes) -> None:
        if not self._write(peer_id, frame):
            await self._drain(peer_id)

    def _write(self, peer_id: int, frame: bytes) -> bool:
        """Write ``frame`` to the client now; False if it must be waited for (``_drain``)."""
        peer = self.peers.get(peer_id)
        if peer is None:
            return True
        peer.writer.write(frame)  # never blocks: what the socket does not take is buffered
        transport = peer.writer.transport
        return transport.get_write_buffer_size() == 0 and not transport.is_closing()

    async def _drain(self, peer_id: int) -> None:
        """Wait until the client's socket took what was written, or drop the client."""
        peer = self.peers.get(peer_id)
        if peer is None:
            return
        transport = peer.writer.transport
        try:
            async with asyncio.timeout(WRITE_TIMEOUT):
                # drain() returns at the low-water mark; what was queued behind
                # meanwhile may have filled the buffer past the high one again.
                while True:
                    await peer.writer.drain()
                    if transport.get_write_buffer_size() <= transport.get_write_buffer_limits()[1]:
                        break
                    await asyncio.sleep(0)  # never a loop that does not yield, whatever drain() did
        except ConnectionError:
            # It hung up (a probe that connects and closes at once, a client
            # gone while behind): not a drop, and no warning; its _serve ends
            # and says client_disconnected.
            self._drop(peer_id, peer, "")
        except (OSError, TimeoutError) as exc:
            self._drop(peer_id, peer, str(exc) or type(exc).__name__)
        except Exception as exc:  # not a client's doing: said loudly, and the client still goes
            self._log.error("client_drain_failed", pid=peer.pid, error=repr(exc))
            self._drop(peer_id, peer, type(exc).__name__)

    def _drop(self, peer_id: int, peer: Peer, why: str) -> None:
        """Let the client go; ``why`` (logged as client_dropped) empty when it hung up itself."""
        if self.peers.get(peer_id) is not peer:
            return  # gone already (hung up, or dropped by the other wait on it): not a drop
        if why:
            self._log.warning("client_dropped", pid=peer.pid, error=why)
        self.peers.pop(peer_id, None)
        # abort, not close: a close waits to flush to the very client that does
        # not read, and kept its descriptor, its buffer and its _serve task (on
        # Python 3.12 it also kept the server's close waiting). The client sees
        # the connection end, which it takes as the end of any grant.
        peer.writer.transport.abort()

    # -- serving one client ---------------------------------------------

    def _allowed(self, uid: int) -> bool:
        return uid in self._allow_uids

    async def _next_line(self, reader: asyncio.StreamReader) -> bytes | None:
        """One frame, or None on a clean EOF between frames.

        Waiting for a frame to start has no time limit (clients mostly
        listen); once it has started it must end within FRAME_TIMEOUT, so a
        client that trickles half a line cannot hold a slot for ever.
        """
        first = await reader.read(1)
        if not first:
            return None
        try:
            async with asyncio.timeout(FRAME_TIMEOUT):
                rest = await reader.readuntil(b"\n")
        except TimeoutError:
            raise ProtocolError(f"frame not finished within {FRAME_TIMEOUT:g}s") from None
        except asyncio.IncompleteReadError:
            raise ProtocolError("connection closed in the middle of a message") from None
        except asyncio.LimitOverrunError:
            raise ProtocolError(f"frame exceeds {MAX_FRAME} bytes") from None
        return first + rest

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        pid, uid, gid = peer_credentials(sock) if sock is not None else (0, -1, -1)
        if not self._allowed(uid):
            if self._on_refused is not None:
                self._on_refused()
            self._log.warning("client_refused", pid=pid, uid=uid, allowed_uids=sorted(self._allow_uids))
            with contextlib.suppress(OSError):
                writer.write(encode({"type": "error", "error": f"uid {uid} is not allowed on this socket"}))
                await writer.drain()
            writer.close()
            return
        if len(self.peers) >= MAX_CLIENTS:
            self._log.warning("client_refused", pid=pid, uid=uid, reason="too many clients")
            writer.close()
            return
        self._ids += 1
        peer_id = self._ids
        self.peers[peer_id] = Peer(pid, uid, gid, writer)
        self._log.info("client_connected", pid=pid, uid=uid)
        try:
            await self._send(peer_id, encode(self._hello))
            await self._send(peer_id, self.current())
            while peer_id in self.peers:
                line = await self._next_line(reader)
                if line is None:
                    return
                await self._handle(peer_id, decode(line, CLIENT_TYPES))
        except ProtocolError as exc:
            self._log.warning("client_protocol_error", pid=pid, error=str(exc))
            with contextlib.suppress(ProtocolError):
                await self._send(peer_id, encode({"type": "error", "error": str(exc)}))
        except (ConnectionError, OSError) as exc:
            self._log.info("client_connection_error", pid=pid, error=str(exc) or type(exc).__name__)
        finally:
            self.peers.pop(peer_id, None)
            writer.close()
            self._log.info("client_disconnected", pid=pid)

    async def _handle(self, peer_id: int, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "ack":
            peer = self.peers.get(peer_id)
            if peer is not None:
                peer.acked_seq = max(peer.acked_seq, msg["seq"])
                # An orchestrator acknowledges its grants; a `status` or `resign`
                # client never does, so it is never made a kill target.
                if self._on_acked is not None:
                    self._on_acked(peer.pid)
        elif kind == "resign":
            accepted = self._on_resign()
            reply = {"type": "ok", "accepted": accepted}
            if not accepted:
                reply["detail"] = "not leader; nothing to resign"
            await self._send(peer_id, encode(reply))
        elif kind == "status":
            await self._send(peer_id, encode({"type": "status", **(await self._status())}))
