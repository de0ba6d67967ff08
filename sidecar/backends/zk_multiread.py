"""ZooKeeper's ``multiRead``: several reads in one request, one answer.

kazoo has no call for it (ZooKeeper 3.6 added it), but its connection
sends any request record it is handed. The claim's three reads on a
handover's path (the epoch record, the resign marker, our own node) went
as three requests: kazoo's connection thread sends one request, and reads
one answer, per pass, each pass taking the interpreter lock back from the
event loop's thread, and ZooKeeper handles each on its own. Measured from
one kazoo client on a warm server, 200 of each alternated: three
pipelined reads 1.68 ms median (p90 3.06), one ``multiRead`` of the same
three 1.26 ms (p90 2.09), one single read 1.25 ms.

A ``multiRead`` is also one request on the server, whose commit processor
starts no write while a read is in process: its answers are of one
instant, where three requests could straddle a write. The claim does not
rely on that: its checks hold on answers of different instants.

Only ``getData`` and ``getChildren`` may go in one (not ``exists``): a
node's stat is read with ``getData``, and a missing node is that read's
``NoNodeError``, the other reads still answered.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    EXCEPTIONS,
    BadArgumentsError,
    MarshallingError,
    NoNodeError,
    UnimplementedError,
)
from kazoo.protocol.paths import _prefix_root
from kazoo.protocol.serialization import (
    GetData,
    MultiHeader,
    int_struct,
    multiheader_struct,
    read_buffer,
    stat_struct,
)
from kazoo.protocol.states import ZnodeStat

from sidecar.backends.zk_poll import inline

MULTI_READ_SINCE = (3, 6, 0)  # ZOOKEEPER-3402
_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)")


def multi_read_supported(server_version: str) -> bool:
    """Whether a server of this version (``srvr``'s, as ``describe`` learns it) answers ``multiRead``.

    An unknown version (``srvr`` refused, not asked yet) is taken as no:
    the reads then go one by one, as they did before.
    """
    m = _VERSION.match(server_version)
    return m is not None and tuple(int(g) for g in m.groups()) >= MULTI_READ_SINCE


def refused(exc: BaseException) -> bool:
    """Whether a failed ``multiRead`` says the server does not know it (not: the connection failed).

    A server older than 3.6 answers a request type it does not know with
    ``UnimplementedError`` and closes the connection (ZooKeeper's
    UnimplementedRequestProcessor, since 3.4.6: ZOOKEEPER-1495), as 3.8
    does for an op it does not know. An answer that does not parse says
    the same.
    """
    return isinstance(exc, struct.error | MarshallingError | UnimplementedError | BadArgumentsError)


class MultiRead:
    """kazoo's request record for ``multiRead`` (op 22) of ``getData`` reads, as ``Transaction`` is for ``multi``."""

    type = 22  # the op code: kazoo sends ``type`` in the request header

    def __init__(self, paths: tuple[str, ...]) -> None:
        self.paths = paths

    def __repr__(self) -> str:  # kazoo's debug log names the request
        return f"MultiRead(paths={self.paths!r})"

    def serialize(self) -> bytearray:
        b = bytearray()
        for path in self.paths:
            b.extend(MultiHeader(GetData.type, False, -1).serialize() + GetData(path, None).serialize())
        b.extend(multiheader_struct.pack(-1, True, -1))
        return b

    @classmethod
    def deserialize(cls, data: bytes, offset: int) -> list[tuple[bytes, ZnodeStat] | BaseException]:
        """One entry per read, in order: (data, stat), or the error that read met."""
        out: list[tuple[bytes, ZnodeStat] | BaseException] = []
        header, offset = MultiHeader.deserialize(data, offset)
        while not header.done:
            if header.type == GetData.type:
                value, offset = read_buffer(data, offset)
                stat = ZnodeStat._make(stat_struct.unpack_from(data, offset))
                offset += stat_struct.size
                out.append((value or b"", stat))
            elif header.type == -1:
                err = int_struct.unpack_from(data, offset)[0]
                offset += int_struct.size
                out.append(EXCEPTIONS[err]())
            else:
                raise MarshallingError(f"multiRead answered an op of type {header.type}")
            header, offset = MultiHeader.deserialize(data, offset)
        return out


def send_reads(client: KazooClient, paths: Sequence[str], *, stat_only: Sequence[bool] = ()) -> list[Any]:
    """Send one ``multiRead`` of ``paths``; one kazoo result per path, as ``get_async`` would set it.

    ``stat_only[i]``: set path i's result as ``exists_async`` would (the
    stat, or None for a missing node). If the request as a whole fails
    (connection lost, session expired, ``refused``), every result gets
    that error. The results are set on kazoo's connection thread, where
    the answer is read (``zk_poll.inline``). Never blocks.
    """
    stat_only = list(stat_only) or [False] * len(paths)
    handler = client.handler
    whole = handler.async_result()
    each = [handler.async_result() for _ in paths]

    @inline
    def hand_out(result: Any) -> None:
        try:
            answers = result.get_nowait()
            if len(answers) != len(each):
                raise MarshallingError(f"multiRead answered {len(answers)} reads of {len(each)}")
        except BaseException as exc:  # the whole request failed: so did every read
            for one in each:
                one.set_exception(exc)
            return
        for one, answer, stat in zip(each, answers, stat_only, strict=True):
            if isinstance(answer, NoNodeError) and stat:
                one.set(None)
            elif isinstance(answer, BaseException):
                one.set_exception(answer)
            else:
                one.set(answer[1] if stat else answer)

    whole.rawlink(hand_out)
    client._call(MultiRead(tuple(_prefix_root(client.chroot, p) for p in paths)), whole)
    return each
