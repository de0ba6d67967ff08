"""The registry of stores: the one place that names them.

Each backend is a module with two functions, imported only when used (so
``--help`` never pays for gRPC or kazoo):

* ``check_config(cfg)``: the store's own rules (raise ``ConfigError``);
* ``async connect(cfg, clock) -> Backend``.

Adding a store means writing its module, adding one line to ``BUILTIN`` and
one fixture to the contract suite. Tests register their in-memory store
with ``register()``; it is never offered to ``run``.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    from sidecar.backends.base import Backend
    from sidecar.clock import Clock
    from sidecar.config import Config

BUILTIN: dict[str, str] = {
    "etcd": "sidecar.backends.etcd",
    "zookeeper": "sidecar.backends.zookeeper",
}
_registered: dict[str, str] = dict(BUILTIN)


class BackendModule(Protocol):
    def check_config(self, cfg: Config) -> None: ...

    connect: Callable[[Config, Clock], Awaitable[Backend]]


def register(name: str, module: str) -> None:
    """Make another backend module known (the test harness's memory store)."""
    _registered[name] = module


def known() -> tuple[str, ...]:
    return tuple(_registered)


def load(name: str) -> BackendModule:
    try:
        module = _registered[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(_registered)}") from None
    return cast("BackendModule", importlib.import_module(module))


async def connect(cfg: Config, clock: Clock) -> Backend:
    return await load(cfg.backend).connect(cfg, clock)


@contextlib.asynccontextmanager
async def connected(cfg: Config) -> AsyncIterator[Backend]:
    """A backend for one CLI command, closed when it is done."""
    from sidecar.clock import MonotonicClock

    backend = await connect(cfg, MonotonicClock())
    try:
        yield backend
    finally:
        await backend.close()
