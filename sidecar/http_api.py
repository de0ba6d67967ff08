"""HTTP endpoints: /metrics, /healthz, /readyz, /leader, /leader/ready (h11 on asyncio, on the sidecar's loop).

/healthz fails when the loop stalls or when the elector still believes it
leads although its renewals stopped (the mistake of kubernetes#71730: a
health check that stays green while leadership is dead). /readyz follows
store connectivity and whether we take part in the election. /leader is this sidecar's own view, with token and
deadline, never a bare name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import h11
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from sidecar.config import Config
from sidecar.elector import Elector
from sidecar.loopmon import LoopMonitor
from sidecar.model import Snapshot, State

MAX_LOOP_LAG = 1.0  # seconds; beyond this renewals and heartbeats are at risk

# Why not aiohttp: five GET endpoints cost it 10.8 MiB of RSS and 225 ms of
# imports, a fifth of the sidecar. h11 (a maintained HTTP/1.1 state machine,
# no I/O of its own) does the parsing; what is left here is the socket loop
# and the limits that keep a bad client from costing us anything.
MAX_HEAD = 8192  # bytes of request line + headers; 431 beyond
MAX_BODY = 1024  # a GET has no business sending more
REQUEST_TIMEOUT = 5.0  # seconds for a whole request, from the wait for it (slow loris, idle keep-alive)
MAX_CLIENTS = 32  # open connections; more are closed at once
READ_CHUNK = 4096
JSON = "application/json; charset=utf-8"

Reply = tuple[int, str, bytes]  # status, content type, body


def health(snap: Snapshot, loop: LoopMonitor, cfg: Config) -> list[str]:
    """Reasons the sidecar process itself is unhealthy (restart it); empty when healthy.

    Being out of the election is not one of them: a sidecar that could not
    confirm its orchestrator's death must stay up and out (a restart would
    put it straight back into the election); /readyz reports that.
    """
    problems = []
    lag_limit = min(MAX_LOOP_LAG, cfg.retry_interval)
    if loop.lag > lag_limit or loop.stalled_for() > lag_limit:
        problems.append(f"event loop lagging {max(loop.lag, loop.stalled_for()):.3f}s (limit {lag_limit:g}s)")
    if snap.past_demote > 0:
        problems.append(f"still leader {snap.past_demote:.3f}s past its renew deadline: renewals stopped")
    return problems


def readiness(snap: Snapshot) -> list[str]:
    """Reasons the sidecar is not taking part in the election now; empty when it is."""
    problems = []
    if not snap.backend_up:
        problems.append("the store did not answer the last call")
    if snap.out_of_election:
        problems.append(f"out of the election: {snap.out_of_election}")
    return problems


def leader_view(snap: Snapshot) -> dict[str, Any]:
    """This sidecar's view of who leads: with token and deadline, never a bare name."""
    view: dict[str, Any] = {
        "election": snap.election,
        "candidate": snap.candidate,
        "state": snap.state.value,
        "leader": None,
    }
    if snap.grant is not None:
        g = snap.grant
        view["leader"] = {"id": g.candidate, "token": g.token, "epoch": g.epoch}
        view["deadline"] = {
            "expires_monotonic": round(g.expires_monotonic, 6),
            "valid_for_ms": int(snap.remaining * 1000),
        }
    elif snap.leader is not None:
        lead = snap.leader
        # What this candidate last saw while queueing; may be out of date.
        view["leader"] = {"id": lead.id, "token": lead.token, "epoch": lead.epoch or None}
    if snap.out_of_election:
        view["out_of_election"] = snap.out_of_election
    return view


