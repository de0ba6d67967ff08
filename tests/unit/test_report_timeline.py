"""The HTML timeline's reading of logs and records, on hand-made files."""

from __future__ import annotations

import json
from pathlib import Path

from sidecar_harness.report_html import FaultWindow, build_timeline, page, timeline_figure


def lines(path: Path, *rows: dict[str, object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json: the orchestrator's own output\n")
    return path


def test_a_restarted_sidecar_is_down_between_its_processes_and_terms_get_their_epoch(tmp_path: Path) -> None:
    log = lines(
        tmp_path / "s0.log",
        {"event": "socket_listening", "mono": 10.0},
        {"event": "state_changed", "from_state": "follower", "to_state": "candidate", "mono": 10.1},
        {"event": "state_changed", "from_state": "candidate", "to_state": "leader", "token": 7, "epoch": 2,
         "mono": 10.2},
        {"event": "elected", "token": 7, "epoch": 2, "mono": 10.2},
        {"event": "client_connected", "mono": 11.0},
        # SIGKILLed here: its watchdog, a separate process, still logs.
        {"event": "watchdog_fired_sidecar_gone", "component": "watchdog", "target": 5, "mono": 11.5},
        {"event": "socket_listening", "mono": 14.0},
        {"event": "state_changed", "from_state": "follower", "to_state": "candidate", "mono": 14.1},
        {"event": "sidecar_stopped", "mono": 14.2},
    )  # fmt: skip
    # SIGKILLed and never restarted: down from its last line to the end of the run.
    log1 = lines(tmp_path / "s1.log", {"event": "socket_listening", "mono": 10.05}, {"event": "x", "mono": 12.0})
    rec = lines(
        tmp_path / "s0.jsonl",
        {"kind": "act", "writer": "s0", "pid": 5, "token": 7, "mono": 10.3},
        {"kind": "act", "writer": "s0", "pid": 5, "token": 7, "mono": 10.9},
    )
    rec1 = lines(
        tmp_path / "s1.jsonl",
        {"kind": "act", "writer": "s1", "pid": 6, "token": 9, "mono": 10.8},  # before s0's last act: overlap
        {"kind": "act", "writer": "s1", "pid": 6, "token": 9, "mono": 12.0},
    )
    tl = build_timeline({"s0": log, "s1": log1}, [rec, rec1], [FaultWindow("sidecar-kill", 11.0, 14.0, "#1")])
    states = [(s.state, s.start, s.end) for s in tl.spans]
    assert states == [
        ("follower", 10.0, 10.1), ("candidate", 10.1, 10.2), ("leader", 10.2, 11.0), ("down", 11.0, 14.0),
        ("follower", 14.0, 14.1), ("candidate", 14.1, 14.2), ("follower", 10.05, 12.0), ("down", 12.0, 14.2),
    ]  # fmt: skip
    assert tl.epochs == {7: 2}
    assert {m.event for m in tl.markers} == {"elected", "watchdog_fired_sidecar_gone"}
    assert tl.candidates == ["s0", "s1"]
    assert [round(h.gap, 3) for h in tl.handovers] == [-0.1] and len(tl.overlaps) == 1
    # A writer without a log of its own still gets its lanes.
    assert build_timeline({}, [rec1]).candidates == ["s1"]
    assert (tl.start, tl.end) == (10.0, 14.2)
    fig = timeline_figure(tl)
    assert len(fig.layout.shapes) == 2  # the fault band and the red overlap band
    html = page("t", verdict="FAIL", summary="", tl=tl, dist=None)
    assert "1 overlapping" in html and "<script src=" not in html
