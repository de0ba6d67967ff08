"""A throwaway PostgreSQL server as a local process, for the demo and tests.

Uses Debian's ``postgresql`` package (``/usr/lib/postgresql/<major>/bin``),
``pg_config --bindir``, or ``$ELECTION_SIDECAR_PG_BIN`` (a directory holding
``initdb`` and ``postgres``). ``initdb`` refuses to run as root, so as root
both run as the ``postgres`` user the package creates (else ``nobody``)
through ``setpriv``. Data, Unix socket and log live in one temporary
directory; the server listens on a free loopback port with trust auth
(loopback only, removed by ``stop()``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sidecar_harness.localstore import free_ports, log_tail, spawn_logged
from sidecar_harness.shareddir import shared_tempdir


class PostgresNotFound(RuntimeError):
    pass


def find_bindir() -> Path:
    env = os.environ.get("ELECTION_SIDECAR_PG_BIN")
    if env:
        return Path(env)
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if debian:
        return debian[-1].parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out and (Path(out) / "initdb").exists():
            return Path(out)
    if shutil.which("initdb"):
        return Path(str(shutil.which("initdb"))).parent
    raise PostgresNotFound(
        "no PostgreSQL server binaries: apt-get install postgresql, or set ELECTION_SIDECAR_PG_BIN to its bin directory"
    )


def _unprivileged() -> list[str]:
    """The argv prefix that drops root (initdb and postgres refuse to run as root)."""
    if os.geteuid() != 0:
        return []
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pw = pwd.getpwnam(name)
            return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", "--"]
    raise PostgresNotFound("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


@dataclass
class LocalPostgres:
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    _tmp: Path | None = None

    @property
    def dsn(self) -> str:
        """libpq conninfo URL of the server's default database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def log_path(self) -> Path:
        assert self._tmp is not None
        return self._tmp / "postgres.log"

    def start(self, timeout: float = 60.0) -> LocalPostgres:
        bindir = find_bindir()
        prefix = _unprivileged()
        # The server runs as its own user, so its directory must be reachable by it.
        self._tmp = shared_tempdir("election-sidecar-pg-")
        try:
            data, sockets = self._tmp / "data", self._tmp / "sock"
            sockets.mkdir()
            if prefix:  # the unprivileged user must own what the server writes
                uid, gid = int(prefix[1].split("=")[1]), int(prefix[2].split("=")[1])
                for p in (self._tmp, sockets):
                    os.chown(p, uid, gid)
                self.log_path.touch()
                os.chown(self.log_path, uid, gid)
            init = subprocess.run(
                [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                 "-E", "UTF8", "--no-sync", "--no-instructions"],
                # It returns to its working directory, which the test's may not let it do.
                capture_output=True, text=True, check=False, cwd=self._tmp,
            )  # fmt: skip
            if init.returncode != 0:
                tail = " | ".join((init.stderr or init.stdout).strip().splitlines()[-3:])
                raise RuntimeError(f"initdb failed: {tail}")
            self.port = free_ports(1)[0]
            argv = [
                *prefix, str(bindir / "postgres"), "-D", str(data), "-p", str(self.port),
                "-k", str(sockets), "-c", "listen_addresses=127.0.0.1",
                # Throwaway data: durability buys nothing here and costs seconds per test.
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            ]  # fmt: skip
            self.proc = spawn_logged(argv, self.log_path, cwd=self._tmp)
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}: {log_tail(self.log_path)}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                # The port answers before the server accepts sessions; ask for one.
                if "ready to accept connections" in self.log_path.read_text(errors="replace"):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"postgres not ready after {timeout}s: {log_tail(self.log_path)}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown: ends sessions, no checkpoint wait
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
