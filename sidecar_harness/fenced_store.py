"""The downstream store the toy orchestrators write to, through a fencing adapter.

A store is named by one string, ``--store`` of the toy orchestrator: a
``postgresql://`` URL (``sidecar.fencing.adapters.postgres``) or else a
SQLite file (``sidecar.fencing.adapters.sqlite``). Both refuse a token lower
than the highest they have seen and keep every write, refused ones
included, in a history the checker reads.

``HarnessStore`` is what the demo and the fault campaign start for them:
a file in their work dir (``sqlite``), or a throwaway PostgreSQL server
(``postgres``), so that "stale writes accepted: 0" is measured on a real
database.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Any

from sidecar.fencing.adapters.base import Fence, Write
from sidecar_harness.localpg import LocalPostgres

KINDS = ("sqlite", "postgres")
RESOURCE = "toy-orchestrators"  # the one fenced resource the toys share


def is_postgres(spec: str) -> bool:
    return spec.startswith(("postgresql://", "postgres://"))


async def open_store(spec: str) -> Fence[Any]:
    if is_postgres(spec):
        from sidecar.fencing.adapters.postgres import PostgresFence

        return await PostgresFence.connect(spec, RESOURCE)
    from sidecar.fencing.adapters.sqlite import SqliteFence

    return SqliteFence(spec)


def read_history(spec: str | Path) -> list[Write]:
    """Every write the store saw, oldest first ([] if a SQLite file was never created)."""
    spec = str(spec)
    if not is_postgres(spec) and not Path(spec).exists():
        return []

    async def read() -> list[Write]:
        store = await open_store(spec)
        try:
            return await store.history()
        finally:
            await store.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(read())
    # Called from a coroutine (the campaign's report): a loop of its own, in a thread.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, read()).result()


class HarnessStore:
    """The fenced store of one demo or campaign run: started, named, stopped."""

    def __init__(self, kind: str, workdir: Path) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown fenced store {kind!r}; known: {', '.join(KINDS)}")
        self.kind = kind
        self.workdir = workdir
        self.server: LocalPostgres | None = None

    @property
    def spec(self) -> str:
        if self.server is not None:
            return self.server.dsn
        return str(self.workdir / "fenced-store.db")

    def start(self) -> str:
        if self.kind == "postgres" and self.server is None:
            self.server = LocalPostgres().start()
        return self.spec

    def describe(self) -> str:
        return f"PostgreSQL at {self.spec}" if self.server is not None else f"SQLite file {self.spec}"

    def stop(self) -> None:
        """Stop a server we started (after the checker has read it)."""
        if self.server is not None:
            self.server.stop()
            self.server = None
