"""Fence writes to PostgreSQL (psycopg 3, asyncio).

One row per fenced resource holds the highest token that has written to it.
Every transaction raises that row in the same transaction as its writes:

    INSERT INTO election_fence (resource, token) VALUES ($r, $t)
    ON CONFLICT (resource) DO UPDATE SET token = EXCLUDED.token
    WHERE election_fence.token <= EXCLUDED.token

Zero rows affected means a newer token has written: the transaction rolls
back and ``StaleToken`` is raised. The row lock makes it atomic against a
concurrent writer (READ COMMITTED re-checks the WHERE on the newest row
version), and the upsert needs no row to exist beforehand.

The fence statement runs last, just before COMMIT, so the fence row is
locked only for the instant of the commit: a writer paused inside its
transaction does not hold up its successor on the fence (it may still on
rows both of them write; set ``idle_in_transaction_session_timeout``).

    fence = await PostgresFence.connect("postgresql://...", resource="orders")
    async with fence.transaction(client.token) as cur:
        await cur.execute("UPDATE orders SET state = 'shipped' WHERE id = %s", (order_id,))
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import psycopg
from psycopg import sql

from sidecar.fencing.adapters.base import StaleToken, Write, monotonic

DDL = """
CREATE TABLE IF NOT EXISTS {fence} (
    resource text PRIMARY KEY,
    token bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS {history} (
    seq bigserial PRIMARY KEY,
    resource text NOT NULL,
    token bigint NOT NULL,
    writer text NOT NULL,
    mono double precision NOT NULL,
    accepted boolean NOT NULL
)
"""


class PostgresFence:
    """Fenced transactions on one resource name of one database."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection[tuple[object, ...]],
        resource: str,
        *,
        table: str = "election_fence",
        history_table: str = "election_fence_history",
        keep_history: bool = True,
    ) -> None:
        if not resource:
            raise ValueError("a PostgreSQL fence needs a non-empty resource name")
        self.conn = conn
        self.resource = resource
        self._fence = sql.Identifier(table)
        self._history = sql.Identifier(history_table)
        # One row per write (refusals too): right for tests and audits; off, only the fence row changes.
        self.keep_history = keep_history

    @classmethod
    async def connect(cls, conninfo: str, resource: str, **kwargs: Any) -> PostgresFence:
        """Open a connection of our own (autocommit: each fenced block is one transaction)."""
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        fence = cls(conn, resource, **kwargs)
        await fence.create_schema()
        return fence

    async def create_schema(self) -> None:
        """Create the fence and history tables if missing (idempotent)."""
        async with self.conn.transaction():
            await self.conn.execute(sql.SQL(DDL).format(fence=self._fence, history=self._history))

    async def _fence_holds(self, cur: psycopg.AsyncCursor[tuple[object, ...]], token: int) -> bool:
        """Raise the fence to ``token``; False if a higher token already wrote."""
        await cur.execute(
            sql.SQL(
                "INSERT INTO {f} (resource, token) VALUES (%s, %s) ON CONFLICT (resource) "
                "DO UPDATE SET token = EXCLUDED.token WHERE {f}.token <= EXCLUDED.token"
            ).format(f=self._fence),
            (self.resource, token),
        )
        return cur.rowcount == 1

    async def _record(self, cur: psycopg.AsyncCursor[tuple[object, ...]], token: int, writer: str, ok: bool) -> None:
        if not self.keep_history:
            return
        await cur.execute(
            sql.SQL("INSERT INTO {h} (resource, token, writer, mono, accepted) VALUES (%s, %s, %s, %s, %s)").format(
                h=self._history
            ),
            (self.resource, token, writer, monotonic(), ok),
        )

    @contextlib.asynccontextmanager
    async def transaction(self, token: int, writer: str = "") -> AsyncIterator[psycopg.AsyncCursor[tuple[object, ...]]]:
        refused = False
        try:
            async with self.conn.transaction(), self.conn.cursor() as cur:
                yield cur
                if not await self._fence_holds(cur, token):
                    refused = True
                    raise StaleToken(token, f"a higher token has written to {self.resource!r}")
                await self._record(cur, token, writer, True)
        finally:
            if refused:
                # After the rollback, on its own: a refusal is worth keeping in the
                # history, but never worth hiding the StaleToken behind another error.
                with contextlib.suppress(psycopg.Error):
                    async with self.conn.transaction(), self.conn.cursor() as cur:
                        await self._record(cur, token, writer, False)

    async def history(self) -> list[Write]:
        async with self.conn.cursor() as cur:
            await cur.execute(
                sql.SQL("SELECT seq, token, writer, mono, accepted FROM {h} WHERE resource = %s ORDER BY seq").format(
                    h=self._history
                ),
                (self.resource,),
            )
            rows = await cur.fetchall()
        return [Write(*cast("tuple[int, int, str, float, bool]", row)) for row in rows]

    async def close(self) -> None:
        await self.conn.close()
