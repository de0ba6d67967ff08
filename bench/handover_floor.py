"""The least a sidecar pair can do on a graceful handover, against the sidecars and their peers, same run.

    .venv/bin/python bench/handover_floor.py [--rounds 60] [--backend etcd|zookeeper|both]

Issue 16 asks for a handover (resign -> the successor's client holds a
grant) no slower than ``etcdctl elect``'s and kazoo's ``Election``'s. Ours
has steps those peers do not: the resign comes over the grant socket, the
leader must write the revoke to its orchestrator before the store moves
(docs/design.md: stop before successor), and the successor's grant goes
over a socket to its client. This script runs a *floor pair* doing those
steps and nothing else, on the same transport as the sidecar (the same
grpclib wire for etcd, kazoo for ZooKeeper, one asyncio loop each), and
times it with the same client as ``bench.py``:

* the leader reads the resign, writes ``ok`` and the revoke in one write,
  and sends one txn (etcd: compare our key's create revision, delete it,
  put the next epoch record) or one multi (ZooKeeper: delete our node, set
  the record at its version); no log line, no metric, no state;
* the successor leads on the store's event (etcd: the DELETE of the
  leader's key on a watch opened once; ZooKeeper: the exists watch on the
  leader's node, then one read of the record, which a ZooKeeper event does
  not carry) and writes a grant;
* the old leader queues again (a new key or node) while nobody is timed.

It checks nothing the sidecar checks (priorities, switchover requests,
the record's owner, a lease near its end), so it is a floor, not a
design. Printed, for each store: the floor, the sidecars (bench.py's
``our_handover`` on the open connection) and the peer, medians and
min/max, and the ratios of each to the peer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench import StampedClient, etcdctl_handover, kazoo_handover, med, our_handover, wait  # noqa: E402
from sidecar.fencing.protocol import encode  # noqa: E402

# -- one floor sidecar (a process of its own) ----------------------------------


class FloorSocket:
    """The grant socket, cut to what a handover needs: hello, grant, ok and revoke."""

    def __init__(self, path: str, name: str) -> None:
        self.path, self.name = path, name
        self.writer: asyncio.StreamWriter | None = None
        self.on_resign: Any = None
        self.seq = 0
        self.leading = False

    async def start(self) -> None:
        await asyncio.start_unix_server(self._serve, self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        writer.write(encode({"type": "hello", "election": "floor", "candidate": self.name, "version": "floor"}))
        if self.leading:
            self.grant()
        while line := await reader.readline():
            if b'"resign"' in line:
                self.on_resign()

    def grant(self) -> None:
        self.leading = True
        if self.writer is None:
            return
        self.seq += 1
        now = time.monotonic()
        self.writer.write(
            encode(
                {
                    "type": "grant",
                    "leader": True,
                    "election": "floor",
                    "candidate": self.name,
                    "token": self.seq,
                    "epoch": self.seq,
                    "expires_monotonic": now + 10,
                    "valid_for_ms": 10000,
                    "seq": self.seq,
                }
            )
        )

    def revoke(self) -> None:
        self.leading = False
        assert self.writer is not None
        # One write: the resign came on the orchestrator's own connection.
        self.writer.write(encode({"type": "ok", "accepted": True}) + encode({"type": "revoke", "reason": "resigned"}))


async def floor_etcd(sock: FloorSocket, endpoint: str, me: str, other: str, leads: bool) -> None:
    from sidecar.backends.etcd_messages import pb
    from sidecar.backends.etcd_wire import Wire, watch_call

    wire = Wire([endpoint])
    kv = wire.kv
    lease = (await wire.lease.grant(600)).ID
    record = b"floor/epoch"
    mine = f"floor/{me}".encode()
    rev = 0

    async def queue() -> None:
        nonlocal rev
        rev = (await kv.put(mine, b"x", lease=lease)).header.revision

    if leads:
        await queue()
    watch = watch_call(wire, pb.WatchCreateRequest(key=f"floor/{other}".encode()))

    async def follow() -> None:
        async for resp in watch:
            if any(e.type == 1 for e in resp.events):  # DELETE: handed over to us
                sock.grant()

    def resign() -> None:
        sock.revoke()
        task = asyncio.ensure_future(
            kv.txn(
                compare=[kv.txn_compare_create_revision(mine, rev)],
                success=[kv.txn_op_delete(mine), kv.txn_op_put(record, str(sock.seq + 1))],
            )
        )
        task.add_done_callback(lambda t: asyncio.ensure_future(queue()) if not t.exception() else None)

    sock.on_resign = resign
    if leads:
        sock.grant()
    else:
        await queue()
    await follow()


async def floor_zk(sock: FloorSocket, endpoint: str, me: str, other: str, leads: bool, *, no_read: bool) -> None:
    from kazoo.client import KazooClient
    from kazoo.exceptions import NodeExistsError

    loop = asyncio.get_running_loop()
    zk = KazooClient(hosts=endpoint)
    await loop.run_in_executor(None, zk.start, 10)
    with_record = "/floor/epoch"
    mine, theirs = f"/floor/{me}", f"/floor/{other}"
    with contextlib.suppress(NodeExistsError):
        await loop.run_in_executor(None, lambda: zk.create(with_record, b"0", makepath=True))

    def watch_other() -> None:
        # kazoo's thread: on the leader's node gone, read the record, then hand the grant to the loop.
        def fired(event: Any) -> None:
            if event.type != "DELETED":
                return
            if no_read:  # unsafe: an event says neither who wrote the record nor what
                loop.call_soon_threadsafe(sock.grant)
            else:
                zk.get_async(with_record).rawlink(read)

        def read(result: Any) -> None:
            version[0] = result.get()[1].version
            loop.call_soon_threadsafe(sock.grant)

        if zk.exists(theirs, watch=fired) is None:
            time.sleep(0.01)
            watch_other()

    def queue() -> None:
        zk.create(mine, b"x", ephemeral=True)
        watch_other()

    def resign() -> None:
        sock.revoke()
        t = zk.transaction()
        t.delete(mine)
        # Without the read the successor does not know the record's version: set it unchecked.
        t.set_data(with_record, str(sock.seq + 1).encode(), version=-1 if no_read else version[0])
        # kazoo's thread must not wait on kazoo: queue again from a thread of its own.
        t.commit_async().rawlink(lambda _: threading.Thread(target=queue).start())

    version = [(await loop.run_in_executor(None, zk.get, with_record))[1].version]
    sock.on_resign = resign
    if leads:
        await loop.run_in_executor(None, lambda: zk.create(mine, b"x", ephemeral=True))
        sock.grant()
    else:
        await loop.run_in_executor(None, queue)
    await asyncio.Event().wait()


def serve(args: argparse.Namespace) -> None:
    async def main() -> None:
        sock = FloorSocket(args.socket, args.me)
        await sock.start()
        if args.store == "etcd":
            await floor_etcd(sock, args.endpoint, args.me, args.other, args.leads)
        else:
            await floor_zk(sock, args.endpoint, args.me, args.other, args.leads, no_read=args.no_read)

    asyncio.run(main())


# -- the driver ------------------------------------------------------------------


def floor_handover(store: str, endpoint: str, rounds: int, workdir: Path, *, no_read: bool = False) -> list[float]:
    """resign on the leader's open connection -> the successor's client holds a grant."""
    tag = "bare" if no_read else "read"
    paths = [str(workdir / f"floor-{store}-{tag}-{i}.sock") for i in range(2)]
    names = [f"{tag}-{os.getpid()}-{i}" for i in range(2)]  # a killed pair's ephemeral nodes outlive it a while
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "serve", store, endpoint, paths[i], names[i], names[1 - i]]
            + (["--leads"] if i == 0 else [])
            + (["--no-read"] if no_read else [])
        )
        for i in range(2)
    ]
    try:
        wait(lambda: all(os.path.exists(p) for p in paths))
        clients = [StampedClient(p) for p in paths]
        for c in clients:
            c.connect()
        out = []
        for _ in range(rounds):
            wait(lambda: sum(c.current() is not None for c in clients) == 1)
            leader = next(i for i, c in enumerate(clients) if c.current() is not None)
            succ = clients[1 - leader]
            time.sleep(0.2)  # the old leader's queueing done, as bench.py's cadence
            n = len(succ.led_at)
            t = time.monotonic()
            clients[leader].resign()
            out.append(succ.leads_after(n) - t)
        for c in clients:
            c.close()
        return out
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        ap = argparse.ArgumentParser()
        ap.add_argument("cmd")
        ap.add_argument("store")
        ap.add_argument("endpoint")
        ap.add_argument("socket")
        ap.add_argument("me")
        ap.add_argument("other")
        ap.add_argument("--leads", action="store_true")
        ap.add_argument("--no-read", action="store_true")
        serve(ap.parse_args())
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--backend", choices=["etcd", "zookeeper", "both"], default="both")
    ap.add_argument("--warmup", type=int, default=60, help="unmeasured kazoo handovers first (a sixth as many etcdctl)")
    args = ap.parse_args()
    from sidecar_harness.localetcd import LocalEtcd
    from sidecar_harness.localzk import LocalZooKeeper

    stores = ["etcd", "zookeeper"] if args.backend == "both" else [args.backend]
    with LocalEtcd(1) as etcd, LocalZooKeeper(1) as zk, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if "zookeeper" in stores:
            kazoo_handover(zk.endpoints, args.warmup)
        if "etcd" in stores:
            etcdctl_handover(etcd.endpoints, max(1, args.warmup // 6))
        for store in stores:
            endpoints = etcd.endpoints if store == "etcd" else zk.endpoints
            floor = floor_handover(store, endpoints[0], args.rounds, workdir)
            bare = floor_handover(store, endpoints[0], args.rounds, workdir, no_read=True) if store != "etcd" else []
            ours, _ = our_handover(endpoints, store, args.rounds, workdir, "open")
            if store == "etcd":
                peer, name = etcdctl_handover(endpoints, args.rounds), "etcdctl elect"
            else:
                peer, name = kazoo_handover(endpoints, args.rounds), "kazoo Election"
            pm = med(peer)
            rows = [("floor pair", floor), ("floor, no read", bare), ("sidecars", ours), (name, peer)]
            for label, xs in [(label, xs) for label, xs in rows if xs]:
                print(
                    f"{store:9} {label:15} median {med(xs) * 1000:5.2f} ms"
                    f" (min {min(xs) * 1000:.2f}, max {max(xs) * 1000:.2f}, n={len(xs)})  / peer {med(xs) / pm:.2f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
