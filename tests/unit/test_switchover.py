"""Switchover: the decision rule, the request's parsing, and the elector on the memory backend."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from click.testing import CliRunner

from sidecar import status
from sidecar.backends.base import (
    COMPLETED,
    EXPIRED,
    NO_REQUEST,
    STEP_ASIDE,
    TARGET_GONE,
    SwitchoverRequest,
    leader_should_hand_over,
    parse_candidate,
    parse_switchover,
    steps_aside_early,
    switchover_verdict,
)
from sidecar.cli import main
from sidecar.config import Config
from sidecar.elector import Elector, Hooks
from sidecar.model import Grant, Reason, State
from sidecar.status import SwitchoverRefused
from sidecar_harness.memory import MemoryBackend
from tests.helpers import eventually
from tests.unit.test_elector import Harness

NOW = 1_000_000.0


def req(to: str, at: float = NOW, ttl: float = 30.0) -> SwitchoverRequest:
    return SwitchoverRequest(to, "ops@laptop", "abc", at, ttl)


def test_verdicts() -> None:
    others = {"b", "x"}
    assert switchover_verdict(None, "a", others, NOW) == NO_REQUEST
    assert switchover_verdict(req("x"), "a", others, NOW) == STEP_ASIDE
    assert switchover_verdict(req("x"), "x", {"a"}, NOW) == COMPLETED
    assert switchover_verdict(req(""), "a", others, NOW) == COMPLETED
    assert switchover_verdict(req("x", at=NOW - 31), "a", others, NOW) == EXPIRED
    assert switchover_verdict(req("gone"), "a", others, NOW) == TARGET_GONE


def test_only_a_candidate_ahead_of_a_pending_requests_target_steps_aside_early() -> None:
    assert steps_aside_early(req("x"), "a", {"x", "b"}, NOW)  # x queued behind a
    assert not steps_aside_early(req("x"), "a", {"b"}, NOW)  # x ahead of a, or not queued
    assert not steps_aside_early(req("a"), "a", {"x"}, NOW)  # names a itself
    assert not steps_aside_early(req(""), "a", {"x"}, NOW)  # "anyone": the next in line takes it
    assert not steps_aside_early(req("x", at=NOW - 31), "a", {"x"}, NOW)  # expired
    assert not steps_aside_early(None, "a", {"x"}, NOW)


def test_the_leader_acts_only_on_a_request_someone_queued_can_fulfil() -> None:
    assert leader_should_hand_over(req("x"), "a", {"x"}, NOW)
    assert not leader_should_hand_over(req("x"), "a", {"b"}, NOW)  # target not queued
    assert not leader_should_hand_over(req("a"), "a", {"b"}, NOW)  # names the leader itself
    assert not leader_should_hand_over(req("x", at=NOW - 60), "a", {"x"}, NOW)  # expired
    assert leader_should_hand_over(req(""), "a", {"b"}, NOW)
    assert not leader_should_hand_over(req(""), "a", set(), NOW)  # nobody to hand to


@pytest.mark.parametrize(
    "raw",
    [b"", b"garbage", b"[]", b'{"to": 1}', b'{"to": "x", "requested_by": "o", "id": "i", "at": "now", "ttl": 5}',
     b'{"to": "x", "requested_by": "o", "id": "i", "at": 1, "ttl": 0}'],
)  # fmt: skip
def test_a_garbled_request_is_no_request(raw: bytes) -> None:
    assert parse_switchover(raw) is None


def test_a_request_round_trips() -> None:
    r = req("x")
    assert parse_switchover(r.encode()) == r


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    await harness.close()


async def test_switchover_lands_on_the_target_and_no_one_else_leads_between(h: Harness) -> None:
    leads: list[str] = []
    stops: list[tuple[str, Reason]] = []

    def hooks(name: str) -> Hooks:
        async def started(g: Grant) -> None:
            leads.append(name)

        async def stopped(g: Grant, why: Reason) -> bool:
            stops.append((name, why))
            return True

        return Hooks(started_leading=started, stopped_leading=stopped)

    electors: dict[str, Elector] = {}
    for name in ("a", "b", "x", "c"):
        electors[name], _ = h.elector(name, hooks(name))
        await h.clock.advance(0.1)
    assert leads == ["a"]
    await h.backend.admin("unit").request_switchover(SwitchoverRequest("x", "test", "r1", time.time(), 30.0))
    for _ in range(20):
        await h.clock.advance(0.1)
    assert stops == [("a", Reason.SWITCHOVER)]
    assert leads == ["a", "x"], "someone other than the target led in between"
    assert electors["x"].state is State.LEADER
    assert electors["b"].counters["switchover:step-aside"] == 1
    assert electors["x"].counters["switchover:completed"] == 1
    assert electors["a"].counters["switchover:handed-over"] == 1
    assert await h.backend.admin("unit").switchover_request() is None


def _use(h: Harness, monkeypatch: pytest.MonkeyPatch) -> Config:
    """Point the CLI's store calls at the harness's in-process store."""

    @contextlib.asynccontextmanager
    async def connected(cfg: Config) -> AsyncIterator[MemoryBackend]:
        yield h.backend

    monkeypatch.setattr("sidecar.status.connected", connected)
    return Config(backend="memory", election="unit")


async def test_refusals_are_one_line_and_write_nothing(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _use(h, monkeypatch)
    with pytest.raises(SwitchoverRefused, match="no leader"):
        await status.switchover(cfg, "x")
    for name in ("a", "b", "x"):
        h.elector(name)
        await h.clock.advance(0.1)
    for to, why in (("nobody", "not a candidate"), ("a", "already the leader")):
        with pytest.raises(SwitchoverRefused, match=why) as err:
            await status.switchover(cfg, to)
        assert "\n" not in str(err.value)
    assert await h.backend.admin("unit").switchover_request() is None
    first = await status.switchover(cfg, "x", requested_by="ops")
    assert not first.reused and first.old_leader == "a"
    again = await status.switchover(cfg, "x")  # a retried command finds its own request
    assert again.reused and again.request.id == first.request.id
    with pytest.raises(SwitchoverRefused, match="in flight"):
        await status.switchover(cfg, "b")
    view = await status.gather(cfg)
    assert view["switchover"]["to"] == "x" and view["switchover"]["pending"]
    assert "switchover: to x, requested by ops" in status.render_table(view)


def test_help_lists_the_switchover_exit_codes() -> None:
    text = CliRunner().invoke(main, ["--help"]).output
    table = text.split("Exit codes", 1)[1]
    assert re.search(r"^\s+4 `switchover` refused", table, re.M)
    assert re.search(r"^\s+5 `switchover --wait`", table, re.M)
    sub = CliRunner().invoke(main, ["switchover", "--endpoints=127.0.0.1:1", "--request-ttl=0"])
    assert sub.exit_code == 2 and "request_ttl" in sub.output


class _Verdicts:
    """A CampaignReport that keeps the switchover verdicts."""

    def __init__(self) -> None:
        self.verdicts: list[str] = []

    def switchover(self, verdict: str, request: SwitchoverRequest) -> None:
        self.verdicts.append(verdict)

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None  # the other reports do not matter here


async def test_a_candidate_ahead_of_the_target_steps_aside_while_the_leader_still_leads(h: Harness) -> None:
    """The memory store, like etcd and ZooKeeper: b re-queues behind c as soon as the request lands."""

    async def bare(cid: str) -> tuple[Any, Any]:
        session = h.backend.session(5.0)
        await session.open()
        return h.backend.election("unit"), session

    a, sa = await bare("a")
    await a.campaign(sa, "a")  # a bare leader: it never acts on requests
    (b, sb), (c, sc) = await bare("b"), await bare("c")
    rb, rc = _Verdicts(), _Verdicts()
    tb = asyncio.create_task(b.campaign(sb, "b", None, rb))
    await eventually(lambda: len(h.store.under("unit/")) == 2, 5, what="b queued")
    tc = asyncio.create_task(c.campaign(sc, "c", None, rc))
    await eventually(lambda: len(h.store.under("unit/")) == 3, 5, what="c queued")
    await h.backend.admin("unit").request_switchover(SwitchoverRequest("c", "test", "r1", time.time(), 30.0))
    await eventually(lambda: rb.verdicts == ["step-aside"], 5, what="b stepping aside while a leads")
    assert [parse_candidate(v.value)[0] for _, v in h.store.under("unit/")] == ["a", "c", "b"]
    await a.resign()
    lead_c = await asyncio.wait_for(tc, 5)
    assert lead_c.id == "c" and rc.verdicts == ["completed"] and not tb.done()
    tb.cancel()
    await asyncio.gather(tb, return_exceptions=True)
