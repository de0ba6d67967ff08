"""Fence writes to one SQLite file: the toy store of the demo and the tests.

The same rule as PostgreSQL (refuse a token lower than the highest seen),
kept in a one-row ``fence`` table. ``BEGIN IMMEDIATE`` takes SQLite's single
write lock at the start, so the fence check and the writes are atomic
across processes; it also means a writer paused inside its transaction
holds up every other writer until it resumes (SQLite has one writer at a
time), so pause-prone code should read its grant before, not inside.

Refused writes are recorded too (``accepted = 0``): the checker counts them.
Calls are synchronous underneath (sqlite3 has no asyncio API); they block
the loop for as long as SQLite does, which is fine for a local file.

    fence = SqliteFence("store.db")
    async with fence.transaction(client.token, writer="me") as cur:
        cur.execute("INSERT INTO jobs (name) VALUES (?)", ("x",))
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

from sidecar.fencing.adapters.base import StaleToken, Write, monotonic

SCHEMA = """
CREATE TABLE IF NOT EXISTS fence (id INTEGER PRIMARY KEY CHECK (id = 1), max_token INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    token INTEGER NOT NULL,
    writer TEXT NOT NULL,
    mono REAL NOT NULL,
    accepted INTEGER NOT NULL
);
INSERT OR IGNORE INTO fence (id, max_token) VALUES (1, 0);
"""


class SqliteFence:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.conn = sqlite3.connect(str(path), timeout=10, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript(SCHEMA)

    def _fence_holds(self, cur: sqlite3.Cursor, token: int) -> bool:
        """Raise the fence to ``token``; False if a higher token already wrote."""
        (highest,) = cur.execute("SELECT max_token FROM fence WHERE id = 1").fetchone()
        if token < highest:
            return False
        cur.execute("UPDATE fence SET max_token = ? WHERE id = 1", (token,))
        return True

    def _record(self, cur: sqlite3.Cursor, token: int, writer: str, accepted: bool) -> None:
        cur.execute(
            "INSERT INTO records (token, writer, mono, accepted) VALUES (?, ?, ?, ?)",
            (token, writer, monotonic(), int(accepted)),
        )

    @contextlib.asynccontextmanager
    async def transaction(self, token: int, writer: str = "") -> AsyncIterator[sqlite3.Cursor]:
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
            if not self._fence_holds(cur, token):
                cur.execute("ROLLBACK")
                # The body's writes are gone; the refusal itself is kept for the checker.
                self.conn.execute("BEGIN IMMEDIATE")
                self._record(cur, token, writer, False)
                cur.execute("COMMIT")
                raise StaleToken(token, f"a higher token has written to {self.path}")
            self._record(cur, token, writer, True)
            cur.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                cur.execute("ROLLBACK")
            raise

    async def history(self) -> list[Write]:
        rows = self.conn.execute("SELECT seq, token, writer, mono, accepted FROM records ORDER BY seq").fetchall()
        return [Write(seq, token, writer, mono, bool(acc)) for seq, token, writer, mono, acc in rows]

    async def close(self) -> None:
        self.conn.close()
