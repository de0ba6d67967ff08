"""Sidecars as child processes: what the demo, the tests and the benchmarks run.

Each sidecar is a real ``python -m sidecar run`` with its own log file and
grant socket, started in its own session so that a Ctrl-C at the terminal
reaches only the parent, which then stops them in order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.config import Config, validate
from sidecar.fencing.oneshot import request
from sidecar_harness.localstore import log_tail

# Fast timing for throwaway elections: a dead leader is replaced in about
# TTL seconds, and every safety rule of config.validate() still holds.
FAST_TIMING: dict[str, float] = {
    "ttl": 3,
    "renew_deadline": 1.5,
    "retry_interval": 0.5,
    "kill_grace": 0.5,
    "margin": 0.5,
}


def fast_config(election: str, candidate_id: str = "") -> Config:
    """A Config with FAST_TIMING, for in-process electors in tests and benchmarks."""
    t = FAST_TIMING
    return validate(
        Config(
            election=election,
            candidate_id=candidate_id,
            ttl=t["ttl"],
            renew_deadline=t["renew_deadline"],
            retry_interval=t["retry_interval"],
            kill_grace=t["kill_grace"],
            margin=t["margin"],
        )
    )


@dataclass
class SidecarProcess:
    candidate: str
    workdir: Path
    endpoints: list[str]
    election: str
    timing: dict[str, float] = field(default_factory=lambda: dict(FAST_TIMING))
    backend: str = "etcd"
    extra_args: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    http_port: int = 0  # 0: no HTTP endpoints
    # Log through a pipe that a relay thread copies to the log file, so a
    # fault can stall it (a log collector that stopped reading).
    log_relay: bool = False
    env: dict[str, str] = field(default_factory=dict)  # this sidecar's own settings, on every start
    proc: subprocess.Popen[bytes] | None = None
    _relay_open: threading.Event = field(default_factory=threading.Event)

    @property
    def socket_path(self) -> Path:
        return self.workdir / f"{self.candidate}.sock"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.candidate}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def argv(self) -> list[str]:
        args = [
            sys.executable, "-m", "sidecar", "run",
            "--backend", self.backend,
            "--endpoints", ",".join(self.endpoints),
            "--election", self.election,
            "--id", self.candidate,
            "--socket", str(self.socket_path),
            "--log-format", "json",
            "--http-addr", f"127.0.0.1:{self.http_port}" if self.http_port else "",
        ]  # fmt: skip
        for name, value in self.timing.items():
            args += ["--" + name.replace("_", "-"), str(value)]
        args += self.extra_args
        if self.command:
            args += ["--", *self.command]
        return args

    def start(self, env: dict[str, str] | None = None) -> SidecarProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.argv(),
                stdout=subprocess.PIPE if self.log_relay else log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **self.env, **(env or {})},
            )
        finally:
            log.close()
        if self.log_relay:
            self._relay_open.set()
            threading.Thread(target=self._relay, args=(self.proc,), daemon=True, name=f"log-{self.candidate}").start()
        return self

    def _relay(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with self.log_path.open("ab") as log:
            while True:
                self._relay_open.wait()
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    return
                log.write(chunk)
                log.flush()

    def stall_log(self) -> int:
        """Stop reading the log pipe and fill it: the next write to it blocks.

        Returns the bytes written to fill it (through /proc: the pipe's
        write end, opened non-blocking, until the kernel refuses more).
        """
        self._relay_open.clear()
        filled = 0
        fd = os.open(f"/proc/{self.pid}/fd/2", os.O_WRONLY | os.O_NONBLOCK)
        try:
            line = b'{"event": "harness_log_filler"}\n' * 64
            while True:
                try:
                    filled += os.write(fd, line)
                except BlockingIOError:
                    return filled
        finally:
            os.close(fd)

    def resume_log(self) -> None:
        self._relay_open.set()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit within ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def status(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """The sidecar's own view over its socket, or None if it does not answer."""
        try:
            return request(str(self.socket_path), {"type": "status"}, timeout)
        except (OSError, ValueError):
            return None

    def listening(self) -> bool:
        """True once the grant socket accepts connections (the file alone is not enough)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(self.socket_path))
            except OSError:
                return False
        return True

    def wait_socket(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.listening():
            if not self.alive:
                raise RuntimeError(f"sidecar {self.candidate} exited: {self.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"sidecar {self.candidate} has no socket after {timeout}s: {self.tail()}")
            time.sleep(0.02)

    def tail(self, lines: int = 5) -> str:
        return log_tail(self.log_path, lines)


async def statuses(
    sidecars: list[SidecarProcess], skip: Collection[str] = (), timeout: float = 0.5
) -> list[dict[str, Any] | None]:
    """Each sidecar's own view, asked in parallel; None for a dead, skipped or silent one."""

    async def one(s: SidecarProcess) -> dict[str, Any] | None:
        if not s.alive or s.candidate in skip:
            return None
        return await asyncio.to_thread(s.status, timeout)

    return list(await asyncio.gather(*(one(s) for s in sidecars)))


def claiming(
    sidecars: list[SidecarProcess], views: list[dict[str, Any] | None]
) -> list[tuple[SidecarProcess, dict[str, Any]]]:
    """The sidecars whose view says they lead, with that view."""
    return [(s, v) for s, v in zip(sidecars, views, strict=True) if v and v.get("state") == "leader"]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def harness_process() -> None:
    """Set-up for the demo and the campaign, which inject faults themselves.

    SIGTERM cleans up like Ctrl-C (servers and sidecars are stopped), and
    the reconnect chatter of our own store client during those faults is
    not news.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)
