"""Fence writes to etcd: commit only while our leadership still holds there.

The token of an etcd grant is the create revision of the winning candidate
key ``NAME/<lease hex>``. A write commits in one txn guarded by
``create_revision(that key) == token``, which is what etcd's own
``Election.Proclaim`` and ``Mutex.IsOwner`` do: once the lease has expired
or the key was deleted, the key is gone (its create revision reads 0, or a
new key of that name has another one) and the txn writes nothing. A key
created later always has a higher create revision, so while ours exists it
is the oldest under ``NAME/``: the guard is "we still lead", checked by the
store at commit, and the history's tokens can only grow.

The adapter finds the key with one range read (``NAME/``, oldest first,
limit 1) and refuses at once if the oldest key is not the token's. Each
committed txn also puts one history entry under ``history_prefix``
(default ``_fence/NAME/``, outside ``NAME/`` so that neither etcd's tools
nor our sidecars take it for a candidate).

    fence = EtcdFence(client, election="orders")   # an etcd3aio Etcd3Client, connected
    async with fence.transaction(grant.token) as tx:
        tx.put("orders/42", "shipped")
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from etcd3aio import Etcd3Client, SortOrder, SortTarget, prefix_range_end

from sidecar.fencing.adapters.base import StaleToken, Write, monotonic


class EtcdTxn:
    """The ops of one fenced txn; ``kv`` builds any other etcd3aio op."""

    def __init__(self, kv: Any) -> None:
        self.kv = kv
        self.ops: list[Any] = []

    def put(self, key: str | bytes, value: str | bytes) -> None:
        self.ops.append(self.kv.txn_op_put(key, value))

    def delete(self, key: str | bytes) -> None:
        self.ops.append(self.kv.txn_op_delete(key))


class EtcdFence:
    def __init__(
        self,
        client: Etcd3Client,
        election: str,
        *,
        history_prefix: str = "",
        keep_history: bool = True,
        timeout: float = 5.0,
    ) -> None:
        if not election:
            raise ValueError("an etcd fence needs the election name")
        self.client = client
        self.election = election
        self.prefix = election + "/"
        self.history_prefix = history_prefix or f"_fence/{election}/"
        # One key per write, forever: right for tests and audits, not for a busy keyspace.
        self.keep_history = keep_history
        self.timeout = timeout

    @classmethod
    async def connect(cls, endpoints: list[str], election: str, **kwargs: Any) -> EtcdFence:
        client = Etcd3Client(endpoints)
        await client.connect()
        return cls(client, election, **kwargs)

    @property
    def kv(self) -> Any:
        assert self.client.kv is not None, "connect the etcd client first"
        return self.client.kv

    async def leader_key(self, token: int) -> bytes:
        """The candidate key whose create revision is ``token``, if it still leads."""
        resp = await self.kv.get(
            self.prefix,
            range_end=prefix_range_end(self.prefix),
            sort_order=SortOrder.ASCEND,
            sort_target=SortTarget.CREATE,
            limit=1,
            timeout=self.timeout,
        )
        if not resp.kvs or int(resp.kvs[0].create_revision) != token:
            raise StaleToken(token, f"no key under {self.prefix} leads with create revision {token}")
        return bytes(resp.kvs[0].key)

    def _guard(self, key: bytes, token: int) -> list[Any]:
        """The txn compares: the leader key still exists at the token's create revision."""
        return [self.kv.txn_compare_create_revision(key, token)]

    @contextlib.asynccontextmanager
    async def transaction(self, token: int, writer: str = "") -> AsyncIterator[EtcdTxn]:
        key = await self.leader_key(token)
        tx = EtcdTxn(self.kv)
        yield tx
        ops = list(tx.ops)
        if not self.keep_history:
            if not ops:
                # Nothing to commit: check the token still leads with a plain range
                # (a compare-only txn counts as read-only in etcd; see below).
                await self.leader_key(token)
                return
            if all(op.WhichOneof("request") == "request_range" for op in ops):
                # Its answers would go nowhere, and etcd 3.5.0-3.5.4 panic (the
                # member exits) when a read-only txn is cancelled mid-range, as our
                # deadline does (docs/design.md, "etcd releases that panic").
                raise ValueError("a fenced etcd txn must put or delete: read with kv.get, then fence the writes")
        else:
            # Zero-padded token first, then a unique tail: keys sort by token, never collide.
            entry = f"{self.history_prefix}{token:020d}-{uuid.uuid4().hex}"
            record = json.dumps({"token": token, "writer": writer, "mono": monotonic()})
            ops.append(self.kv.txn_op_put(entry, record))
        resp = await self.kv.txn(
            compare=self._guard(key, token),
            success=ops,
            failure=[],
            timeout=self.timeout,
        )
        if not resp.succeeded:
            raise StaleToken(token, f"leader key {key.decode(errors='replace')} is gone")

    async def history(self) -> list[Write]:
        resp = await self.kv.get(
            self.history_prefix,
            range_end=prefix_range_end(self.history_prefix),
            sort_order=SortOrder.ASCEND,
            sort_target=SortTarget.CREATE,  # commit order
            timeout=self.timeout,
        )
        out = []
        for kv in resp.kvs:
            r = json.loads(kv.value)
            out.append(Write(int(kv.create_revision), int(r["token"]), str(r["writer"]), float(r["mono"])))
        return out

    async def close(self) -> None:
        await self.client.close()
