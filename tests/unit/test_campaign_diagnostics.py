"""A late watchdog kill in a campaign says what led up to it.

One CI campaign failed on "watchdog SIGKILL 3.752s after the grant deadline"
and nothing else: its work directory was gone, so the sequence of arming,
feeding and respawning that caused it could not be told.
"""

from __future__ import annotations

import json

from sidecar_harness.faults import events_before


def line(event: str, mono: float, **fields: object) -> str:
    return json.dumps({"event": event, "mono": mono, **fields})


def test_the_events_before_a_late_kill_are_named_with_their_offsets() -> None:
    lines = [
        line("elected", 10.0),
        "not json: a line the orchestrator printed",
        line("watchdog_armed", 10.1, kill_at=13.0, component="watchdog"),
        line("watchdog_respawned", 16.2),
        line("watchdog_armed", 16.7, kill_at=13.0),
        line("watchdog_fired_kill", 16.752, late_by=3.752),
    ]
    told = events_before(lines, len(lines) - 1)
    assert told == (
        "elected@-6.752s; watchdog_armed@-6.652s[kill_at=13.0]; watchdog_respawned@-0.552s; "
        "watchdog_armed@-0.052s[kill_at=13.0]; watchdog_fired_kill@+0.000s[late_by=3.752]"
    )


def test_only_the_last_few_are_kept() -> None:
    lines = [line(f"e{i}", float(i)) for i in range(50)]
    told = events_before(lines, 49, n=3)
    assert told == "e46@-3.000s; e47@-2.000s; e48@-1.000s; e49@+0.000s"


def test_lines_without_a_clock_still_name_their_event() -> None:
    assert events_before([json.dumps({"event": "a"}), line("b", 1.0)], 1) == "a@?; b@+0.000s"


def test_a_sidecar_line_written_after_the_kill_but_logged_before_it_comes_before_it() -> None:
    """The sidecar's info lines reach the shared stderr up to 20 ms late (a review saw
    ``state_changed`` 8.7 ms before a watchdog line, written after it)."""
    lines = [
        line("watchdog_armed", 10.0, component="watchdog"),
        line("watchdog_fired_kill", 10.020, late_by=0.0),
        line("demoted", 10.011),
        line("much_later", 11.0),
    ]
    told = events_before(lines, 1)
    assert told == "watchdog_armed@-0.020s; demoted@-0.009s; watchdog_fired_kill@+0.000s[late_by=0.0]"
