"""structlog set-up: JSON lines in production, readable lines on a terminal.

Event names are lowercase with underscores; facts are key/value fields, and
every elector event carries election and candidate.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import datetime
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog


def _add_mono(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Stamp CLOCK_MONOTONIC on every line: the wall-clock timestamp cannot be
    lined up with the orchestrator's and the watchdog's monotonic times (the
    grant deadlines are monotonic too), so timelines of a run read this.
    A caller's own ``mono`` (taken at the moment it describes) wins."""
    event.setdefault("mono", round(time.clock_gettime(time.CLOCK_MONOTONIC), 6))
    return event


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

# How long an info or debug line logged on the event loop waits before the
# writer thread is woken for it. A line is logged in the middle of a step
# (``elected`` just before the grant goes out, ``demoted`` just before the
# resign's write), and a writer woken then takes the interpreter lock at the
# step's next system call: measured on a handover, resign to the
# successor's grant took 0.8 ms longer with the lines written than with
# none logged (about a fifth of `etcdctl elect`'s whole handover). Woken
# this much later, it writes once the step and the store's answer are done.
# Warnings and errors wake it at once, as do lines logged off the loop
# (kazoo's thread, the CLI): they are rare, and they are what explains a
# loop that stalls or a process killed right after (a review: a line
# logged just before the loop blocked was written only when it ran again).
WAKE_DELAY = 0.02
_URGENT = frozenset({"warning", "error", "critical", "exception"})
# Seconds, from 0 (lines written at once, as before issue 16's change) to 1.
# The integration tests set 0: they read sidecars' log files right after
# seeing a state change by another way (a socket, the store), and a line
# still held would read as missing (docs/design.md, 5b).
WAKE_DELAY_ENV = "ELECTION_SIDECAR_LOG_WAKE_DELAY"


def wake_delay_from_env() -> float:
    """``WAKE_DELAY``, or ``ELECTION_SIDECAR_LOG_WAKE_DELAY``; ValueError (one line) if that is no number in [0, 1]."""
    raw = os.environ.get(WAKE_DELAY_ENV, "")
    if not raw:
        return WAKE_DELAY
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"environment {WAKE_DELAY_ENV}={raw!r}: a number of seconds from 0 to 1")
    return value


Event = MutableMapping[str, Any]


def _stamp_wall(logger: Any, method: str, event: Event) -> Event:
    """The wall clock now, as a number; rendered as ISO 8601 (UTC) when the line is.

    The key takes its place here so that lines keep the field order they
    had when structlog's TimeStamper formatted it on the spot.
    """
    event["timestamp"] = time.time()
    return event


def _iso(event: Event) -> Event:
    wall = event.get("timestamp")
    if isinstance(wall, float):
        utc = datetime.datetime.fromtimestamp(wall, tz=datetime.UTC)
        event["timestamp"] = utc.isoformat().replace("+00:00", "Z")
    return event


def _as_args(logger: Any, method: str, event: Event) -> tuple[tuple[Event], dict[str, Any]]:
    """Hand the event, unrendered, to the logger: ``_EventLogger`` decides where it renders."""
    return (event,), {}


