"""What the etcd transport alone costs: grpc.aio (ours) against grpclib, same etcd, same run.

    .venv/bin/python bench/transport_floor.py [--idle 60] [--calls 300]

Issue 16 asks an idle sidecar for <= 0.15 % of a core and <= 45 MiB. The
footprint benchmark's floor peer (bench/grpc_floor.py: a bare client that
renews one lease every 2 s and does nothing else) already costs about
0.14 % and 40 MiB on grpc.aio, because gRPC's C-core threads wake on their
own backoff after every burst of calls. This script measures the same
floor on grpclib (pure-Python gRPC on asyncio and h2, no threads of its
own) beside it, idle and per call: the figures that moved the sidecar's
etcd transport to grpclib (sidecar/backends/etcd_wire.py). Both clients
send the messages that module loads.

Each client runs in a process of its own:

* ``floor``: grants a lease with a TTL of 10 s and renews it every 2 s on
  one LeaseKeepAlive stream (``--reads N`` adds N Range calls per renewal);
* ``calls``: times ``--calls`` sequential Range and Put calls after a warm-up
  and prints their median and p90 latency and the process CPU per call.

Idle figures are per-thread ``schedstat`` sums over the window (not clock
ticks), RSS from ``/proc``, wake-ups are context switches of all threads.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
INTERVAL = 2.0  # the sidecars' default retry interval: one renewal per 2 s


def _etcd_messages() -> Any:
    """etcd's generated request/response classes, as the sidecar's transport loads them
    (sidecar/backends/etcd_messages.py imports neither grpc nor grpclib)."""
    sys.path.insert(0, str(ROOT))
    return importlib.import_module("sidecar.backends.etcd_messages").pb


class _Client:
    """One client's four calls: lease grant, a keepalive stream, Range, Put."""

    def __init__(self, kind: str, endpoint: str) -> None:
        self.kind = kind
        self.host, port = endpoint.rsplit("//", maxsplit=1)[-1].rsplit(":", 1)
        self.port = int(port)
        self.pb = _etcd_messages()
        self.range: Callable[[], Awaitable[Any]]
        self.put: Callable[[], Awaitable[Any]]
        self.channel: Any = None
        self._grant: Any = None
        self._keepalive: Any = None

    async def open(self) -> None:
        pb = self.pb
        if self.kind == "grpclib":
            from grpclib.client import Channel, StreamStreamMethod, UnaryUnaryMethod

            channel = Channel(self.host, self.port)
            rng = UnaryUnaryMethod(channel, "/etcdserverpb.KV/Range", pb.RangeRequest, pb.RangeResponse)
            put = UnaryUnaryMethod(channel, "/etcdserverpb.KV/Put", pb.PutRequest, pb.PutResponse)
            self._grant = UnaryUnaryMethod(
                channel, "/etcdserverpb.Lease/LeaseGrant", pb.LeaseGrantRequest, pb.LeaseGrantResponse
            )
            self._keepalive = StreamStreamMethod(
                channel, "/etcdserverpb.Lease/LeaseKeepAlive", pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse
            )
        else:
            import grpc

            sys.path.insert(0, str(ROOT / "bench"))
            channel_options = importlib.import_module("grpc_floor").CHANNEL_OPTIONS
            rpc_pb2_grpc = importlib.import_module("etcd.api.etcdserverpb.rpc_pb2_grpc")

            channel = grpc.aio.insecure_channel(f"{self.host}:{self.port}", options=list(channel_options))
            kv, lease = rpc_pb2_grpc.KVStub(channel), rpc_pb2_grpc.LeaseStub(channel)
            rng, put, self._grant, self._keepalive = kv.Range, kv.Put, lease.LeaseGrant, lease.LeaseKeepAlive
        self.channel = channel
        self.range = lambda: rng(pb.RangeRequest(key=b"bench-transport"))
        self.put = lambda: put(pb.PutRequest(key=b"bench-transport", value=b"v"))

    async def renew_forever(self, reads: int) -> None:
        lease = await self._grant(self.pb.LeaseGrantRequest(TTL=10))
        request = self.pb.LeaseKeepAliveRequest(ID=lease.ID)
        if self.kind == "grpclib":
            async with self._keepalive.open() as stream:
                while True:
                    await stream.send_message(request)
                    await stream.recv_message()
                    for _ in range(reads):
                        await self.range()
                    await asyncio.sleep(INTERVAL)
        call = self._keepalive()
        while True:
            await call.write(request)
            await call.read()
            for _ in range(reads):
                await self.range()
            await asyncio.sleep(INTERVAL)

    async def time_calls(self, n: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, call in (("range", self.range), ("put", self.put)):
            for _ in range(50):
                await call()
            lat = []
            cpu0 = time.process_time()
            for _ in range(n):
                t0 = time.perf_counter()
                await call()
                lat.append((time.perf_counter() - t0) * 1000)
            lat.sort()
            out[name] = {
                "median_ms": round(statistics.median(lat), 3),
                "p90_ms": round(lat[int(0.9 * n)], 3),
                "cpu_per_call_ms": round((time.process_time() - cpu0) / n * 1000, 3),
            }
        return out


async def _child(kind: str, endpoint: str, mode: str, arg: int) -> None:
    client = _Client(kind, endpoint)
    await client.open()
    if mode == "floor":
        await client.renew_forever(arg)
    else:
        print(json.dumps(await client.time_calls(arg)), flush=True)
        if client.kind == "grpclib":
            client.channel.close()
        else:
            await client.channel.close()


def _stats(pid: int) -> tuple[float, int, int]:
    """CPU seconds (all threads, schedstat), RSS bytes, context switches so far."""
    tasks = Path(f"/proc/{pid}/task")
    cpu_ns, switches = 0, 0
    for t in tasks.iterdir():
        try:
            cpu_ns += int((t / "schedstat").read_text().split()[0])
            for line in (t / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    switches += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended between the listing and the read
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1]) * 1024
    return cpu_ns / 1e9, rss, switches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--idle", type=float, default=60.0, help="seconds of idle measurement")
    ap.add_argument("--calls", type=int, default=300, help="timed calls per kind")
    ap.add_argument("--child", nargs=4, metavar=("KIND", "ENDPOINT", "MODE", "ARG"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, endpoint, mode, arg = args.child
        asyncio.run(_child(kind, endpoint, mode, int(arg)))
        return
    sys.path.insert(0, str(ROOT))
    from sidecar_harness.localetcd import LocalEtcd

    me = str(Path(__file__).resolve())
    kinds = ("grpc.aio", "grpclib")
    with LocalEtcd(1) as etcd:
        endpoint = etcd.endpoints[0]

        def child(kind: str, mode: str, arg: int, **kw: Any) -> subprocess.Popen[str]:
            cmd = [sys.executable, me, "--child", kind, endpoint, mode, str(arg)]
            return subprocess.Popen(cmd, text=True, **kw)

        floors = {
            f"{kind}, {reads} read(s) per renewal": child(kind, "floor", reads) for kind in kinds for reads in (0, 1)
        }
        try:
            time.sleep(5)  # connected, lease granted, first renewals done
            before = {k: _stats(p.pid) for k, p in floors.items()}
            print(f"idle: {len(floors)} clients renewing every {INTERVAL:g} s, {args.idle:g} s window ...", flush=True)
            time.sleep(args.idle)
            for k, p in floors.items():
                if p.poll() is not None:
                    sys.exit(f"transport_floor: the {k} client exited ({p.returncode})")
                cpu, rss, switches = _stats(p.pid)
                print(
                    f"  {k:32s} cpu {100 * (cpu - before[k][0]) / args.idle:.3f} % of a core, "
                    f"rss {rss / 2**20:.1f} MiB, wake-ups {(switches - before[k][2]) / args.idle:.1f}/s"
                )
        finally:
            for p in floors.values():
                p.kill()
                p.wait()
        print(f"per call, {args.calls} sequential calls each, one client at a time:")
        for _ in range(2):
            for kind in kinds:
                proc = child(kind, "calls", args.calls, stdout=subprocess.PIPE)
                out, _ = proc.communicate(timeout=300)
                for name, row in json.loads(out.splitlines()[-1]).items():
                    print(f"  {kind:9s} {name:5s} " + ", ".join(f"{k} {v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
