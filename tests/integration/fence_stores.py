"""Open each fencing adapter the same way, for the contract tests and their child process.

``target`` names the store: a file (sqlite), a conninfo URL (postgres) or
comma-separated endpoints (etcd, zookeeper). ``fenced=False`` opens a
variant with the guard taken out, so a test can show that it fails then.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import psycopg
from kazoo.client import KazooClient, TransactionRequest
from kazoo.exceptions import NoNodeError

from sidecar.fencing.adapters.base import Fence
from sidecar.fencing.adapters.etcd import EtcdFence
from sidecar.fencing.adapters.postgres import PostgresFence
from sidecar.fencing.adapters.sqlite import SqliteFence
from sidecar.fencing.adapters.zookeeper import ZooKeeperFence

STORES = ("sqlite", "postgres", "etcd", "zookeeper")


class UnfencedSqlite(SqliteFence):
    def _fence_holds(self, cur: sqlite3.Cursor, token: int) -> bool:
        return True


class UnfencedPostgres(PostgresFence):
    async def _fence_holds(self, cur: psycopg.AsyncCursor[tuple[object, ...]], token: int) -> bool:
        return True


class UnfencedEtcd(EtcdFence):
    def _guard(self, key: bytes, token: int) -> list[Any]:
        return []


class UnfencedZooKeeper(ZooKeeperFence):
    def _guard(self, tx: TransactionRequest, node: str, version: int) -> None:
        return None


async def open_fence(
    kind: str, target: str, election: str, *, fenced: bool = True, keep_history: bool = True
) -> Fence[Any]:
    if kind == "sqlite":  # the toy store always keeps its history: the checker reads it
        lite = (SqliteFence if fenced else UnfencedSqlite)(target)
        lite.conn.execute("CREATE TABLE IF NOT EXISTS data (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
        return lite
    if kind == "postgres":
        pg = await (PostgresFence if fenced else UnfencedPostgres).connect(
            target, resource=election, keep_history=keep_history
        )
        await pg.conn.execute("CREATE TABLE IF NOT EXISTS fence_test_data (k text PRIMARY KEY, v text NOT NULL)")
        return pg
    if kind == "etcd":
        return await (EtcdFence if fenced else UnfencedEtcd).connect(
            target.split(","), election, keep_history=keep_history
        )
    if kind == "zookeeper":
        client = KazooClient(hosts=target)
        await asyncio.to_thread(client.start, 15)
        await asyncio.to_thread(client.ensure_path, "/_data")
        return (ZooKeeperFence if fenced else UnfencedZooKeeper)(client, election, keep_history=keep_history)
    raise ValueError(f"unknown store {kind!r}; known: {', '.join(STORES)}")


async def put(fence: Fence[Any], tx: Any, key: str, value: str) -> None:
    """Write ``key = value`` as part of the fenced transaction ``tx``."""
    if isinstance(fence, SqliteFence):
        tx.execute("INSERT OR REPLACE INTO data (k, v) VALUES (?, ?)", (key, value))
    elif isinstance(fence, PostgresFence):
        await tx.execute(
            "INSERT INTO fence_test_data (k, v) VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
            (key, value),
        )
    elif isinstance(fence, EtcdFence):
        tx.put(f"_data/{fence.election}/{key}", value)
    elif isinstance(fence, ZooKeeperFence):
        tx.create(f"/_data{fence.base}-{key}", value.encode())
    else:
        raise TypeError(type(fence).__name__)


async def get(fence: Fence[Any], key: str) -> str | None:
    """The committed value of ``key``, or None."""
    if isinstance(fence, SqliteFence):
        row = fence.conn.execute("SELECT v FROM data WHERE k = ?", (key,)).fetchone()
        return None if row is None else str(row[0])
    if isinstance(fence, PostgresFence):
        cur = await fence.conn.execute("SELECT v FROM fence_test_data WHERE k = %s", (key,))
        prow = await cur.fetchone()
        return None if prow is None else str(prow[0])
    if isinstance(fence, EtcdFence):
        resp = await fence.kv.get(f"_data/{fence.election}/{key}")
        return resp.kvs[0].value.decode() if resp.kvs else None
    if isinstance(fence, ZooKeeperFence):
        zk = fence
        try:
            data, _ = await asyncio.to_thread(zk.client.get, f"/_data{zk.base}-{key}")
        except NoNodeError:
            return None
        return bytes(data).decode()
    raise TypeError(type(fence).__name__)
