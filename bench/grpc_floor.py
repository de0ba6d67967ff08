"""The idle floor of any Python gRPC client that renews an etcd lease: a peer for bench.py.

    python bench/grpc_floor.py ENDPOINT INTERVAL

Grants a lease and renews it every INTERVAL seconds on one LeaseKeepAlive
stream, on an etcd3aio channel set up as the sidecar's was before it left
grpc.aio (CHANNEL_OPTIONS below), and does nothing else. gRPC's worker threads wake on a backoff after every burst
of calls, so this is what one renewal per interval costs before any
election logic: the footprint benchmark measures it beside the sidecars.
Runs until killed.
"""

from __future__ import annotations

import asyncio
import sys

from etcd3aio import Etcd3Client
from etcd3aio._protobuf import LeaseKeepAliveRequest

# The sidecar's channel options on grpc.aio: no BDP probes (each woke gRPC's
# threads a second time per interval) and the window they would have grown
# set at once to gRPC's largest message.
CHANNEL_OPTIONS = (("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 4 << 20))


async def main(endpoint: str, interval: float) -> None:
    client = Etcd3Client([endpoint], rpc_max_attempts=1)
    client._manager.grpc_options += CHANNEL_OPTIONS
    await client.connect()
    assert client.lease is not None
    lease = await client.lease.grant(max(10, int(5 * interval)), timeout=5)
    stream = client.lease._stub.LeaseKeepAlive()
    while True:
        await stream.write(LeaseKeepAliveRequest(ID=lease.ID))
        await stream.read()
        await asyncio.sleep(interval)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
