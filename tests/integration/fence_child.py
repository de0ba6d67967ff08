"""A writer that is paused in its write path: the decisive fencing test's child.

    python -m tests.integration.fence_child KIND TARGET ELECTION TOKEN KEY [--unfenced]

It opens the store, enters a fenced transaction with TOKEN (for sqlite,
whose BEGIN IMMEDIATE would hold every other writer up, it stops just
before), prints ``ready`` and blocks reading stdin: the test SIGSTOPs it
there. Once it reads ``go`` (after SIGCONT) it writes KEY and leaves the
block, then prints one JSON line: the outcome ("accepted" or "refused").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from sidecar.fencing.adapters.base import StaleToken
from tests.integration.fence_stores import STORES, open_fence, put


def pause() -> None:
    print("ready", flush=True)
    line = sys.stdin.readline()
    if line.strip() != "go":
        raise SystemExit(f"expected 'go' on stdin, got {line!r}")


async def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=STORES)
    ap.add_argument("target")
    ap.add_argument("election")
    ap.add_argument("token", type=int)
    ap.add_argument("key")
    ap.add_argument("--unfenced", action="store_true")
    args = ap.parse_args(argv)
    fence = await open_fence(args.kind, args.target, args.election, fenced=not args.unfenced)
    outcome = {"outcome": "accepted", "detail": ""}
    try:
        if args.kind == "sqlite":
            pause()
        async with fence.transaction(args.token, writer="paused") as tx:
            if args.kind != "sqlite":
                pause()  # inside the transaction: after the leader lookup / BEGIN, before the write
            await put(fence, tx, args.key, f"written with token {args.token}")
    except StaleToken as exc:
        outcome = {"outcome": "refused", "detail": str(exc)}
    finally:
        await fence.close()
    print(json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
