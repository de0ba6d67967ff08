"""The etcd leader's view of the request key and the queue: its last read, then the events since."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from sidecar.backends.base import EpochRecord, KeyLost, ResignMarker
from sidecar.backends.etcd import _DELETE, EtcdElection, _LeaderView, _TakenAside

PREFIX = b"el/"
SWITCH = b"el.switchover"
TTLS = b"el.ttl/"


def kv(key: bytes, value: str = "", rev: int = 0) -> Any:
    return SimpleNamespace(key=key, value=value.encode(), mod_revision=rev)


def event(kind: str, key: bytes, value: str, rev: int) -> Any:
    return SimpleNamespace(type=_DELETE if kind == "delete" else 0, kv=kv(key, value, rev))


def response(*events: Any) -> Any:
    return SimpleNamespace(canceled=False, compact_revision=0, events=list(events))


def request(to: str) -> str:
    return json.dumps({"to": to, "requested_by": "t", "id": f"r-{to}", "at": 0, "ttl": 1e12})


def view() -> _LeaderView:
    v = _LeaderView("el/a", SWITCH, PREFIX, TTLS, "a")
    v.reset(None, [kv(b"el/a", "a"), kv(b"el/x", "x"), kv(b"el/y", "y")], [], revision=10)
    return v


def test_every_delete_of_one_txn_counts() -> None:
    """`etcdctl del --prefix` deletes every key at one revision: all of them leave the view."""
    v = view()
    assert v.seen(response(event("delete", b"el/x", "", 11), event("delete", b"el/y", "", 11))) is None
    assert v.seen(response(event("put", SWITCH, request("y"), 12))) is None
    assert not v.acted, "acted for a deleted target"


def test_events_the_read_already_holds_are_skipped() -> None:
    v = view()
    v.reset(None, [kv(b"el/a", "a"), kv(b"el/x", "x")], [], revision=20)  # a later read: y left
    assert v.seen(response(event("put", b"el/y", "y", 15))) is None  # an old event, still in flight
    assert v.seen(response(event("put", SWITCH, request("y"), 21))) is None
    assert not v.acted


def test_a_request_for_a_queued_target_is_acted_on_at_once() -> None:
    v = view()
    assert v.seen(response(event("put", SWITCH, request("x"), 11))) is None  # the watch goes on
    assert v.acted and v.woke.is_set()
    assert v.request is not None and v.request.to == "x"


def test_a_target_that_joins_after_its_request_is_acted_on_when_it_queues() -> None:
    v = view()
    assert v.seen(response(event("put", SWITCH, request("z"), 11))) is None
    assert not v.acted
    assert v.seen(response(event("put", b"el/z", "z", 12))) is None
    assert v.acted


def election(key: bytes, rev: int) -> Any:
    e = EtcdElection(SimpleNamespace(), "el")  # type: ignore[arg-type]
    e._key, e._rev = key.decode(), rev
    return e


def handover_events(marker: bool = True, head_deleted: bool = True) -> list[Any]:
    record = EpochRecord(4, 7, "b", "el/b", 0xB, 3).encode().decode()
    evs = [event("put", b"el.epoch", record, 9)]
    if marker:
        evs.append(event("put", b"el.resigned", ResignMarker(5, "el/a").encode().decode(), 9))
    if head_deleted:
        evs.append(event("delete", b"el/a", "", 9))
    return evs


def judged(e: Any, events: list[Any]) -> tuple[bool | None, list[Any]]:
    handed: list[Any] = []
    verdict = e._head_went(response(*events), head=(b"el/a", 5), handed=handed)
    return verdict, handed


def test_a_handover_is_taken_only_with_its_three_writes() -> None:
    """A record naming us alone (an operator's put) is no handover: the head's key must go
    in the same revision, with the marker that says its orchestrator was stopped."""
    verdict, handed = judged(election(b"el/b", 7), handover_events())
    assert verdict is True and [h.epoch for h in handed] == [4]
    verdict, handed = judged(election(b"el/b", 7), handover_events(marker=False))
    assert verdict is True and handed == [], "led without the head's clean-resign marker"
    verdict, handed = judged(election(b"el/b", 7), handover_events(head_deleted=False))
    assert verdict is None and handed == [], "a record naming us woke us while the head still held its key"
    verdict, handed = judged(election(b"el/b", 8), handover_events())  # our key was re-created since
    assert verdict is True and handed == [], "led on a record naming an older candidacy of ours"


def test_the_next_in_line_whose_key_a_handover_took_knows_it_from_the_event() -> None:
    """A switchover's handover deletes the keys of everyone ahead of its target with the
    leader's: the next in line steps aside at once, with no claim that must fail first;
    its key deleted any other way is a plain KeyLost (the elector registers again)."""
    record = EpochRecord(4, 8, "c", "el/c", 0xC, 3).encode().decode()
    taken = [
        event("put", b"el.epoch", record, 9),
        event("put", b"el.resigned", ResignMarker(5, "el/a").encode().decode(), 9),
        event("delete", b"el/a", "", 9),
        event("delete", b"el/b", "", 9),
    ]
    settled = event("delete", SWITCH, "", 9)
    settled.prev_kv = kv(SWITCH, request("c"), 8)
    settled.HasField = lambda name: name == "prev_kv"
    e = election(b"el/b", 7)
    e._cid = "b"
    with pytest.raises(_TakenAside, match="el/b") as got:
        judged(e, [*taken, settled])
    assert got.value.request.to == "c"
    for events in (
        taken,  # no request settled in the same txn: evicted, not taken aside
        [*taken[2:], settled],  # the head, us and the request at one revision: a wipe (del --prefix)
    ):
        with pytest.raises(KeyLost) as lost:
            judged(e, events)
        assert not isinstance(lost.value, _TakenAside)
    verdict, handed = judged(election(b"el/x", 6), taken[:3])  # someone else's key: not ours to mind
    assert verdict is True and handed == []


def test_what_the_leader_acts_on_stays_when_the_request_is_withdrawn_next() -> None:
    """The watch goes on after acting: a deletion applied before the waiter runs must
    not take the request from under it (an assertion there ended a term as a bug)."""
    v = view()
    v.seen(response(event("put", SWITCH, request("x"), 11)))
    v.seen(response(event("delete", SWITCH, "", 12)))
    assert v.request is None
    assert v.acted is not None and v.acted.to == "x"


def test_a_re_read_older_than_the_view_does_not_drop_the_events_since() -> None:
    """The watch runs on while the periodic re-read is in flight: a candidate that joined
    after the read's revision, already applied, must not vanish when the read lands."""
    v = view()
    v.seen(response(SimpleNamespace(type=0, kv=SimpleNamespace(key=b"el/k", value=b"k", mod_revision=12))))
    v.reset(None, [kv(b"el/a", "a"), kv(b"el/x", "x"), kv(b"el/y", "y")], [], revision=11)
    assert b"el/k" in v._queue, "the read dropped a candidate its watch had already reported"
