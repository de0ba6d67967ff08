"""etcd's gRPC API over grpclib: the calls the etcd backend makes, and nothing else.

Why not grpc.aio, which etcd3aio's channel used: gRPC's C-core threads wake
20-30 times a second on their own backoff after every burst of calls. A bare
client doing nothing but renew a lease every 2 s cost 0.12-0.16 % of a core
that way (issue 16's whole idle budget is 0.15 %) and 43 MiB resident;
the same client on grpclib, gRPC in pure Python on asyncio and h2 with no
threads of its own, 0.04-0.06 % and 29 MiB, for 0.05-0.15 ms more CPU per
call (bench/transport_floor.py, bench/RESULTS.md).

The messages are etcd's generated ones as etcd3aio (pinned) ships them,
imported without importing etcd3aio's package, which imports grpc.

What this keeps of the channel it replaced:

* **Endpoints.** Calls go to one member at a time. A call that fails at the
  transport (refused, reset, cut, no answer within its deadline) closes that
  connection, and the next call goes to the next endpoint. A member that
  answers but cannot serve (UNAVAILABLE: no leader, leader changed;
  DEADLINE_EXCEEDED) sends the next calls to the next endpoint too, but
  its connection stays open for the calls and streams still on it (a
  keepalive stream, watches) and closes when the last of them ends: one
  "leader changed" from a healthy member must not cut the leader's
  keepalive stream. gRPC's round robin spread calls over every
  member and skipped one only once its connection failed, so a member that
  went silent kept getting calls until a keepalive ping went unanswered.
* **HTTP/2 pings** every 10 s, 5 s to answer, as etcd3aio set them, while
  a stream is open: a connection cut without a reset is closed, and its
  streams end.
* **TLS**: the CA, an optional client certificate, the server-name override,
  ALPN h2.
* **The auth token** as ``token`` metadata on every call; a stream carries
  the token it was opened with. A member that no longer knows the token
  (etcd's simple tokens expire per member, and a restarted member knows
  none) answers UNAUTHENTICATED "invalid auth token": ``on_token_rejected``
  tells the backend to log in again at once. With one member at a time,
  the others' copies of the token age unused, so this is the normal way on
  after a failover, not an edge case.
* **Errors**: ``RpcError`` (a status the member sent, by name, and its
  details), ``TransportError`` (everything below gRPC), ``TimeoutError`` (a
  deadline). The backend turns them into its own (``_store_errors``).
"""

from __future__ import annotations

import asyncio
import ssl
import weakref
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Any

from grpclib.client import Channel, StreamStreamMethod, UnaryUnaryMethod
from grpclib.config import Configuration
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.exceptions import ProtocolError as GrpclibProtocolError
from h2.exceptions import H2Error

from sidecar.backends.etcd_messages import pb

PING_EVERY = 10.0  # seconds between HTTP/2 pings (etcd3aio's keepalive_time_ms)
PING_ANSWER_WITHIN = 5.0  # seconds; unanswered, the connection is closed (etcd3aio's keepalive_timeout_ms)
WINDOW = 4 << 20  # bytes; gRPC's default receive limit, as the whole window at once (no BDP probing)


Compare = pb.Compare


class SortOrder(IntEnum):
    NONE = 0
    ASCEND = 1
    DESCEND = 2


class SortTarget(IntEnum):
    KEY = 0
    VERSION = 1
    CREATE = 2
    MOD = 3
    VALUE = 4