class HttpApi:
    def __init__(self, cfg: Config, elector: Elector, loop: LoopMonitor, registry: CollectorRegistry) -> None:
        self.cfg = cfg
        self.elector = elector
        self.loop = loop
        self.registry = registry
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self.port = 0
        self.routes: dict[str, Callable[[], Reply]] = {
            "/metrics": self.metrics,
            "/healthz": self.healthz,
            "/readyz": self.readyz,
            "/leader": self.leader,
            "/leader/ready": self.leader_ready,
        }

    def metrics(self) -> Reply:
        return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)

    def healthz(self) -> Reply:
        problems = health(self.elector.snapshot(), self.loop, self.cfg)
        return _json({"ok": not problems, "problems": problems}, 503 if problems else 200)

    def readyz(self) -> Reply:
        problems = readiness(self.elector.snapshot())
        return _json({"ok": not problems, "backend": self.cfg.backend, "problems": problems}, 503 if problems else 200)

    def leader_ready(self) -> Reply:
        """200 on the leader only (Patroni's /primary): a Service or LB health check follows the leader."""
        state = self.elector.state
        leading = state is State.LEADER
        return _json({"leader": leading, "state": state.value}, 200 if leading else 503)

    def leader(self) -> Reply:
        return _json(leader_view(self.elector.snapshot()), 200)

    async def start(self, addr: str) -> int:
        host, _, port = addr.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        self._server = await asyncio.start_server(self._accept, host, int(port), limit=MAX_HEAD)
        self.port = int(self._server.sockets[0].getsockname()[1])  # the real port when 0 was asked for
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._conns) >= MAX_CLIENTS:
            writer.close()
            return
        self._conns.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client went away: nothing to answer
        except asyncio.CancelledError:
            # close() ends open connections; asyncio's server would log a
            # cancelled handler as an error. This task ends here either way.
            pass
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Requests on one connection until either side closes it."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        while True:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    request = await self._read_request(conn, reader)
            except TimeoutError:
                await self._refuse(conn, writer, 408, "request not received in time")
                return
            except h11.RemoteProtocolError as exc:
                await self._refuse(conn, writer, exc.error_status_hint, str(exc))
                return
            except _TooLarge as exc:
                await self._refuse(conn, writer, exc.status, exc.why)
                return
            if request is None:
                return  # closed between requests
            status, ctype, body = self._route(request)
            head = request.method == b"HEAD"
            headers = [("content-type", ctype), ("content-length", str(len(body)))]
            writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
            if body and not head:
                writer.write(conn.send(h11.Data(data=body)) or b"")
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await writer.drain()
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # either side asked to close (or sent something we did not read)
            conn.start_next_cycle()

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Request | None:
        """The next request with its (small) body read and dropped; None on a clean close."""
        request: h11.Request | None = None
        size = head = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                want = READ_CHUNK
                if request is None:
                    # h11 bounds only a head still incomplete, so one completing
                    # in the read that crosses its limit would pass: never read
                    # more than MAX_HEAD + 1 bytes of head, and refuse at that.
                    want = min(want, MAX_HEAD + 1 - head)
                    if want <= 0:
                        raise _TooLarge(431, f"request head over {MAX_HEAD} bytes")
                data = await reader.read(want)
                head += len(data)
                if not data and request is None and conn.their_state is h11.IDLE:
                    return None
                conn.receive_data(data)  # b"" is EOF: h11 raises if it cuts a request short
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY:
                    raise _TooLarge(413, f"request body over {MAX_BODY} bytes")
            elif isinstance(event, h11.EndOfMessage):
                return request
            elif isinstance(event, h11.ConnectionClosed):
                return None

    def _route(self, request: h11.Request) -> Reply:
        if request.method not in (b"GET", b"HEAD"):
            return 405, "text/plain; charset=utf-8", b"only GET and HEAD\n"
        path = request.target.split(b"?", 1)[0].decode("ascii", errors="replace")
        handler = self.routes.get(path)
        if handler is None:
            return 404, "text/plain; charset=utf-8", b"not found\n"
        return handler()

    async def _refuse(self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int, why: str) -> None:
        """Answer a bad or slow request with ``status`` and close, if a response can still be sent."""
        body = (why + "\n").encode()
        headers = [("content-type", "text/plain; charset=utf-8"), ("content-length", str(len(body))),
                   ("connection", "close")]  # fmt: skip
        try:
            out = conn.send(h11.Response(status_code=status, headers=headers)) or b""
            out += (conn.send(h11.Data(data=body)) or b"") + (conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            return  # a response was already under way: just close
        writer.write(out)
        with contextlib.suppress(OSError):
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await writer.drain()


class _TooLarge(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


def _json(body: dict[str, Any], status: int) -> Reply:
    return status, JSON, json.dumps(body).encode()
