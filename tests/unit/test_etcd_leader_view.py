"""The etcd leader's view of the request key and the queue: its last read, then the events since."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from sidecar.backends.etcd import _DELETE, _LeaderView

PREFIX = b"el/"
SWITCH = b"el.switchover"


def kv(key: bytes, value: str = "", rev: int = 0) -> Any:
    return SimpleNamespace(key=key, value=value.encode(), mod_revision=rev)


def event(kind: str, key: bytes, value: str, rev: int) -> Any:
    return SimpleNamespace(type=_DELETE if kind == "delete" else 0, kv=kv(key, value, rev))


def response(*events: Any) -> Any:
    return SimpleNamespace(canceled=False, compact_revision=0, events=list(events))


def request(to: str) -> str:
    return json.dumps({"to": to, "requested_by": "t", "id": f"r-{to}", "at": 0, "ttl": 1e12})


def view() -> _LeaderView:
    v = _LeaderView("el/a", SWITCH, PREFIX, "a")
    v.reset(None, [kv(b"el/a", "a"), kv(b"el/x", "x"), kv(b"el/y", "y")], revision=10)
    return v


def test_every_delete_of_one_txn_counts() -> None:
    """`etcdctl del --prefix` deletes every key at one revision: all of them leave the view."""
    v = view()
    assert v.seen(response(event("delete", b"el/x", "", 11), event("delete", b"el/y", "", 11))) is None
    assert v.seen(response(event("put", SWITCH, request("y"), 12))) is None, "acted for a deleted target"


def test_events_the_read_already_holds_are_skipped() -> None:
    v = view()
    v.reset(None, [kv(b"el/a", "a"), kv(b"el/x", "x")], revision=20)  # a later read: y left
    assert v.seen(response(event("put", b"el/y", "y", 15))) is None  # an old event, still in flight
    assert v.seen(response(event("put", SWITCH, request("y"), 21))) is None


def test_a_request_for_a_queued_target_is_acted_on_at_once() -> None:
    v = view()
    assert v.seen(response(event("put", SWITCH, request("x"), 11))) is True
    assert v.request is not None and v.request.to == "x"


def test_a_target_that_joins_after_its_request_is_acted_on_when_it_queues() -> None:
    v = view()
    assert v.seen(response(event("put", SWITCH, request("z"), 11))) is None
    assert v.seen(response(event("put", b"el/z", "z", 12))) is True
