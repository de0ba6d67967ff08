"""Throwaway ZooKeeper servers as local Java processes, for the demo and tests.

Uses the jars of Debian's ``zookeeper`` package (``apt-get install
zookeeper``) and the installed Java; ``ELECTION_SIDECAR_ZK_CLASSPATH``
overrides the class path. One server (size=1) or an ensemble of ``size``
servers on loopback, each on free ports with its own temporary data dir.
A short tickTime (200 ms) lets session timeouts go from 0.4 s up to 4 s, so expiry tests take seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sidecar.localetcd import free_ports, log_tail

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


@dataclass
class Server:
    myid: int
    client_port: int
    peer_port: int
    election_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class LocalZooKeeper:
    size: int = 1
    servers: list[Server] = field(default_factory=list)
    classpath: str = ""
    _tmp: Path | None = None

    @property
    def endpoints(self) -> list[str]:
        return [s.endpoint for s in self.servers]

    def start(self, timeout: float = 60.0) -> LocalZooKeeper:
        self.classpath = self.classpath or find_classpath()
        self._tmp = Path(tempfile.mkdtemp(prefix="election-sidecar-zk-"))
        ports = free_ports(3 * self.size)
        for i in range(self.size):
            d = self._tmp / f"zk{i + 1}"
            d.mkdir()
            self.servers.append(
                Server(i + 1, ports[3 * i], ports[3 * i + 1], ports[3 * i + 2], d, self._tmp / f"zk{i + 1}.log")
            )
        try:
            for s in self.servers:
                self._configure(s)
                self._spawn(s)
            self.wait_serving(timeout)
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
            lines += [f"server.{o.myid}=127.0.0.1:{o.peer_port}:{o.election_port}" for o in self.servers]
        (s.data_dir / "zoo.cfg").write_text("\n".join(lines) + "\n")

    def _spawn(self, s: Server) -> None:
        log = s.log_path.open("ab")
        try:
            argv = [
                "java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-Dzookeeper.admin.enableServer=false",
                "-cp", self.classpath,
                "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(s.data_dir / "zoo.cfg"),
            ]  # fmt: skip
            s.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()

    def mode(self, s: Server) -> str:
        """'standalone', 'leader', 'follower', or '' when not serving."""
        try:
            for line in four_letter(s.client_port, "srvr").splitlines():
                if line.startswith("Mode:"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return ""

    def wait_serving(self, timeout: float = 60.0, servers: list[Server] | None = None) -> None:
        deadline = time.monotonic() + timeout
        pending = list(servers or [s for s in self.servers if s.alive])
        while pending:
            for s in pending:
                if not s.alive:
                    raise RuntimeError(f"zookeeper {s.myid} exited: {self.tail(s)}")
            pending = [s for s in pending if self.mode(s) not in ("standalone", "leader", "follower")]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"zookeeper servers {[s.myid for s in pending]} not serving after {timeout}s")
            time.sleep(0.05)

    def leader(self) -> Server | None:
        return next((s for s in self.servers if s.alive and self.mode(s) == "leader"), None)

    def tail(self, s: Server, lines: int = 5) -> str:
        return log_tail(s.log_path, lines)

    @property
    def members(self) -> list[Server]:
        return self.servers

    def wait_healthy(self, timeout: float = 60.0, members: list[Server] | None = None) -> None:
        self.wait_serving(timeout, members)

    def kill(self, s: Server, sig: int = signal.SIGKILL) -> None:
        if s.proc is not None and s.proc.poll() is None:
            s.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                s.proc.wait(timeout=10)

    def start_member(self, s: Server) -> None:
        """Start a killed server again without waiting (quorum may still be missing)."""
        if not s.alive:
            self._spawn(s)

    def stop(self) -> None:
        for s in self.servers:
            self.kill(s)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> LocalZooKeeper:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
