"""What every fencing adapter shares: the interface, the refusal, a history entry."""

from __future__ import annotations

import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, TypeVar

from sidecar.fencing.client import NotLeader

TxT_co = TypeVar("TxT_co", covariant=True)


class StaleToken(NotLeader):
    """The store refused a write: its token's leadership is over.

    Never retry the refused write under another token: whoever holds the
    newer token leads now, and the work is theirs to redo or not.
    """

    def __init__(self, token: int, why: str) -> None:
        super().__init__(f"fencing token {token} refused: {why}")
        self.token = token


@dataclass(frozen=True)
class Write:
    """One write the store saw, in the store's commit order."""

    seq: int
    token: int
    writer: str
    mono: float  # the writer's CLOCK_MONOTONIC when it committed (same-host comparisons only)
    accepted: bool = True  # stores that record refusals (SQL) keep them with False


class Fence(Protocol[TxT_co]):
    """A store that commits a transaction only while its token is not stale.

    ``async with fence.transaction(token, writer) as tx:`` hands the body the
    store's own transaction object (a cursor, a list of etcd ops, a kazoo
    transaction); leaving the block commits the body's writes together with
    the fence check and one history entry, or raises ``StaleToken`` and
    commits nothing. An exception from the body commits nothing either.
    """

    def transaction(self, token: int, writer: str = "") -> AbstractAsyncContextManager[TxT_co]: ...

    async def history(self) -> list[Write]:
        """Every recorded write, oldest first."""
        ...

    async def close(self) -> None: ...


def monotonic() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)
