"""A blocking request/answer over the grant socket, for the CLI.

Connects, skips the ``hello`` and state messages the sidecar sends first,
sends one request and returns the first answer to it.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from sidecar.fencing.protocol import MAX_FRAME, SERVER_TYPES, ProtocolError, decode, encode

_ANSWERS = {"ok", "status", "error"}


def request(path: str, msg: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(encode(msg))
        buf = b""
        while True:
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                reply = decode(line, SERVER_TYPES)
                if reply["type"] in _ANSWERS:
                    return reply
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer within {timeout}s")
            sock.settimeout(remaining)
            chunk = sock.recv(MAX_FRAME)
            if not chunk:
                raise ProtocolError("the sidecar closed the connection without answering")
            buf += chunk
