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
    v = check([], tmp_path / "s.db")
    assert v.ok and v.accepted == 3 and v.refused == 1


def test_a_stale_write_that_got_through_is_a_violation(tmp_path: Path) -> None:
    store = SqliteFence(tmp_path / "s.db")
    accepted(store, 7, "b")
    # Simulate a store without a fence: insert a stale accepted record directly.
    store.conn.execute("INSERT INTO records (token, writer, mono, accepted) VALUES (5, 'a', 0, 1)")
    store.conn.close()
    v = check([], tmp_path / "s.db")
    assert not v.ok and "stale write accepted" in v.violations[0]