class RpcError(Exception):
    """A gRPC status the member answered with: ``code`` is its name (``NOT_FOUND``)."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}" if details else code)
        self.code = code
        self.details = details


class TransportError(Exception):
    """The call never got an answer: connection refused, reset, cut, or the stream ended under it."""


# Below gRPC: what a lost or refused connection raises through grpclib.
_TRANSPORT = (StreamTerminatedError, GrpclibProtocolError, H2Error, ConnectionError, OSError, EOFError)


def prefix_range_end(prefix: str | bytes) -> bytes:
    """The range end that covers every key starting with ``prefix``."""
    b = bytearray(as_bytes(prefix))
    for i in reversed(range(len(b))):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\0"


def as_bytes(data: str | bytes) -> bytes:
    """A key or value as etcd takes it (text is UTF-8)."""
    return data.encode() if isinstance(data, str) else data


def _host_port(endpoint: str) -> tuple[str, int]:
    hostport = endpoint.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


def _tls(ca_file: str, cert_file: str, key_file: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file or None)
    ctx.set_alpn_protocols(["h2"])
    return ctx


class Wire:
    """The connection to the cluster: one member at a time, the next one after a failure."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        ca_file: str = "",
        cert_file: str = "",
        key_file: str = "",
        server_name: str = "",
    ) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoints")
        self._targets = [_host_port(e) for e in endpoints]
        self._ssl = _tls(ca_file, cert_file, key_file) if ca_file else None
        self._config = Configuration(
            _keepalive_time=PING_EVERY,
            _keepalive_timeout=PING_ANSWER_WITHIN,
            # Only while a stream is open (the keepalive stream, a watch): etcd's
            # servers refuse pings on an idle connection, and a unary call has
            # a deadline of its own.
            _keepalive_permit_without_calls=False,
            _http2_max_pings_without_data=0,  # grpclib's default stops after 2 pings with no data sent
            _http2_min_sent_ping_interval_without_data=PING_EVERY,
            http2_connection_window_size=WINDOW,
            http2_stream_window_size=WINDOW,
            ssl_target_name_override=server_name or None,
        )
        self._next = 0
        self._channel: Channel | None = None
        # Each connection's endpoint, for errors; those calls have moved on
        # from; the calls and streams on each. grpclib dials a closed channel
        # again on its next use, so a retired one is closed once its last
        # user ends, and no call starts on it.
        self._target_of: weakref.WeakKeyDictionary[Channel, str] = weakref.WeakKeyDictionary()
        self._retired: weakref.WeakSet[Channel] = weakref.WeakSet()
        self._closed: weakref.WeakSet[Channel] = weakref.WeakSet()
        self._users: dict[Channel, int] = {}
        self._shut = False  # close() was called: no connection is made any more
        self.token: str = ""
        self.on_token_rejected: Callable[[], None] | None = None
        # Set by the backend: what a rejected token raises once logging in
        # again was refused (the credentials no longer work), and the last
        # login that failed otherwise (named in the rejected calls' errors).
        self.login_refused: BaseException | None = None
        self.login_failed = ""
        self.kv = KV(self)
        self.lease = Lease(self)

    def metadata(self, *extra: tuple[str, str]) -> list[tuple[str, str]]:
        return [*((("token", self.token),) if self.token else ()), *extra]

    def channel(self) -> Channel:
        """The connection calls go to now (connected by the first call on it)."""
        if self._shut:
            raise TransportError("etcd: the client was closed")
        if self._channel is None:
            host, port = self._targets[self._next]
            self._channel = Channel(host, port, ssl=self._ssl, config=self._config)
            self._target_of[self._channel] = f"{host}:{port}"
        return self._channel

    def move_on(self, channel: Channel) -> None:
        """The member behind ``channel`` cannot serve: the next calls go to the next endpoint."""
        self._retire(channel)
        if not self._users.get(channel):
            self._close(channel)

    def failed(self, channel: Channel) -> None:
        """A call on ``channel`` failed below gRPC: close it; the next call goes to the next endpoint."""
        self._retire(channel)
        self._close(channel)

    def _retire(self, channel: Channel) -> None:
        if channel is self._channel:
            self._channel = None
            self._next = (self._next + 1) % len(self._targets)
        self._retired.add(channel)

    def _close(self, channel: Channel) -> None:
        self._retired.add(channel)  # a call still on it closes it again when it ends (done)
        self._closed.add(channel)
        channel.close()

    def where(self, channel: Channel) -> str:
        return self._target_of.get(channel, "etcd")

    def closed(self, channel: Channel) -> bool:
        return channel in self._closed

    def use(self, channel: Channel) -> None:
        self._users[channel] = self._users.get(channel, 0) + 1

    def done(self, channel: Channel) -> None:
        """A call or stream on ``channel`` ended: a retired channel's last user closes it
        (again, if the call dialled it after it was closed)."""
        left = self._users.get(channel, 1) - 1
        if left > 0:
            self._users[channel] = left
            return
        self._users.pop(channel, None)
        if channel in self._retired:
            self._close(channel)

    def error(self, exc: BaseException, channel: Channel) -> BaseException:
        """What a failed call raises: RpcError, TransportError or TimeoutError; the connection goes if it failed."""
        if isinstance(exc, GRPCError):
            if exc.status in (Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED):
                self.move_on(channel)  # a member without a leader, or one too slow: ask another
            message = exc.message or ""
            if exc.status is Status.UNAUTHENTICATED and "invalid auth token" in message:
                if self.login_refused is not None:
                    return self.login_refused  # logging in again was refused: that is the news
                if self.on_token_rejected is not None:
                    self.on_token_rejected()
                if self.login_failed:
                    message += f" (the last login failed: {self.login_failed})"
            return RpcError(exc.status.name, message)
        if isinstance(exc, TimeoutError):
            self.failed(channel)
            return exc
        if isinstance(exc, _TRANSPORT):
            self.failed(channel)
            return TransportError(f"{self.where(channel)}: {type(exc).__name__} {exc}".rstrip())
        return exc

    async def unary(self, name: str, request: Any, reply: type, timeout: float | None, *extra: tuple[str, str]) -> Any:
        channel = self.channel()
        self.use(channel)
        method: UnaryUnaryMethod[Any, Any] = UnaryUnaryMethod(channel, name, type(request), reply)
        try:
            return await method(request, timeout=timeout, metadata=self.metadata(*extra))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            mapped = self.error(exc, channel)
            if mapped is exc:
                raise
            raise mapped from exc
        finally:
            self.done(channel)

    def stream(self, name: str, request: type, reply: type, first: Any = None, *extra: tuple[str, str]) -> StreamCall:
        return StreamCall(self, name, request, reply, metadata=self.metadata(*extra), first=first)

    async def status(self, timeout: float | None) -> Any:
        return await self.unary("/etcdserverpb.Maintenance/Status", pb.StatusRequest(), pb.StatusResponse, timeout)

    async def authenticate(self, user: str, password: str, timeout: float | None) -> str:
        resp = await self.unary(
            "/etcdserverpb.Auth/Authenticate",
            pb.AuthenticateRequest(name=user, password=password),
            pb.AuthenticateResponse,
            timeout,
        )
        return str(resp.token)

    def close(self) -> None:
        """Close every connection, the retired ones still serving a stream included;
        a call or stream started from now on fails (TransportError) without dialling."""
        self._shut = True
        for channel in list(self._target_of):
            self._close(channel)
        self._channel = None  # only now: the last reference to it, and grpclib warns of an open one collected


