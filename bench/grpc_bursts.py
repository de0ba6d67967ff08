"""What an idle gRPC client costs per burst of calls: the measurement behind "the re-reads ride the renewal".

    .venv/bin/python bench/grpc_bursts.py [--seconds 20] [--rounds 2]

Starts one throwaway etcd, then for each pattern a fresh process with one
etcd3aio channel that makes the pattern's calls and nothing else, and
prints its CPU (per-thread ``schedstat``, summed) and voluntary wake-ups
per second over the window. Patterns: no calls; 1 or 5 calls every 2 s;
1 call and then 4 calls 1 s later; 5 calls every 2 s with gRPC's BDP
probes off, and also with the stream window set to 4 MiB. Rounds
alternate the patterns, so each is compared with the others of its round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (bursts as (calls, period, offset), extra channel options)
PATTERNS: dict[str, tuple[list[tuple[int, float, float]], list[tuple[str, int]]]] = {
    "no calls": ([], []),
    "1 call / 2 s": ([(1, 2.0, 0.0)], []),
    "5 calls / 2 s": ([(5, 2.0, 0.0)], []),
    "1 + 4 calls 1 s apart / 2 s": ([(1, 2.0, 0.0), (4, 2.0, 1.0)], []),
    "5 calls / 2 s, no BDP": ([(5, 2.0, 0.0)], [("grpc.http2.bdp_probe", 0)]),
    "5 calls / 2 s, no BDP, 4 MiB window": (
        [(5, 2.0, 0.0)],
        [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 4 << 20)],
    ),
}


def threads_cpu_and_wakeups() -> tuple[int, int]:
    ns = woke = 0
    for t in os.listdir("/proc/self/task"):
        try:
            ns += int(Path(f"/proc/self/task/{t}/schedstat").read_text().split()[0])
            status = Path(f"/proc/self/task/{t}/status").read_text()
            woke += int(status.split("voluntary_ctxt_switches:")[1].split()[0])
        except OSError:
            continue  # a thread that ended while we looked
    return ns, woke


async def one(endpoint: str, pattern: str, seconds: float) -> None:
    from etcd3aio import Etcd3Client

    bursts, options = PATTERNS[pattern]
    client = Etcd3Client([endpoint], rpc_max_attempts=1)
    client._manager.grpc_options += options
    await client.connect()
    kv = client.kv
    assert kv is not None

    async def loop(calls: int, period: float, offset: float) -> None:
        await asyncio.sleep(offset)
        while True:
            await asyncio.gather(*(kv.get(f"k{i}", timeout=2) for i in range(calls)))
            await asyncio.sleep(period)

    tasks = [asyncio.create_task(loop(*b)) for b in bursts]
    await asyncio.sleep(3)
    ns0, woke0 = threads_cpu_and_wakeups()
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    ns1, woke1 = threads_cpu_and_wakeups()
    dt = time.monotonic() - t0
    print(f"  {pattern:38} {(ns1 - ns0) / 1e6 / dt:6.3f} ms/s  {(woke1 - woke0) / dt:5.1f} wake-ups/s", flush=True)
    for t in tasks:
        t.cancel()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        asyncio.run(one(sys.argv[2], sys.argv[3], float(sys.argv[4])))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from sidecar_harness.localetcd import LocalEtcd

    etcd = LocalEtcd().start()
    try:
        for r in range(args.rounds):
            print(f"round {r + 1} of {args.rounds}", flush=True)
            for pattern in PATTERNS:
                cmd = [sys.executable, __file__, "--one", etcd.endpoints[0], pattern, str(args.seconds)]
                subprocess.run(cmd, check=True)
    finally:
        etcd.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