class QueuedStream:
    """A stream whose ``write`` never blocks the caller.

    The sidecar's stderr is a pipe to a log collector it does not control;
    a collector that stopped reading would otherwise stall the event loop, and
    with it renewals and the kill path. Lines go to a writer thread through a
    bounded list; when it is full they are dropped and counted, and the count
    is written once the stream drains. At exit the list is given a moment to
    drain.

    Events (``put``) are kept as they were logged and rendered by the writer
    thread (JSON and the ISO timestamp cost 50-110 microseconds a line on a
    loop that was idle a moment before), and a line logged on the event loop
    wakes the writer only ``WAKE_DELAY`` later. The values are rendered as
    they are then: callers log values they do not change afterwards
    (numbers, strings, fresh lists).
    """

    def __init__(self, stream: Any, max_lines: int = 10_000, wake_delay: float = WAKE_DELAY) -> None:
        self._stream = stream
        self._wake_delay = wake_delay
        self._max = max_lines
        self._pending: list[str | Event] = []
        self._in_hand = 0  # taken by the writer, not yet written
        self._ready = threading.Condition(threading.Lock())
        self._awake = False  # the writer was told there is work, or is at it
        self._wake_on: asyncio.AbstractEventLoop | None = None  # a loop that will wake it
        self.dropped = 0
        self.render: Callable[[Event], str] = _json_line
        self._thread = threading.Thread(target=self._drain, name="log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.flush_for, 2.0)

    def write(self, text: str) -> int:
        self.put(text)
        return len(text)

    def put(self, item: str | Event) -> None:
        """Keep a rendered line or an event to render; never blocks."""
        loop: asyncio.AbstractEventLoop | None = None
        if self._wake_delay > 0 and (isinstance(item, str) or item.get("level") not in _URGENT):
            with contextlib.suppress(RuntimeError):
                loop = asyncio.get_running_loop()
        with self._ready:
            if len(self._pending) >= self._max:
                self.dropped += 1
                return
            self._pending.append(item)
            if self._awake or (loop is not None and loop is self._wake_on):
                return
            if loop is None:
                self._awake = True
                self._ready.notify()
                return
            self._wake_on = loop
        loop.call_later(self._wake_delay, self._wake)

    def _wake(self) -> None:
        with self._ready:
            self._wake_on = None
            if self._pending and not self._awake:
                self._awake = True
                self._ready.notify()

    def flush(self) -> None:
        """Nothing to do on the caller's side: the writer thread flushes."""

    def isatty(self) -> bool:
        return bool(self._stream.isatty())

    def wake(self) -> None:
        """Have the writer write what is kept now (a loop that logged it may have ended)."""
        with self._ready:
            self._awake = True
            self._ready.notify()

    def flush_for(self, timeout: float) -> None:
        """Wake the writer now and give it ``timeout`` seconds to write everything kept."""
        self.wake()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._ready:
                if not self._pending and not self._in_hand:
                    return
            time.sleep(0.01)

    def _drain(self) -> None:
        reported = 0
        while True:
            with self._ready:
                while not self._pending:
                    self._awake = False
                    self._ready.wait()
                batch, self._pending = self._pending, []
                self._in_hand = len(batch)
            try:
                if self.dropped > reported:
                    lost, reported = self.dropped - reported, self.dropped
                    self._stream.write(f'{{"event": "log_lines_dropped", "level": "warning", "lines": {lost}}}\n')
                for item in batch:
                    self._stream.write(item if isinstance(item, str) else self._rendered(item))
                self._stream.flush()
            except (OSError, ValueError):
                pass  # stderr closed: nothing left to tell
            finally:
                with self._ready:
                    self._in_hand = 0

    def _rendered(self, event: Event) -> str:
        try:
            return self.render(event)
        except Exception as exc:  # a line of ours must not end the writer: say what failed instead
            said = {k: event.get(k) for k in ("timestamp", "mono") if k in event}
            return _json_line(
                {
                    "event": "log_line_unrendered",
                    "level": "error",
                    "unrendered": str(event.get("event"))[:200],
                    "unrendered_level": str(event.get("level")),
                    "error": repr(exc)[:200],
                    **said,
                }
            )


def _json_line(event: Event) -> str:
    return str(structlog.processors.JSONRenderer()(None, "", _iso(event))) + "\n"


class _EventLogger:
    """structlog's logger at the end of the chain: passes each event on, at any level."""

    def __init__(self, emit: Callable[[Event], None]) -> None:
        self._emit = emit

    def msg(self, event: Event) -> None:
        self._emit(event)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


_current: list[QueuedStream] = []  # what configure() set up last, if it queues


def wake_writer(wait: float = 0.0) -> None:
    """Have what was logged written now, and wait up to ``wait`` seconds for it: a loop
    that logged its last lines has ended (``asyncio.run`` returned), and its timer with it."""
    for queued in _current:
        queued.flush_for(wait)


def configure(fmt: str = "auto", level: str = "info", stream: Any = None, queued: QueuedStream | None = None) -> None:
    """Log to ``stream``, rendered on the caller's thread (tests), else through ``queued`` (our stderr's by default)."""
    # A stream handed in is written on the caller's thread, line by line.
    queued = (queued or QueuedStream(sys.stderr, wake_delay=wake_delay_from_env())) if stream is None else None
    _current[:] = [queued] if queued is not None else []
    out = queued or stream
    json_out = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if json_out else structlog.dev.ConsoleRenderer(colors=False)

    def render(event: Event) -> str:
        return str(renderer(None, "", _iso(event))) + "\n"

    def write_now(event: Event) -> None:
        out.write(render(event))  # one write per line: whole lines are queued or dropped

    if queued is not None:
        queued.render = render
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            _stamp_wall,
            _add_mono,
            # On the caller's thread: it reads the exception being handled.
            structlog.processors.format_exc_info,
            _as_args,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *_: _EventLogger(queued.put if queued is not None else write_now),
        cache_logger_on_first_use=False,
    )
    route_stdlib("warning" if level != "debug" else "debug")


class _ToStructlog(logging.Handler):
    """Libraries (kazoo, grpc) log through stdlib logging; keep one format."""

    def emit(self, record: logging.LogRecord) -> None:
        level = record.levelname.lower()
        log = structlog.get_logger().bind(logger=record.name)
        getattr(log, level if level in ("debug", "info", "warning", "error") else "error")(
            "library_log", message=record.getMessage()
        )


def route_stdlib(level: str = "warning") -> None:
    root = logging.getLogger()
    root.handlers[:] = [_ToStructlog()]
    root.setLevel(_LEVELS.get(level, logging.WARNING))


def get(**bound: Any) -> Any:
    return structlog.get_logger().bind(**bound)
