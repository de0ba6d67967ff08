"""ZooKeeper's ``multiRead`` as kazoo's connection sends and reads it (sidecar/backends/zk_multiread.py)."""

from __future__ import annotations

import struct
from typing import Any, cast

import pytest
from kazoo.exceptions import ConnectionLoss, MarshallingError, NoAuthError, NoNodeError
from kazoo.protocol.serialization import GetData, MultiHeader, write_buffer, write_string
from kazoo.protocol.states import ZnodeStat

from sidecar.backends.zk_multiread import MultiRead, multi_read_supported, send_reads
from sidecar.backends.zk_poll import PollHandler

STAT = ZnodeStat(7, 9, 1, 2, 3, 0, 0, 0, 5, 0, 7)
_STAT = struct.Struct("!qqqqiiiqiiq")  # ZooKeeper's Stat record, as kazoo reads it


@pytest.mark.parametrize(
    ("version", "has"),
    [
        ("3.8.0", True),
        ("3.6.0", True),
        ("3.10.1", True),
        ("3.5.10", False),
        ("3.4.14", False),
        ("", False),
        ("x", False),
    ],
)
def test_multiread_is_used_from_zookeeper_3_6_on_and_never_on_an_unknown_version(version: str, has: bool) -> None:
    assert multi_read_supported(version) is has


def test_the_request_is_a_multi_of_getdata_ops_ended_by_done() -> None:
    body = MultiRead(("/a", "/b")).serialize()
    one = MultiHeader(GetData.type, False, -1).serialize()
    expected = one + write_string("/a") + b"\0" + one + write_string("/b") + b"\0" + struct.pack("!iBi", -1, 1, -1)
    assert bytes(body) == bytes(expected)
    assert MultiRead.type == 22


def _answer(*parts: tuple[str, Any]) -> bytes:
    out = b""
    for kind, value in parts:
        if kind == "data":
            out += struct.pack("!iBi", GetData.type, 0, 0) + write_buffer(value) + _STAT.pack(*STAT)
        else:
            out += struct.pack("!iBi", -1, 0, value) + struct.pack("!i", value)
    return out + struct.pack("!iBi", -1, 1, -1)


def test_an_answer_holds_each_reads_data_and_stat_or_its_error() -> None:
    answer = _answer(("data", b"rec"), ("error", NoNodeError.code), ("data", None))
    record, missing, empty = MultiRead.deserialize(answer, 0)
    assert record == (b"rec", STAT) and isinstance(missing, NoNodeError) and empty == (b"", STAT)


def test_an_answer_with_an_op_not_asked_for_is_refused() -> None:
    bogus = struct.pack("!iBi", 5, 0, 0) + struct.pack("!iBi", -1, 1, -1)
    with pytest.raises(MarshallingError):
        MultiRead.deserialize(bogus, 0)


class _Client:
    """kazoo's client as ``send_reads`` uses it: its handler, its chroot, its ``_call``."""

    chroot = "/root"

    def __init__(self) -> None:
        self.handler = PollHandler()
        self.calls: list[tuple[Any, Any]] = []

    def _call(self, request: Any, result: Any) -> None:
        self.calls.append((request, result))


def _outcomes(results: list[Any]) -> list[Any]:
    return [r.exception if r.exception is not None else r.value for r in results]


def test_each_read_gets_its_own_answer_and_a_stat_only_read_answers_as_exists() -> None:
    client = _Client()
    results = send_reads(cast(Any, client), ["/e.epoch", "/e.resigned", "/e/own"], stat_only=(False, False, True))
    ((request, whole),) = client.calls
    assert request.paths == ("/root/e.epoch", "/root/e.resigned", "/root/e/own")
    assert not any(r.ready() for r in results)
    whole.set([(b"rec", STAT), NoNodeError(), NoNodeError()])
    record, marker, own = _outcomes(results)
    assert record == (b"rec", STAT) and isinstance(marker, NoNodeError) and own is None
    client = _Client()
    results = send_reads(cast(Any, client), ["/a", "/b"], stat_only=(False, True))
    client.calls[0][1].set([NoAuthError(), (b"x", STAT)])
    a, b = _outcomes(results)
    assert isinstance(a, NoAuthError) and b == STAT


@pytest.mark.parametrize("failure", ["connection lost", "too few answers"])
def test_a_request_that_failed_as_a_whole_fails_every_read(failure: str) -> None:
    client = _Client()
    results = send_reads(cast(Any, client), ["/a", "/b", "/c"])
    whole = client.calls[0][1]
    if failure == "connection lost":
        whole.set_exception(ConnectionLoss())
    else:
        whole.set([(b"x", STAT)])
    errors = _outcomes(results)
    expected = ConnectionLoss if failure == "connection lost" else MarshallingError
    assert all(isinstance(e, expected) for e in errors), errors
