"""structlog set-up: JSON lines in production, readable lines on a terminal.

Event names are lowercase with underscores; facts are key/value fields, and
every elector event carries election and candidate.
"""

from __future__ import annotations

import atexit
import logging
import queue
import sys
import threading
import time
from collections.abc import MutableMapping
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


class QueuedStream:
    """A stream whose ``write`` never blocks the caller.

    The sidecar's stderr is a pipe to a log collector it does not control;
    a collector that stops reading would otherwise stall the event loop, and
    with it renewals and the kill path. Lines go through a bounded queue to a
    writer thread; when the queue is full they are dropped and counted, and
    the count is written once the stream drains. At exit the queue is given a
    moment to drain.
    """

    def __init__(self, stream: Any, max_lines: int = 10_000) -> None:
        self._stream = stream
        self._queue: queue.Queue[str] = queue.Queue(max_lines)
        self.dropped = 0
        self._thread = threading.Thread(target=self._drain, name="log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.flush_for, 2.0)

    def write(self, text: str) -> int:
        try:
            self._queue.put_nowait(text)
        except queue.Full:
            self.dropped += 1
        return len(text)

    def flush(self) -> None:
        """Nothing to do on the caller's side: the writer thread flushes."""

    def isatty(self) -> bool:
        return bool(self._stream.isatty())

    def flush_for(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def _drain(self) -> None:
        reported = 0
        while True:
            text = self._queue.get()
            try:
                if self.dropped > reported:
                    lost, reported = self.dropped - reported, self.dropped
                    self._stream.write(f'{{"event": "log_lines_dropped", "level": "warning", "lines": {lost}}}\n')
                self._stream.write(text)
                self._stream.flush()
            except (OSError, ValueError):
                pass  # stderr closed: nothing left to tell
            finally:
                self._queue.task_done()


def configure(fmt: str = "auto", level: str = "info", stream: Any = None) -> None:
    # Our own stderr goes through a queue (see QueuedStream); a stream handed
    # in (tests) is written directly.
    stream = stream or QueuedStream(sys.stderr)
    json_out = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if json_out else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_mono,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(stream),  # one write per line: whole lines are queued or dropped
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
