"""The claim's first reads on ZooKeeper reach the event loop at once, not one answer at a time.

kazoo reads one answer per pass of its connection thread; each answer handed
to the loop alone woke it, taking the interpreter lock back from that thread
(traced on a handover: the claim's three answers reached the loop 0.3-0.8 ms
apart). Here kazoo's thread is a plain thread setting kazoo's own results.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, cast

import pytest
from kazoo.exceptions import ConnectionLoss, NoNodeError

from sidecar.backends.zk_poll import PollHandler
from sidecar.backends.zookeeper import ZooKeeperElection, _ClaimReads

PATHS = ("/e.epoch", "/e.resigned", "/e/own")


class _Stat:
    version, czxid, mzxid = 3, 7, 9


class _Client:
    """What ``_ClaimReads`` calls on kazoo's client: each read is one of kazoo's results, set later."""

    def __init__(self) -> None:
        self.handler = PollHandler()
        self.sent: list[Any] = []

    def _send(self, path: str) -> Any:
        result = self.handler.async_result()
        self.sent.append(result)
        return result

    get_async = exists_async = _send


def _counting_wakes(loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count what other threads hand to ``loop`` (each one wakes it)."""
    count = [0]
    real = loop.call_soon_threadsafe

    def counted(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
    return count


def _answer_on_kazoos_thread(sent: list[Any], *, fail: bool = False) -> None:
    def answer() -> None:
        sent[0].set((b"record", _Stat()))
        if fail:
            sent[1].set_exception(ConnectionLoss())
        else:
            sent[1].set_exception(NoNodeError())  # no marker
        sent[2].set(_Stat())

    thread = threading.Thread(target=answer)
    thread.start()
    thread.join()  # the loop is held: all three are in before it runs again


async def _linked(sent: list[Any]) -> None:
    """Until each result has its callback: answers set before that reach nobody's thread."""
    async with asyncio.timeout(5):
        while not all(result._callbacks for result in sent):
            await asyncio.sleep(0)


async def test_the_claims_three_answers_wake_the_loop_once(monkeypatch: pytest.MonkeyPatch) -> None:
    client = _Client()
    sent = [client.get_async(PATHS[0]), client.get_async(PATHS[1]), client.exists_async(PATHS[2])]
    wakes = _counting_wakes(asyncio.get_running_loop(), monkeypatch)
    # The claim's first round on answers already sent (self and client are not used then).
    first = asyncio.ensure_future(ZooKeeperElection._first_round(cast(Any, None), cast(Any, None), tuple(sent)))
    await _linked(sent)
    _answer_on_kazoos_thread(sent)
    record, marker, own = await asyncio.wait_for(first, 5)
    assert record[0] == b"record" and marker == (None, None) and own.czxid == 7
    assert wakes[0] == 1, f"{wakes[0]} wake-ups of the loop for three answers"


async def test_the_watch_wakes_the_loop_once_its_reads_are_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    client = _Client()
    reads = _ClaimReads(loop, cast(Any, client), PATHS)
    wakes = _counting_wakes(loop, monkeypatch)
    fire = threading.Thread(target=reads, args=(None,))  # the head's node went: kazoo's thread
    fire.start()
    fire.join()
    for _ in range(5):
        await asyncio.sleep(0)
    assert not reads.fired.is_set(), "the loop was woken before the answers it needs were in"
    _answer_on_kazoos_thread(client.sent)
    await asyncio.wait_for(reads.fired.wait(), 5)
    assert reads.sent is not None
    first = await ZooKeeperElection._first_round(cast(Any, None), cast(Any, None), reads.sent)
    assert first[0][0] == b"record"
    assert wakes[0] == 1, f"{wakes[0]} wake-ups of the loop for one event and three answers"


async def test_a_failed_read_still_wakes_the_loop_and_is_raised_as_the_store_being_unavailable() -> None:
    from sidecar.backends.base import StoreUnavailable

    loop = asyncio.get_running_loop()
    client = _Client()
    reads = _ClaimReads(loop, cast(Any, client), PATHS)
    reads(None)
    _answer_on_kazoos_thread(client.sent, fail=True)  # a dropped connection fails what kazoo holds
    await asyncio.wait_for(reads.fired.wait(), 5)
    assert reads.sent is not None
    with pytest.raises(StoreUnavailable, match="claim"):
        await ZooKeeperElection._first_round(cast(Any, None), cast(Any, None), reads.sent)


async def test_answers_already_in_come_after_the_watch_event_sent_ahead_of_them() -> None:
    """ZooKeeper sends a watch event before the answers that follow the change, and kazoo's
    thread hands the event to the loop before it sets those answers. Awaited once already
    set, they were returned at once, ahead of the event still in the loop's queue (seen as
    test_the_loop_sees_a_watch_event_before_the_answer_sent_after_it failing under load)."""
    from sidecar.backends.zookeeper import _together, _watch

    loop = asyncio.get_running_loop()
    client = _Client()
    answer = client.get_async("/e/own")
    fired, watcher = _watch(loop)

    def kazoos_thread() -> None:  # the event, then the answer after it, both read before the loop runs
        watcher(None)
        answer.set((b"", _Stat()))

    thread = threading.Thread(target=kazoos_thread)
    thread.start()
    thread.join()
    assert answer.ready()
    await _together(answer)
    assert fired.is_set(), "the answer reached the loop ahead of the watch event sent before it"
