"""Switchover through the store, with real sidecars, real toys and real etcd and ZooKeeper.

The CLI runs as a separate process that talks only to the store (as from
another machine). Every orchestrator records when it acted and with which
token; the checker proves no overlap and rising tokens, and the toys'
``start`` records prove that nobody but the target held a grant between
the request and the target's term.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest

from sidecar.config import Config
from sidecar.status import gather
from sidecar.status import switchover as request_switchover
from sidecar_harness.checker import check, read_records
from sidecar_harness.fleet import FAST_TIMING
from sidecar_harness.localetcd import find_binary
from tests.conftest import EtcdServer, ZkServer
from tests.helpers import wait_until
from tests.integration.conftest import Fleet, log_events

pytestmark = pytest.mark.integration
TTL = FAST_TIMING["ttl"]
ROUNDS = 20


@pytest.fixture(params=["etcd", "zookeeper"])
def any_fleet(request: pytest.FixtureRequest) -> Fleet:
    fixture = "fleet" if request.param == "etcd" else "zk_fleet"
    fleet: Fleet = request.getfixturevalue(fixture)
    return fleet


def cli(fleet: Fleet, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    server: EtcdServer | ZkServer = fleet.server
    argv = [
        sys.executable, "-m", "sidecar", *args,
        "--backend", fleet.backend, "--endpoints", ",".join(server.endpoints), "--election", fleet.election,
    ]  # fmt: skip
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout)


def config(fleet: Fleet) -> Config:
    return Config(backend=fleet.backend, endpoints=tuple(fleet.server.endpoints), election=fleet.election)


def status(fleet: Fleet) -> dict[str, Any]:
    out = cli(fleet, "status", "-o", "json")
    assert out.returncode == 0, out.stderr
    view: dict[str, Any] = json.loads(out.stdout)
    return view


def starts(fleet: Fleet) -> list[dict[str, Any]]:
    """Every orchestrator start (one per grant term), in token order."""
    recs = [r for r in read_records(sorted(fleet.workdir.glob("c*.jsonl"))) if r["kind"] == "start"]
    return sorted(recs, key=lambda r: int(r["env_token"]))


def acting(fleet: Fleet, candidate: str, token: int) -> bool:
    recs = read_records([fleet.record(candidate)])
    return any(r["kind"] == "act" and r["token"] == token for r in recs)


def test_switchover_to_the_third_of_five_lands_on_it_every_time(any_fleet: Fleet) -> None:
    fleet = any_fleet
    fleet.start(5, toy_flags=())
    leader, view = fleet.wait_one_leader()
    wait_until(lambda: acting(fleet, leader.candidate, view["token"]), 10, what="first leader acting")
    cfg = config(fleet)
    wait_until(lambda: len(asyncio.run(gather(cfg))["candidates"]) == 5, 10, what="five candidates queued")
    for n in range(ROUNDS):
        queue = asyncio.run(gather(cfg))["candidates"]
        target = queue[2]["id"]
        before = len(starts(fleet))
        if n == 0:  # once through the command line, as an operator would; then the same call in-process (fast)
            out = cli(fleet, "switchover", "--to", target, "--wait", "-o", "json")
            assert out.returncode == 0, f"round {n}: {out.stderr}"
            res = json.loads(out.stdout)
            assert res["done"] and res["leader"] == target, res
        else:
            got = asyncio.run(request_switchover(cfg, target, wait=True))
            assert got.done and got.new_leader == target, got
        new, new_view = fleet.wait_one_leader(unlike=queue[0]["id"])
        assert new.candidate == target
        token = int(new_view["token"])
        wait_until(lambda t=target, k=token: acting(fleet, t, k), 10, what=f"round {n}: {target} acting")  # type: ignore[misc]
        # Exactly one new term, and it is the target's: nobody held a grant in between.
        terms = starts(fleet)
        assert len(terms) == before + 1, [(r["writer"], r["env_token"]) for r in terms[before:]]
        assert asyncio.run(gather(cfg))["switchover"] is None, "the target's win did not clear the request"
    verdict = check(sorted(fleet.workdir.glob("c*.jsonl")), fleet.store)
    assert verdict.ok, verdict.violations
    tokens = [int(r["env_token"]) for r in starts(fleet)]
    assert tokens == sorted(set(tokens)), "tokens did not rise term by term"
    stepped = sum(len([e for e in log_events(s, "switchover") if e["outcome"] == "step-aside"]) for s in fleet.sidecars)
    assert stepped >= ROUNDS, "candidates ahead of the target never stepped aside"


def test_a_request_for_a_dead_candidate_is_refused_and_changes_nothing(any_fleet: Fleet) -> None:
    fleet = any_fleet
    fleet.start(3, toy_flags=())
    leader, view = fleet.wait_one_leader()
    dead = next(s for s in fleet.sidecars if s is not leader)
    dead.signal(signal.SIGKILL)
    wait_until(lambda: dead.candidate not in [c["id"] for c in status(fleet)["candidates"]], TTL + 10,
               what="the dead candidate's key to go")  # fmt: skip
    out = cli(fleet, "switchover", "--to", dead.candidate)
    assert out.returncode == 4, out
    assert "not a candidate" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    for bad, why in ((leader.candidate, "already the leader"), ("nobody", "not a candidate")):
        out = cli(fleet, "switchover", "--to", bad)
        assert out.returncode == 4 and why in out.stderr, out
    after = status(fleet)
    assert after["switchover"] is None
    assert after["leader"]["id"] == leader.candidate and after["leader"]["token"] == view["token"]


def test_a_leader_killed_during_a_switchover_leaves_exactly_one_leader(any_fleet: Fleet) -> None:
    fleet = any_fleet
    # The toys ignore SIGTERM: the old leader's stop takes kill_grace, and we kill its sidecar meanwhile.
    fleet.start(4, toy_flags=("--ignore-sigterm",))
    leader, view = fleet.wait_one_leader()
    wait_until(lambda: acting(fleet, leader.candidate, view["token"]), 10, what="first leader acting")
    wait_until(lambda: len(status(fleet)["candidates"]) == 4, 10, what="four candidates queued")
    target = status(fleet)["candidates"][2]["id"]
    out = cli(fleet, "switchover", "--to", target)
    assert out.returncode == 0, out.stderr
    wait_until(lambda: bool(log_events(leader, "state_changed") and [
        e for e in log_events(leader, "state_changed") if e.get("reason") == "switchover"]), 5,
        what="the leader demoting for the switchover")  # fmt: skip
    leader.signal(signal.SIGKILL)
    new, new_view = fleet.wait_one_leader(timeout=TTL + 15, unlike=leader.candidate)
    assert new.candidate == target
    wait_until(lambda: acting(fleet, target, new_view["token"]), 10, what="the target acting")
    assert fleet.never_two_leaders(1.0) == {target}
    verdict = check(sorted(fleet.workdir.glob("c*.jsonl")), fleet.store)
    assert verdict.ok, verdict.violations
    assert [r["writer"] for r in starts(fleet)] == [leader.candidate, target]


class Outsider:
    """A candidate that is not ours: `etcdctl elect` on etcd, kazoo's `Election` on ZooKeeper."""

    def __init__(self, fleet: Fleet, name: str = "outsider") -> None:
        self.fleet, self.name = fleet, name
        self.proc: subprocess.Popen[str] | None = None
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> Outsider:
        endpoints = ",".join(self.fleet.server.endpoints)
        if self.fleet.backend == "etcd":
            argv = [find_binary("etcdctl"), "--endpoints", endpoints, "elect", self.fleet.election, self.name]
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
            return self
        from kazoo.client import KazooClient

        def run() -> None:
            zk = KazooClient(hosts=endpoints)
            zk.start(5)
            try:
                zk.Election("/" + self.fleet.election, self.name).run(lambda: self.done.wait(60))
            finally:
                zk.stop()
                zk.close()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()  # kazoo resigns when its function returns
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)  # etcdctl resigns on SIGINT
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.thread is not None:
            self.thread.join(10)


