"""The sidecar's own log never blocks it: a stalled stderr pipe costs lines, not time."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from sidecar import log
from sidecar.log import QueuedStream


def test_writes_return_at_once_on_a_pipe_nobody_reads() -> None:
    r, w = os.pipe()
    stalled = os.fdopen(w, "w")
    try:
        out = QueuedStream(stalled, max_lines=100)
        line = '{"event": "x"}' + " " * 1000 + "\n"

        def log_a_megabyte() -> None:  # far more than a pipe buffer holds
            for _ in range(1000):
                out.write(line)

        writer = threading.Thread(target=log_a_megabyte, daemon=True)
        writer.start()
        writer.join(10)  # a blocking stream would hold it here for ever
        assert not writer.is_alive(), "a write blocked on the stalled pipe"
        assert out.dropped > 0
    finally:
        os.close(r)  # the writer thread's next write fails quietly


def test_lines_keep_their_order_and_the_drop_count_is_reported() -> None:
    sink = io.StringIO()
    out = QueuedStream(sink, max_lines=10_000)
    for i in range(200):
        out.write(f"{i}\n")
    out.flush_for(5.0)
    assert sink.getvalue().splitlines() == [str(i) for i in range(200)]
    out.dropped = 3
    out.write("after\n")
    out.flush_for(5.0)
    assert sink.getvalue().splitlines()[-2:] == [
        '{"event": "log_lines_dropped", "level": "warning", "lines": 3}',
        "after",
    ]


class _Sink:
    """A stream that says when something was written to it, and by which thread."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.written = threading.Event()

    def write(self, text: str) -> int:
        self.lines.append(text)
        self.written.set()
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _logger_to(sink: _Sink) -> tuple[QueuedStream, Any]:
    """structlog configured as the sidecar does it, onto a QueuedStream over ``sink``."""
    out = QueuedStream(sink)
    log.configure("json", "info", stream=None, queued=out)
    return out, log.get(election="e", candidate="c")


def test_a_line_logged_on_the_loop_does_not_wake_the_writer_within_the_step() -> None:
    """Woken at once, the writer took the interpreter lock in the middle of a
    handover's step: 0.8 ms more from resign to the successor's grant."""
    sink = _Sink()
    _, logger = _logger_to(sink)

    async def step() -> None:
        logger.info("elected", token=7, epoch=3)
        # Still in the step that logged: the loop cannot run meanwhile.
        assert not sink.written.wait(0.2), "the writer wrote during the step that logged"
        await asyncio.wait_for(asyncio.to_thread(sink.written.wait, 5.0), 10.0)

    asyncio.run(step())
    line = json.loads(sink.lines[0])
    assert (line["event"], line["token"], line["epoch"], line["level"]) == ("elected", 7, 3, "info")
    assert (line["election"], line["candidate"]) == ("e", "c")


def test_a_line_logged_off_the_loop_is_written_at_once() -> None:
    sink = _Sink()
    _, logger = _logger_to(sink)
    logger.warning("library_log", message="from kazoo's thread")
    assert sink.written.wait(5.0)
    assert json.loads(sink.lines[0])["message"] == "from kazoo's thread"


def test_a_line_carries_the_time_it_was_logged_not_the_time_it_was_written() -> None:
    sink = _Sink()
    _, logger = _logger_to(sink)

    async def step() -> tuple[float, float]:
        logger.info("demoted")
        after = time.time(), time.monotonic()
        # The loop held: the line is rendered at least this much after it was logged.
        assert not sink.written.wait(0.2)
        await asyncio.to_thread(sink.written.wait, 5.0)
        return after

    wall_after, mono_after = asyncio.run(step())
    line = json.loads(sink.lines[0])
    stamped = datetime.datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()
    assert stamped <= wall_after and line["mono"] <= mono_after
    assert line["timestamp"].endswith("Z")


def test_an_exception_is_rendered_from_the_moment_it_was_logged() -> None:
    sink = _Sink()
    _, logger = _logger_to(sink)

    async def step() -> None:
        try:
            raise ValueError("the store said no")
        except ValueError:
            logger.error("leader_loop_failed", exc_info=True)
        # Rendered later, outside the except: the traceback was taken at the call.
        await asyncio.to_thread(sink.written.wait, 5.0)

    asyncio.run(step())
    assert "ValueError: the store said no" in json.loads(sink.lines[0])["exception"]


def test_a_line_that_cannot_be_rendered_is_said_and_the_writer_goes_on() -> None:
    sink = _Sink()
    out, logger = _logger_to(sink)
    logger.info("odd", keys={(1, 2): "a tuple key JSON cannot take"})
    logger.info("after")
    out.flush_for(5.0)
    said = [json.loads(line) for line in sink.lines]
    assert [line["event"] for line in said] == ["log_line_unrendered", "after"]
    # Which line, and when: a review found only the error said.
    assert (said[0]["unrendered"], said[0]["unrendered_level"]) == ("odd", "info")
    assert said[0]["mono"] <= said[1]["mono"] and said[0]["timestamp"].endswith("Z")


def test_a_warning_logged_on_the_loop_is_written_at_once() -> None:
    """What explains a loop that stalls, or a process killed right after, is not held
    for the loop's timer (a review: written only once the loop ran again, 3 s later)."""
    sink = _Sink()
    _, logger = _logger_to(sink)

    async def step() -> None:
        logger.warning("store_unreachable", during="renewal")
        assert sink.written.wait(5.0), "the warning waited for the loop"

    asyncio.run(step())
    assert json.loads(sink.lines[0])["event"] == "store_unreachable"


def test_a_commands_last_lines_are_written_before_it_goes_on() -> None:
    """A CLI command prints after its loop ended: the loop's timer ended with it."""
    from sidecar.cli import _run

    sink = _Sink()
    _logger_to(sink)
    logger = log.get()

    async def command() -> None:
        logger.info("switchover_requested")

    _run(command())
    assert [json.loads(line)["event"] for line in sink.lines] == ["switchover_requested"]


def test_lines_whose_loop_ended_before_waking_the_writer_are_written_at_exit() -> None:
    sink = _Sink()
    out, logger = _logger_to(sink)

    async def last_words() -> None:
        logger.info("stopped")

    asyncio.run(last_words())  # the loop closes before its wake-up is due
    out.flush_for(5.0)  # what atexit runs
    assert [json.loads(line)["event"] for line in sink.lines] == ["stopped"]


def test_with_no_delay_a_line_logged_on_the_loop_is_written_at_once() -> None:
    """What the integration tests set: they read log files right after a state change."""
    sink = _Sink()
    out = QueuedStream(sink, wake_delay=0.0)
    log.configure("json", "info", queued=out)
    logger = log.get()

    async def step() -> None:
        logger.info("elected")
        assert sink.written.wait(5.0), "the line waited for the loop"

    asyncio.run(step())


@pytest.mark.parametrize(("raw", "delay"), [("", log.WAKE_DELAY), ("0", 0.0), ("0.005", 0.005), ("1", 1.0)])
def test_the_delay_from_the_environment(raw: str, delay: float, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(log.WAKE_DELAY_ENV, raw)
    assert log.wake_delay_from_env() == delay


@pytest.mark.parametrize("raw", ["soon", "2", "-1", "nan"])
def test_a_bad_delay_in_the_environment_fails_the_start_with_one_line(raw: str) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "sidecar", "check-config"],
        capture_output=True,
        text=True,
        env={**os.environ, log.WAKE_DELAY_ENV: raw},
        check=False,
    )
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0, res.stderr
    assert f"{log.WAKE_DELAY_ENV}={raw!r}" in res.stderr and "from 0 to 1" in res.stderr
