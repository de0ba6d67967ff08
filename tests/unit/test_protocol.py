"""Grant protocol framing: round trips and every kind of bad input."""

from __future__ import annotations

import json

import pytest

from sidecar.fencing.protocol import (
    CLIENT_TYPES,
    MAX_FRAME,
    SERVER_TYPES,
    ProtocolError,
    decode,
    encode,
    grant_message,
)


def test_grant_round_trip() -> None:
    msg = grant_message(
        election="e", candidate="c", token=7, epoch=3, expires_monotonic=123.5, valid_for_ms=2400, seq=9
    )
    frame = encode(msg)
    assert frame.endswith(b"\n") and frame.count(b"\n") == 1
    back = decode(frame, SERVER_TYPES)
    assert back == {"v": 1, **msg}


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1,2]", "JSON object"),
        (b'{"type":"ack","seq":1}', "version"),
        (b'{"v":2,"type":"ack","seq":1}', "version"),
        (b'{"v":true,"type":"ack","seq":1}', "version"),
        (b'{"v":1,"type":"launch"}', "unknown message type"),
        (b'{"v":1}', "unknown message type"),
        (b'{"v":1,"type":"ack"}', "ack.seq"),
        (b'{"v":1,"type":"ack","seq":"1"}', "ack.seq"),
        (b'{"v":1,"type":"ack","seq":true}', "ack.seq"),
        (b'{"v":1,"type":"grant","leader":true}', "unknown message type"),  # servers only send grants
    ],
)
def test_client_input_is_rejected_with_a_reason(line: bytes, words: str) -> None:
    with pytest.raises(ProtocolError) as err:
        decode(line, CLIENT_TYPES)
    assert words in str(err.value)


def test_oversized_frames_are_refused_both_ways() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(b'{"v":1,"type":"status","pad":"' + b"x" * MAX_FRAME + b'"}', CLIENT_TYPES)
    with pytest.raises(ProtocolError, match="frame limit"):
        encode({"type": "error", "error": "x" * MAX_FRAME})


@pytest.mark.parametrize(
    "msg",
    [
        {"v": 1, "type": "grant", "leader": False, "election": "e", "candidate": "c", "token": 1, "epoch": 1,
         "expires_monotonic": 1.0, "valid_for_ms": 1, "seq": 1},
        {"v": 1, "type": "grant", "leader": True, "election": "e", "candidate": "c", "token": 1, "epoch": 1,
         "expires_monotonic": "soon", "valid_for_ms": 1, "seq": 1},
        {"v": 1, "type": "revoke", "reason": "because"},
        {"v": 1, "type": "follower", "leader": True},
    ],
)  # fmt: skip
def test_server_messages_are_checked_too(msg: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        decode(json.dumps(msg).encode(), SERVER_TYPES)


def test_nan_is_never_sent() -> None:
    with pytest.raises(ValueError):
        encode({"type": "grant", "expires_monotonic": float("nan")})
