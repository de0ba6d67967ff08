"""etcd v3 backend over etcd3aio (asyncio gRPC).

The key layout is that of etcd's own ``concurrency.Election``, so
``etcdctl elect -l NAME`` shows our leader and ``etcdctl elect NAME VALUE``
queues in the same election:

* candidate key ``NAME/<lease id in lowercase hex>``, value = candidate id,
  created with ``create_revision == 0`` in a txn, attached to the lease;
* leader = the key under ``NAME/`` with the lowest create revision; that
  revision is the fencing token;
* ``NAME.epoch`` (outside the prefix, so etcd's tools ignore it) holds the
  term number, bumped by each new leader in a txn that also checks that its
  own key still has the create revision it won with.

The keepalive is ours, not the library's: one LeaseKeepAlive request per
renewal, timed from the moment it is sent. The library's own "alive" flag
is not evidence of anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
from etcd3aio import (
    Etcd3Client,
    EtcdError,
    EtcdPermissionDeniedError,
    EtcdUnauthenticatedError,
    SortOrder,
    SortTarget,
    WatchFilter,
    prefix_range_end,
)

from sidecar.backends.base import (
    Candidate,
    KeyLost,
    OnWait,
    Renewal,
    Session,
    SessionExpired,
    StoreForbidden,
    StoreUnavailable,
)
from sidecar.clock import Clock
from sidecar.config import Config, ConfigError, endpoint_hostports, etcd_password
from sidecar.model import Leadership

TOKEN_REFRESH = 120.0  # seconds; etcd's simple tokens live 300 s by default
_DELETE = 1  # mvccpb.Event.EventType.DELETE


@contextlib.contextmanager
def _store_errors(what: str) -> Iterator[None]:
    """Turn every transport failure into StoreUnavailable, naming the call."""
    try:
        yield
    except (EtcdUnauthenticatedError, EtcdPermissionDeniedError) as exc:
        raise StoreForbidden(f"etcd {what}: {exc}") from exc
    except grpc.aio.AioRpcError as exc:
        details = exc.details() or ""
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT and "user name is empty" in details:
            raise StoreForbidden(
                f"etcd {what}: authentication required (etcd has auth enabled; set --etcd-user)"
            ) from exc
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT and "authentication failed" in details:
            raise StoreForbidden(f"etcd {what}: authentication failed (wrong user or password)") from exc
        raise StoreUnavailable(f"etcd {what}: {exc.code().name}: {details}") from exc
    except (EtcdError, TimeoutError, OSError) as exc:
        raise StoreUnavailable(f"etcd {what}: {str(exc) or type(exc).__name__}") from exc


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


class EtcdBackend:
    """One gRPC channel to the cluster, shared by sessions and elections."""

    def __init__(
        self,
        endpoints: list[str],
        clock: Clock,
        *,
        request_timeout: float = 2.0,
        ca_file: str = "",
        cert_file: str = "",
        key_file: str = "",
        tls_server_name: str = "",
        user: str = "",
        password: str = "",
    ) -> None:
        self._user = user
        self._password = password
        self._refresher: Any = None
        self.client = Etcd3Client(
            endpoints,
            # One attempt per call: we retry ourselves, on our own clock, and a
            # library retry would hide how long the store has been silent.
            rpc_max_attempts=1,
            tls_server_name=tls_server_name or None,
            ca_cert=_read(ca_file),
            cert_chain=_read(cert_file) if ca_file else None,
            cert_key=_read(key_file) if ca_file else None,
        )
        self.clock = clock
        self.timeout = request_timeout
        self._connected = False

    async def connect(self) -> EtcdBackend:
        if not self._connected:
            await self.client.connect()
            self._connected = True
        return self

    async def authenticate(self) -> None:
        """Log in once (then keep the token fresh); a no-op without a user."""
        if not self._user or self._refresher is not None:
            return
        refresher = self.client.token_refresher(self._user, self._password, interval=TOKEN_REFRESH)
        with _store_errors(f"authenticate as {self._user!r}"):
            async with asyncio.timeout(self.timeout):
                await refresher.__aenter__()
        self._refresher = refresher

    def session(self, ttl: float) -> EtcdSession:
        return EtcdSession(self, int(ttl))

    def election(self, name: str) -> EtcdElection:
        return EtcdElection(self, name)

    def admin(self, name: str) -> EtcdElection:
        # One class serves both roles; the protocols keep each caller to its own part.
        return EtcdElection(self, name)

    async def close(self) -> None:
        if self._refresher is not None:
            await self._refresher.__aexit__(None, None, None)
            self._refresher = None
        if self._connected:
            await self.client.close()
            self._connected = False

    @property
    def kv(self):  # type: ignore[no-untyped-def]
        assert self.client.kv is not None, "connect() first"
        return self.client.kv

    @property
    def lease(self):  # type: ignore[no-untyped-def]
        assert self.client.lease is not None, "connect() first"
        return self.client.lease

    @property
    def watch(self):  # type: ignore[no-untyped-def]
        assert self.client.watch is not None, "connect() first"
        return self.client.watch


class EtcdSession:
    def __init__(self, backend: EtcdBackend, ttl: int) -> None:
        self._b = backend
        self._ttl = ttl
        self._lease = 0

    @property
    def id(self) -> str:
        return f"{self._lease:x}" if self._lease else ""

    async def open(self) -> Renewal:
        await self._b.authenticate()
        sent = self._b.clock.now()
        with _store_errors("lease grant"):
            resp = await self._b.lease.grant(self._ttl, timeout=self._b.timeout)
        if resp.error:
            raise StoreUnavailable(f"etcd lease grant: {resp.error}")
        self._lease = resp.ID
        return Renewal(sent, float(resp.TTL))

    async def keepalive(self) -> Renewal:
        if not self._lease:
            raise SessionExpired("session not open")
        sent = self._b.clock.now()
        stream = self._b.lease.keep_alive(self._lease)
        try:
            with _store_errors("lease keepalive"):
                async with asyncio.timeout(self._b.timeout):
                    async for resp in stream:
                        if resp.TTL <= 0:
                            raise SessionExpired(f"lease {self._lease:x} expired or was revoked")
                        return Renewal(sent, float(resp.TTL))
        finally:
            stream.cancel()
        raise StoreUnavailable("etcd lease keepalive: stream closed without an answer")

    async def close(self) -> None:
        if not self._lease:
            return
        try:
            with _store_errors("lease revoke"):
                await self._b.lease.revoke(self._lease, timeout=self._b.timeout)
        except StoreUnavailable as exc:
            cause = exc.__cause__
            if not (isinstance(cause, grpc.aio.AioRpcError) and cause.code() == grpc.StatusCode.NOT_FOUND):
                raise  # keep the id: the caller may try again when the store is back
        self._lease = 0

    async def abandon(self) -> None:
        # Nothing to tell the store: keepalives are one stream per renewal and
        # none is open between renewals, so forgetting the id is enough.
        self._lease = 0


class EtcdElection:
    def __init__(self, backend: EtcdBackend, name: str) -> None:
        self._b = backend
        self._name = name
        self._prefix = name + "/"
        self._epoch_key = name + ".epoch"
        self._key = ""
        self._rev = 0
        self.wakeups = 0  # watch events that woke this candidate; O(1) per change

    @property
    def name(self) -> str:
        return self._name

    async def _candidate_kvs(self) -> tuple[list[object], int]:
        await self._b.authenticate()
        with _store_errors("range"):
            resp = await self._b.kv.get(
                self._prefix,
                range_end=prefix_range_end(self._prefix),
                sort_order=SortOrder.ASCEND,
                sort_target=SortTarget.CREATE,
                timeout=self._b.timeout,
            )
        return list(resp.kvs), int(resp.header.revision)

    async def campaign(self, session: Session, candidate_id: str, on_wait: OnWait | None = None) -> Leadership:
        if not session.id:
            raise SessionExpired("session not open")
        kv = self._b.kv
        key = self._prefix + session.id
        with _store_errors("campaign txn"):
            resp = await kv.txn(
                compare=[kv.txn_compare_create_revision(key, 0)],
                success=[kv.txn_op_put(key, candidate_id, lease=int(session.id, 16))],
                failure=[kv.txn_op_get(key)],
                timeout=self._b.timeout,
            )
        if resp.succeeded:
            rev = int(resp.header.revision)
        else:
            # Same lease campaigning again (e.g. after a retried request whose
            # first attempt did land): keep our place in the queue.
            rev = int(resp.responses[0].response_range.kvs[0].create_revision)
        self._key, self._rev = key, rev
        await self._wait_for_predecessors(on_wait)
        epoch = await self._bump_epoch(candidate_id)
        return Leadership(candidate_id, rev, epoch)

    async def _wait_for_predecessors(self, on_wait: OnWait | None) -> None:
        while True:
            kvs, revision = await self._candidate_kvs()
            if not any(kv.key.decode() == self._key for kv in kvs):  # type: ignore[attr-defined]
                raise KeyLost(f"candidate key {self._key} vanished while campaigning")
            ahead = [kv for kv in kvs if kv.create_revision < self._rev]  # type: ignore[attr-defined]
            if not ahead:
                return
            if on_wait is not None:
                first = kvs[0]
                on_wait(Leadership(first.value.decode(errors="replace"), int(first.create_revision), 0))  # type: ignore[attr-defined]
            await self._wait_deleted(ahead[-1].key, revision + 1)  # type: ignore[attr-defined]
            self.wakeups += 1

    async def _wait_deleted(self, key: bytes, from_revision: int) -> None:
        stream = self._b.watch.watch(key, start_revision=from_revision, filters=[WatchFilter.NOPUT])
        try:
            with _store_errors("watch"):
                async for resp in stream:
                    if resp.canceled:
                        raise StoreUnavailable(f"etcd watch canceled: {resp.cancel_reason}")
                    if any(ev.type == _DELETE for ev in resp.events):
                        return
        finally:
            await stream.aclose()
        raise StoreUnavailable("etcd watch ended")

    async def _bump_epoch(self, candidate_id: str) -> int:
        kv = self._b.kv
        while True:
            with _store_errors("epoch read"):
                resp = await kv.get(self._epoch_key, timeout=self._b.timeout)
            version = int(resp.kvs[0].version) if resp.kvs else 0
            epoch = (json.loads(resp.kvs[0].value)["epoch"] if resp.kvs else 0) + 1
            record = json.dumps({"epoch": epoch, "token": self._rev, "leader": candidate_id})
            with _store_errors("epoch txn"):
                txn = await kv.txn(
                    compare=[
                        kv.txn_compare_create_revision(self._key, self._rev),
                        kv.txn_compare_version(self._epoch_key, version),
                    ],
                    success=[kv.txn_op_put(self._epoch_key, record)],
                    failure=[kv.txn_op_get(self._key)],
                    timeout=self._b.timeout,
                )
            if txn.succeeded:
                return int(epoch)
            mine = txn.responses[0].response_range.kvs
            if not mine or mine[0].create_revision != self._rev:
                raise KeyLost(f"candidate key {self._key} vanished before the epoch bump")
            # Someone else wrote the epoch between our read and our txn: read again.

    async def resign(self) -> None:
        if not self._key:
            return
        with _store_errors("resign"):
            await self._b.kv.delete(self._key, timeout=self._b.timeout)
        self._key, self._rev = "", 0

    async def wait_lost(self) -> None:
        if not self._key:
            return
        with _store_errors("own key read"):
            resp = await self._b.kv.get(self._key, timeout=self._b.timeout)
        if not resp.kvs or resp.kvs[0].create_revision != self._rev:
            return
        await self._wait_deleted(self._key.encode(), int(resp.header.revision) + 1)

    async def leader(self) -> Leadership | None:
        kvs, revision = await self._candidate_kvs()
        if not kvs:
            return None
        first = kvs[0]
        with _store_errors("epoch read"):
            resp = await self._b.kv.get(self._epoch_key, revision=revision, timeout=self._b.timeout)
        token = int(first.create_revision)  # type: ignore[attr-defined]
        epoch = 0
        if resp.kvs:
            recorded = json.loads(resp.kvs[0].value)
            # Until the new leader bumped the epoch, the recorded term is its
            # predecessor's: report 0 ("not yet confirmed") rather than a lie.
            if recorded.get("token") == token:
                epoch = int(recorded["epoch"])
        return Leadership(first.value.decode(errors="replace"), token, epoch)  # type: ignore[attr-defined]

    async def candidates(self) -> list[Candidate]:
        kvs, _ = await self._candidate_kvs()

        async def ttl_of(lease: int) -> float | None:
            if not lease:
                return None
            with _store_errors("lease ttl"):
                r = await self._b.lease.time_to_live(lease, timeout=self._b.timeout)
            return float(r.TTL) if r.TTL >= 0 else None

        ttls = await asyncio.gather(*(ttl_of(int(kv.lease)) for kv in kvs))  # type: ignore[attr-defined]
        return [
            Candidate(
                kv.value.decode(errors="replace"),  # type: ignore[attr-defined]
                int(kv.create_revision),  # type: ignore[attr-defined]
                kv.key.decode(errors="replace"),  # type: ignore[attr-defined]
                ttl,
                stale=ttl is None or ttl <= 0,
            )
            for kv, ttl in zip(kvs, ttls, strict=True)
        ]

    async def evict(self, candidate_id: str) -> list[str]:
        kvs, _ = await self._candidate_kvs()
        gone = []
        for kv in kvs:
            if kv.value.decode(errors="replace") != candidate_id:  # type: ignore[attr-defined]
                continue
            with _store_errors("evict"):
                if kv.lease:  # type: ignore[attr-defined]
                    await self._b.lease.revoke(int(kv.lease), timeout=self._b.timeout)  # type: ignore[attr-defined]
                else:
                    await self._b.kv.delete(kv.key, timeout=self._b.timeout)  # type: ignore[attr-defined]
            gone.append(kv.key.decode(errors="replace"))  # type: ignore[attr-defined]
        return gone

    async def observe(self) -> AsyncIterator[Leadership | None]:
        current = await self.leader()
        yield current
        # One range covers NAME.epoch and NAME/...: both sort between NAME
        # and the end of the NAME/ prefix.
        stream = self._b.watch.watch(self._name, range_end=prefix_range_end(self._prefix))
        try:
            with _store_errors("watch"):
                async for resp in stream:
                    if not resp.events:
                        continue
                    now = await self.leader()
                    if now != current:
                        current = now
                        yield current
        finally:
            await stream.aclose()

    async def close(self) -> None:
        return None


# -- the registry's entry points (sidecar/backends/__init__.py) -------------

MIN_TTL = 2.0  # etcd's own minimum lease TTL


def check_config(cfg: Config) -> None:
    if cfg.ttl < MIN_TTL:
        raise ConfigError("ttl", cfg.ttl, f"must be >= {MIN_TTL:g} s for etcd (its minimum lease TTL)")
    if cfg.ttl != int(cfg.ttl):
        raise ConfigError("ttl", cfg.ttl, "must be whole seconds for etcd (leases are granted in seconds)")


async def connect(cfg: Config, clock: Clock) -> EtcdBackend:
    return await EtcdBackend(
        endpoint_hostports(cfg),
        clock,
        request_timeout=cfg.effective_request_timeout,
        ca_file=cfg.ca_file,
        cert_file=cfg.cert_file,
        key_file=cfg.key_file,
        tls_server_name=cfg.tls_server_name,
        user=cfg.etcd_user,
        password=etcd_password(cfg) if cfg.etcd_user else "",
    ).connect()
