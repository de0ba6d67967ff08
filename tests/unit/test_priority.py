"""Candidate priorities and --no-lead: the rules, the value format, the config and the CLI views."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from sidecar import status
from sidecar.backends.base import (
    COMPLETED,
    EXPIRED,
    NO_REQUEST,
    PRIORITY_STEP_ASIDE,
    STEP_ASIDE,
    TARGET_GONE,
    SwitchoverRequest,
    encode_candidate,
    parse_candidate,
    priority_verdict,
    vacancy_winner,
)
from sidecar.elector import Elector
from sidecar.model import State
from sidecar.status import SwitchoverRefused
from tests.helpers import RecordingSink
from tests.unit.test_elector import CFG, Harness
from tests.unit.test_switchover import _use

NOW = 1_000_000.0


def req(to: str, at: float = NOW) -> SwitchoverRequest:
    return SwitchoverRequest(to, "ops@laptop", "abc", at, 30.0)


def test_values_round_trip_and_foreign_strings_are_plain_ids() -> None:
    assert encode_candidate("a") == "a"  # the default writes the bare id, as before priorities
    assert encode_candidate("a", 7) == "a priority=7"
    for prio in (-1000, -1, 0, 1, 1000):
        assert parse_candidate(encode_candidate("node-1", prio)) == ("node-1", prio)
    # etcdctl elect NAME VALUE takes any string: never a priority unless exactly ours.
    for foreign in ("hello world", "x priority=", "x priority=abc", "x priority=5 extra", " priority=5",
                    "x priority=99999", "x  priority=5", "x Priority=5", ""):  # fmt: skip
        assert parse_candidate(foreign) == (foreign, 0), foreign


def test_verdicts_with_priorities() -> None:
    mine = 1
    assert priority_verdict(None, "a", mine, {}, NOW) == NO_REQUEST
    assert priority_verdict(None, "a", mine, {"b": 1, "c": 0}, NOW) == NO_REQUEST  # equals keep queue order
    assert priority_verdict(None, "a", mine, {"b": 2}, NOW) == PRIORITY_STEP_ASIDE
    # A request to us is the operator's explicit choice: it wins over any priority.
    assert priority_verdict(req("a"), "a", mine, {"b": 9}, NOW) == COMPLETED
    # A request to another queued candidate: step aside for it, whatever the priorities.
    assert priority_verdict(req("b"), "a", 9, {"b": 0}, NOW) == STEP_ASIDE
    # "Anyone": the next in line leads, whatever the priorities. The leader the request
    # moves away from re-queues behind it; by priority it would take the vacancy back.
    assert priority_verdict(req(""), "a", mine, {"b": 2}, NOW) == COMPLETED
    assert priority_verdict(req(""), "a", mine, {"b": 1}, NOW) == COMPLETED
    # Expired or a gone target: priorities decide who takes the vacancy.
    assert priority_verdict(req("b", at=NOW - 60), "a", mine, {"b": 2}, NOW) == PRIORITY_STEP_ASIDE
    assert priority_verdict(req("b", at=NOW - 60), "a", mine, {"b": 0}, NOW) == EXPIRED
    assert priority_verdict(req("gone"), "a", mine, {"b": 0}, NOW) == TARGET_GONE
    assert priority_verdict(req("gone"), "a", mine, {"b": 3}, NOW) == PRIORITY_STEP_ASIDE


def test_vacancy_winner_is_the_first_of_the_highest() -> None:
    assert vacancy_winner([]) == -1
    assert vacancy_winner([("k1", 0)]) == 0
    assert vacancy_winner([("k1", 0), ("k2", 5), ("k3", 5), ("k4", 1)]) == 1
    assert vacancy_winner([("k1", -3), ("k2", -1)]) == 1


@pytest.mark.parametrize(
    ("env", "ok"),
    [
        ({"ELECTION_SIDECAR_PRIORITY": "abc"}, False),
        ({"ELECTION_SIDECAR_PRIORITY": "1001"}, False),
        ({"ELECTION_SIDECAR_PRIORITY": "1.5"}, False),
        ({"ELECTION_SIDECAR_PRIORITY": "-7", "ELECTION_SIDECAR_NO_LEAD": "true"}, True),
    ],
)
def test_priority_from_the_environment_fails_with_one_line(env: dict[str, str], ok: bool) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "sidecar", "check-config"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
    )
    if ok:
        assert res.returncode == 0, res.stderr
        return
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0, res.stderr
    assert "priority=" in res.stderr and "integer from -1000 to 1000" in res.stderr


def test_bad_priority_flag_is_one_line() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "sidecar", "check-config", "--priority", "high"], capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "priority='high'" in res.stderr


@pytest.fixture
async def h() -> object:
    harness = Harness()
    yield harness
    await harness.close()


async def test_status_shows_priorities_and_switchover_refuses_a_no_lead_target(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _use(h, monkeypatch)
    watcher = Elector(replace(CFG, candidate_id="w", no_lead=True), h.backend, h.clock, RecordingSink())
    h.tasks.append(asyncio.create_task(watcher.run()))
    await h.clock.advance(0.1)
    # Alone, a no-lead candidate is listed but is not the leader, and evict treats it as any follower.
    view = await status.gather(cfg)
    assert view["leader"] is None and view["candidates"][0]["no_lead"] and not view["candidates"][0]["leader"]
    a, _ = h.elector("a")
    await h.clock.advance(0.1)
    b = Elector(replace(CFG, candidate_id="b", priority=5), h.backend, h.clock, RecordingSink())
    h.tasks.append(asyncio.create_task(b.run()))
    await h.clock.advance(0.1)
    assert a.state is State.LEADER and watcher.state is State.CANDIDATE
    view = await status.gather(cfg)
    rows = {c["id"]: (c["priority"], c["no_lead"]) for c in view["candidates"]}
    assert rows == {"a": (0, False), "b": (5, False), "w": (0, True)}
    table = status.render_table(view)
    assert "PRIORITY" in table.splitlines()[1]
    cells = {p[0]: p for p in (line.lstrip("* ").split() for line in table.splitlines()[2:])}
    assert cells["b"][2] == "5" and cells["a"][2] == "0" and cells["w"][2] == "no-lead" and cells["w"][-1] == "no-lead"
    with pytest.raises(SwitchoverRefused, match="--no-lead") as err:
        await status.switchover(cfg, "w")
    assert "\n" not in str(err.value)
    assert await h.backend.admin("unit").switchover_request() is None
    assert await status.evict(cfg, "w") == [k for k in [c["key"] for c in view["candidates"]] if ".no-lead/" in k]
