"""kazoo's threading handler, waiting on its sockets with one ``poll()`` call,
and handing our callbacks their results from the connection thread.

kazoo's connection thread waits before every packet it reads, and again
for the header and for the body of each: three waits per packet. Its
handler makes each wait a new epoll set (``epoll_create``, one
``epoll_ctl`` per socket, ``epoll_wait``, ``close``): four or five system
calls, each of which lets go of the GIL and must take it back from the
event loop's thread or kazoo's callback thread. On a handover the
leader's own watches fire just before its resign multi is answered (its
node deleted, the queue changed, the switchover node created and
deleted), and the successor reads on its own wake-up: the handoffs per
packet added up to a millisecond or more per packet on two shared cores
(traced from kazoo's debug log: 1-2 ms between packets that arrived
together). One ``poll()`` is one system call; nothing else changes. kazoo
uses the epoll sets only to escape ``select()``'s limit on descriptor
numbers, which ``poll()`` does not have.

kazoo also runs every completion callback on a worker thread of its own,
and every watch callback on another: two more thread handoffs for each
packet, and no order between a watch event and the answers that follow it
on the wire. Our callbacks (``inline``) only pass a result to the event
loop (``call_soon_threadsafe``, which never blocks), so they run where the
packet was read: one handoff fewer per answer, and the loop sees events and
answers in the order ZooKeeper sent them (it sends a watch event before any
answer that reflects the change). Others still go to kazoo's workers.
"""

from __future__ import annotations

import functools
import logging
import select
from collections.abc import Callable
from typing import Any, TypeVar

from kazoo.handlers.threading import AsyncResult, SequentialThreadingHandler

_READ = select.POLLIN | select.POLLPRI
_FAILED = select.POLLHUP | select.POLLERR
_log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., None])


def inline(fn: F) -> F:
    """Mark a kazoo callback that runs on the connection thread: it must only hand off, never block."""
    fn.kazoo_inline = True  # type: ignore[attr-defined]
    return fn


def _is_inline(fn: Any) -> bool:
    return getattr(fn, "kazoo_inline", False) is True


def _run_inline(fn: Callable[..., None], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # raised into kazoo's reader it would drop the connection; its workers log and go on
        _log.exception("kazoo callback %r failed", fn)


class _InlineResult(AsyncResult):  # type: ignore[misc]  # kazoo is untyped
    """kazoo's result, with ``inline`` callbacks run by whoever sets it (the connection thread)."""

    def _do_callbacks(self) -> None:
        for callback in self._callbacks:
            if _is_inline(callback) or not self._handler.running:
                _run_inline(callback, self)
            else:
                self._handler.completion_queue.put(functools.partial(callback, self))


def _fd(obj: Any) -> int:
    fd = obj if isinstance(obj, int) else obj.fileno()
    if fd < 0:
        raise TypeError(f"Invalid file descriptor: {fd}")  # a closed socket: what kazoo's own select raises
    return int(fd)


class PollHandler(SequentialThreadingHandler):  # type: ignore[misc]  # kazoo is untyped
    def async_result(self) -> AsyncResult:
        return _InlineResult(self)

    def dispatch_callback(self, callback: Any) -> None:
        """A watch event: an ``inline`` watcher runs now, in order with the answers; others queue."""
        if _is_inline(callback.func):
            _run_inline(callback.func, *callback.args)
        else:
            super().dispatch_callback(callback)

    def select(self, rlist: Any, wlist: Any, xlist: Any, timeout: float | None = None) -> tuple[list[Any], ...]:
        """``select.select``'s contract, as kazoo's handler keeps it: ready readers, ready writers, [].

        A descriptor that failed (hung up, error) is reported ready, so the
        read or write that follows raises; a closed socket raises TypeError
        and a descriptor not open ValueError, as with kazoo's. (kazoo's
        reports a socket ready both ways as readable only; kazoo never asks
        both of one socket.)
        """
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be non-negative")
        masks: dict[int, int] = {}
        for obj in rlist:
            fd = _fd(obj)
            masks[fd] = masks.get(fd, 0) | _READ
        for obj in wlist:
            fd = _fd(obj)
            masks[fd] = masks.get(fd, 0) | select.POLLOUT
        poller = select.poll()
        for fd, mask in masks.items():
            poller.register(fd, mask)
        ready = dict(poller.poll(None if timeout is None else timeout * 1000))
        if any(events & select.POLLNVAL for events in ready.values()):
            raise ValueError("Invalid event mask or fd")
        readers = [obj for obj in rlist if ready.get(_fd(obj), 0) & (_READ | _FAILED)]
        writers = [obj for obj in wlist if ready.get(_fd(obj), 0) & (select.POLLOUT | _FAILED)]
        return readers, writers, []