class StreamCall:
    """One bidirectional stream, run by a task of its own.

    The task owns grpclib's stream for its whole life (its ``async with``),
    so the stream is reset and released by grpclib's own exit when the task
    is cancelled (``cancel``: at once, or a moment later). Answers reach the
    reader through a queue. Reading after a cancel raises CancelledError, as
    a cancelled grpc.aio call did, whenever the reset comes.
    """

    _CANCELLED = object()

    def __init__(
        self, wire: Wire, name: str, request: type, reply: type, *, metadata: list[tuple[str, str]], first: Any
    ) -> None:
        self._wire = wire
        self._channel: Channel | None = None  # taken when the task starts: the one current then
        self._method: tuple[str, type, type] = (name, request, reply)
        self._answers: asyncio.Queue[Any] = asyncio.Queue()
        self._open = asyncio.Event()
        self._stream: Any = None
        self._failed: BaseException | None = None
        self._ended = False
        self._cancelled = False
        self._started = False  # the task took its first step
        self._task = asyncio.create_task(self._run(metadata, first))

    async def _run(self, metadata: list[tuple[str, str]], first: Any) -> None:
        self._started = True
        try:
            channel = self._channel = self._wire.channel()
        except TransportError as exc:  # the wire was closed before this task started
            self._failed = exc
            self._answers.put_nowait(exc)
            self._open.set()
            return
        self._wire.use(channel)
        method: StreamStreamMethod[Any, Any] = StreamStreamMethod(channel, *self._method)
        try:
            async with method.open(metadata=metadata) as stream:
                await stream.send_request()
                if self._wire.closed(channel):  # closed while we connected: we dialled it again
                    raise TransportError(f"{self._wire.where(channel)}: connection closed after a failure")
                if first is not None:
                    await stream.send_message(first)
                self._stream = stream
                self._open.set()
                while True:
                    answer = await stream.recv_message()
                    if answer is None:
                        break  # the member ended the stream; its status, if an error, raises on exit
                    self._answers.put_nowait(answer)
            self._answers.put_nowait(None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed = self._wire.error(exc, channel)
            self._answers.put_nowait(self._failed)
        finally:
            self._stream = None
            self._open.set()
            self._wire.done(channel)

    async def write(self, message: Any) -> None:
        await self._open.wait()
        stream = self._stream
        if stream is None:
            raise self._failed or TransportError("etcd stream ended")
        try:
            await stream.send_message(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            assert self._channel is not None  # set before the stream opened
            raise self._wire.error(exc, self._channel) from exc

    async def read(self) -> Any:
        """The next answer; None once the member ended the stream."""
        if self._ended:
            return None
        if self._cancelled:
            raise asyncio.CancelledError
        answer = await self._answers.get()
        if answer is self._CANCELLED or self._cancelled:
            self._answers.put_nowait(self._CANCELLED)  # for any other reader waiting
            raise asyncio.CancelledError
        if answer is None:
            self._ended = True
            return None
        if isinstance(answer, BaseException):
            self._ended = True
            raise answer
        return answer

    def __aiter__(self) -> StreamCall:
        return self

    async def __anext__(self) -> Any:
        answer = await self.read()
        if answer is None:
            raise StopAsyncIteration
        return answer

    def cancel(self, *, reset_after: float = 0.0) -> None:
        """Answer nothing more from now on; reset the stream now, or ``reset_after`` seconds later.

        The reset is grpclib's HTTP/2 work on this loop: 0.15-0.26 ms
        measured, in the loop pass right after the cancel. A watch closed on
        a handover's way (the successor's on its predecessor, as it returns
        its term) put that pass between the cancel and the next step of the
        handover. Until the reset the stream may still take answers; they
        are never read. A stream whose task has not started yet is never
        opened (a review: it dialled a connection and opened the stream
        only to reset it).
        """
        self._cancelled = True
        self._answers.put_nowait(self._CANCELLED)  # wakes a reader waiting now
        if self._task.done():
            return
        if reset_after > 0 and self._started:
            asyncio.get_running_loop().call_later(reset_after, self._task.cancel)
        else:
            self._task.cancel()

    def fail(self) -> None:
        """Cancel, and close the connection the stream was on (no answer in time):
        the next call goes to the next member."""
        self.cancel()
        if self._channel is not None:
            self._wire.failed(self._channel)

    def done(self) -> bool:
        return self._task.done()


class KV:
    """The KV calls, and the txn parts, as etcd3aio's KVService builds them."""

    def __init__(self, wire: Wire) -> None:
        self._w = wire

    async def get(
        self,
        key: str | bytes,
        range_end: str | bytes | None = None,
        revision: int = 0,
        *,
        limit: int = 0,
        sort_order: SortOrder = SortOrder.NONE,
        sort_target: SortTarget = SortTarget.KEY,
        timeout: float | None = None,
    ) -> Any:
        request = pb.RangeRequest(
            key=as_bytes(key),
            range_end=as_bytes(range_end) if range_end is not None else b"",
            revision=revision,
            limit=limit,
            sort_order=int(sort_order),
            sort_target=int(sort_target),
        )
        return await self._w.unary("/etcdserverpb.KV/Range", request, pb.RangeResponse, timeout)

    async def put(self, key: str | bytes, value: str | bytes, *, lease: int = 0, timeout: float | None = None) -> Any:
        request = pb.PutRequest(key=as_bytes(key), value=as_bytes(value), lease=lease)
        return await self._w.unary("/etcdserverpb.KV/Put", request, pb.PutResponse, timeout)

    async def delete(
        self, key: str | bytes, range_end: str | bytes | None = None, *, timeout: float | None = None
    ) -> Any:
        request = pb.DeleteRangeRequest(
            key=as_bytes(key), range_end=as_bytes(range_end) if range_end is not None else b""
        )
        return await self._w.unary("/etcdserverpb.KV/DeleteRange", request, pb.DeleteRangeResponse, timeout)

    async def txn(
        self,
        compare: Sequence[Any],
        success: Sequence[Any],
        failure: Sequence[Any] = (),
        *,
        timeout: float | None = None,
    ) -> Any:
        request = pb.TxnRequest(compare=list(compare), success=list(success), failure=list(failure))
        return await self._w.unary("/etcdserverpb.KV/Txn", request, pb.TxnResponse, timeout)

    @staticmethod
    def _compare(target: int, key: str | bytes, result: int, range_end: str | bytes | None, **field: Any) -> Any:
        compare = Compare(result=result, target=target, key=as_bytes(key), **field)
        if range_end is not None:
            compare.range_end = as_bytes(range_end)
        return compare

    @classmethod
    def txn_compare_value(
        cls, key: str | bytes, value: str | bytes, *, result: int = Compare.EQUAL, range_end: str | bytes | None = None
    ) -> Any:
        return cls._compare(Compare.VALUE, key, result, range_end, value=as_bytes(value))

    @classmethod
    def txn_compare_version(
        cls, key: str | bytes, version: int, *, result: int = Compare.EQUAL, range_end: str | bytes | None = None
    ) -> Any:
        return cls._compare(Compare.VERSION, key, result, range_end, version=version)

    @classmethod
    def txn_compare_create_revision(
        cls,
        key: str | bytes,
        create_revision: int,
        *,
        result: int = Compare.EQUAL,
        range_end: str | bytes | None = None,
    ) -> Any:
        return cls._compare(Compare.CREATE, key, result, range_end, create_revision=create_revision)

    @staticmethod
    def txn_op_put(key: str | bytes, value: str | bytes, *, lease: int = 0) -> Any:
        return pb.RequestOp(request_put=pb.PutRequest(key=as_bytes(key), value=as_bytes(value), lease=lease))

    @staticmethod
    def txn_op_get(key: str | bytes, *, range_end: str | bytes | None = None, revision: int = 0) -> Any:
        end = as_bytes(range_end) if range_end is not None else b""
        return pb.RequestOp(request_range=pb.RangeRequest(key=as_bytes(key), range_end=end, revision=revision))

    @staticmethod
    def txn_op_delete(key: str | bytes, *, range_end: str | bytes | None = None) -> Any:
        end = as_bytes(range_end) if range_end is not None else b""
        return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=as_bytes(key), range_end=end))


