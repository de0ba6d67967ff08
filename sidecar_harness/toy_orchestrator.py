"""A toy orchestrator: acts only while it holds a valid grant, and says when.

Every ``--interval`` it asks the client library whether it leads; if so it
records the moment (CLOCK_MONOTONIC) and the token in its record file, then
writes a token-stamped record to the fenced store. The checker reads those
files to prove that no two orchestrators acted at once and that the store
accepted no stale token.

``--no-self-fence`` and ``--ignore-sigterm`` make it misbehave on purpose,
so tests can show that the sidecar and its watchdog stop it anyway. So do:

* ``--escape setsid|double-fork``: at start, fork a helper that leaves our
  process group and session (``setsid``, or fork-setsid-fork with the middle
  process exiting, as a daemon does), ignores SIGTERM and acts on
  ELECTION_TOKEN until killed, recording as this writer. Only a stop path
  that tracks every descendant (cgroup or subreaper) reaches it.
* ``--close-socket-on-revoke``: on ``revoke`` close the socket and keep
  acting with the last token (a ``--kill-peer`` client that hides).
* SIGUSR1 (the campaign's ``orchestrator-escape`` fault): start, from now on,
  a child in a new session that ignores SIGTERM and acts on ELECTION_TOKEN
  until killed, recording as this writer.

    python -m sidecar_harness.toy_orchestrator --store S.db --record R.jsonl
    python -m sidecar_harness.toy_orchestrator --store postgresql://... --record R.jsonl
    (socket and token come from ELECTION_SOCKET / ELECTION_TOKEN under the sidecar)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from sidecar.fencing.adapters.base import StaleToken
from sidecar.fencing.client import BlockingGrantClient, monotonic
from sidecar_harness.fenced_store import open_store


class Recorder:
    """Appends one JSON line per call, each with a single unbuffered write.

    It is called from the SIGTERM handler too, and the sidecar signals the
    orchestrator and then every process in its cgroup: a second SIGTERM can land
    inside the first one's write. A buffered file object raises "reentrant call"
    there; a bare descriptor has no buffer to re-enter, and O_APPEND keeps every
    line whole even with escaped children appending to the same file.
    """

    def __init__(self, path: str, writer: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.writer = writer

    def __call__(self, kind: str, **fields: Any) -> None:
        line = {"kind": kind, "writer": self.writer, "pid": os.getpid(), "mono": monotonic(), **fields}
        data = (json.dumps(line) + "\n").encode()
        while data:  # a regular file takes the line at once; a pipe may take part of it
            data = data[os.write(self.fd, data) :]

    def close(self) -> None:
        os.close(self.fd)


def connect(path: str, timeout: float = 10.0) -> BlockingGrantClient:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return BlockingGrantClient(path).connect()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def escape(how: str) -> bool:
    """Fork a helper out of our process group and session; True in the helper."""
    if os.fork() != 0:
        return False
    os.setsid()
    if how == "double-fork" and os.fork() != 0:
        os._exit(0)  # the middle process exits: the helper is orphaned
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--socket", default=os.environ.get("ELECTION_SOCKET", ""))
    ap.add_argument("--store", required=True, help="fenced store: a SQLite file or a postgresql:// URL")
    ap.add_argument("--record", required=True, help="where to append what this process did (JSON lines)")
    ap.add_argument("--id", default=os.environ.get("ELECTION_ID", f"toy-{os.getpid()}"))
    ap.add_argument("--interval", type=float, default=0.02)
    ap.add_argument("--no-self-fence", action="store_true", help="act on ELECTION_TOKEN until killed")
    ap.add_argument("--ignore-sigterm", action="store_true")
    ap.add_argument("--escape", choices=("setsid", "double-fork"), help="fork a helper that escapes the group")
    ap.add_argument("--close-socket-on-revoke", action="store_true", help="close on revoke, keep acting")
    args = ap.parse_args(argv)
    if args.escape and escape(args.escape):
        # The escaped helper: a daemon that acts on the token it was started with.
        args.no_self_fence, args.ignore_sigterm = True, True

    record = Recorder(args.record, args.id)
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        record("sigterm", ignored=args.ignore_sigterm)
        if not args.ignore_sigterm:
            stop = True

    def on_usr1(signum: int, frame: object) -> None:
        child = subprocess.Popen(
            [sys.executable, "-m", "sidecar_harness.toy_orchestrator", "--store", args.store,
             "--record", args.record, "--id", args.id, "--no-self-fence", "--ignore-sigterm"],
            start_new_session=True,  # setsid(): out of our process group and session
        )  # fmt: skip
        record("escaped_child", child=child.pid)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGUSR1, on_usr1)
    record("start", env_token=os.environ.get("ELECTION_TOKEN"))
    return asyncio.run(act(args, record, lambda: stop))


async def act(args: argparse.Namespace, record: Recorder, stopped: Callable[[], bool]) -> int:
    store = await open_store(args.store)
    client = None if args.no_self_fence else connect(args.socket)
    env_token = int(os.environ.get("ELECTION_TOKEN", "0"))
    while not stopped():
        valid_until = None
        if (
            client is not None
            and args.close_socket_on_revoke
            and env_token
            and client.current() is None
            and client.state.last_reason not in ("deadline-passed", "not-connected")
        ):
            # Revoked (not merely past the deadline, which a frozen sidecar would
            # cause): hang up, then go on acting with the token we last held.
            record("hiding", token=env_token)
            client.close()
            client = None
        if client is None:
            token = env_token
        else:
            grant = client.current()
            token = grant.token if grant is not None else 0
            valid_until = grant.valid_until if grant is not None else None
            if grant is not None and args.close_socket_on_revoke:
                env_token = grant.token  # remembered for after the revoke
        now = monotonic()
        if token and (valid_until is None or now < valid_until):
            # `mono` is taken after the check passed: the moment this process
            # acted believing it led. The checker proves these never overlap.
            record("act", token=token, mono=now, valid_until=valid_until)
            try:
                async with store.transaction(token, args.id):
                    pass  # the write is the store's own history entry, stamped with the token
            except StaleToken:
                record("refused", token=token)
        elif client is not None and client.closed.is_set():
            record("sidecar_gone")
            break
        await asyncio.sleep(args.interval)
    record("exit")
    await store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
