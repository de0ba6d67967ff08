"""The checker must be able to fail: feed it overlaps and stale writes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sidecar.fencing.adapters.base import StaleToken
from sidecar.fencing.adapters.sqlite import SqliteFence
from sidecar_harness.checker import check


def write(path: Path, *acts: tuple[int, int, float]) -> None:
    with path.open("a") as f:
        for pid, token, mono in acts:
            f.write(json.dumps({"kind": "act", "writer": f"w{pid}", "pid": pid, "token": token, "mono": mono}) + "\n")


def test_disjoint_terms_pass_and_report_gaps(tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl", (1, 5, 10.0), (1, 5, 11.0))
    write(tmp_path / "b.jsonl", (2, 7, 11.5), (2, 7, 12.0))
    v = check([tmp_path / "a.jsonl", tmp_path / "b.jsonl"])
    assert v.ok and v.gaps == [0.5]


def test_overlapping_terms_fail(tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl", (1, 5, 10.0), (1, 5, 12.0))
    write(tmp_path / "b.jsonl", (2, 7, 11.5), (2, 7, 13.0))
    v = check([tmp_path / "a.jsonl", tmp_path / "b.jsonl"])
    assert not v.ok and any("overlap" in x for x in v.violations)


def test_token_must_grow_and_acts_must_precede_the_deadline(tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl", (1, 9, 10.0))
    write(tmp_path / "b.jsonl", (2, 7, 11.0))
    with (tmp_path / "c.jsonl").open("w") as f:
        f.write(json.dumps({"kind": "act", "writer": "c", "pid": 3, "token": 11, "mono": 20.0, "valid_until": 19.0}))
    v = check([tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"])
    assert any("did not grow" in x for x in v.violations)
    assert any("after its grant deadline" in x for x in v.violations)


def accepted(store: SqliteFence, token: int, writer: str) -> bool:
    """One empty fenced write, as the toy orchestrator makes them."""

    async def write() -> bool:
        try:
            async with store.transaction(token, writer):
                pass
        except StaleToken:
            return False
        return True

    return asyncio.run(write())


def test_fenced_store_refuses_lower_tokens_and_checker_counts_them(tmp_path: Path) -> None:
    store = SqliteFence(tmp_path / "s.db")
    assert accepted(store, 5, "a") and accepted(store, 7, "b") and accepted(store, 7, "b")
    assert not accepted(store, 5, "a")  # the paused old leader's late write
    store.conn.close()
    v = check([], tmp_path / "s.db", min_terms=0)
    assert v.ok and v.accepted == 3 and v.refused == 1


def test_a_stale_write_that_got_through_is_a_violation(tmp_path: Path) -> None:
    store = SqliteFence(tmp_path / "s.db")
    accepted(store, 7, "b")
    # Simulate a store without a fence: insert a stale accepted record directly.
    store.conn.execute("INSERT INTO records (token, writer, mono, accepted) VALUES (5, 'a', 0, 1)")
    store.conn.close()
    v = check([], tmp_path / "s.db", min_terms=0)
    assert not v.ok and "stale write accepted" in v.violations[0]


def _acts(path: Path, writer: str, pid: int, token: int, times: list[float]) -> Path:
    with path.open("a") as f:
        for t in times:
            f.write(json.dumps({"kind": "act", "writer": writer, "pid": pid, "token": token, "mono": t}) + "\n")
    return path


def test_a_run_with_no_act_or_no_failover_proves_nothing(tmp_path: Path) -> None:
    assert not check([]).ok, "zero acts passed"
    one = _acts(tmp_path / "a.jsonl", "a", 10, 5, [1.0, 2.0])
    assert check([one]).ok
    v = check([one], min_terms=2)
    assert not v.ok and "proves nothing" in v.violations[0]


def test_terms_are_keyed_by_writer_and_token_not_pid(tmp_path: Path) -> None:
    # An escaped child acting in its parent's term is the same term, not an overlap...
    a = _acts(tmp_path / "a.jsonl", "a", 10, 5, [1.0, 2.0])
    _acts(a, "a", 11, 5, [1.5, 2.5])
    b = _acts(tmp_path / "b.jsonl", "b", 20, 7, [3.0, 4.0])
    v = check([a, b], min_terms=2)
    assert v.ok, v.violations
    assert [iv.pids for iv in v.intervals] == [{10, 11}, {20}]
    # ...but the escaped child acting after the successor started is caught,
    _acts(a, "a", 11, 5, [3.5])
    assert any("overlap" in x for x in check([a, b]).violations)


def test_a_reused_pid_cannot_hide_a_neighbour(tmp_path: Path) -> None:
    a = _acts(tmp_path / "a.jsonl", "a", 10, 5, [1.0, 3.0])
    b = _acts(tmp_path / "b.jsonl", "b", 10, 7, [2.0, 4.0])  # pid 10 reused by another writer
    assert any("overlap" in x for x in check([a, b]).violations)


def test_a_record_appended_to_a_line_cut_short_by_sigkill_is_still_read(tmp_path: Path) -> None:
    """A writer SIGKILLed mid-line leaves no newline: the next writer's whole record joins it."""
    from sidecar_harness.checker import read_records

    path = tmp_path / "r.jsonl"
    act = {"kind": "act", "writer": "b", "pid": 2, "mono": 1.5, "token": 9}
    path.write_text('{"kind": "act", "writer": "a", "pi' + json.dumps(act) + "\n")
    assert read_records([path]) == [act]