class Lease:
    def __init__(self, wire: Wire) -> None:
        self._w = wire

    async def grant(self, ttl: int, *, timeout: float | None = None) -> Any:
        return await self._w.unary(
            "/etcdserverpb.Lease/LeaseGrant", pb.LeaseGrantRequest(TTL=ttl), pb.LeaseGrantResponse, timeout
        )

    async def revoke(self, lease_id: int, *, timeout: float | None = None) -> Any:
        return await self._w.unary(
            "/etcdserverpb.Lease/LeaseRevoke", pb.LeaseRevokeRequest(ID=lease_id), pb.LeaseRevokeResponse, timeout
        )

    async def time_to_live(self, lease_id: int, *, timeout: float | None = None) -> Any:
        request = pb.LeaseTimeToLiveRequest(ID=lease_id)
        return await self._w.unary("/etcdserverpb.Lease/LeaseTimeToLive", request, pb.LeaseTimeToLiveResponse, timeout)

    def keepalive_stream(self) -> StreamCall:
        return self._w.stream("/etcdserverpb.Lease/LeaseKeepAlive", pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse)


def watch_call(wire: Wire, create: Any, *extra: tuple[str, str]) -> StreamCall:
    """A Watch stream with one create request sent; the request side stays open until cancelled."""
    return wire.stream(
        "/etcdserverpb.Watch/Watch", pb.WatchRequest, pb.WatchResponse, pb.WatchRequest(create_request=create), *extra
    )