def test_a_switchover_a_foreign_candidate_would_block_is_refused(any_fleet: Fleet) -> None:
    """Only a sidecar acts on a request or steps aside for one: a plain recipe's
    candidate ahead of the target would lead first, and one leading never acts.
    Both are refused with nothing written; a target ahead of it, or the foreign
    candidate itself, is served."""
    fleet = any_fleet
    fleet.start(2, toy_flags=())
    leader, view = fleet.wait_one_leader()
    # Both sidecars queued before the outsider: one leading says nothing of the other's node.
    wait_until(lambda: len(status(fleet)["candidates"]) == 2, 10, what="the second sidecar queued")
    with Outsider(fleet) as outsider:
        wait_until(lambda: outsider.name in [c["id"] for c in status(fleet)["candidates"]], 10,
                   what="the outsider queued")  # fmt: skip
        fleet.start(1, toy_flags=())
        wait_until(lambda: len(status(fleet)["candidates"]) == 4, 10, what="four candidates queued")
        queue = status(fleet)["candidates"]
        assert [c["foreign"] for c in queue] == [False, False, True, False], queue
        behind, ahead = queue[3]["id"], queue[1]["id"]
        shown = cli(fleet, "status").stdout
        assert any(outsider.name in line and "(not a sidecar)" in line for line in shown.splitlines()), shown

        out = cli(fleet, "switchover", "--to", behind)
        assert out.returncode == 4, out
        assert "never steps aside" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
        after = status(fleet)
        assert after["switchover"] is None
        assert after["leader"]["id"] == leader.candidate and after["leader"]["token"] == view["token"]

        out = cli(fleet, "switchover", "--to", ahead, "--wait")
        assert out.returncode == 0, out.stderr
        new, _ = fleet.wait_one_leader(unlike=leader.candidate)
        assert new.candidate == ahead

        # The outsider is next: it can be switched to; leading, it never acts on a request.
        out = cli(fleet, "switchover", "--to", outsider.name, "--wait")
        assert out.returncode == 0, out.stderr
        assert status(fleet)["leader"]["id"] == outsider.name
        out = cli(fleet, "switchover", "--to", behind)
        assert out.returncode == 4 and "never acts on a request" in out.stderr, out
    verdict = check(sorted(fleet.workdir.glob("c*.jsonl")), fleet.store)
    assert verdict.ok, verdict.violations


