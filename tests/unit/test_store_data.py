"""Bad store data is one line naming the key and the rule, never a traceback (issue 14, item 6)."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.backends.base import EpochRecord, parse_epoch_record, parse_resign_marker
from sidecar.status import render_table


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        (b"garbage", "not JSON"),
        (b'{"epoch": "x"}', "epoch 'x' is not a non-negative integer"),
        (b"[1, 2]", "JSON list"),
        (b'{"epoch": 3, "token": -1}', "token -1"),
        (b'{"epoch": true}', "epoch True"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_a_malformed_epoch_record_is_one_line_naming_the_key(raw: bytes, rule: str) -> None:
    got = parse_epoch_record("e.epoch", raw)
    assert isinstance(got, str) and got.startswith("e.epoch: ") and rule in got and "\n" not in got


def test_epoch_records_old_and_new_parse() -> None:
    assert parse_epoch_record("k", None) == EpochRecord(0, 0)
    assert parse_epoch_record("k", b'{"epoch": 4, "token": 9, "leader": "a"}') == EpochRecord(4, 9, "a")
    rec = EpochRecord(5, 10, "b", "n/1f", 31)
    assert parse_epoch_record("k", rec.encode()) == rec
    # A ZooKeeper session id from a server with myid >= 128 is negative.
    zk = EpochRecord(6, 11, "c", "/n/-37ffffd54e54ffff__lock__0000000001", -0x37FFFFD54E54FFFF)
    assert parse_epoch_record("k", zk.encode()) == zk
    assert "lease" in str(parse_epoch_record("k", b'{"epoch": 1, "token": 2, "lease": 1.5}'))


def test_a_resign_marker_carries_the_request_its_handover_settled_and_stays_as_before_without() -> None:
    from sidecar.backends.base import ResignMarker, SwitchoverRequest

    assert ResignMarker(7, "n/1").encode() == b'{"token": 7, "key": "n/1"}'
    request = SwitchoverRequest("c", "op", "r1", 1.0, 30.0)
    marker = parse_resign_marker(ResignMarker(7, "n/1", request).encode())
    assert marker is not None and marker.settled == request
    odd = parse_resign_marker(b'{"token": 7, "key": "n/1", "settled": {"to": 3}}')
    assert odd is not None and odd.settled is None  # a garbled request is none, the marker still counts


def test_an_unreadable_resign_marker_counts_as_no_resign() -> None:
    assert parse_resign_marker(b"junk") is None
    assert parse_resign_marker(b'{"token": "1", "key": "k"}') is None
    marker = parse_resign_marker(b'{"token": 7, "key": "n/1"}')
    assert marker is not None and marker.token == 7


def test_status_shows_keys_and_problems_when_ids_repeat() -> None:
    view: dict[str, Any] = {
        "election": "e",
        "leader": {"id": "a", "token": 5, "epoch": 0},
        "problems": ["e.epoch: not JSON (b'garbage')"],
        "candidates": [
            {"id": "a", "token": 5, "key": "e/1", "lease_ttl_remaining": 2.0, "leader": True, "stale": False},
            {"id": "a", "token": 6, "key": "e/2", "lease_ttl_remaining": 3.0, "leader": False, "stale": False},
        ],
    }
    out = render_table(view)
    assert "KEY" in out and "e/2" in out and "duplicate id" in out
    assert "problem: e.epoch: not JSON" in out
    view["candidates"] = view["candidates"][:1]
    assert "KEY" not in render_table(view)


def test_the_epoch_record_carries_the_leaders_ttl_only_when_known() -> None:
    plain = EpochRecord(3, 7, "a", "k", 9)
    assert b"ttl" not in plain.encode()  # ZooKeeper's and older records: byte for byte as before
    assert parse_epoch_record("e", EpochRecord(3, 7, "a", "k", 9, 10).encode()) == EpochRecord(3, 7, "a", "k", 9, 10)
    for bad in (b'"x"', b"-1", b"true", b"1e9"):  # a bad TTL is dropped, never a garbled record
        raw = b'{"epoch": 3, "token": 7, "ttl": ' + bad + b"}"
        assert parse_epoch_record("e", raw) == EpochRecord(3, 7), bad


def test_known_etcd_bugs_follow_the_release_line_and_its_fixes() -> None:
    from sidecar.backends.etcd import known_bugs

    old = known_bugs("3.5.1")
    assert any("#14110" in b for b in old) and any("#13675" in b for b in old), old
    assert not any("#12845" in b for b in known_bugs("3.5.2"))
    assert known_bugs("3.5.14") == [] and known_bugs("3.6.0") == []
    # Each line has its own fix: 3.4.31 lacks the 3.4 backport, and 3.5 fixes say nothing of it.
    line_34 = known_bugs("3.4.31")
    assert line_34 and all("#17705" in b for b in line_34), line_34
    assert known_bugs("3.4.32") == []
    assert known_bugs("garbage") == [] and known_bugs("3.5") == []
