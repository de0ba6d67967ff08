"""The sidecar's own log never blocks it: a stalled stderr pipe costs lines, not time."""

from __future__ import annotations

import io
import os
import threading

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
