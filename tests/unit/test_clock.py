"""``clock.wait_for``: a timeout on the injected clock, run in the caller's task on the real one."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.clock import FakeClock, MonotonicClock, wait_for


async def test_on_the_real_clock_the_operation_runs_in_the_callers_task() -> None:
    """Issue 16: in a task of its own the operation started a loop pass later (a
    handover's resign write is on the path); on the loop's own clock it needs none."""
    caller = asyncio.current_task()
    ran_in: list[asyncio.Task[object] | None] = []

    async def operation() -> str:
        ran_in.append(asyncio.current_task())
        return "answered"

    assert await wait_for(MonotonicClock(), operation(), 5.0) == "answered"
    assert ran_in == [caller]


async def test_on_the_real_clock_a_timeout_cancels_the_operation_and_says_how_long() -> None:
    cancelled = asyncio.Event()

    async def never() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError, match=r"no answer within 0\.010s"):
        await wait_for(MonotonicClock(), never(), 0.01)
    assert cancelled.is_set()


async def test_on_the_real_clock_what_a_timed_out_operation_raises_on_its_way_out_is_the_timeout() -> None:
    """A review: kazoo's close, cut short by the timeout, raised "Cannot close connection
    until it is stopped" from its clean-up; it went up past every handler of TimeoutError
    and the sidecar exited. The caller is told it timed out, as on the injected clock."""

    async def cleanup_fails() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("Cannot close connection until it is stopped")

    with pytest.raises(TimeoutError, match=r"no answer within 0\.010s"):
        await wait_for(MonotonicClock(), cleanup_fails(), 0.01)


async def test_on_the_real_clock_the_operations_own_timeout_error_is_not_taken_for_ours() -> None:
    async def refuses() -> None:
        raise TimeoutError("the store's own deadline")

    with pytest.raises(TimeoutError, match="the store's own deadline"):
        await wait_for(MonotonicClock(), refuses(), 5.0)


async def test_on_the_real_clock_a_cancelled_caller_is_not_turned_into_a_timeout() -> None:
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.Event().wait()

    caller = asyncio.create_task(wait_for(MonotonicClock(), slow(), 5.0))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_on_an_injected_clock_the_timeout_runs_on_that_clock() -> None:
    clock = FakeClock()
    waiting = asyncio.create_task(wait_for(clock, asyncio.Event().wait(), 3.0))
    await clock.settle()
    assert not waiting.done()
    await clock.advance(3.0)
    with pytest.raises(TimeoutError, match=r"no answer within 3\.000s"):
        await waiting
