"""PollHandler.select keeps the contract kazoo's own handler keeps (sidecar/backends/zk_poll.py)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from kazoo.handlers.threading import SequentialThreadingHandler
from kazoo.protocol.states import Callback

from sidecar.backends.zk_poll import PollHandler, inline


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


HANDLERS = [PollHandler(), SequentialThreadingHandler()]  # ours, and kazoo's as the reference


@pytest.mark.parametrize("handler", HANDLERS, ids=["poll", "kazoo"])
def test_a_socket_is_readable_once_data_waits(
    handler: SequentialThreadingHandler, pair: tuple[socket.socket, ...]
) -> None:
    a, b = pair
    assert handler.select([a], [], [], 0) == ([], [], [])
    b.send(b"x")
    assert handler.select([a], [], [], 1.0) == ([a], [], [])


def test_a_socket_in_both_lists_is_reported_in_each(pair: tuple[socket.socket, ...]) -> None:
    """As select() does (kazoo's reports it readable only; kazoo never asks both of one socket)."""
    handler = PollHandler()
    a, b = pair
    b.send(b"x")
    assert handler.select([a], [a], [], 1.0) == ([a], [a], [])
    a.recv(1)
    assert handler.select([a], [a], [], 1.0) == ([], [a], [])


@pytest.mark.parametrize("handler", HANDLERS, ids=["poll", "kazoo"])
def test_a_hung_up_peer_makes_the_socket_readable(
    handler: SequentialThreadingHandler, pair: tuple[socket.socket, ...]
) -> None:
    a, b = pair
    b.close()
    readers, _, _ = handler.select([a], [], [], 1.0)
    assert readers == [a]
    assert a.recv(1) == b""  # the read that follows sees the end


@pytest.mark.parametrize("handler", HANDLERS, ids=["poll", "kazoo"])
def test_a_closed_socket_raises_type_error(
    handler: SequentialThreadingHandler, pair: tuple[socket.socket, ...]
) -> None:
    a, _ = pair
    a.close()
    with pytest.raises(TypeError):
        handler.select([a], [], [], 0.1)


def test_the_timeout_is_waited_for_and_is_in_seconds(pair: tuple[socket.socket, ...]) -> None:
    a, _ = pair
    started = time.monotonic()
    assert PollHandler().select([a], [], [], 0.05) == ([], [], [])
    assert time.monotonic() - started >= 0.05
    with pytest.raises(ValueError):
        PollHandler().select([a], [], [], -1)


@pytest.fixture
def running() -> Iterator[PollHandler]:
    """A started handler: its completion and callback workers run."""
    handler = PollHandler()
    handler.start()
    yield handler
    handler.stop()


def test_inline_callbacks_run_where_the_result_is_set_and_others_on_kazoos_worker(running: PollHandler) -> None:
    """One thread handoff fewer per answer: ours run on the thread that read the packet."""
    result = running.async_result()
    ran: dict[str, threading.Thread] = {}
    done = threading.Event()

    @inline
    def ours(r: object) -> None:
        ran["ours"] = threading.current_thread()

    def theirs(r: object) -> None:
        ran["theirs"] = threading.current_thread()
        done.set()

    result.rawlink(ours)
    result.rawlink(theirs)
    setter = threading.Thread(target=result.set, args=(42,), name="reader")
    setter.start()
    setter.join(5)
    assert done.wait(5)
    assert ran["ours"] is setter
    assert ran["theirs"] is not setter and ran["theirs"] is not threading.current_thread()
    assert result.get_nowait() == 42


def test_an_inline_callback_that_raises_never_reaches_the_thread_that_set_the_result(running: PollHandler) -> None:
    """Raised in kazoo's reader it would drop the connection; it is logged instead."""
    result = running.async_result()

    @inline
    def broken(r: object) -> None:
        raise RuntimeError("Event loop is closed")

    result.rawlink(broken)
    result.set(1)  # does not raise
    assert result.get_nowait() == 1


def test_inline_watch_callbacks_run_now_and_others_queue(running: PollHandler) -> None:
    seen: list[str] = []
    queued = threading.Event()

    @inline
    def ours(event: object) -> None:
        seen.append(f"ours {event}")

    def theirs(event: object) -> None:
        seen.append(f"theirs {event}")
        queued.set()

    running.dispatch_callback(Callback("watch", ours, ("e1",)))
    assert seen == ["ours e1"]  # before dispatch_callback returned
    running.dispatch_callback(Callback("watch", theirs, ("e2",)))
    assert queued.wait(5) and seen == ["ours e1", "theirs e2"]
