"""Backend factory: the one place that knows which stores exist."""

from __future__ import annotations

from sidecar.backends.base import Backend
from sidecar.clock import Clock
from sidecar.config import Config, endpoint_hostports


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
        ).connect()
    if cfg.backend == "memory":
        from sidecar.backends.memory import MemoryBackend, MemoryStore

        return MemoryBackend(MemoryStore(clock))
    raise ValueError(f"unknown backend {cfg.backend!r}")
