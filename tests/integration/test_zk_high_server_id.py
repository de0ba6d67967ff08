"""ZooKeeper session ids are signed 64-bit numbers whose top byte is the server's myid:
from myid 128 on they are negative (a hostile review found every sidecar then marked
foreign, every switchover refused, and every epoch record read as garbled)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar_harness.localzk import LocalZooKeeper, Server
from tests.conftest import ZkServer
from tests.helpers import wait_until
from tests.integration.conftest import Fleet, log_events
from tests.integration.test_switchover import cli, status

pytestmark = pytest.mark.integration


class HighIdZooKeeper(LocalZooKeeper):
    """One server in quorum mode with myid 200, so its session ids have the sign bit set."""

    def _configure(self, s: Server) -> None:
        s.myid = 200
        super()._configure(s)
        (s.data_dir / "myid").write_text("200\n")
        cfg = s.data_dir / "zoo.cfg"
        cfg.write_text(
            cfg.read_text() + "standaloneEnabled=false\n" + f"server.200=127.0.0.1:{s.peer_port}:{s.election_port}\n"
        )


@pytest.fixture
def high_zk() -> Iterator[ZkServer]:
    zk = HighIdZooKeeper(1).start()
    try:
        yield ZkServer(zk.endpoints, zk)
    finally:
        zk.stop()


def test_sessions_with_the_sign_bit_are_ours_and_switch_over(
    high_zk: ZkServer, election_name: str, workdir: Path
) -> None:
    fleet = Fleet(high_zk, election_name, workdir, backend="zookeeper")
    try:
        fleet.start(3, toy_flags=())
        leader, _ = fleet.wait_one_leader(timeout=30)
        wait_until(lambda: len(status(fleet)["candidates"]) == 3, 15, what="three queued")
        queue = status(fleet)["candidates"]
        assert all("/-" in c["key"] for c in queue), queue  # the premise: negative session ids
        assert not any(c["foreign"] for c in queue), queue
        out = cli(fleet, "switchover", "--to", queue[2]["id"], "--wait")
        assert out.returncode == 0, out.stderr
        new, _ = fleet.wait_one_leader(unlike=leader.candidate)
        assert new.candidate == queue[2]["id"]
        assert [e for e in log_events(leader, "handed_over")], "the leader did not hand over in its multi"
        repaired = [e for s in fleet.sidecars for e in log_events(s, "epoch_record_repaired")]
        assert repaired == [], repaired
    finally:
        fleet.stop()
