"""PollHandler.select keeps the contract kazoo's own handler keeps (sidecar/backends/zk_poll.py)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from kazoo.handlers.threading import SequentialThreadingHandler

from sidecar.backends.zk_poll import PollHandler


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
