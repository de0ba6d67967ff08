"""Fault proxies on the links between store members (issue 14).

A store member can be cut from its peers while its clients still reach it:
the case where a member that lost the quorum might go on answering clients.
``PeerLinks`` puts one ``FaultProxy`` in front of each peer-facing port of
each member (etcd's peer port; ZooKeeper's quorum and election ports), and
the members are told to dial each other through them. Isolating member M
holds, silently (connections stay open, nothing moves, nothing is reset):

* every connection into M's proxies, whoever dialled it;
* every connection into the other members' proxies that M dialled.

Links between the other members keep flowing, so they keep a quorum.

Who dialled a connection is read from the kernel, not from the protocol:
on accept the proxy finds the dialer's socket in /proc/net/tcp{,6} (local
port = the connection's peer port, remote port = the proxy's) and the member
process holding that socket's inode among its open files. This is needed
for etcd, whose members must agree on every member's advertised peer URL
(member ids are hashed from them), so there can be only one proxy per
target, shared by all dialers. A connection whose dialer cannot be named is
held too during a hold, so a partition never leaks.

The proxies run on an event loop of their own in a daemon thread, so the
synchronous local stores (started from threads by the campaign) can own them.
Linux only, loopback only.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from sidecar_harness.proxy import FaultProxy, Greeting

T = TypeVar("T")


def _socket_inode(local_port: int, remote_port: int) -> str | None:
    """The inode of the loopback TCP socket bound to ``local_port`` and connected to ``remote_port``."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            # Ports are the hex after the last colon; the addresses are all loopback here.
            if (
                int(fields[1].rsplit(":", 1)[1], 16) == local_port
                and int(fields[2].rsplit(":", 1)[1], 16) == remote_port
            ):
                return fields[9]
    return None


def socket_owner(peer_port: int, proxy_port: int, processes: dict[int, str]) -> str | None:
    """Which of ``processes`` (pid -> name) opened the connection from ``peer_port`` to ``proxy_port``."""
    inode = _socket_inode(peer_port, proxy_port)
    if inode is None or inode == "0":
        return None
    target = f"socket:[{inode}]"
    for pid, name in processes.items():
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") == target:
                    return name
            except OSError:
                continue  # closed while we looked
    return None


class PeerLinks:
    """The proxies on a store's peer links, and the switch that isolates one member."""

    def __init__(self, processes: Callable[[], dict[int, str]]) -> None:
        # Asked at every accept: members that were killed and restarted have new pids.
        self._processes = processes
        self.proxies: list[tuple[str, FaultProxy]] = []  # (member it leads to, proxy)
        self.isolated: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="peer-links", daemon=True)
        self._thread.start()

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _who(self, peer_port: int, proxy_port: int) -> str | None:
        return socket_owner(peer_port, proxy_port, self._processes())

    def add(self, target: str, port: int, greeting: Greeting | None = None) -> int:
        """A proxy in front of ``target``'s peer-facing ``port``; returns the proxy's port."""
        proxy = FaultProxy("127.0.0.1", port, identify=self._who, greeting=greeting, name=f"{target}:{port}")
        self.proxies.append((target, proxy))
        return self._run(proxy.start())

    def isolate(self, member: str) -> None:
        """Cut ``member`` from every peer, silently, in both directions."""

        async def hold() -> None:
            for target, proxy in self.proxies:
                proxy.hold() if target == member else proxy.hold([member])

        self._run(hold())
        self.isolated.add(member)

    def heal(self) -> None:
        async def heal() -> None:
            for _, proxy in self.proxies:
                proxy.heal()

        self._run(heal())
        self.isolated.clear()

    def dialers(self) -> dict[str, list[str | None]]:
        """Who holds a connection into each member's proxies now (for tests and reports)."""

        async def look() -> dict[str, list[str | None]]:
            out: dict[str, list[str | None]] = {}
            for target, proxy in self.proxies:
                out.setdefault(target, []).extend(proxy.dialers())
            return out

        return self._run(look())

    def close(self) -> None:
        async def close() -> None:
            for _, proxy in self.proxies:
                await proxy.close()
            # Let the connections the proxies just closed wind down, so that none is
            # left "destroyed but pending" when the loop goes.
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if rest:
                await asyncio.wait(rest, timeout=2.0)

        if self._loop.is_closed():
            return
        try:
            self._run(close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5.0)
            if not self._thread.is_alive():
                self._loop.close()
