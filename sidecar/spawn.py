"""Exec wrapper that puts the orchestrator where every descendant can be found.

Run by the supervisor as ``python -I -S spawn.py [--guard FD] MECHANISM [DIR] -- CMD ...``
(standard library only, so it starts in a few milliseconds):

* ``cgroup DIR``: write our own pid into ``DIR/cgroup.procs``, then exec
  CMD. The orchestrator is in the group before its first instruction, so a
  fork right after start cannot escape it. (Writing the child's pid from the
  sidecar after spawn races with such a fork; ``preexec_fn`` could do it in
  the child but is unsafe in a process running gRPC threads; Python has no
  ``clone3(CLONE_INTO_CGROUP)``.)
* ``subreaper``: become a child subreaper, start CMD as our child and reap
  everything that reparents to us; exit with CMD's status once no child is
  left. Our descendants are then exactly the orchestrator's tree, and our
  exit proves it is empty. SIGTERM, SIGINT and SIGHUP sent to us are passed
  on to CMD; the supervisor signals the descendants directly, never us.

``--guard FD``: the read end of a pipe whose only write end the watchdog
holds. When it closes (the watchdog died), kill the whole tree at once
(``cgroup.kill``, or SIGKILL to every descendant): with a frozen sidecar and
a dead watchdog nothing else would stop the orchestrator at its deadline.
With a guard the wrapper stays, in the cgroup case too, to watch the pipe.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any


def _load_proctree() -> object:
    # -I keeps our directory off sys.path; load the sibling by file path.
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("_proctree", os.path.join(os.path.dirname(os.path.abspath(__file__)), "proctree.py"))
    assert spec is not None and spec.loader is not None
    mod = module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _dead_man(fd: int, kill_all: Callable[[], None]) -> None:
    """Block until the watchdog's end of the guard pipe closes, then kill everything.

    The watchdog holds the only write end and never writes: EOF means it
    died. If the sidecar is frozen at that moment nothing else would enforce
    the grant's deadline, so the orchestrator goes with its guard.
    """
    while os.read(fd, 64):
        pass
    kill_all()


def main(argv: list[str]) -> int:
    guard = -1
    if argv[:1] == ["--guard"] and len(argv) > 1:
        guard, argv = int(argv[1]), argv[2:]
    if "--" not in argv:
        sys.stderr.write("usage: spawn.py [--guard FD] cgroup DIR | subreaper -- CMD ...\n")
        return 127
    sep = argv.index("--")
    how, cmd = argv[:sep], argv[sep + 1 :]
    if not cmd:
        return 127
    proctree: Any = _load_proctree()
    if how[:1] == ["cgroup"] and len(how) == 2:
        with open(os.path.join(how[1], "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
        if guard < 0:
            try:
                os.execvp(cmd[0], cmd)
            except OSError as exc:
                sys.stderr.write(f"spawn: {cmd[0]}: {exc}\n")
                return 127
        group = proctree.Cgroup(how[1])
        kill_all: Callable[[], None] = group.kill
    elif how == ["subreaper"]:
        proctree.set_child_subreaper()

        def kill_all() -> None:
            # Until none is left: a process forking while we scan has children we did not see.
            proctree.kill_tree(os.getpid(), 5.0)

    else:
        sys.stderr.write(f"spawn: unknown mechanism {how}\n")
        return 127
    try:
        child = os.posix_spawnp(cmd[0], cmd, os.environ)
    except OSError as exc:
        sys.stderr.write(f"spawn: {cmd[0]}: {exc}\n")
        return 127
    if guard >= 0:
        threading.Thread(target=_dead_man, args=(guard, kill_all), daemon=True).start()

    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    # Handlers (not SIG_IGN) so that CMD, exec'd by posix_spawn, starts with default dispositions.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    status = 0
    while True:
        try:
            pid, raw = os.waitpid(-1, 0)
        except ChildProcessError:
            return status  # no child left: the whole tree is gone (or, in a cgroup, CMD is)
        if pid == child:
            code = os.waitstatus_to_exitcode(raw)
            status = code if code >= 0 else 128 - code
            if how[0] == "cgroup":
                return status  # orphans stay in the cgroup, where the supervisor finds them


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
