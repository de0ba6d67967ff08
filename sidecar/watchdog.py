"""Deadline enforcement that lives outside the sidecar's process.

The sidecar starts this as a child with a pipe on its stdin and feeds it
after every acknowledged renewal. It needs nothing but the standard library
and runs as its own process (its own session, so a signal to the sidecar's
process group does not reach it):

* ``arm <kind> <id> <term_at> <kill_at>``: guard a target, ``kind`` being
  ``pgid`` (a process group) or ``pid``; times are CLOCK_MONOTONIC seconds.
* ``feed <term_at> <kill_at>``: a renewal moved the deadline.
* ``disarm``: the target stopped (confirmed by the sidecar); guard nothing.

If the sidecar stops feeding (frozen by SIGSTOP, stuck), the watchdog sends
SIGTERM at ``term_at`` and SIGKILL at ``kill_at``, the grant's own deadline.
If the sidecar dies (EOF on stdin), an armed target is SIGKILLed at once:
nobody is left to renew, so nothing it does is backed by a lease.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
from datetime import UTC, datetime


def _now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def _log(event: str, **fields: object) -> None:
    fields.update(event=event, level="warning" if event.startswith("watchdog_fired") else "info", component="watchdog")
    fields["mono"] = round(_now(), 6)
    # Same shape as the sidecar's structlog lines, so one parser reads both.
    fields["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    sys.stderr.write(json.dumps(fields) + "\n")
    sys.stderr.flush()


class Guard:
    def __init__(self) -> None:
        self.kind = ""
        self.target = 0
        self.term_at = 0.0
        self.kill_at = 0.0
        self.termed = False

    @property
    def armed(self) -> bool:
        return self.target > 0

    def send(self, sig: int) -> None:
        try:
            if self.kind == "pgid":
                os.killpg(self.target, sig)
            else:
                os.kill(self.target, sig)
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            _log("watchdog_signal_refused", target=self.target, signal=sig, error=str(exc))

    def handle(self, line: str) -> None:
        parts = line.split()
        if not parts:
            return
        if parts[0] == "arm" and len(parts) == 5:
            self.kind, self.target = parts[1], int(parts[2])
            self.term_at, self.kill_at = float(parts[3]), float(parts[4])
            self.termed = False
            _log("watchdog_armed", kind=self.kind, target=self.target, kill_at=self.kill_at)
        elif parts[0] == "feed" and len(parts) == 3:
            self.term_at, self.kill_at = float(parts[1]), float(parts[2])
            self.termed = False
        elif parts[0] == "disarm":
            self.target = 0
        else:
            _log("watchdog_bad_command", line=line[:200])

    def tick(self) -> None:
        if not self.armed:
            return
        now = _now()
        if now >= self.kill_at:
            _log("watchdog_fired_kill", target=self.target, late_by=round(now - self.kill_at, 6))
            self.send(signal.SIGKILL)
            self.target = 0
        elif now >= self.term_at and not self.termed:
            _log("watchdog_fired_term", target=self.target)
            self.send(signal.SIGTERM)
            self.termed = True

    def timeout(self) -> float | None:
        if not self.armed:
            return None
        nxt = self.kill_at if self.termed else min(self.term_at, self.kill_at)
        return max(0.0, nxt - _now())


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only the sidecar's EOF ends us
    guard = Guard()
    fd = sys.stdin.fileno()
    buf = b""
    while True:
        ready, _, _ = select.select([fd], [], [], guard.timeout())
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                if guard.armed:
                    _log("watchdog_fired_sidecar_gone", target=guard.target)
                    guard.send(signal.SIGKILL)
                return 0
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    guard.handle(line.decode(errors="replace"))
                except ValueError:
                    _log("watchdog_bad_command", line=line[:200].decode(errors="replace"))
        guard.tick()


if __name__ == "__main__":
    sys.exit(main())
