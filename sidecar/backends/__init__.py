"""Backend factory: the one place that knows which stores exist."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from sidecar.backends.base import Backend
from sidecar.clock import Clock, MonotonicClock
from sidecar.config import Config, endpoint_hostports, etcd_password


def zk_auth(cfg: Config) -> list[tuple[str, str]]:
    """Digest credentials from a file, so they never sit in argv or logs."""
    if not cfg.zk_auth_file:
        return []
    return [("digest", Path(cfg.zk_auth_file).read_text().strip())]


@contextlib.asynccontextmanager
async def connected(cfg: Config) -> AsyncIterator[Backend]:
    """A backend for one CLI command, closed when it is done."""
    backend = await connect(cfg, MonotonicClock())
    try:
        yield backend
    finally:
        await backend.close()


async def connect(cfg: Config, clock: Clock) -> Backend:
    if cfg.backend == "etcd":
        from sidecar.backends.etcd import EtcdBackend

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
    if cfg.backend == "zookeeper":
        from sidecar.backends.zookeeper import ZooKeeperBackend

        return ZooKeeperBackend(
            endpoint_hostports(cfg),
            clock,
            request_timeout=cfg.effective_request_timeout,
            chroot=cfg.zk_chroot,
            auth=zk_auth(cfg),
        )
    if cfg.backend == "memory":
        from sidecar.backends.memory import MemoryBackend, MemoryStore

        return MemoryBackend(MemoryStore(clock))
    raise ValueError(f"unknown backend {cfg.backend!r}")
