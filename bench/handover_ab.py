"""Two source trees' handovers, interleaved round by round on one server, to tell them apart.

    .venv/bin/python bench/handover_ab.py --backend etcd --rounds 80 TREE_A TREE_B

Each tree (a checkout of this repository, e.g. made with ``git worktree add
--detach``) gets a pair of sidecars of its own in an election of its own,
run from that tree, and the pairs hand over in turn: one round of each,
the order swapped every round. Back-to-back runs of ``bench.py`` moved by
±0.5 ms on this machine from one run to the next, as much as the changes
being measured; interleaved, whatever slows the machine slows both.

Prints, for each tree, the median of resign (on the orchestrator's open
connection) -> the successor's client holds a grant, and of the store level
(the leader's ``resign_requested`` -> the successor's ``elected``, from the
sidecars' own log stamps); then ``etcdctl elect`` and kazoo's Election on
the same servers, as in bench.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench import StampedClient, etcdctl_handover, kazoo_handover, log_events, med, p, queued, wait  # noqa: E402
from sidecar_harness.fleet import FAST_TIMING, SidecarProcess  # noqa: E402
from sidecar_harness.localetcd import LocalEtcd  # noqa: E402
from sidecar_harness.localzk import LocalZooKeeper  # noqa: E402


def _first(path: Path, since: float, event: str) -> float | None:
    """The ``mono`` of the first ``event`` line at or after ``since``, relative to it."""
    later = [m for m in log_events(path, event) if m >= since]
    return later[0] - since if later else None


class Pair:
    """Two sidecars of one tree, in an election of their own, each with a client on its socket."""

    def __init__(self, tree: Path, endpoints: list[str], backend: str, workdir: Path, tag: str) -> None:
        cwd = os.getcwd()
        os.chdir(tree)  # `python -m sidecar` imports the tree it starts in
        try:
            election = f"ab-{backend}-{tag}-{os.getpid()}"
            self.sidecars = [
                SidecarProcess(f"ab{tag}{i}", workdir, endpoints, election, dict(FAST_TIMING), backend=backend).start()
                for i in range(2)
            ]
        finally:
            os.chdir(cwd)
        for s in self.sidecars:
            s.wait_socket()
        self.clients = [StampedClient(str(s.socket_path)) for s in self.sidecars]
        for c in self.clients:
            c.connect()
        self.grant: list[float] = []
        self.store: list[float] = []
        self._last: tuple[float, int] | None = None

    def hand_over(self) -> None:
        wait(lambda: sum(c.current() is not None for c in self.clients) == 1)
        leader = next(i for i, c in enumerate(self.clients) if c.current() is not None)
        successor = self.clients[1 - leader]
        wait(lambda: queued(self.sidecars[1 - leader].log_path))
        n = len(successor.led_at)
        t = time.monotonic()
        self.clients[leader].resign()
        self.grant.append(successor.leads_after(n) - t)
        self._last = (t, leader)

    def read_logs(self) -> None:
        """The last round's store level, once both logs have been written."""
        assert self._last is not None
        t, leader = self._last
        resigned = _first(self.sidecars[leader].log_path, t, "resign_requested")
        elected = _first(self.sidecars[1 - leader].log_path, t, "elected")
        if resigned is not None and elected is not None:
            self.store.append(elected - resigned)

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        for s in self.sidecars:
            s.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["etcd", "zookeeper"], default="etcd")
    ap.add_argument("--rounds", type=int, default=80)
    ap.add_argument("--warmup", type=int, default=60, help="unmeasured kazoo handovers first (a sixth as many etcdctl)")
    ap.add_argument("trees", nargs=2, type=Path)
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="es-handover-ab-"))
    with LocalEtcd(1) as etcd, LocalZooKeeper(1) as zk:
        kazoo_handover(zk.endpoints, args.warmup)
        etcdctl_handover(etcd.endpoints, max(1, args.warmup // 6))
        endpoints = etcd.endpoints if args.backend == "etcd" else zk.endpoints
        pairs = [Pair(t.resolve(), endpoints, args.backend, workdir, str(i)) for i, t in enumerate(args.trees)]
        try:
            for r in range(args.rounds):
                for pair in pairs if r % 2 == 0 else pairs[::-1]:
                    pair.hand_over()
                time.sleep(0.15)  # both logs written (info lines wait up to 20 ms: sidecar/log.py)
                for pair in pairs:
                    pair.read_logs()
                if (r + 1) % 20 == 0:
                    print(f"  {r + 1}/{args.rounds} rounds", file=sys.stderr, flush=True)
        finally:
            for pair in pairs:
                pair.stop()
        ctl = etcdctl_handover(etcd.endpoints, 30)
        kz = kazoo_handover(zk.endpoints, 30)
    for tree, pair in zip(args.trees, pairs, strict=True):
        store = f"{med(pair.store) * 1000:.2f} ms (n={len(pair.store)})" if pair.store else "no log stamps"
        print(f"{tree}: {args.backend} to the client's grant {med(pair.grant) * 1000:.2f} ms, store level {store}")
    print(f"etcdctl elect: {p(ctl)}")
    print(f"kazoo Election: {p(kz)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
