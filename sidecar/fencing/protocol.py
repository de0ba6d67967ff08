"""The grant protocol: newline-delimited JSON over a Unix stream socket.

Every message is one JSON object on one line with ``"v": 1`` and ``"type"``.
See docs/protocol.md for the full description an orchestrator in another
language needs. Decoding is strict: anything unexpected raises
ProtocolError, and the server answers it with one ``error`` and closes that
connection only.
"""

from __future__ import annotations

import json
import math
from typing import Any

from sidecar.model import Reason

VERSION = 1
MAX_FRAME = 16 * 1024  # bytes per line, newline included

SERVER_TYPES = frozenset({"hello", "grant", "follower", "revoke", "status", "error", "ok"})
CLIENT_TYPES = frozenset({"ack", "resign", "status"})
REVOKE_REASONS = frozenset(r.value for r in Reason)

# Required fields and their types, per message type.
_INT = (int,)
_NUM = (int, float)
_STR = (str,)
_SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "hello": {"election": _STR, "candidate": _STR, "version": _STR},
    "grant": {
        "leader": (bool,),
        "election": _STR,
        "candidate": _STR,
        "token": _INT,
        "epoch": _INT,
        "expires_monotonic": _NUM,
        "valid_for_ms": _INT,
        "seq": _INT,
    },
    "follower": {"leader": (bool,)},
    "revoke": {"reason": _STR},
    "error": {"error": _STR},
    "ok": {},
    "status": {},
    "ack": {"seq": _INT},
    "resign": {},
}


class ProtocolError(ValueError):
    """Input that does not follow the protocol; the text is sent back as-is."""


def encode(msg: dict[str, Any]) -> bytes:
    body = json.dumps({"v": VERSION, **msg}, separators=(",", ":"), allow_nan=False).encode()
    if len(body) + 1 > MAX_FRAME:
        raise ProtocolError(f"message of {len(body) + 1} bytes exceeds the {MAX_FRAME}-byte frame limit")
    return body + b"\n"


def decode(line: bytes, allowed: frozenset[str]) -> dict[str, Any]:
    """Parse and check one line (with or without its newline)."""
    if len(line) > MAX_FRAME:
        raise ProtocolError(f"frame exceeds {MAX_FRAME} bytes")
    try:
        msg = json.loads(line)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("a message must be a JSON object")
    if msg.get("v") != VERSION or isinstance(msg.get("v"), bool):
        raise ProtocolError(f"unsupported protocol version {msg.get('v')!r}, expected {VERSION}")
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in allowed:
        raise ProtocolError(f"unknown message type {kind!r}")
    for name, types in _SCHEMA.get(kind, {}).items():
        value = msg.get(name)
        # bool is an int in Python; JSON true is never a number here.
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise ProtocolError(f"{kind}.{name} must be {'/'.join(t.__name__ for t in types)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ProtocolError(f"{kind}.{name} must be finite")
    if kind == "revoke" and msg["reason"] not in REVOKE_REASONS:
        raise ProtocolError(f"revoke.reason {msg['reason']!r} is not one of {sorted(REVOKE_REASONS)}")
    if kind == "grant" and msg["leader"] is not True:
        raise ProtocolError("grant.leader must be true")
    if kind == "follower" and msg["leader"] is not False:
        raise ProtocolError("follower.leader must be false")
    return msg


def grant_message(
    *,
    election: str,
    candidate: str,
    token: int,
    epoch: int,
    expires_monotonic: float,
    valid_for_ms: int,
    seq: int,
) -> dict[str, Any]:
    return {
        "type": "grant",
        "leader": True,
        "election": election,
        "candidate": candidate,
        "token": token,
        "epoch": epoch,
        "expires_monotonic": expires_monotonic,
        "valid_for_ms": valid_for_ms,
        "seq": seq,
    }
