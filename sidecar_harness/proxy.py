"""A fault-injecting TCP proxy, for partitions and slow links in the fault campaign.

One listening port forwards to one upstream. Modes:

* ``pass``: forward bytes as they come;
* ``delay``: forward each chunk after ``delay`` seconds (a slow link);
* ``blackhole``: accept and read, forward nothing (a partition). On heal,
  every connection that lived through the partition is reset, as TCP would
  have given up on it; clients reconnect.

Loopback only: the harness binds 127.0.0.1 and points at local servers.
"""

from __future__ import annotations

import asyncio
import contextlib


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode = "pass"
        self.delay = 0.0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tainted: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def partition(self) -> None:
        self.mode = "blackhole"
        self._tainted |= self._conns

    def slow(self, delay: float) -> None:
        self.mode, self.delay = "delay", delay

    def heal(self) -> None:
        self.mode, self.delay = "pass", 0.0
        for pair in list(self._tainted):
            for w in pair:
                w.close()
        self._tainted.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._conns.discard(pair)
            self._tainted.discard(pair)
            for w in pair:
                w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await reader.read(65536):
                if self.mode == "blackhole":
                    continue  # swallowed: the far side never hears of it
                if self.mode == "delay":
                    await asyncio.sleep(self.delay)
                writer.write(chunk)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pair in list(self._conns):
            for w in pair:
                w.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
