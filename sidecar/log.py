"""structlog set-up: JSON lines in production, readable lines on a terminal.

Event names are lowercase with underscores; facts are key/value fields, and
every elector event carries election and candidate.
"""

from __future__ import annotations

import logging
import sys
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


def configure(fmt: str = "auto", level: str = "info", stream: Any = None) -> None:
    stream = stream or sys.stderr
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
        logger_factory=structlog.PrintLoggerFactory(stream),
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
