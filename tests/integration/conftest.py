"""Fixtures that run real sidecar processes against the test etcd."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sidecar_harness.fleet import SidecarProcess
from sidecar_harness.localstore import free_ports
from tests.conftest import EtcdServer, ZkServer
from tests.helpers import wait_until


def log_events(s: SidecarProcess, event: str) -> list[dict[str, Any]]:
    out = []
    for line in s.log_path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == event:
            rec["t"] = datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()
            out.append(rec)
    return out


def pid_gone(pid: int) -> bool:
    """True once pid has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


class Fleet:
    def __init__(self, server: EtcdServer | ZkServer, election: str, workdir: Path, backend: str = "etcd") -> None:
        self.server = server
        self.backend = backend
        self.election = election
        self.workdir = workdir
        self.sidecars: list[SidecarProcess] = []

    @property
    def store(self) -> Path:
        return self.workdir / "store.db"

    def record(self, candidate: str) -> Path:
        return self.workdir / f"{candidate}.jsonl"

    def toy(self, candidate: str, *flags: str) -> list[str]:
        """The toy orchestrator's command line for one candidate."""
        return [
            sys.executable, "-m", "sidecar_harness.toy_orchestrator",
            "--store", str(self.store), "--record", str(self.record(candidate)), *flags,
        ]  # fmt: skip

    def start(
        self, n: int, toy_flags: tuple[str, ...] | None = None, http: bool = False, **kw: Any
    ) -> list[SidecarProcess]:
        """Start n sidecars; with toy_flags, each supervises a toy orchestrator; with http, each serves HTTP."""
        new = []
        ports = free_ports(n) if http else [0] * n
        for i in range(n):
            name = f"c{len(self.sidecars) + i}"
            kw["http_port"] = ports[i]
            if toy_flags is not None:
                kw["command"] = self.toy(name, *toy_flags)
            new.append(
                SidecarProcess(name, self.workdir, self.server.endpoints, self.election, backend=self.backend, **kw)
            )
        for s in new:
            s.start()
            self.sidecars.append(s)
        for s in new:
            s.wait_socket()
        return new

    def by_id(self, candidate: str) -> SidecarProcess:
        return next(s for s in self.sidecars if s.candidate == candidate)

    def claimers(self) -> list[tuple[SidecarProcess, dict[str, Any]]]:
        """Sidecars that say they lead right now, with what they say."""
        out = []
        for s in self.sidecars:
            if s.alive:
                view = s.status()
                if view and view.get("state") == "leader":
                    out.append((s, view))
        return out

    def wait_one_leader(
        self, timeout: float = 15.0, unlike: str | None = None
    ) -> tuple[SidecarProcess, dict[str, Any]]:
        found: list[tuple[SidecarProcess, dict[str, Any]]] = []

        def one() -> bool:
            found[:] = self.claimers()
            return len(found) == 1 and found[0][0].candidate != unlike

        wait_until(one, timeout, what=f"exactly one leader (other than {unlike})")
        return found[0]

    def never_two_leaders(self, seconds: float) -> set[str]:
        """Sample for ``seconds``: never more than one claimer; return who led."""
        seen: set[str] = set()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            claim = self.claimers()
            assert len(claim) <= 1, f"two leaders: {[s.candidate for s, _ in claim]}"
            seen.update(s.candidate for s, _ in claim)
            time.sleep(0.05)
        return seen

    def stop(self) -> None:
        for s in self.sidecars:
            s.stop()


@pytest.fixture
def fleet(etcd: EtcdServer, election_name: str, workdir: Path) -> Iterator[Fleet]:
    f = Fleet(etcd, election_name, workdir)
    yield f
    f.stop()


@pytest.fixture
def zk_fleet(zookeeper: ZkServer, election_name: str, workdir: Path) -> Iterator[Fleet]:
    f = Fleet(zookeeper, election_name, workdir, backend="zookeeper")
    yield f
    f.stop()
