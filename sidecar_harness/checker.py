"""Reads what the toy orchestrators recorded and proves the safety claims.

* no two orchestrator processes acted (``act`` records) in overlapping
  intervals; the gap between one leader's last act and the next one's first
  act is reported and must be positive;
* tokens only grow from one leader to the next;
* every act of a self-fencing orchestrator happened before its grant's
  deadline;
* the fenced store accepted no write whose token was lower than one it had
  already accepted.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar_harness.fenced_store import read_history


@dataclass
class Interval:
    """One term of one writer: every act with one token, by any of its processes.

    Keyed by (writer, token), not by pid: an orchestrator's escaped child acts
    in its parent's term, and a pid reused by another writer can never merge
    two terms into one and hide an overlap.
    """

    writer: str
    pid: int  # the first process seen acting in this term
    token: int
    first: float
    last: float
    acts: int = 0
    pids: set[int] = field(default_factory=set)


@dataclass
class Verdict:
    intervals: list[Interval] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)  # successor's first act - predecessor's last act
    violations: list[str] = field(default_factory=list)
    accepted: int = 0
    refused: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "leaderships": len(self.intervals),
            "min_gap_ms": round(min(self.gaps) * 1000, 3) if self.gaps else None,
            "gaps_ms": [round(g * 1000, 3) for g in self.gaps],
            "writes_accepted": self.accepted,
            "stale_writes_refused": self.refused,
            "violations": self.violations,
        }


def read_records(paths: list[Path]) -> list[dict[str, Any]]:
    out = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                # A line cut short by SIGKILL, and perhaps another writer's
                # whole record appended right after it, on the same line: keep
                # that record (losing an act would hide an overlap).
                tail = line.rfind('{"kind"', 1)
                if tail > 0:
                    with contextlib.suppress(ValueError):
                        out.append(json.loads(line[tail:]))
    return out


def intervals_of(records: list[dict[str, Any]]) -> list[Interval]:
    by_key: dict[tuple[str, int], Interval] = {}
    for r in records:
        if r.get("kind") != "act":
            continue
        key = (str(r["writer"]), int(r["token"]))
        iv = by_key.get(key)
        if iv is None:
            iv = by_key[key] = Interval(key[0], int(r["pid"]), key[1], r["mono"], r["mono"])
        iv.first, iv.last = min(iv.first, r["mono"]), max(iv.last, r["mono"])
        iv.acts += 1
        iv.pids.add(int(r["pid"]))
    return sorted(by_key.values(), key=lambda iv: iv.first)


def check(record_files: list[Path], store: Path | str | None = None, *, min_terms: int = 1) -> Verdict:
    """``store``: the fenced store's spec (a SQLite file or a postgresql:// URL), if any.

    ``min_terms``: fewer terms than this is a failure, not a pass: a run in
    which nobody acted (or, with 2, no leadership ever moved) proves nothing.
    """
    records = read_records(record_files)
    v = Verdict(intervals=intervals_of(records))
    if len(v.intervals) < min_terms:
        v.violations.append(
            f"only {len(v.intervals)} orchestrator term(s) acted, expected at least {min_terms}: the run proves nothing"
        )
    for r in records:
        if r.get("kind") == "act" and r.get("valid_until") is not None and r["mono"] >= r["valid_until"]:
            v.violations.append(f"{r['writer']} (pid {r['pid']}) acted after its grant deadline")
    for prev, nxt in zip(v.intervals, v.intervals[1:], strict=False):
        gap = nxt.first - prev.last
        v.gaps.append(gap)
        if gap <= 0:
            v.violations.append(
                f"overlap: {prev.writer} (token {prev.token}) acted until {prev.last:.6f}, "
                f"{nxt.writer} (token {nxt.token}) from {nxt.first:.6f}"
            )
        if nxt.token <= prev.token:
            v.violations.append(f"token did not grow: {prev.token} -> {nxt.token}")
    # Any two intervals of different processes, not only neighbours, must be apart.
    for i, a in enumerate(v.intervals):
        for b in v.intervals[i + 2 :]:
            if b.first <= a.last:
                v.violations.append(f"overlap: {a.writer} token {a.token} and {b.writer} token {b.token}")
    if store is not None:
        highest = 0
        for rec in read_history(store):
            if rec.accepted:
                v.accepted += 1
                if rec.token < highest:
                    v.violations.append(f"stale write accepted: token {rec.token} after {highest}")
                highest = max(highest, rec.token)
            else:
                v.refused += 1
    return v
