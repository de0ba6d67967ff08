"""Fencing adapters: make a downstream store refuse a deposed leader's writes.

A grant's token helps only if the resource written to refuses a stale one.
Each module here enforces that inside one store, atomically with the write:

* ``postgres``: a fence row raised in the same transaction as the write
  (psycopg 3); refuses a token lower than the highest seen.
* ``sqlite``: the same rule in one SQLite file (the harness's toy store).
* ``etcd``: a txn guarded by the leader key still existing at the token's
  create revision; refuses once that leadership has ended.
* ``zookeeper``: a ``multi`` with a ``check`` on the leader node; refuses
  once that node is gone.

All share ``Fence`` (``async with fence.transaction(token) as tx``; the body's
writes commit only if the fence holds, else ``StaleToken``, a ``NotLeader``)
and ``history()``. This package imports no store client: each module is
imported only by the code that names it, so the sidecar never loads
psycopg, etcd3aio or kazoo for it.
"""

from sidecar.fencing.adapters.base import Fence, StaleToken, Write

__all__ = ["Fence", "StaleToken", "Write"]
