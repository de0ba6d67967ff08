"""Fence writes to ZooKeeper: commit only while our leader node still exists.

The token of a ZooKeeper grant is the ``czxid`` of the winning
ephemeral-sequential node under the election path. A write commits in one
``multi`` (kazoo's ``transaction()``) that starts with a ``check`` of that
node at the version we read: once the sidecar's session has expired or the
node was deleted, the check fails and nothing in the multi is applied. A
later node always has a higher sequence and czxid, so while ours exists it
leads: the guard is "we still lead", checked by the ensemble at commit, and
the history's tokens can only grow.

The adapter finds the node by listing the election's children (lowest
sequence first) and refuses at once unless the first one's czxid is the
token. Each committed multi also creates one persistent-sequential history
node under ``history_path`` (default ``/_fence/NAME``). kazoo is blocking;
its calls run in a worker thread so the event loop never waits on them.

    fence = ZooKeeperFence(kazoo_client, election="orders")   # started, same chroot as the sidecar
    async with fence.transaction(grant.token) as tx:
        tx.set_data("/orders/42", b"shipped")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator

from kazoo.client import KazooClient, TransactionRequest
from kazoo.exceptions import BadVersionError, NoNodeError, RolledBackError

from sidecar.fencing.adapters.base import StaleToken, Write, monotonic

_SEQ = re.compile(r"__lock__(\d{10})$")  # the sidecar's (and kazoo's Election's) candidate nodes


class ZooKeeperFence:
    def __init__(
        self, client: KazooClient, election: str, *, history_path: str = "", keep_history: bool = True
    ) -> None:
        if not election.strip("/"):
            raise ValueError("a ZooKeeper fence needs the election name")
        self.client = client
        self.base = "/" + election.strip("/")
        self.history_path = history_path or "/_fence" + self.base
        # One node per write, forever: right for tests and audits, not for a busy ensemble.
        self.keep_history = keep_history

    def leader_node(self, token: int) -> tuple[str, int]:
        """The leading candidate node and its data version, if its czxid is ``token``."""
        try:
            names = self.client.get_children(self.base)
        except NoNodeError:
            names = []
        for name in sorted((n for n in names if _SEQ.search(n)), key=lambda n: _SEQ.search(n).group(1)):  # type: ignore[union-attr]
            stat = self.client.exists(f"{self.base}/{name}")
            if stat is None:
                continue  # left between the listing and the read: the next one is first now
            if int(stat.czxid) != token:
                break
            return f"{self.base}/{name}", int(stat.version)
        raise StaleToken(token, f"no node under {self.base} leads with czxid {token}")

    def _guard(self, tx: TransactionRequest, node: str, version: int) -> None:
        """The multi's first op: our leader node still exists, unchanged."""
        tx.check(node, version)

    @contextlib.asynccontextmanager
    async def transaction(self, token: int, writer: str = "") -> AsyncIterator[TransactionRequest]:
        node, version = await asyncio.to_thread(self.leader_node, token)
        if self.keep_history:
            await asyncio.to_thread(self.client.ensure_path, self.history_path)
        tx = self.client.transaction()
        self._guard(tx, node, version)
        yield tx
        if self.keep_history:
            record = json.dumps({"token": token, "writer": writer, "mono": monotonic()}).encode()
            tx.create(self.history_path + "/w-", record, sequence=True)
        results = await asyncio.to_thread(tx.commit)
        failures = [r for r in results if isinstance(r, Exception)]
        if not failures:
            return
        if isinstance(results[0], NoNodeError | BadVersionError):
            raise StaleToken(token, f"leader node {node} is gone")
        # One of the body's own ops failed: say which, not the rollback of the others.
        raise next((f for f in failures if not isinstance(f, RolledBackError)), failures[0])

    def _history(self) -> list[Write]:
        try:
            names = sorted(self.client.get_children(self.history_path))
        except NoNodeError:
            return []
        out = []
        for name in names:
            data, _ = self.client.get(f"{self.history_path}/{name}")
            r = json.loads(data)
            out.append(Write(int(name.removeprefix("w-")), int(r["token"]), str(r["writer"]), float(r["mono"])))
        return out

    async def history(self) -> list[Write]:
        return await asyncio.to_thread(self._history)

    async def close(self) -> None:
        await asyncio.to_thread(self.client.stop)
        await asyncio.to_thread(self.client.close)
