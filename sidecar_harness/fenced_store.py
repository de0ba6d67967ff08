"""A downstream store that refuses writes with a token lower than one it saw.

This is what fencing tokens are for: a leader that was paused with a write
already in flight has a lower token than its successor, so its late write
is refused here even though it believed it still led. SQLite, one file,
safe for several writer processes (BEGIN IMMEDIATE serialises them).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class Record:
    seq: int
    token: int
    writer: str
    mono: float
    accepted: bool


class FencedStore:
    def __init__(self, path: str | Path) -> None:
        self.conn = sqlite3.connect(str(path), timeout=10, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript(SCHEMA)

    def write(self, token: int, writer: str) -> bool:
        """Append one record stamped with ``token``; False if the fence refused it."""
        mono = time.clock_gettime(time.CLOCK_MONOTONIC)
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            (highest,) = cur.execute("SELECT max_token FROM fence WHERE id = 1").fetchone()
            accepted = token >= highest
            if accepted and token > highest:
                cur.execute("UPDATE fence SET max_token = ? WHERE id = 1", (token,))
            cur.execute(
                "INSERT INTO records (token, writer, mono, accepted) VALUES (?, ?, ?, ?)",
                (token, writer, mono, int(accepted)),
            )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return bool(accepted)

    def records(self) -> list[Record]:
        rows = self.conn.execute("SELECT seq, token, writer, mono, accepted FROM records ORDER BY seq").fetchall()
        return [Record(seq, token, writer, mono, bool(acc)) for seq, token, writer, mono, acc in rows]

    def close(self) -> None:
        self.conn.close()
