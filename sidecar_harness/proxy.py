"""A fault-injecting TCP proxy, for partitions and slow links in the fault campaign.

One listening port forwards to one upstream. Modes:

* ``pass``: forward bytes as they come;
* ``delay``: forward each chunk after ``delay`` seconds (a slow link);
* ``blackhole``: accept and read, forward nothing (a partition). On heal,
  every connection that lived through the partition is reset, as TCP would
  have given up on it; clients reconnect.
* ``hold`` (a silent partition): every connection stays open and nothing
  moves in either direction; the proxy stops reading, so the kernel's
  buffers fill and the senders' writes block, as on a black-holed link. No
  FIN, no RST: an endpoint learns of it only from its own timeouts, never
  from the socket. A connection accepted during a hold is not dialled
  upstream until heal (the far side never sees it). ``hold`` can name the
  dialers it cuts, when ``identify`` tells who opened each connection; on
  heal the held connections carry on where they stopped.

Loopback only: the harness binds 127.0.0.1 and points at local servers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

# Who opened a connection, from its (peer port, our port); None when unknown.
Identify = Callable[[int, int], str | None]
# Reads the dialer's first message and returns what to forward instead.
Greeting = Callable[[asyncio.StreamReader], Awaitable[bytes]]


@dataclass(eq=False)
class _Link:
    dialer: str | None
    client: asyncio.StreamWriter
    # Set while bytes may move; cleared by hold().
    open: asyncio.Event = field(default_factory=asyncio.Event)


class FaultProxy:
    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        identify: Identify | None = None,
        greeting: Greeting | None = None,
        name: str = "",
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.name = name
        self.mode = "pass"
        self.delay = 0.0
        self.port = 0
        # Bytes passed on either way: which member carries a client's traffic.
        self.forwarded = 0
        self._identify = identify
        self._greeting = greeting
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tainted: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._links: set[_Link] = set()
        # None: no hold; empty: nobody's; else whose connections are held ("*": all).
        self._held: frozenset[str] | None = None
        self._closing = False

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        """Connections open now (held ones included): which member a client uses."""
        return len(self._links)

    def dialers(self) -> list[str | None]:
        """Who opened each connection open now (None: could not tell)."""
        return [link.dialer for link in self._links]

    def partition(self) -> None:
        self.mode = "blackhole"
        self._tainted |= self._conns

    def slow(self, delay: float) -> None:
        self.mode, self.delay = "delay", delay

    def hold(self, dialers: Collection[str] | None = None) -> None:
        """Silently partition the connections of ``dialers`` (all when None), open and new."""
        held = frozenset(["*"] if dialers is None else dialers)
        self._held = held if self._held is None else self._held | held
        for link in self._links:
            if self._is_held(link.dialer):
                link.open.clear()

    def _is_held(self, dialer: str | None) -> bool:
        if self._held is None:
            return False
        # A dialer we could not name is held too: a partition that leaks
        # through an unidentified connection would hide what it tests.
        return "*" in self._held or dialer is None or dialer in self._held

    def heal(self) -> None:
        self.mode, self.delay = "pass", 0.0
        for pair in list(self._tainted):
            for w in pair:
                w.close()
        self._tainted.clear()
        self._held = None
        for link in self._links:
            link.open.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dialer = None
        if self._identify is not None:
            peer_port = writer.get_extra_info("peername")[1]
            dialer = await asyncio.to_thread(self._identify, peer_port, self.port)
        link = _Link(dialer, writer)
        self._links.add(link)
        try:
            if not self._is_held(dialer):
                link.open.set()
            # Held from the start: the far side must not even see a connect.
            await link.open.wait()
            if self._closing:
                writer.close()
                return
            await self._forward(link, reader, writer)
        finally:
            self._links.discard(link)

    async def _forward(self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        pair = (writer, up_writer)
        self._conns.add(pair)
        if self.mode == "blackhole":
            self._tainted.add(pair)
        try:
            first = b""
            if self._greeting is not None:
                with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                    first = await self._greeting(reader)
            await asyncio.gather(self._pipe(link, reader, up_writer, first), self._pipe(link, up_reader, writer))
        finally:
            self._conns.discard(pair)
            self._tainted.discard(pair)
            for w in pair:
                w.close()

    async def _pipe(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes = b""
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            chunk = first
            while True:
                if chunk:
                    # A chunk read just before a hold waits here with the rest: held, not lost.
                    await link.open.wait()
                    if self._closing:
                        break
                    if self.mode == "blackhole":
                        chunk = b""
                        continue  # swallowed: the far side never hears of it
                    if self.mode == "delay":
                        await asyncio.sleep(self.delay)
                    writer.write(chunk)
                    self.forwarded += len(chunk)
                    await writer.drain()
                # While held, nothing is read: the sender's buffers fill as on a dead link.
                await link.open.wait()
                if self._closing:
                    break
                chunk = await reader.read(65536)
                if not chunk:
                    break
        with contextlib.suppress(OSError):
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pair in list(self._conns):
            for w in pair:
                w.close()
        # Held connections end here too, those not yet dialled upstream included.
        self._closing = True
        self._held = None
        for link in self._links:
            link.client.close()
            link.open.set()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