def test_a_switchover_without_target_to_a_foreign_next_in_line_is_done_when_it_leads(any_fleet: Fleet) -> None:
    """With no --to, the next in line takes over, whoever it is; one that is not ours
    records no epoch, so --wait counts it done when it leads (it ran to the expiry)."""
    fleet = any_fleet
    fleet.start(1, toy_flags=())
    fleet.wait_one_leader()
    with Outsider(fleet) as outsider:
        wait_until(lambda: outsider.name in [c["id"] for c in status(fleet)["candidates"]], 10,
                   what="the outsider queued")  # fmt: skip
        fleet.start(1, toy_flags=())
        wait_until(lambda: len(status(fleet)["candidates"]) == 3, 10, what="three candidates queued")
        out = cli(fleet, "switchover", "--wait", "--request-ttl", "20", "-o", "json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["leader"] == outsider.name
        assert json.loads(out.stdout)["seconds"] < 10, "--wait ran on towards the request's expiry"


def test_a_key_without_a_lease_ahead_of_the_target_is_refused(fleet: Fleet) -> None:
    """A hand-written key never goes by itself and never steps aside: it would lead first."""
    fleet.start(1, toy_flags=())
    fleet.wait_one_leader()
    etcdctl = [find_binary("etcdctl"), "--endpoints", ",".join(fleet.server.endpoints)]
    subprocess.run([*etcdctl, "put", fleet.election + "/handwritten", "ghost"], check=True, capture_output=True)
    try:
        fleet.start(1, toy_flags=())
        wait_until(lambda: len(status(fleet)["candidates"]) == 3, 10, what="three queued")
        queue = status(fleet)["candidates"]
        assert queue[1]["id"] == "ghost" and queue[1]["foreign"], queue
        out = cli(fleet, "switchover", "--to", queue[2]["id"])
        assert out.returncode == 4 and "never steps aside" in out.stderr, out
        assert status(fleet)["switchover"] is None
    finally:
        subprocess.run([*etcdctl, "del", fleet.election + "/handwritten"], check=True, capture_output=True)
