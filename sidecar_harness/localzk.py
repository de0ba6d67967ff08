"""Throwaway ZooKeeper servers as local Java processes, for the demo and tests.

Uses the jars of Debian's ``zookeeper`` package (``apt-get install
zookeeper``) and the installed Java; ``ELECTION_SIDECAR_ZK_CLASSPATH``
overrides the class path. One server (size=1) or an ensemble of ``size``
servers on loopback, each on free ports with its own temporary data dir.
A short tickTime (200 ms) lets session timeouts go from 0.4 s up to 4 s, so expiry tests take seconds.

With ``peer_proxies=True`` each server's quorum and election ports get a
fault proxy in front (sidecar_harness/peerlinks.py), and each server's
zoo.cfg names the proxies for the others (its own line must stay real: a
server binds the addresses of its own line). One catch: a server that
dials a peer with a higher id sends its own election address in the
greeting, and that peer drops the connection and dials back to *that*
address (QuorumCnxManager.handleConnection), which would bypass the proxy.
The election proxies therefore forward the greeting in its pre-3.5 form,
the sender's id alone; the peer then dials back through the address in
its own zoo.cfg: the proxy.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sidecar_harness.localstore import LocalMember, ProcessGroup, free_ports, spawn_logged
from sidecar_harness.peerlinks import PeerLinks

TICK_MS = 200
JARS = ("zookeeper.jar", "zookeeper-jute.jar", "slf4j-api.jar", "slf4j-simple.jar")
JAR_DIR = Path("/usr/share/java")


class ZooKeeperNotFound(RuntimeError):
    pass


def find_classpath() -> str:
    env = os.environ.get("ELECTION_SIDECAR_ZK_CLASSPATH")
    if env:
        return env
    missing = [j for j in JARS if not (JAR_DIR / j).exists()]
    if missing or shutil.which("java") is None:
        what = f"jars {missing}" if missing else "java"
        raise ZooKeeperNotFound(
            f"ZooKeeper needs {what}: apt-get install zookeeper (and a JRE), or set ELECTION_SIDECAR_ZK_CLASSPATH"
        )
    return ":".join(str(JAR_DIR / j) for j in JARS)


def four_letter(port: int, word: str, timeout: float = 1.0) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(word.encode())
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


async def election_greeting(reader: asyncio.StreamReader) -> bytes:
    """A server's election-port greeting, forwarded without the address it names.

    3.5+ sends (protocol version < 0, sid, length, "host:port"); older servers
    send the sid alone, which every version still accepts. Without an address,
    a receiver that dials back uses its own zoo.cfg, which names our proxy.
    """
    head = await reader.readexactly(8)
    if int.from_bytes(head, "big", signed=True) >= 0:
        return head  # already the sid alone
    sid = await reader.readexactly(8)
    raw_len = await reader.readexactly(4)
    length = int.from_bytes(raw_len, "big", signed=True)
    if not 0 < length <= 4096:
        return head + sid + raw_len  # not what we know: pass it on for the server to judge
    await reader.readexactly(length)
    return sid


@dataclass
class Server(LocalMember):
    myid: int = 0
    peer_port: int = 0
    election_port: int = 0
    data_dir: Path = Path()
    # What the other servers dial: peer-link proxies, or the ports themselves.
    peer_dial_port: int = 0
    election_dial_port: int = 0


@dataclass
class LocalZooKeeper(ProcessGroup):
    size: int = 1
    members: list[Server] = field(default_factory=list)
    classpath: str = ""
    # Route server-to-server traffic through fault proxies (see the module doc).
    peer_proxies: bool = False
    links: PeerLinks | None = None
    _tmp: Path | None = None

    def start(self, timeout: float = 60.0) -> LocalZooKeeper:
        self.classpath = self.classpath or find_classpath()
        self._tmp = Path(tempfile.mkdtemp(prefix="election-sidecar-zk-"))
        ports = free_ports(3 * self.size)
        for i in range(self.size):
            d = self._tmp / f"zk{i + 1}"
            d.mkdir()
            self.members.append(
                Server(
                    f"zk{i + 1}",
                    ports[3 * i],
                    self._tmp / f"zk{i + 1}.log",
                    myid=i + 1,
                    peer_port=ports[3 * i + 1],
                    election_port=ports[3 * i + 2],
                    data_dir=d,
                )
            )
        try:
            if self.peer_proxies and self.size > 1:
                links = self.links = PeerLinks(lambda: {s.proc.pid: s.name for s in self.members if s.proc})
                for s in self.members:
                    s.peer_dial_port = links.add(s.name, s.peer_port)
                    s.election_dial_port = links.add(s.name, s.election_port, greeting=election_greeting)
            for s in self.members:
                self._configure(s)
                self._spawn(s)
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _configure(self, s: Server) -> None:
        lines = [
            f"tickTime={TICK_MS}",
            "initLimit=50",
            "syncLimit=20",
            f"dataDir={s.data_dir}",
            f"clientPort={s.client_port}",
            "clientPortAddress=127.0.0.1",
            "admin.enableServer=false",
            "4lw.commands.whitelist=*",
            "maxClientCnxns=0",
        ]
        if self.size > 1:
            (s.data_dir / "myid").write_text(f"{s.myid}\n")
            lines += [self._server_line(s, o) for o in self.members]
        (s.data_dir / "zoo.cfg").write_text("\n".join(lines) + "\n")

    @staticmethod
    def _server_line(s: Server, o: Server) -> str:
        """``o`` as ``s`` dials it: through its proxies if it has them, itself always direct."""
        if o is s or not o.peer_dial_port:
            return f"server.{o.myid}=127.0.0.1:{o.peer_port}:{o.election_port}"
        return f"server.{o.myid}=127.0.0.1:{o.peer_dial_port}:{o.election_dial_port}"

    def _spawn(self, s: Server) -> None:
        argv = [
            "java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Dzookeeper.admin.enableServer=false",
            # Throwaway data, as for etcd (--unsafe-no-fsync) and PostgreSQL
            # (fsync=off): a write is on the OS once written, which survives
            # every fault we inject (a killed or frozen process, a cut link);
            # only a machine crash would lose it. An fsync per write on a
            # shared disk made ZooKeeper's write latency the disk's, not ours.
            "-Dzookeeper.forceSync=no",
            "-cp", self.classpath,
            "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(s.data_dir / "zoo.cfg"),
        ]  # fmt: skip
        s.proc = spawn_logged(argv, s.log_path)

    def _respawn(self, m: LocalMember) -> None:
        assert isinstance(m, Server)
        self._spawn(m)

    def mode(self, s: LocalMember) -> str:
        """'standalone', 'leader', 'follower', or '' when not serving."""
        try:
            for line in four_letter(s.client_port, "srvr").splitlines():
                if line.startswith("Mode:"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return ""

    def wait_healthy(self, timeout: float = 60.0, members: list[LocalMember] | None = None) -> None:
        deadline = time.monotonic() + timeout
        pending = list(members or [s for s in self.members if s.alive])
        while pending:
            for s in pending:
                if not s.alive:
                    raise RuntimeError(f"zookeeper {s.name} exited: {self.tail(s)}")
            pending = [s for s in pending if self.mode(s) not in ("standalone", "leader", "follower")]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"zookeeper servers {[s.name for s in pending]} not serving after {timeout}s")
            time.sleep(0.05)

    def leader(self) -> Server | None:
        return next((s for s in self.members if s.alive and self.mode(s) == "leader"), None)
