"""The toy orchestrator records from its SIGTERM handler while its main code may
be writing: the sidecar signals the orchestrator and then every process in its
cgroup, so a second SIGTERM can land inside the first one's write. A buffered
file raises "reentrant call" there, the toy dies with a traceback, and the
record loses the line the checker needs (seen in CI)."""

import json
import os
import signal
import threading
from pathlib import Path

from sidecar_harness.toy_orchestrator import Recorder


def test_a_signal_inside_a_write_records_both_lines(tmp_path: Path) -> None:
    # A FIFO kept full makes the main write block, so the timer's signal lands
    # inside it, deterministically; a reader drains the FIFO a little later.
    fifo = tmp_path / "record.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    filler = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        while True:
            os.write(filler, b"\n" * 4096)
    except BlockingIOError:
        pass
    record = Recorder(str(fifo), "toy")
    got = bytearray()
    fired, drained = threading.Event(), threading.Event()

    def on_alarm(signum: int, frame: object) -> None:
        fired.set()
        record("sigterm")

    def drain() -> None:
        # Only once the signal has landed: until then the main write stays blocked.
        if not fired.wait(10):
            return
        os.set_blocking(reader, True)
        while chunk := os.read(reader, 65536):
            got.extend(chunk)
        drained.set()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        record("act", token=7)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        record.close()
        os.close(filler)
    assert drained.wait(10), "the reader never saw the FIFO close"
    os.close(reader)
    kinds = [json.loads(line)["kind"] for line in got.decode().splitlines() if line.strip()]
    assert sorted(kinds) == ["act", "sigterm"], kinds
