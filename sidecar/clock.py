"""Monotonic time, injectable so the elector can be tested without waiting.

Everything that decides leadership reads time through a Clock. The real one
is CLOCK_MONOTONIC, which the orchestrator on the same kernel reads too, so
deadlines can be handed over as absolute values.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    def now(self) -> float:
        return time.clock_gettime(time.CLOCK_MONOTONIC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


async def wait_for(clock: Clock, aw: Awaitable[T], timeout: float) -> T:
    """Like asyncio.wait_for, but the timeout runs on ``clock``.

    Raises TimeoutError (and cancels ``aw``) when the clock passes the timeout
    first.
    """
    if type(clock) is MonotonicClock:
        # The loop's clock is CLOCK_MONOTONIC too, so the timeout can be the
        # loop's own and ``aw`` run in this task: in a task of its own it
        # started a loop pass later, and a handover's resign write is on the path.
        limit = asyncio.timeout(max(0.0, timeout))
        try:
            async with limit:
                return await aw
        except Exception:
            if limit.expired():
                # Whatever the cancelled operation raised on its way out (a
                # review: kazoo's "Cannot close connection until it is
                # stopped" from a close cut short) is not its outcome: the
                # caller is told it timed out, as below.
                raise TimeoutError(f"no answer within {timeout:.3f}s") from None
            raise  # ``aw``'s own, its timeout errors included
    task = asyncio.ensure_future(aw)
    timer = asyncio.ensure_future(clock.sleep(timeout))
    try:
        await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        timer.cancel()
    if task.done():
        return task.result()
    task.cancel()
    # The operation's own outcome no longer matters: the caller is told it
    # timed out, which is what happened from its point of view.
    await reaped(task)
    raise TimeoutError(f"no answer within {timeout:.3f}s")


async def reaped(task: asyncio.Future[Any]) -> None:
    """Wait for ``task``, which we cancelled, to end however it ends; raise only our own cancellation.

    A ``suppress(CancelledError)`` around the wait swallowed a cancellation
    of the waiter that came meanwhile: the elector campaigned on after it
    was cancelled. Such a cancellation is handed on to ``task`` (a task's
    cancel cancels what it awaits), so it can come back as anything ``task``
    ends with, a result or an error of its clean-up included: what tells
    it is our own pending cancellations, counted before and after.
    """
    current = asyncio.current_task()
    before = current.cancelling() if current is not None else 0
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    if current is not None and current.cancelling() > before:
        raise asyncio.CancelledError


class FakeClock:
    """A clock that moves only when a test calls ``advance``."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + max(0.0, seconds), next(self._seq), fut))
        await fut

    async def settle(self, rounds: int = 50) -> None:
        """Let every runnable task run until it blocks again."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def advance(self, seconds: float, step: float = 0.05) -> None:
        """Move time forward in small steps, waking sleepers in order."""
        target = self._now + seconds
        await self.settle()
        while True:
            nxt = min(target, self._now + step)
            while self._sleepers and self._sleepers[0][0] <= nxt:
                when, _, fut = heapq.heappop(self._sleepers)
                self._now = max(self._now, when)
                if not fut.done():
                    fut.set_result(None)
                await self.settle()
            self._now = nxt
            await self.settle()
            if self._now >= target:
                return
