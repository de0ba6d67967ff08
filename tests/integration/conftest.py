"""Fixtures that run real sidecar processes against the test etcd."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.fleet import SidecarProcess
from tests.conftest import EtcdServer
from tests.helpers import wait_until


class Fleet:
    def __init__(self, etcd: EtcdServer, election: str, workdir: Path) -> None:
        self.etcd = etcd
        self.election = election
        self.workdir = workdir
        self.sidecars: list[SidecarProcess] = []

    def start(self, n: int, **kw: Any) -> list[SidecarProcess]:
        new = [
            SidecarProcess(f"c{len(self.sidecars) + i}", self.workdir, self.etcd.endpoints, self.election, **kw)
            for i in range(n)
        ]
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

    def stop(self) -> None:
        for s in self.sidecars:
            s.stop()


@pytest.fixture
def fleet(etcd: EtcdServer, election_name: str, workdir: Path) -> Iterator[Fleet]:
    f = Fleet(etcd, election_name, workdir)
    yield f
    f.stop()
