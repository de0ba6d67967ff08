"""ZooKeeper backend over kazoo, bridged into asyncio.

Layout, readable by kazoo's own ``Election(client, path).contenders()``:

* ``/<election>/<session hex>__lock__<10-digit sequence>``: one
  ephemeral-sequential node per candidate, data = candidate id;
* leader = lowest sequence; token = the node's ``czxid`` (ZooKeeper's
  transaction ids only grow, so a later candidate's node has a higher one);
* ``/<election>.epoch``: JSON ``{"epoch", "token", "leader"}``, bumped by a
  ``multi`` that also checks the leader's own node (version 0);
* ``/<election>.switchover``: an operator's switchover request (the same
  JSON as on etcd); the epoch ``multi`` also checks its version (or, when
  absent, that it still is: create + delete), and deletes it once settled.

A Session is one ZooKeeper session, that is one KazooClient. kazoo runs
its own thread; every call here uses kazoo's ``*_async`` API, and results
and watch events come back to the event loop with
``loop.call_soon_threadsafe``. Nothing blocks the loop.

The deadline: each keepalive is a ``multi([check('/')])``: a write-path
request, so the member we talk to must forward it to the ZooKeeper leader,
which checks our session and commits it through the quorum. A read or a
ping would be answered by a follower that has lost the leader, for up to
syncLimit x tickTime, while the leader lets our session age. The TTL is
the session timeout the server negotiated (it clamps the requested one),
read from the connect handshake. What runs from which send time is in
``keepalive``. SUSPENDED means "stop trusting now": keepalive raises at
once, so the deadline keeps running from the last answer. LOST, or any
change of session id (kazoo silently opens a fresh session after an
expiry), is a SessionExpired, and it is sticky.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    AuthFailedError,
    BadVersionError,
    ConnectionLoss,
    KazooException,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.retry import KazooRetry
from kazoo.security import make_acl, make_digest_acl

from sidecar.backends.base import (
    COMPLETED,
    DEFAULT_PRIORITY,
    NO_LEAD_SUFFIX,
    NO_REQUEST,
    PRIORITY_STEP_ASIDE,
    RE_READ_WITHIN,
    STEP_ASIDE,
    CampaignReport,
    Candidate,
    EpochRecord,
    KeyLost,
    LockDelay,
    OnWait,
    Renewal,
    ResignMarker,
    Session,
    SessionExpired,
    StoreForbidden,
    StoreUnavailable,
    SwitchoverRequest,
    candidate_id_of,
    encode_candidate,
    leader_should_hand_over,
    parse_candidate,
    parse_epoch_record,
    parse_resign_marker,
    parse_switchover,
    priority_verdict,
    steps_aside_early,
)
from sidecar.backends.zk_multiread import multi_read_supported, send_reads
from sidecar.backends.zk_multiread import refused as multi_read_refused
from sidecar.backends.zk_poll import PollHandler, inline
from sidecar.clock import Clock
from sidecar.config import Config, ConfigError, endpoint_hostports
from sidecar.model import Leadership

NODE_MARK = "__lock__"  # what kazoo's Lock/Election recipes look for
_SEQ = re.compile(r"__lock__(\d{10})$")
_SRVR_VERSION = re.compile(r"^Zookeeper version: ([0-9][^-,\s]*)", re.MULTILINE)
# Session ids are signed 64-bit numbers whose top byte is the server's myid:
# from myid 128 on they are negative, and kazoo formats them with a minus sign.
_SESSION_OF = re.compile(r"(?:^|/)(-?[0-9a-f]{1,16})__lock__\d{10}$")


@contextlib.contextmanager
def _store_errors(what: str) -> Iterator[None]:
    try:
        yield
    except SessionExpiredError as exc:
        raise SessionExpired(f"zookeeper {what}: session expired") from exc
    except (NoAuthError, AuthFailedError) as exc:
        raise StoreForbidden(f"zookeeper {what}: {type(exc).__name__} (credentials or ACL)") from exc
    except (KazooException, KazooTimeoutError, TimeoutError, OSError) as exc:
        raise StoreUnavailable(f"zookeeper {what}: {type(exc).__name__} {exc}".rstrip()) from exc


async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one kazoo ``*_async`` call and await its result on this loop."""
    return await _result(fn(*args, **kwargs))


async def _result(sent: Any) -> Any:
    """Await on this loop the result of a kazoo ``*_async`` call already sent (``_together`` of one)."""
    (outcome,) = await _together(sent)
    return _as_value(outcome)


def _when_answered(sent: tuple[Any, ...], then: Callable[[], None]) -> None:
    """Call ``then`` once each of kazoo's results in ``sent`` is set, on the thread that set the last.

    That is kazoo's connection thread (``zk_poll.inline``), or ours if they
    were all set before we linked: ``then`` must only hand off.
    """
    guard = threading.Lock()
    left = len(sent)

    @inline
    def one_in(_: Any) -> None:
        nonlocal left
        with guard:
            left -= 1
            last = left == 0
        if last:
            then()

    for one in sent:
        one.rawlink(one_in)


def _outcome(result: Any) -> tuple[Any, BaseException | None]:
    try:
        return result.get_nowait(), None
    except BaseException as exc:  # handed to the awaiting coroutine, not lost
        return None, exc


async def _together(*sent: Any) -> list[tuple[Any, BaseException | None]]:
    """Await on this loop kazoo ``*_async`` calls already sent: each one's (value, error), handed over at once.

    Awaited one by one (a gather of single reads, a task each), the claim's
    three answers, read one per pass of kazoo's connection thread, woke the
    loop three times, each taking the interpreter lock back from that
    thread (traced: 0.3-0.8 ms between the first answer at the loop and the
    last). Kept on kazoo's thread until the last one is in, they wake the
    loop once; already in, not at all (one loop pass, for order). A single
    call (``_result``) is the case of one.
    """
    if not all(one.ready() for one in sent):
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def settle() -> None:  # on the loop
            if not fut.done():
                fut.set_result(None)

        def wake() -> None:  # kazoo's thread
            loop.call_soon_threadsafe(settle)

        _when_answered(sent, wake)
        await fut
    else:
        # Already in: kazoo's thread read them, and anything ZooKeeper sent
        # ahead of them (a watch event on the node our own write changed),
        # before we looked. What it handed the loop meanwhile waits in the
        # loop's queue; one pass runs it first, as it ran when we waited
        # (returning at once, the loop saw our delete answered with the
        # watch on that node not yet fired: 2-8 of 300 on a loaded machine).
        await asyncio.sleep(0)
    return [_outcome(one) for one in sent]


def _as_data(outcome: tuple[Any, BaseException | None]) -> tuple[bytes | None, Any]:
    """A ``get_async`` outcome as ``_data`` answers it: (None, None) when the node does not exist."""
    value, error = outcome
    if isinstance(error, NoNodeError):
        return None, None
    if error is not None:
        raise error
    data, stat = value
    return bytes(data or b""), stat


def _as_value(outcome: tuple[Any, BaseException | None]) -> Any:
    value, error = outcome
    if error is not None:
        raise error
    return value


def _queue_of(listed: tuple[Any, BaseException | None]) -> list[str]:
    """The candidate nodes of a ``get_children_async`` outcome, in queue order ([] if no election node)."""
    names, error = listed
    if isinstance(error, NoNodeError):
        return []
    with _store_errors("list candidates"):
        if error is not None:
            raise error
    return sorted((n for n in names if _seq(n) >= 0), key=_seq)


def _switchover_of(read: tuple[Any, BaseException | None]) -> tuple[SwitchoverRequest | None, int]:
    """The request and its node version (-1: absent) of a ``get_async`` outcome of the request node."""
    value, error = read
    if isinstance(error, NoNodeError):
        return None, -1
    with _store_errors("switchover read"):
        if error is not None:
            raise error
    data, stat = value
    return parse_switchover(data), int(stat.version)


def _node_id_of(name: str, read: tuple[Any, BaseException | None]) -> tuple[str, str] | None:
    """(node name, candidate id) of a ``get_async`` outcome of a queued node; None if it is gone."""
    value, error = read
    if isinstance(error, NoNodeError):
        return None
    with _store_errors("read candidate"):
        if error is not None:
            raise error
    return name, parse_candidate((value[0] or b"").decode(errors="replace"))[0]


async def _data(sent: Any) -> tuple[bytes | None, Any]:
    """A ``get_async`` already sent: the node's data and stat; (None, None) when it does not exist."""
    (outcome,) = await _together(sent)
    return _as_data(outcome)


def _watch(loop: asyncio.AbstractEventLoop) -> tuple[asyncio.Event, Callable[[Any], None]]:
    """An asyncio Event and a kazoo watch callback (kazoo's thread) that sets it."""
    fired = asyncio.Event()

    @inline
    def watcher(event: Any) -> None:  # kazoo's connection thread
        loop.call_soon_threadsafe(fired.set)

    return fired, watcher


class _Rewatch:
    """One watch callback for a loop that sets its watches again on every pass.

    kazoo keeps each path's watch callbacks in a set until an event fires
    them: a new callback per pass piled up one entry per retry interval on a
    quiet path for as long as a leader led (measured: 258 after 3 s at a
    10 ms interval; about 43,000 a day at the default 2 s). The same callback
    on every pass stays one entry. ``count`` says how many events it was
    fired for (set in kazoo's thread, read on the loop): a change since a
    read shows as a count moved since the read was sent.
    """

    kazoo_inline = True  # runs on kazoo's connection thread (zk_poll.inline)

    def __init__(self, loop: asyncio.AbstractEventLoop, fired: asyncio.Event) -> None:
        self._loop, self.fired = loop, fired  # ``fired``: what a new call of the same loop waits on
        self.count = 0

    def __call__(self, event: Any) -> None:  # kazoo's thread
        self.count += 1
        self._loop.call_soon_threadsafe(self.fired.set)


class _ClaimReads:
    """The watch of the next in line on its head: it sends the claim's first reads itself.

    When the head's node goes, the claim reads the epoch record, the marker
    and our own node first (``_claim``). Sent here, on kazoo's connection
    thread as the event is read (``zk_poll.inline``), they go out on that
    thread's next pass, where from the loop they waited for the loop to
    wake and for the connection thread to wake again: two thread handoffs
    off the handover's path. The loop is woken (``fired``) once their
    answers are in, and takes them (``sent``) without waiting. Sending never
    blocks: kazoo queues the reads and nudges its own socket pair (a closed
    or expired client fails them).
    """

    kazoo_inline = True

    def __init__(
        self, loop: asyncio.AbstractEventLoop, client: KazooClient, paths: tuple[str, str, str], *, multi: bool = False
    ) -> None:
        self._loop, self._client, self._paths, self._multi = loop, client, paths, multi
        self.fired = asyncio.Event()
        self.sent: tuple[Any, Any, Any] | None = None  # set on kazoo's thread before ``fired`` is set

    def __call__(self, event: Any) -> None:  # kazoo's connection thread
        def wake() -> None:
            self._loop.call_soon_threadsafe(self.fired.set)

        if self.sent is not None:
            wake()
            return
        try:
            self.sent = _send_claim_reads(self._client, self._paths, multi=self._multi)
        except BaseException:
            wake()
            raise
        # The loop only awaits the answers once woken: it is woken once, when
        # they are in (a failed read, as a dropped connection fails them, is in too).
        _when_answered(self.sent, wake)


def _send_claim_reads(client: KazooClient, paths: tuple[str, str, str], *, multi: bool) -> tuple[Any, Any, Any]:
    """Send the claim's first reads: the record's and the marker's data, our node's stat.

    ``multi``: in one ``multiRead`` (zk_multiread), where the server has it;
    the results are the same as the three reads' either way.
    """
    record, marker, node = paths
    if multi:
        r, m, n = send_reads(client, paths, stat_only=(False, False, True))
        return r, m, n
    return client.get_async(record), client.get_async(marker), client.exists_async(node)


def _seq(name: str) -> int:
    m = _SEQ.search(name)
    return int(m.group(1)) if m else -1


def _handover_writes(
    record_read: tuple[Any, Any], marker_read: tuple[Any, Any]
) -> tuple[EpochRecord, ResignMarker] | None:
    """The record and the marker, when one handover multi wrote both: both parse, one zxid.

    Only the leader's handover multi writes them together (a bump writes no
    marker; a plain resign, no record): ``_handed_to_us`` and ``_taken_aside``
    each judge the rest. ``*_read``: (data, stat) as ``_read`` answers.
    """
    (raw_record, record_stat), (raw_marker, marker_stat) = record_read, marker_read
    if record_stat is None or marker_stat is None or int(marker_stat.mzxid) != int(record_stat.mzxid):
        return None
    record = parse_epoch_record("", raw_record)
    marker = parse_resign_marker(raw_marker)
    if not isinstance(record, EpochRecord) or marker is None:
        return None
    return record, marker


def _hands_over(liveness: bytes | None) -> bool:
    """Whether a session's liveness node says its sidecar takes a term handed over in a multi."""
    try:
        data = json.loads(liveness or b"{}")
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and data.get("handover") == 1


def _ours_up_to(target: str, known: list[str], ids: dict[str, str]) -> bool:
    """Whether the queue behind the leader, up to ``target``, looks like ours by node name alone.

    Ours are named ``<session hex>__lock__<seq>``; kazoo's recipes put a
    32-digit uuid there. The resign multi checks each node's owner before it
    relies on this; here it only decides whether to nudge the next in line.
    """
    for name in known:
        if not _session_of(name):
            return False
        if ids.get(name) == target:
            return True
    return False


@dataclass(frozen=True)
class _Queued:
    """What a leader knows of a node queued behind it, to hand it a term without reading it again.

    Read once per node name: the czxid and the session a name stands for
    never change, and the version (checked by the handover multi) catches a
    rewrite of the data, the id and priority included.
    """

    czxid: int
    version: int
    candidate_id: str
    priority: int
    able: bool  # ours by owner, and its session's liveness node says it takes a handed-over term


@dataclass(frozen=True)
class _Handover:
    """What a leader's handover multi writes and checks (``_write_handover``)."""

    path: str  # the successor's node
    czxid: int
    version: int  # checked: gone or rewritten since, no multi
    candidate_id: str
    record: EpochRecord  # our term's
    record_version: int
    marked: bool  # the marker node exists (set), or not (created)
    switch_version: int  # the request settled, deleted at it; -1: none, and none may appear
    aside: tuple[tuple[str, int], ...] = ()  # nodes ahead of the successor: (name, version, -1: any)


def _session_of(node: str) -> int:
    """The session id in a candidate node's name (``<session hex>__lock__<seq>``), 0 if none."""
    m = _SESSION_OF.search(node)
    return int(m.group(1), 16) if m else 0


class ZooKeeperBackend:
    def __init__(
        self,
        hosts: list[str],
        clock: Clock,
        *,
        request_timeout: float = 2.0,
        retry_interval: float = 2.0,
        chroot: str = "",
        auth: list[tuple[str, str]] | None = None,
    ) -> None:
        self.hosts = ",".join(hosts) + (("/" + chroot.strip("/")) if chroot.strip("/") else "")
        self.clock = clock
        self.timeout = request_timeout
        self.retry_interval = retry_interval
        self.server_version = ""  # learnt by describe() at start
        self.multi_read_refused = False  # a member refused multiRead: the claim reads one by one
        self.auth = auth or []
        self._observer: ZooKeeperSession | None = None
        # With digest auth, our nodes are ours alone to change or delete;
        # anyone may read them (status, kazoo's contenders()).
        self.acl: list[Any] | None = None
        digests = [cred for scheme, cred in self.auth if scheme == "digest"]
        if digests:
            user, _, password = digests[0].partition(":")
            self.acl = [make_digest_acl(user, password, all=True), make_acl("world", "anyone", read=True)]

    def session(self, ttl: float) -> ZooKeeperSession:
        return ZooKeeperSession(self, ttl)

    @property
    def multi_read(self) -> bool:
        """Whether the claim's reads go in one ``multiRead`` (ZooKeeper 3.6 on, by ``describe``'s version)."""
        return multi_read_supported(self.server_version) and not self.multi_read_refused

    async def describe(self) -> dict[str, str]:
        """Facts about the store for the start-up log and the store_info metric.

        Asked with the ``srvr`` four-letter word, the one ZooKeeper allows by
        default (``4lw.commands.whitelist``; kazoo's ``server_version`` uses
        ``envi``, which is not), on a connection of its own: no session.
        """
        errors = []
        for hostport in self.hosts.split("/", 1)[0].split(","):
            host, _, port = hostport.rpartition(":")
            try:
                answer = await _four_letter(host.strip("[]"), int(port), b"srvr", self.timeout)
            except (OSError, TimeoutError, ValueError) as exc:
                errors.append(f"{hostport}: {str(exc) or type(exc).__name__}")
                continue
            m = _SRVR_VERSION.search(answer)
            if m is None:
                # A server that refuses the command says so in one line.
                errors.append(f"{hostport}: srvr answered {answer.strip()[:80]!r}")
                continue
            self.server_version = m.group(1)
            return {"version": self.server_version}
        raise StoreUnavailable("zookeeper server version: " + "; ".join(errors))

    def election(self, name: str) -> ZooKeeperElection:
        return ZooKeeperElection(self, name)

    def admin(self, name: str) -> ZooKeeperElection:
        # One class serves both roles; the protocols keep each caller to its own part.
        return ZooKeeperElection(self, name)

    async def observer(self) -> KazooClient:
        """A client of our own for reads (status, observe), opened on first use."""
        if self._observer is not None and self._observer.expired:
            # A sticky expiry is right for a lease, not for a reader: start afresh.
            old, self._observer = self._observer, None
            with contextlib.suppress(SessionExpired):  # the expiry is why it goes
                await old.close()
        if self._observer is None:
            s = ZooKeeperSession(self, max(self.timeout * 3, 4.0))
            await s.open()
            self._observer = s
        return self._observer.client

    async def close(self) -> None:
        if self._observer is not None:
            await self._observer.close()
            self._observer = None


class ZooKeeperSession:
    def __init__(self, backend: ZooKeeperBackend, ttl: float) -> None:
        self._b = backend
        self._ttl = ttl
        self._client: KazooClient | None = None
        self._negotiated: float | None = None
        self._state = KazooState.LOST
        self._lock = threading.Lock()
        self._known = threading.Event()
        self._session_id: int | None = None  # the session we opened; any other is not ours
        self._lost = ""  # why the session is gone: sticky, set from kazoo's thread
        self._anchor = 0.0  # send time of the last round trip the leader confirmed
        self._password: bytes | None = None  # kept only while a close is owed
        self.liveness: set[str] = set()  # liveness nodes this session created (one per election)
        self._renewed: asyncio.Future[None] | None = None  # see next_renewal

    def next_renewal(self) -> asyncio.Future[None]:
        """Done when a keepalive of this session is next acknowledged.

        The leader's re-read of its own node goes out right after it
        (``ZooKeeperElection.wait_lost``): paced by the renewals the elector
        makes every retry interval, whatever interval this backend was built
        with. Shared by its waiters: pass it to asyncio.wait, never cancel it.
        """
        if self._renewed is None or self._renewed.done():
            self._renewed = asyncio.get_running_loop().create_future()
        return self._renewed

    @property
    def expired(self) -> bool:
        return bool(self._lost)

    @property
    def ttl(self) -> float:
        """The negotiated session timeout once open (what the server will wait), else the one asked."""
        with self._lock:
            return self._negotiated if self._negotiated is not None else self._ttl

    @property
    def client(self) -> KazooClient:
        if self._client is None:
            raise SessionExpired("session not open")
        self._check_ours(self._client)
        return self._client

    @property
    def id(self) -> str:
        # The id we opened, never kazoo's current one: after an expiry kazoo
        # connects a fresh session under the same client.
        return f"{self._session_id:x}" if self._session_id is not None else ""

    def _check_ours(self, client: KazooClient) -> None:
        """Raise SessionExpired unless kazoo still speaks for the session we opened."""
        if not self._lost and self._session_id is not None:
            current = client.client_id
            if current is not None and current[0] != self._session_id:
                self._lost = f"zookeeper session {self._session_id:x} replaced by {current[0]:x}"
        if self._lost:
            raise SessionExpired(self._lost)

    def _bound_connects(self, client: KazooClient) -> None:
        # kazoo bounds a TCP connect by the whole session timeout and the
        # handshake by timeout / hosts: one silent member would hold a
        # reconnect past the session's life. Bound both by the retry interval
        # (kazoo 2.11, pinned: instance attributes of this client only).
        cap = max(self._b.retry_interval, 0.2)
        handler = client.handler
        create = handler.create_connection

        def create_connection(*args: Any, **kwargs: Any) -> Any:
            if "timeout" in kwargs:
                kwargs["timeout"] = min(kwargs["timeout"], cap)
            return create(*args, **kwargs)

        handler.create_connection = create_connection
        conn = client._connection
        invoke = conn._invoke

        def bounded_invoke(timeout: float, *args: Any, **kwargs: Any) -> Any:
            return invoke(min(timeout, cap), *args, **kwargs)

        conn._invoke = bounded_invoke

    def _capture_negotiated(self, client: KazooClient) -> None:
        # kazoo keeps the negotiated timeout in a local of its handshake; its
        # read timeout is exactly 2/3 of it (kazoo 2.11). We need the real
        # value: the server may clamp our request to something shorter.
        handler = client._connection
        original = handler._connect

        def connect(*args: Any, **kwargs: Any) -> Any:
            read_timeout, connect_timeout = original(*args, **kwargs)
            with self._lock:
                if self._negotiated is None:  # the first session's; a later one is not ours
                    self._negotiated = read_timeout * 1.5 / 1000.0
            self._known.set()
            return read_timeout, connect_timeout

        handler._connect = connect

    def _listen(self, loop: asyncio.AbstractEventLoop) -> Callable[[str], None]:
        def listener(state: str) -> None:  # kazoo's thread
            if state == KazooState.LOST and self._session_id is not None and not self._lost:
                # Set here, not via the loop: a CONNECTED of a replacement
                # session may follow at once, and must not hide this.
                self._lost = f"zookeeper session {self._session_id:x} lost"
            loop.call_soon_threadsafe(setattr, self, "_state", state)

        return listener

    def _new_client(self) -> KazooClient:
        # Reconnect attempts back off to at most the retry interval (kazoo's
        # default grows to an hour) and never stop while we want the session.
        retry = KazooRetry(max_tries=-1, delay=0.05, backoff=2, max_jitter=0.2, max_delay=self._b.retry_interval)
        return KazooClient(
            hosts=self._b.hosts,
            timeout=self._ttl,
            auth_data=self._b.auth or None,
            connection_retry=retry,
            handler=PollHandler(),
        )

    async def open(self) -> Renewal:
        loop = asyncio.get_running_loop()
        client = self._new_client()
        self._bound_connects(client)
        self._capture_negotiated(client)
        client.add_listener(self._listen(loop))
        sent = self._b.clock.now()
        try:
            with _store_errors("connect"):
                await asyncio.to_thread(client.start, max(self._b.timeout, 1.0))
            # kazoo reports CONNECTED from inside the handshake, a moment before
            # the handshake (and our capture of the timeout) has returned.
            await asyncio.to_thread(self._known.wait, max(self._b.timeout, 1.0))
            with self._lock:
                negotiated = self._negotiated
            client_id = client.client_id
            if negotiated is None or client_id is None:
                raise StoreUnavailable("zookeeper: could not learn the negotiated session timeout; not trusting it")
        except BaseException:
            # Whatever ended the open (a timeout, an error, our caller giving
            # up), no client may live on: its pings would keep a session we
            # do not track alive.
            await _shielded(asyncio.to_thread(_stop_quietly, client))
            raise
        self._client = client
        self._session_id = int(client_id[0])
        self._state = KazooState.CONNECTED
        # createSession is committed by the ZooKeeper leader after our send:
        # the session cannot expire before sent + negotiated.
        self._anchor = sent
        return Renewal(sent, negotiated)

    async def keepalive(self) -> Renewal:
        """One renewal confirmed by the ZooKeeper leader.

        ``multi([check('/')])`` is a write: the member forwards it to the
        leader, which fails it if our session is gone and commits it through
        the quorum. A follower cut off from the leader cannot answer it.

        Its success proves the leader had our session alive *after* we sent
        it, not that the leader touched the session then: a follower tells
        the leader which sessions it saw only in its replies to the leader's
        pings (every tickTime/2), on the same link as forwarded requests. So
        this success proves that the touch of the *previous* confirmed round
        trip reached the leader before this request did (one ping came in
        between, as our renewals are further apart than tickTime/2), and the
        session cannot expire before that round trip's send + TTL. The
        deadline runs from there: ``Renewal.valid_from``.
        """
        client = self.client
        if self._state == KazooState.SUSPENDED:
            raise StoreUnavailable("zookeeper connection suspended; not trusting the session until it is back")
        sent = self._b.clock.now()
        with _store_errors("keepalive"):
            async with asyncio.timeout(self._b.timeout):
                tx = client.transaction()
                tx.check("/", -1)
                results = await _call(tx.commit_async)
        self._check_ours(client)  # answered for the session we opened, not a replacement
        # NoNode (a chroot not created yet) went through the leader all the same.
        failed = [r for r in results if isinstance(r, Exception) and not isinstance(r, NoNodeError)]
        if failed:
            raise StoreUnavailable(f"zookeeper keepalive: {type(failed[0]).__name__}")
        with self._lock:
            negotiated = self._negotiated
        assert negotiated is not None
        anchor, self._anchor = self._anchor, sent
        if self._renewed is not None and not self._renewed.done():
            self._renewed.set_result(None)
        return Renewal(sent, negotiated, valid_from=anchor)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            if self._session_id is not None and self._password is not None:
                await self._close_by_id()  # an earlier close failed: try once more
            return
        if self._lost:
            # After an expiry kazoo reconnects by itself, with a session that is not
            # ours: its thread still runs, and close() alone raises a bare Exception
            # ("Cannot close connection until it is stopped"). Stop it first (kazoo
            # bounds the wait), which also ends that stray session.
            await asyncio.to_thread(client.stop)
            await asyncio.to_thread(client.close)
            raise SessionExpired(self._lost)  # nothing of ours left to close
        # stop() closes the session: the server deletes our ephemerals at once.
        # Even if it fails, the client's threads stop, so the server expires
        # the session after its timeout instead of it living on unrenewed.
        client_id = client.client_id
        try:
            with _store_errors("close"):
                await asyncio.to_thread(client.stop)
        except StoreUnavailable:
            # Keep what it takes to close it later from a fresh client (the
            # elector keeps us as an orphan and calls close() again).
            self._password = client_id[1] if client_id is not None else None
            raise
        finally:
            await asyncio.to_thread(client.close)
        self._password = None

    async def _close_by_id(self) -> None:
        """Close our session from a new client that joins it, as a restarted process would."""
        assert self._session_id is not None and self._password is not None
        twin = KazooClient(
            hosts=self._b.hosts,
            client_id=(self._session_id, self._password),
            auth_data=self._b.auth or None,
            handler=PollHandler(),
        )
        self._bound_connects(twin)
        try:
            with _store_errors("close orphan"):
                await asyncio.to_thread(twin.start, max(self._b.timeout, 1.0))
            current = twin.client_id
            if current is None or current[0] != self._session_id:
                # kazoo found it expired and opened a fresh session instead.
                self._password = None
                raise SessionExpired(f"zookeeper session {self._session_id:x} had already expired")
            with _store_errors("close orphan"):
                await asyncio.to_thread(twin.stop)
            self._password = None
        finally:
            await _shielded(asyncio.to_thread(_stop_quietly, twin))

    async def abandon(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(_drop_without_closing, client)


class ZooKeeperElection:
    def __init__(self, backend: ZooKeeperBackend, name: str) -> None:
        self._b = backend
        self._name = name
        self.base = "/" + name.strip("/")
        self.epoch_path = self.base + ".epoch"
        self.marker_path = self.base + ".resigned"
        # One ephemeral node per session that campaigns, deleted by nothing of
        # ours: it goes only when the session ends (docs/design.md, 1b).
        self.sessions_path = self.base + ".sessions"
        self.switch_path = self.base + ".switchover"
        # --no-lead candidates: one ephemeral node per session here, beside
        # the queue (kazoo's recipes never see it, nobody queues behind it).
        self.no_lead_path = self.base + NO_LEAD_SUFFIX
        self._node = ""
        self._value = b""  # our node's data, rewritten as is to wake the next in line
        self._client: KazooClient | None = None
        self._session: ZooKeeperSession | None = None  # the campaign's: its renewals pace the leader's re-reads
        self._czxid = 0
        self._session_id = 0
        self._head: tuple[int, str] | None = None  # the leader we last queued behind: (czxid, node)
        # The request our term ends for (wait_switchover returned it): resign
        # hands the term to its target in its own multi when it can.
        self._acting_on: SwitchoverRequest | None = None
        self._known: list[str] = []  # the other nodes queued when we took the request: read with the queue
        self._known_ids: dict[str, str] = {}  # their candidate ids, read then
        self._acting_version = -1  # the request node's version when we took the request
        # The switchover watch's callbacks on the request node and on the queue
        # (``_Rewatch``), and their counts when the read we act on, and the
        # listing ``_listed`` comes from, were sent: moved since, that read is stale.
        self._request_watch: _Rewatch | None = None
        self._queue_watch: _Rewatch | None = None
        self._acting_mark = -1
        self._listed_mark = -1
        self._led = b""  # the epoch record of the last term we led: never taken as a handover to us
        self._led_version = -1  # its node's version after our write (or the handover's)
        # The queue behind us while we lead, as the switchover watch last listed
        # it, and what each node in it is: a resign hands the term to the next
        # in line from these, with no read on its path (``_pass_on``).
        self._listed: list[str] = []
        self._queue: dict[str, _Queued] = {}
        self._marked: bool | None = None  # whether the marker node exists, as of our term's start
        self.wakeups = 0

    @property
    def name(self) -> str:
        return self._name

    def liveness_path(self, session_id: int) -> str:
        return f"{self.sessions_path}/{session_id:x}"

    async def _children(self, client: KazooClient, watcher: Callable[[Any], None] | None = None) -> list[str]:
        (listed,) = await _together(client.get_children_async(self.base, watcher))
        return _queue_of(listed)

    async def _ensure_liveness(self, client: KazooClient, session: ZooKeeperSession) -> None:
        """Create this session's liveness node once, before its first candidate node.

        Its data is the negotiated timeout: a successor that waits for the
        session to end can say how long that takes at most; and that this
        release understands a term handed over in its leader's resign multi
        (``_hand_over`` hands one only to candidates that say so).
        """
        path = self.liveness_path(self._session_id)
        if path in session.liveness:
            return
        data = json.dumps({"ttl": session.ttl, "handover": 1}).encode()
        with contextlib.suppress(NodeExistsError):  # a create whose answer was lost did land
            await _call(client.create_async, path, data, self._b.acl, True, False, True)
        session.liveness.add(path)

    async def campaign(
        self,
        session: Session,
        candidate_id: str,
        on_wait: OnWait | None = None,
        report: CampaignReport | None = None,
        *,
        priority: int = DEFAULT_PRIORITY,
        no_lead: bool = False,
    ) -> Leadership:
        if not isinstance(session, ZooKeeperSession):
            raise TypeError("a ZooKeeper election needs a ZooKeeper session")
        if no_lead:
            return await self._stand_by(session, candidate_id, on_wait)
        value = self._value = encode_candidate(candidate_id, priority).encode()
        client = session.client
        self._client, self._session = client, session
        self._session_id = int(session.id, 16)
        self._head = None  # only what this campaign saw counts
        self._acting_on, self._known = None, []
        self._listed, self._queue, self._marked = [], {}, None
        self._request_watch = self._queue_watch = None  # a term's own (see wait_switchover)
        loop = asyncio.get_running_loop()
        prefix = f"{session.id}{NODE_MARK}"
        with _store_errors("campaign"):
            await self._ensure_liveness(client, session)
            mine = [n for n in await self._children(client) if n.startswith(prefix)]
            if mine:
                # A create whose answer was lost did land: keep that place.
                node = self.base + "/" + mine[0]
            else:
                node = await _call(client.create_async, self.base + "/" + prefix, value, self._b.acl, True, True, True)
            self._node = node
            _, stat = await _call(client.get_async, node)
            self._czxid = int(stat.czxid)
            told: Leadership | None = None
            woken = False  # by our predecessor's departure: we may head the queue now
            while True:
                pre: Any = None
                if woken:
                    # What the head of the queue reads next goes with the listing:
                    # a switchover's target, woken as its predecessors' nodes went
                    # in the leader's multi, leads on this one round trip.
                    names, *pre = await asyncio.gather(
                        self._children(client),
                        self._read(client, self.epoch_path),
                        self._read(client, self.marker_path),
                        self._read_switchover(client),
                    )
                else:
                    names = await self._children(client)
                woken = False
                own = self._node.rsplit("/", 1)[1]
                if own not in names:
                    taken = await self._taken_aside(client, candidate_id, pre[:2] if pre else None)
                    if taken is None:
                        raise KeyLost(f"candidate node {self._node} vanished while campaigning")
                    if report is not None:
                        report.switchover(STEP_ASIDE, taken)
                    await self._register(client, prefix, value)
                    continue
                ahead = names[: names.index(own)]
                behind = names[names.index(own) + 1 :]
                # Woken with a request pending (the leader acting on one touches
                # its node, which wakes the next in line; each step-aside wakes
                # the next): step aside now if its target is behind us.
                if ahead and behind and await self._steps_aside_early(client, candidate_id, behind, report):
                    await self._requeue(client, prefix, value, candidate_id)
                    continue
                if ahead:
                    first = await self._leadership(client, ahead[0], with_epoch=False)
                    # Next in line behind the leader: if the epoch record is garbled
                    # when we come to lead, this is who led before us. Further back,
                    # we cannot know who will lead before us.
                    self._head = (first.token, self.base + "/" + ahead[0]) if first and len(ahead) == 1 else None
                    if first is not None and on_wait is not None and first != told:
                        on_wait(first)
                        told = first
                    claim_reads: _ClaimReads | None = None
                    watcher: Callable[[Any], None]
                    if len(ahead) == 1:  # next in line: the watch itself sends the claim's first reads
                        claim_reads = _ClaimReads(loop, client, self._claim_paths(), multi=self._b.multi_read)
                        fired, watcher = claim_reads.fired, claim_reads
                    else:
                        fired, watcher = _watch(loop)
                    if await _call(client.exists_async, self.base + "/" + ahead[-1], watcher) is None:
                        continue  # gone between the listing and the watch
                    await fired.wait()
                    self.wakeups += 1
                    if claim_reads is not None:
                        # The head went (or so the watch says): one pipelined
                        # read and one multi instead of the slow path's five
                        # round trips; anything unusual goes the slow way.
                        claimed = await self._claim(
                            client,
                            candidate_id,
                            priority,
                            self.base + "/" + ahead[0],
                            sent=claim_reads.sent,
                        )
                        if claimed is not None:
                            epoch, settled = claimed
                            if settled is not None and report is not None:
                                report.switchover(COMPLETED, settled)
                            break
                    woken = True
                    continue
                # Nobody ahead: a switchover's handover may have started our
                # term in the multi that took our predecessors' nodes (its
                # record and marker come with this read, in the same round trip).
                if pre is None:
                    pre = await asyncio.gather(
                        self._read(client, self.epoch_path),
                        self._read(client, self.marker_path),
                        self._read_switchover(client),
                    )
                record_read, marker_read, (request, version) = pre
                handed = self._handed_to_us(record_read, marker_read)
                if handed is not None:
                    epoch, settled = handed
                    if settled is not None and report is not None:
                        report.switchover(COMPLETED, settled)
                    break
                # The others' priorities: one parallel read of the queue, only
                # when someone else is queued (a lone candidate reads nothing more).
                others = await self._priorities(client, [n for n in names if n != own])
                verdict = priority_verdict(request, candidate_id, priority, others, time.time())
                if verdict in (STEP_ASIDE, PRIORITY_STEP_ASIDE):
                    if report is not None and verdict == STEP_ASIDE:
                        assert request is not None
                        report.switchover(verdict, request)
                    elif report is not None:
                        best = max(others, key=lambda i: others[i])
                        report.priority_step_aside(best, others[best])
                    await self._requeue(client, prefix, value, candidate_id)
                    continue
                # We will lead: first honour the last leader's grant (lock-delay).
                await self._lock_delay(client, session.ttl, report)
                got = await self._bump_epoch(client, candidate_id, report, version, consume=verdict != NO_REQUEST)
                if got is None:
                    continue  # the request changed since we read it: decide again
                if verdict != NO_REQUEST and request is not None and report is not None:
                    report.switchover(verdict, request)
                epoch = got
                break
        return Leadership(candidate_id, self._czxid, epoch)

    async def _steps_aside_early(
        self, client: KazooClient, candidate_id: str, behind: list[str], report: CampaignReport | None
    ) -> bool:
        """Whether a pending request names a candidate queued behind us (see ``steps_aside_early``).

        No watch on the request node: every epoch multi creates and deletes
        it (the only way a multi can say "still absent"), so a watch there
        would wake every waiting candidate on every handover. Asked on each
        wake-up instead; reads the request only when the node exists, and
        the ids behind us only when it names someone else.
        """
        with _store_errors("switchover read"):
            if await _call(client.exists_async, self.switch_path) is None:
                return False
        request, _ = await self._read_switchover(client)
        now = time.time()
        if request is None or not request.pending(now) or request.to in ("", candidate_id):
            return False
        if not steps_aside_early(request, candidate_id, await self._ids(client, behind), now):
            return False
        if report is not None:
            report.switchover(STEP_ASIDE, request)
        return True

    async def _claim(
        self,
        client: KazooClient,
        candidate_id: str,
        priority: int,
        head: str,
        *,
        sent: tuple[Any, Any, Any] | None = None,
    ) -> tuple[int, SwitchoverRequest | None] | None:
        """Lead at once after the head's node went, if nothing calls for the slow path; else None.

        The same decision as the slow path, on reads sent together (kazoo
        pipelines them on the session's connection), in two rounds. First
        the record, the marker and our node (``sent``: already sent by the
        watch, ``_ClaimReads``): a handover multi's record and
        marker naming our node (``_handed_to_us``) end it there, as that
        multi deleted every node ahead of ours. Otherwise the rest, one
        round trip more off the handover's path: we head the listing
        (and the priorities of the others, read only if there are any, do
        not send us aside), the head's node gone
        (an exists watch also fires on a change of its data), no switchover
        request or a pending one naming us or anyone, an epoch record that
        parses, and no lock-delay (no last leader, us, or its token in the
        marker: section 1b). Sequence numbers only grow, so with the head
        gone nobody is ahead of us. The multi checks our node, the record's
        version, the marker's version (no newer marker since we read it) and
        that no request appeared (create + delete), or deletes the request
        we settle at the version read. A garbled record, a request for
        someone else, a missing epoch node, an unclean exit or a failed
        multi: None, and the slow path decides.
        """
        try:
            first = await self._first_round(client, sent)
        except StoreUnavailable:
            if sent is None:
                raise
            # Sent by the watch as the event was read, they were in flight
            # when the connection dropped, and kazoo fails what it holds (a
            # review dropped it in that very pass: the loop's reads, sent a
            # moment later, had waited in kazoo's queue across the reconnect).
            # Once more, on the new connection.
            await self._connection_back(client)
            first = await self._first_round(client, None)
        (raw_record, record_stat), (raw_marker, marker_stat), own_stat = first
        if own_stat is None or int(own_stat.czxid) != self._czxid:
            return None  # the slow path finds out what took our node
        # A record and marker that the leader's handover multi wrote, naming our
        # node: it deleted every node ahead of ours, so nothing more to read
        # (three answers on the handover's path instead of five).
        handed = self._handed_to_us((raw_record, record_stat), (raw_marker, marker_stat))
        if handed is not None:
            return handed  # the leader's multi started our term: nothing to write
        with _store_errors("claim"):
            names, head_stat, switch = await asyncio.gather(
                self._children(client),
                _call(client.exists_async, head),
                self._read(client, self.switch_path),
            )
        own = self._node.rsplit("/", 1)[1]
        if head_stat is not None or record_stat is None or names[:1] != [own]:
            return None
        raw_switch, switch_stat = switch
        request = parse_switchover(raw_switch) if switch_stat is not None else None
        if switch_stat is not None:
            # Only a pending request naming us (or anyone) is settled here; it
            # decides over priorities, as on the slow path.
            if request is None or not request.pending(time.time()) or request.to not in ("", candidate_id):
                return None
        else:
            # The priority rule, on the queue as listed now (as the slow path
            # does): a queued candidate that outranks us takes the vacancy.
            others = await self._priorities(client, names[1:]) if len(names) > 1 else {}
            if priority_verdict(None, candidate_id, priority, others, time.time()) != NO_REQUEST:
                return None
        record = parse_epoch_record(self.epoch_path, raw_record)
        marker = parse_resign_marker(raw_marker)
        if not isinstance(record, EpochRecord):
            return None  # garbled: the slow path repairs it and says so
        if not (record.token in (0, self._czxid) or (marker is not None and marker.token == record.token)):
            return None  # the last leader left uncleanly: the lock-delay decides
        epoch = record.epoch + 1
        written = EpochRecord(epoch, self._czxid, candidate_id, self._node, self._session_id).encode()
        tx = client.transaction()
        tx.check(self._node, 0)
        tx.set_data(self.epoch_path, written, record_stat.version)
        if marker_stat is not None:
            tx.check(self.marker_path, marker_stat.version)
        if switch_stat is not None:
            tx.delete(self.switch_path, switch_stat.version)  # settled: gone unless it changed since our read
        else:
            tx.create(self.switch_path, b"", self._b.acl)  # and none appeared since
            tx.delete(self.switch_path)
        with _store_errors("claim"):
            results = await _call(tx.commit_async)
        if any(isinstance(r, Exception) for r in results):
            return None
        self._led, self._led_version, self._marked = written, int(record_stat.version) + 1, marker_stat is not None
        return epoch, request

    async def _connection_back(self, client: KazooClient) -> None:
        """Wait until kazoo has connected again (at most the session's timeout).

        kazoo counts the connection down before it fails what it holds, and
        up again only once reconnected: reads sent from the loop in between
        could be failed with the rest, so they wait for this.
        """
        loop = asyncio.get_running_loop()
        back: asyncio.Future[None] = loop.create_future()

        def arrived() -> None:
            if not back.done():
                back.set_result(None)

        def listener(state: str) -> None:  # kazoo's thread
            if state == KazooState.CONNECTED:
                loop.call_soon_threadsafe(arrived)

        client.add_listener(listener)
        try:
            if not client.connected:
                ttl = self._session.ttl if self._session is not None else self._b.retry_interval
                with _store_errors("claim"):
                    await asyncio.wait_for(back, ttl)
        finally:
            client.remove_listener(listener)
        if self._session is not None and self._session.expired:
            raise SessionExpired(f"zookeeper claim: session {self._session.id} expired")

    def _claim_paths(self) -> tuple[str, str, str]:
        return self.epoch_path, self.marker_path, self._node

    async def _first_round(self, client: KazooClient, sent: tuple[Any, Any, Any] | None) -> list[Any]:
        """The claim's first answers: the record, the marker, our node's stat (``sent`` or sent now)."""
        if sent is None:
            sent = _send_claim_reads(client, self._claim_paths(), multi=self._b.multi_read)
        record, marker, own = await _together(*sent)
        if record[1] is not None and multi_read_refused(record[1]):
            # The member we are on does not know multiRead, though the one
            # ``srvr`` was asked of did (an ensemble in the middle of an
            # upgrade): one by one from now on.
            self._b.multi_read_refused = True
            record, marker, own = await self._one_by_one_after_refusal(client)
        with _store_errors("claim"):
            return [_as_data(record), _as_data(marker), _as_value(own)]

    async def _one_by_one_after_refusal(self, client: KazooClient) -> list[tuple[Any, BaseException | None]]:
        """The claim's first reads one by one, once kazoo is connected again after a refused multiRead.

        ZooKeeper closes the connection after answering a request it does not
        know, and kazoo may not have read the close yet when we look: reads
        sent then fail with it (a review: 2-7 in 30 handovers, and a claim
        read from the loop then paused a retry interval). By the time they
        failed kazoo has seen it, so the second wait is a real one.
        """
        for attempt in range(2):
            await self._connection_back(client)
            outcomes = await _together(*_send_claim_reads(client, self._claim_paths(), multi=False))
            if attempt or not isinstance(outcomes[0][1], ConnectionLoss):
                break
        return outcomes

    async def _read(self, client: KazooClient, path: str) -> tuple[bytes | None, Any]:
        """The node's data and stat; (None, None) when it does not exist."""
        return await _data(client.get_async(path))

    async def _get(self, client: KazooClient, path: str) -> bytes | None:
        return (await self._read(client, path))[0]

    async def _marker_token(self, client: KazooClient, watcher: Callable[[Any], None] | None = None) -> int:
        """The token in the resign marker, -1 if none; ``watcher`` fires when it is created or set."""
        stat = await _call(client.exists_async, self.marker_path, watcher)
        if stat is None:
            return -1
        marker = parse_resign_marker(await self._get(client, self.marker_path))
        return marker.token if marker is not None else -1

    async def _session_alive(self, client: KazooClient, session_id: int, watcher: Callable[[Any], None]) -> Any:
        """The stat of the session's liveness node if it exists (``watcher`` fires when it goes), else None."""
        return await _call(client.exists_async, self.liveness_path(session_id), watcher)

    async def _lock_delay(self, client: KazooClient, own_ttl: float, report: CampaignReport | None) -> None:
        """Return once the last leader's grant cannot still be valid.

        We head the queue, so the last leader's node is gone. If it left by
        a confirmed resign (its token is in the marker, written in the same
        multi as the delete) or never existed: nothing to wait for. If its
        session's liveness node is gone too, the session ended: the server
        expired it (one timeout after its last touch, which bounds the
        grant) or it was closed after a confirmed stop. Only a node deleted
        under a live or frozen session (an operator's ``delete``, ``evict``)
        leaves the liveness node behind: then we wait until it goes (the
        session expired) or the marker appears (a live leader confirmed its
        stop), re-reading both every retry interval.
        """
        clock, loop = self._b.clock, asyncio.get_running_loop()
        raw_record, raw_marker = await asyncio.gather(
            self._get(client, self.epoch_path), self._get(client, self.marker_path)
        )
        record = parse_epoch_record(self.epoch_path, raw_record)
        marker = parse_resign_marker(raw_marker)
        if isinstance(record, EpochRecord):
            if record.token in (0, self._czxid) or (marker is not None and marker.token == record.token):
                return
            token, node, sid = record.token, record.key, record.lease or _session_of(record.key)
        elif self._head is not None:  # the record is garbage: the head we queued behind is the best we know
            token, node = self._head
            if marker is not None and marker.token == token:
                return
            sid = _session_of(node)
        else:
            token, node, sid = 0, "", 0
        fired, watcher = _watch(loop)
        stat = await self._session_alive(client, sid, watcher) if sid else None
        if sid and stat is None:
            return  # its session ended: expired (the server waited its timeout) or closed after a confirmed stop
        if stat is not None and int(stat.ephemeralOwner) == sid:
            await self._wait_session_end(
                client, token=token, node=node, sid=sid, fired=fired, watcher=watcher, report=report
            )
            return
        # We know nothing of its session (no record, or a node that is not a
        # liveness node): wait one session timeout, ours, from now.
        until = clock.now() + own_ttl
        if report is not None:
            why = "the last leader's session is unknown: waiting one session timeout"
            report.lock_delay(LockDelay(node or "(unknown)", token, round(own_ttl, 3), why))
        while (now := clock.now()) < until:
            await clock.sleep(min(self._b.retry_interval, until - now))
            if token and await self._marker_token(client) == token:
                return

    async def _wait_session_end(
        self,
        client: KazooClient,
        *,
        token: int,
        node: str,
        sid: int,
        fired: asyncio.Event,
        watcher: Callable[[Any], None],
        report: CampaignReport | None,
    ) -> None:
        """Its node went while its session lives: wait for the session to end or the marker to name it."""
        raw = await self._get(client, self.liveness_path(sid))
        try:
            bound = float(json.loads(raw or b"{}").get("ttl", 0.0))
        except (ValueError, AttributeError, TypeError):
            bound = 0.0  # unreadable: the wait still ends when the session does
        if report is not None:
            why = (
                "the last leader's node was deleted while its session lives: "
                "waiting for the session to end (at most its timeout) or its stop to be confirmed"
            )
            report.lock_delay(LockDelay(node, token, round(bound, 3), why))
        # A session that outlives its deleted node by a whole timeout is kept
        # alive by a live holder, which has seen its node go and ended its term
        # (it re-queues on that session): never wait past this, even if its
        # marker was lost or overwritten.
        cap = self._b.clock.now() + bound + self._b.retry_interval if bound else math.inf
        while self._b.clock.now() < cap:
            fired.clear()
            if await self._marker_token(client, watcher) == token:
                return  # it confirmed its orchestrator stopped
            if await self._session_alive(client, sid, watcher) is None:
                return  # the server ended the session: its grant is over
            # Watches are hints (they fire once and may be lost across a
            # reconnect): re-read every retry interval whatever they say.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._b.retry_interval):
                    await fired.wait()

    async def _read_switchover(self, client: KazooClient) -> tuple[SwitchoverRequest | None, int]:
        """The request and its node version (-1: absent), which the epoch multi checks."""
        (read,) = await _together(client.get_async(self.switch_path))
        return _switchover_of(read)

    async def _priorities(self, client: KazooClient, names: list[str]) -> dict[str, int]:
        """id -> priority of ``names``, read in parallel (one round trip's wait, not one per node)."""

        async def one(name: str) -> tuple[str, int] | None:
            with _store_errors("read candidate"), contextlib.suppress(NoNodeError):
                data, _ = await _call(client.get_async, self.base + "/" + name)
                return parse_candidate((data or b"").decode(errors="replace"))
            return None

        out: dict[str, int] = {}
        for got in await asyncio.gather(*(one(n) for n in names)):
            if got is not None:
                out[got[0]] = max(got[1], out.get(got[0], got[1]))
        return out

    async def _ids(self, client: KazooClient, names: list[str]) -> set[str]:
        return set(await self._priorities(client, names))

    async def _node_id(self, client: KazooClient, name: str) -> tuple[str, str] | None:
        """(node name, candidate id) of one queued node; None if it is gone."""
        (read,) = await _together(client.get_async(self.base + "/" + name))
        return _node_id_of(name, read)

    async def _stand_by(self, session: ZooKeeperSession, candidate_id: str, on_wait: OnWait | None) -> Leadership:
        """A --no-lead candidacy: one ephemeral node under NAME.no-lead/, then watches and reads only.

        Never returns a leadership; raises KeyLost when the node goes
        (evicted: the elector registers again). No write after the create
        but the session's own keepalives.
        """
        client = session.client
        self._client = client
        self._session_id = int(session.id, 16)
        loop = asyncio.get_running_loop()
        node = f"{self.no_lead_path}/{session.id}"
        told: Leadership | None = None
        with _store_errors("no-lead register"):
            with contextlib.suppress(NodeExistsError):  # a create whose answer was lost did land
                await _call(client.create_async, node, candidate_id.encode(), self._b.acl, True, False, True)
            _, stat = await _call(client.get_async, node)
            owner = int(stat.ephemeralOwner)
            fired = asyncio.Event()
            watcher = _Rewatch(loop, fired)  # one callback for every pass: see _Rewatch
            while True:
                fired.clear()  # this pass reads everything again
                mine = await _call(client.exists_async, node, watcher)
                if mine is None or int(mine.ephemeralOwner) != owner:
                    raise KeyLost(f"no-lead node {node} vanished")
                try:
                    names = await _call(client.get_children_async, self.base, watcher)
                except NoNodeError:
                    names = []
                for name in sorted((n for n in names if _seq(n) >= 0), key=_seq):
                    head = await self._leadership(client, name, with_epoch=False)
                    if head is None:
                        continue  # gone between the listing and the read
                    if on_wait is not None and head != told:
                        on_wait(head)
                        told = head
                    break
                # Watches are hints: re-read every retry interval whatever they say.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._b.retry_interval):
                        await fired.wait()

    async def _requeue(self, client: KazooClient, prefix: str, value: bytes, candidate_id: str) -> None:
        """Step aside: a new node at the end of the queue, without ever leading."""
        with _store_errors("switchover step-aside"):
            try:
                await _call(client.delete_async, self._node, 0)
            except NoNodeError as exc:
                # The leader's handover multi may have taken it first: the same step-aside.
                if await self._taken_aside(client, candidate_id) is None:
                    raise KeyLost(f"candidate node {self._node} vanished while stepping aside") from exc
        await self._register(client, prefix, value)

    async def _register(self, client: KazooClient, prefix: str, value: bytes) -> None:
        """A new node of ours at the end of the queue (after a step-aside, or a handover took ours)."""
        with _store_errors("switchover step-aside"):
            node = await _call(client.create_async, self.base + "/" + prefix, value, self._b.acl, True, True, True)
            self._node = node
            _, stat = await _call(client.get_async, node)
        self._czxid = int(stat.czxid)

    async def _queued(self, client: KazooClient, name: str) -> list[tuple[bytes | None, Any]]:
        """A queued node's (data, stat), and those of the liveness node of the session it is named after."""
        return list(
            await asyncio.gather(
                self._read(client, self.base + "/" + name), self._read(client, self.liveness_path(_session_of(name)))
            )
        )

    def _handed_to_us(
        self, record_read: tuple[Any, Any], marker_read: tuple[Any, Any]
    ) -> tuple[int, SwitchoverRequest | None] | None:
        """Our term, and the request it settled, when a leader's handover multi started it.

        Only that multi writes the epoch record and the resign marker at one
        zxid (a bump writes no marker; a plain resign, no record): it
        checked our node, deleted every node ahead of it, and its marker
        says the last leader's orchestrator was confirmed stopped, so there
        is no lock-delay and no bump of ours to add. Not the record of a
        term we led ourselves (a resign of ours that failed, on the same
        node), nor a marker of ours.
        """
        written = _handover_writes(record_read, marker_read)
        raw_record = record_read[0]
        if written is None or raw_record == self._led:
            return None
        record, marker = written
        if record.token != self._czxid or record.key != self._node or marker.token == self._czxid:
            return None
        self._led, self._led_version, self._marked = raw_record, int(record_read[1].version), True
        return record.epoch, marker.settled

    async def _taken_aside(
        self, client: KazooClient, candidate_id: str, read: list[Any] | None = None
    ) -> SwitchoverRequest | None:
        """The request, when our node went because a switchover's handover took it.

        The leader's multi deletes the nodes ahead of the target with its
        own and writes a record naming the target and a marker holding the
        request, at one zxid: we then step aside as if we had done it
        ourselves (re-queue, report ``step-aside``) instead of counting a
        lost node. Only while the request is pending and its target was
        queued after us (its token is above ours); ZooKeeper keeps no
        history, so a node of ours evicted later in that window reads the
        same: it registers again either way. ``read``: the record and the
        marker as read with the listing that missed our node, if they were.
        """
        if read is None:
            with _store_errors("read epoch"):
                read = await asyncio.gather(self._read(client, self.epoch_path), self._read(client, self.marker_path))
        written = _handover_writes(read[0], read[1])
        if written is None:
            return None
        record, marker = written
        request = marker.settled
        if request is None or not request.pending(time.time()):
            return None
        if request.to in ("", candidate_id) or record.leader != request.to or record.token <= self._czxid:
            return None
        return request

    async def _bump_epoch(
        self,
        client: KazooClient,
        candidate_id: str,
        report: CampaignReport | None = None,
        switch_version: int = -1,
        consume: bool = False,
    ) -> int | None:
        """The new epoch, or None when the switchover node moved since ``switch_version`` was read."""
        while True:
            try:
                data, stat = await _call(client.get_async, self.epoch_path)
            except NoNodeError:
                with contextlib.suppress(NodeExistsError):
                    await _call(client.create_async, self.epoch_path, b'{"epoch": 0}', self._b.acl, False, False, True)
                continue
            old = parse_epoch_record(self.epoch_path, data)
            # A garbled record is overwritten, never fatal: every term set it
            # once, so the node's version stands in for the lost term number.
            epoch = old.epoch + 1 if isinstance(old, EpochRecord) else int(stat.version) + 1
            record = EpochRecord(epoch, self._czxid, candidate_id, self._node, self._session_id).encode()
            tx = client.transaction()
            tx.check(self._node, 0)  # our node exists, unchanged since we created it
            tx.set_data(self.epoch_path, record, stat.version)
            if switch_version >= 0:
                if consume:  # settled: gone with our win, in the same multi
                    tx.delete(self.switch_path, switch_version)
                else:
                    tx.check(self.switch_path, switch_version)
            else:
                # Still absent: a create and a delete in one multi fail if it appeared.
                tx.create(self.switch_path, b"", self._b.acl)
                tx.delete(self.switch_path)
            results = await _call(tx.commit_async)
            if not any(isinstance(r, Exception) for r in results):
                if isinstance(old, str) and report is not None:
                    report.epoch_record_repaired(self.epoch_path, old)
                self._led, self._led_version = record, int(stat.version) + 1
                return epoch
            if isinstance(results[0], NoNodeError | BadVersionError):
                raise KeyLost(f"candidate node {self._node} vanished before the epoch bump")
            if any(isinstance(r, NoNodeError | BadVersionError | NodeExistsError) for r in results[2:]):
                return None
            # The epoch node moved under us: read it again.

    async def resign(self, *, hand_over: bool = False) -> str:
        """Delete our node and write the resign marker in one multi.

        A successor never sees our node gone without the marker that says
        our orchestrator was confirmed stopped first. When the node is gone
        already (session lost, evicted) the marker is still written: it
        spares the successor its lock-delay.
        """
        if not self._node or self._client is None:
            return ""
        client = self._client
        request, self._acting_on = self._acting_on, None
        if hand_over and request is not None and request.to:
            # First on what we read when we took the request, with no read now;
            # then (a node gone or rewritten since, a step-aside between our read
            # and our multi) on a fresh read, once.
            for fresh in (False, True):
                with _store_errors("resign"):
                    to = await self._hand_over(client, request, fresh=fresh)
                if to is not None:
                    self._node = ""
                    return to
        elif hand_over:  # no request, or one for "anyone"
            with _store_errors("resign"):
                to = await self._pass_on(client, request)
            if to is not None:
                self._node = ""
                return to
        marker = ResignMarker(self._czxid, self._node).encode()
        with _store_errors("resign"):
            for _ in range(3):
                tx = client.transaction()
                tx.delete(self._node)
                tx.set_data(self.marker_path, marker)
                results = await _call(tx.commit_async)
                if not any(isinstance(r, Exception) for r in results):
                    break
                if isinstance(results[1], NoNodeError):  # the marker node is not there yet: make it, then again
                    with contextlib.suppress(NodeExistsError):
                        await _call(client.create_async, self.marker_path, b"", self._b.acl, False, False, True)
                    continue
                if isinstance(results[0], NoNodeError):  # our node went already: the marker alone
                    await self._mark_if_last(client, marker)
                    break
                raise StoreUnavailable(f"zookeeper resign: {type(results[0]).__name__}, {type(results[1]).__name__}")
            else:
                raise StoreUnavailable(f"zookeeper resign: {self.marker_path} could not be created")
        self._node = ""
        return ""

    async def _hand_over(self, client: KazooClient, request: SwitchoverRequest, *, fresh: bool) -> str | None:
        """Resign and start the target's term in one multi: its id, or None (nothing written).

        As on etcd (docs/design.md, 1c): the target would otherwise wait for
        each candidate ahead of it to step aside (two writes each, one after
        the other) and then bump the epoch itself. The multi deletes our node
        and the nodes ahead of the target, checks the target's node, writes
        the record naming it (the epoch after ours, checked at the version
        read) and our marker holding the request, and deletes the request at
        the version read. Sequence numbers only grow, so no node can appear
        ahead of the target after our read. Not tried (None) unless the
        request is the one we act on, still pending, names one node, that
        node and every node ahead of it are ours (a kazoo recipe's node would
        neither step aside nor read our record), and the record is our
        term's. Decided on what we read when we took the request (``fresh``
        False: no read between the stop and the multi) or on a read now.
        Called only after our orchestrator was confirmed stopped.
        """
        if not request.pending(time.time()):
            return None
        plan = await self._read_plan(client, request) if fresh else self._known_plan(request)
        return None if plan is None else await self._write_handover(client, plan, request)

    async def _write_handover(
        self, client: KazooClient, to: _Handover, request: SwitchoverRequest | None
    ) -> str | None:
        """The handover multi, for a switchover's target and a plain resign's successor alike.

        Deletes our node and the nodes taken aside, checks the successor's,
        sets the record naming it (the epoch after ours) at our term's
        version, writes our marker (holding ``request``, the request it
        settles) and settles the request, or checks that none appeared.
        The successor's id, or None when the multi failed (nothing written).
        """
        successor = EpochRecord(to.record.epoch + 1, to.czxid, to.candidate_id, to.path, _session_of(to.path))
        tx = client.transaction()
        tx.delete(self._node)
        for n, v in to.aside:
            tx.delete(self.base + "/" + n, v)
        tx.check(to.path, to.version)
        tx.set_data(self.epoch_path, successor.encode(), to.record_version)
        marker = ResignMarker(self._czxid, self._node, settled=request).encode()
        if not to.marked:  # no leader of this election resigned before: the multi makes it
            tx.create(self.marker_path, marker, self._b.acl)
        else:
            tx.set_data(self.marker_path, marker)
        if to.switch_version >= 0:
            tx.delete(self.switch_path, to.switch_version)  # settled, unless rewritten since it was read
        else:
            tx.create(self.switch_path, b"", self._b.acl)  # no request appeared since our last read
            tx.delete(self.switch_path)
        results = await _call(tx.commit_async)
        return None if any(isinstance(r, Exception) for r in results) else to.candidate_id

    def _our_record(self) -> EpochRecord | None:
        """The record of the term we lead, as we wrote (or were handed) it; None if it is not ours."""
        record = parse_epoch_record(self.epoch_path, self._led)
        return record if isinstance(record, EpochRecord) and record.token == self._czxid else None

    def _request_moved(self) -> bool:
        """Whether the request node changed since the read we took the request on.

        Its version alone cannot tell: a request deleted and written again
        starts again at version 0, and a multi cannot check a node's czxid
        (a review settled a withdrawn request's successor, to another target,
        as the old one). The exists watch set with that read can.
        """
        return self._request_watch is None or self._request_watch.count != self._acting_mark

    def _known_plan(self, request: SwitchoverRequest) -> _Handover | None:
        """A handover decided on what we read when we took the request, and what we knew of each node.

        The ids are those read with the queue then; whether a node is ours
        and reads a handed-over term, its czxid and version come from
        ``_learn_queue`` (fixed per node name; the multi checks the target's
        version). The request node's version is the one read then, and the
        multi deletes it at that version: a request rewritten since fails it.
        """
        record = self._our_record()
        if record is None or self._marked is None or self._request_moved():
            return None
        aside: list[tuple[str, int]] = []
        target: tuple[str, _Queued] | None = None
        for name in self._known:
            cid, q = self._known_ids.get(name), self._queue.get(name)
            if cid == request.to:
                if target is not None or q is None or q.candidate_id != cid or not q.able:
                    return None  # two nodes with its id, not one we know, or not one of ours
                target = (name, q)
            elif target is None:
                if cid is None or q is None or not q.able:
                    return None  # gone, not known, or it would neither step aside nor be taken aside
                aside.append((name, q.version))  # deleted at it: rewritten since, no multi
        if target is None:
            return None
        name, q = target
        return _Handover(
            self.base + "/" + name,
            q.czxid,
            q.version,
            request.to,
            record,
            self._led_version,
            self._marked,
            self._acting_version,
            tuple(aside),
        )

    async def _read_plan(self, client: KazooClient, request: SwitchoverRequest) -> _Handover | None:
        """A handover decided on a read made now: the queue, the request, the record, the marker, each node."""
        own = self._node.rsplit("/", 1)[1]
        # The nodes queued when we took the request are read with the queue, in
        # one round trip; only a node listed since (behind them all: sequence
        # numbers grow) costs a second. What the multi relies on it checks.
        known = [n for n in self._known if n != own]
        names, (raw_switch, switch_stat), (raw_record, record_stat), (_, marker_stat), *pre = await asyncio.gather(
            self._children(client),
            self._read(client, self.switch_path),
            self._read(client, self.epoch_path),
            self._read(client, self.marker_path),
            *(self._queued(client, n) for n in known),
        )
        now = parse_switchover(raw_switch) if switch_stat is not None else None
        # The whole request, not its id: one rewritten under the same id may name another target.
        if now is None or now != request or not now.pending(time.time()) or names[:1] != [own]:
            return None
        record = parse_epoch_record(self.epoch_path, raw_record)
        if not isinstance(record, EpochRecord) or record.token != self._czxid or record_stat is None:
            return None
        later = names[1:]
        read = dict(zip(known, pre, strict=True))
        new = [n for n in later if n not in read]
        read.update(zip(new, await asyncio.gather(*(self._queued(client, n) for n in new)), strict=True))
        nodes = [read[n][0] for n in later]
        able = {n: _hands_over(read[n][1][0]) for n in later}
        aside: list[tuple[str, int]] = []
        target: tuple[str, Any] | None = None
        for name, (data, stat) in zip(later, nodes, strict=True):
            if stat is None:
                continue  # gone since the listing
            # Ours, and of a release that reads a handed-over term (an older
            # one would bump the epoch again, or count its node lost).
            ours = _session_of(name) == int(stat.ephemeralOwner) and able[name]
            cid = parse_candidate((data or b"").decode(errors="replace"))[0]
            if cid == request.to:
                if target is not None or not ours:
                    return None  # two nodes with its id, or not one of ours
                target = (name, stat)
            elif target is None:
                if not ours:
                    return None  # it would neither step aside nor be taken aside
                aside.append((name, -1))
        if target is None:
            return None
        name, stat = target
        return _Handover(
            self.base + "/" + name,
            int(stat.czxid),
            int(stat.version),
            request.to,
            record,
            int(record_stat.version),
            marker_stat is not None,
            int(switch_stat.version),
            tuple(aside),
        )

    async def _pass_on(self, client: KazooClient, request: SwitchoverRequest | None) -> str | None:
        """Resign and start the next in line's term in one multi, with no read first: its id, or None.

        The plain resign's counterpart of ``_hand_over`` (etcd's resign does
        the same): the successor would otherwise wake on our delete, read,
        and bump the epoch in a multi of its own, a second fsynced write on
        the handover's path. Here it leads on its wake-up read alone
        (``_handed_to_us``). Decided on what the switchover watch last read
        of the queue (``_learn_queue``), as the successor's own claim would
        decide: it is the first node behind ours (sequence numbers only
        grow, so no node can come between), ours, of a release that reads a
        handed-over term, and no queued candidate outranks it, ourselves
        included (we may queue again); or, for a switchover to "anyone"
        (``request``), whatever the priorities, as its claim would settle it.
        Not tried if the queue's watch fired since that listing (a newcomer
        may outrank the next in line, and no multi can check that nobody
        joined), nor, for "anyone", if the request's watch fired since we
        took it. The multi checks the rest: the next node at the version
        read (gone or rewritten: no multi), the record at our term's
        version, and no switchover request (a create and a delete), or the
        one we act on, deleted at the version we read it at (the marker
        holds it, as a switchover's handover's does). A failed multi writes
        nothing and the plain resign follows. Called only after our
        orchestrator was confirmed stopped: the marker says so, as in every
        resign.
        """
        listed, record = self._listed, self._our_record()
        if not listed or record is None:
            return None
        if self._queue_watch is None or self._queue_watch.count != self._listed_mark:
            # The queue changed since we listed it: a newcomer may outrank the
            # next in line, and no multi can check that nobody joined (the
            # successor's own claim lists the queue; so a plain resign).
            return None
        if request is not None and (not request.pending(time.time()) or self._request_moved()):
            return None
        first = self._queue[listed[0]]
        if not first.able:
            return None
        me, mine = parse_candidate(self._value.decode(errors="replace"))
        others: dict[str, int] = {me: mine}
        for name in listed[1:]:
            q = self._queue[name]
            others[q.candidate_id] = max(q.priority, others.get(q.candidate_id, q.priority))
        verdict = priority_verdict(request, first.candidate_id, first.priority, others, time.time())
        if verdict != (NO_REQUEST if request is None else COMPLETED):
            return None  # a queued candidate outranks it: its own claim steps aside, so we do not decide
        to = _Handover(
            self.base + "/" + listed[0],
            first.czxid,
            first.version,
            first.candidate_id,
            record,
            self._led_version,
            self._marked is not False,  # unknown: set it; absent after all, the multi fails
            self._acting_version if request is not None else -1,
        )
        return await self._write_handover(client, to, request)

    async def _learn_queue(self, client: KazooClient, listed: list[str], mark: int) -> None:
        """Read each node newly queued behind us, once, for ``_pass_on``; forget those gone.

        Runs while we lead, only when the listing changed, and never on a
        switchover's path (after the request check): an idle leader with a
        steady queue reads nothing more.
        """
        if self._marked is None:  # a term from the slow path: no read told us yet
            with _store_errors("read resign marker"):
                self._marked = await _call(client.exists_async, self.marker_path) is not None
        new = [n for n in listed if n not in self._queue]
        if new:
            with _store_errors("read candidate"):
                got = await asyncio.gather(*(self._queued(client, n) for n in new))
            for name, ((data, stat), (liveness, _)) in zip(new, got, strict=True):
                if stat is None:
                    continue  # gone since the listing
                cid, priority = parse_candidate((data or b"").decode(errors="replace"))
                able = _session_of(name) == int(stat.ephemeralOwner) and _hands_over(liveness)
                self._queue[name] = _Queued(int(stat.czxid), int(stat.version), cid, priority, able)
        self._queue = {n: self._queue[n] for n in listed if n in self._queue}
        # Only a queue known in full is handed over from: a node we could not
        # read may be the next in line, or outrank it.
        self._listed = list(self._queue) if len(self._queue) == len(listed) else []
        self._listed_mark = mark

    async def _mark_if_last(self, client: KazooClient, marker: bytes) -> None:
        """Write the marker for a node that is gone already, if we are still the last leader.

        Our stop may be confirmed long after our session went (a frozen
        sidecar thawing): by then a successor may have led and resigned, and
        our marker must not replace its own, or the next candidate would take
        the successor's clean resign for an unclean one and wait on its
        (live) session. So the write checks, in one multi, that the epoch
        record still names us.
        """
        try:
            raw, stat = await _call(client.get_async, self.epoch_path)
        except NoNodeError:
            return
        record = parse_epoch_record(self.epoch_path, raw)
        if not isinstance(record, EpochRecord) or record.token != self._czxid:
            return  # someone led after us (or the record is garbled): our marker would only mislead
        tx = client.transaction()
        tx.check(self.epoch_path, stat.version)
        tx.set_data(self.marker_path, marker)
        results = await _call(tx.commit_async)
        if isinstance(results[1], NoNodeError):
            with contextlib.suppress(NodeExistsError):
                await _call(client.create_async, self.marker_path, b"", self._b.acl, False, False, True)
            tx = client.transaction()
            tx.check(self.epoch_path, stat.version)
            tx.set_data(self.marker_path, marker)
            await _call(tx.commit_async)

    async def wait_lost(self, seen: Callable[[float], None] | None = None) -> None:
        if not self._node or self._client is None:
            return
        loop = asyncio.get_running_loop()
        fired = asyncio.Event()
        watcher = _Rewatch(loop, fired)  # one callback for every pass: see _Rewatch
        while True:
            fired.clear()  # this pass reads again
            sent = loop.time()
            with _store_errors("watch own node"):
                async with asyncio.timeout(self._b.timeout):  # a read stuck on a dead connection confirms nothing
                    stat = await _call(self._client.exists_async, self._node, watcher)
            if stat is None or int(stat.czxid) != self._czxid:
                return
            if seen is not None:
                seen(loop.time() - sent)
            # The watch tells us at once; the read after each renewal is what
            # the elector counts as our node confirmed (see Election.wait_lost).
            # No renewal comes while the store is away: then RE_READ_WITHIN intervals.
            woke = asyncio.ensure_future(fired.wait())
            try:
                waits: set[asyncio.Future[Any]] = {woke}
                if self._session is not None:
                    waits.add(self._session.next_renewal())
                await asyncio.wait(
                    waits, timeout=RE_READ_WITHIN * self._b.retry_interval, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                woke.cancel()

    async def wait_switchover(self, candidate_id: str) -> SwitchoverRequest:
        if self._client is None:
            await asyncio.Event().wait()  # never campaigned: nothing to hand over
        client = self._client
        assert client is not None
        loop = asyncio.get_running_loop()
        known: list[str] = []  # the other candidates' nodes, as last listed
        woke = False
        fired = asyncio.Event()
        # One pair of callbacks for the whole term, whatever number of calls
        # (the elector calls again after a store error): a new pair per call
        # would pile up in kazoo's sets again, one per failed call.
        if self._request_watch is None or self._queue_watch is None:
            self._request_watch, self._queue_watch = _Rewatch(loop, fired), _Rewatch(loop, fired)
        request_watch, queue_watch = self._request_watch, self._queue_watch
        request_watch.fired = queue_watch.fired = fired
        # What an earlier call (one that failed, then this retry) listed or took
        # was guarded by its own watches, not these: nothing of it is decided on.
        self._listed, self._listed_mark, self._acting_mark = [], -1, -1

        while True:
            fired.clear()  # this pass reads everything again
            request_mark, queue_mark = request_watch.count, queue_watch.count

            # Sent together, answered in order on our session: one round trip
            # where the request, the queue and its ids cost three after every
            # wake-up. A wake-up is most likely a request, so it also reads the
            # ids of the nodes listed last time (a node's data can be rewritten
            # by hand: ids are read, never remembered); the re-read each retry
            # interval lists the queue and reads ids only when a request is there.
            # The queue is watched too: a candidate that joins may outrank the
            # next in line our resign would pass the term to (``_pass_on``).
            # Handed to the loop together (``_together``): one answer at a
            # time, each woke the loop on the switchover's way.
            asked = known if woke else []
            watched, got_request, got_queue, *got_ids = await _together(
                # An exists watch fires on create, change and delete alike.
                client.exists_async(self.switch_path, request_watch),
                client.get_async(self.switch_path),
                client.get_children_async(self.base, queue_watch),
                *(client.get_async(self.base + "/" + n) for n in asked),
            )
            # A failure raises in the order sent; the others' outcomes are then moot.
            with _store_errors("watch switchover"):
                _as_value(watched)
            read, listed = _switchover_of(got_request), _queue_of(got_queue)
            fresh = dict(x for x in (_node_id_of(n, o) for n, o in zip(asked, got_ids, strict=True)) if x is not None)
            request = read[0]
            own = self._node.rsplit("/", 1)[-1]
            known = [n for n in listed if n != own]
            ids = {n: fresh[n] for n in known if n in fresh}
            if request is not None and len(ids) < len(known):
                # Listed since the last wake-up (or none was read): read them now.
                more = await asyncio.gather(*(self._node_id(client, n) for n in known if n not in ids))
                ids.update(x for x in more if x is not None)
            others = set(ids.values())
            if leader_should_hand_over(request, candidate_id, others, time.time()):
                assert request is not None
                self._acting_on, self._known = request, known
                self._known_ids, self._acting_version, self._acting_mark = ids, read[1], request_mark
                if not _ours_up_to(request.to, known, ids):
                    # No handover in our resign multi will be possible (a node
                    # that is not ours ahead of the target): the candidates
                    # ahead step aside by themselves, starting now.
                    self._nudge_next_in_line(client)
                return request
            await self._learn_queue(client, known, queue_mark)
            # Re-read every retry interval: a target may join later.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._b.retry_interval):
                    await fired.wait()
            # Woken by the request node: read the ids with the next listing. A
            # queue that changed needs only its new nodes read (``_learn_queue``);
            # reading every id on each join cost N^2/2 reads as N candidates queued.
            woke = request_watch.count != request_mark

    def _nudge_next_in_line(self, client: KazooClient) -> None:
        """Wake the candidate queued behind us, without waiting for the answer.

        It watches our node with an ``exists`` watch, which also fires on a
        write of its data: setting our node's data to what it holds wakes it,
        and only it, to look at the request and step aside if the target is
        behind it (its own departure then wakes the next). The leader goes on
        to stop its orchestrator meanwhile: the step-asides are off the
        switchover's path. A hint only: if it is lost, the candidates step
        aside when they reach the head of the queue, as before. Nothing
        reads our node's version (the epoch multi checks it only before we
        lead), and ``wait_lost`` compares the czxid.
        """
        if self._node and self._value:
            client.set_async(self._node, self._value)

    async def switchover_request(self) -> SwitchoverRequest | None:
        client = self._client or await self._b.observer()
        return (await self._read_switchover(client))[0]

    async def request_switchover(self, request: SwitchoverRequest) -> None:
        client = self._client or await self._b.observer()
        with _store_errors("switchover write"):
            try:
                await _call(client.set_async, self.switch_path, request.encode())
            except NoNodeError:
                await _call(client.create_async, self.switch_path, request.encode(), self._b.acl)

    async def _leadership(self, client: KazooClient, name: str, with_epoch: bool = True) -> Leadership | None:
        with _store_errors("read leader"):
            try:
                data, stat = await _call(client.get_async, self.base + "/" + name)
            except NoNodeError:
                return None
            token = int(stat.czxid)
            epoch = 0
            if with_epoch:
                try:
                    raw, _ = await _call(client.get_async, self.epoch_path)
                    recorded = parse_epoch_record(self.epoch_path, raw)
                    if isinstance(recorded, EpochRecord) and recorded.token == token:
                        epoch = recorded.epoch
                except NoNodeError:
                    pass
        return Leadership(candidate_id_of((data or b"").decode(errors="replace")), token, epoch)

    async def leader(self) -> Leadership | None:
        client = self._client or await self._b.observer()
        names = await self._children(client)
        for name in names:  # the first may vanish between the listing and the read
            lead = await self._leadership(client, name)
            if lead is not None:
                return lead
        return None

    async def candidates(self) -> list[Candidate]:
        """The queue, leader first, then the --no-lead candidates (never leaders, never queued)."""
        client = self._client or await self._b.observer()
        out = []
        for name in await self._children(client):
            node = self.base + "/" + name
            with _store_errors("read candidate"):
                data, stat = await self._read(client, node)
            if stat is None:
                continue  # gone since the listing
            # An ephemeral node exists exactly as long as its session: never stale,
            # but ZooKeeper does not tell how long the session has left.
            cid, prio = parse_candidate(data.decode(errors="replace") if data else "")
            # Ours are named after the session that owns them; kazoo's recipes
            # name theirs with a random uuid.
            foreign = _session_of(name) != int(stat.ephemeralOwner)
            out.append(Candidate(cid, int(stat.czxid), node, None, stale=False, priority=prio, foreign=foreign))
        with _store_errors("list no-lead candidates"):
            try:
                standing = await _call(client.get_children_async, self.no_lead_path)
            except NoNodeError:
                standing = []
        found = []
        for name in standing:
            node = self.no_lead_path + "/" + name
            with _store_errors("read candidate"):
                data, stat = await self._read(client, node)
            if stat is None:
                continue
            found.append(
                Candidate(data.decode(errors="replace") if data else "", int(stat.czxid), node, None, no_lead=True)
            )
        return out + sorted(found, key=lambda c: c.token)

    async def problems(self) -> list[str]:
        client = self._client or await self._b.observer()
        with _store_errors("read epoch"):
            try:
                raw, _ = await _call(client.get_async, self.epoch_path)
            except NoNodeError:
                return []
        recorded = parse_epoch_record(self.epoch_path, raw)
        found = [f"{recorded} (the next leader rewrites it)"] if isinstance(recorded, str) else []
        return found + await self._missing_liveness(client)

    async def _missing_liveness(self, client: KazooClient) -> list[str]:
        """Our candidates whose session has lost its liveness node (deleted by hand).

        The lock-delay reads a vanished liveness node as "that session ended":
        if such a candidate's node is then deleted too while it leads, its
        successor would not wait out the session. Say so while it can be mended
        (restarting that sidecar opens a new session with a new liveness node).
        """
        found = []
        for name in await self._children(client):
            sid = _session_of(name)
            if not sid:
                continue  # not one of ours (kazoo's own recipes name nodes by uuid)
            with _store_errors("read liveness"):
                stat = await _call(client.exists_async, self.base + "/" + name)
                if stat is None or int(stat.ephemeralOwner) != sid:
                    continue
                if await _call(client.exists_async, self.liveness_path(sid)) is None:
                    found.append(
                        f"{self.liveness_path(sid)}: missing while candidate {self.base}/{name} lives; "
                        "if that node is deleted too, its successor cannot wait out its session: restart that sidecar"
                    )
        return found

    async def evict(self, candidate_id: str, key: str = "") -> list[str]:
        client = self._client or await self._b.observer()
        gone = []
        for c in await self.candidates():
            if c.id == candidate_id and (not key or c.key == key):
                with _store_errors("evict"), contextlib.suppress(NoNodeError):
                    await _call(client.delete_async, c.key)
                gone.append(c.key)
        return gone

    async def observe(self) -> AsyncIterator[Leadership | None]:
        client = self._client or await self._b.observer()
        loop = asyncio.get_running_loop()
        last: object = object()
        fired = asyncio.Event()
        watcher = _Rewatch(loop, fired)  # one callback for every pass: see _Rewatch
        while True:
            fired.clear()  # this pass reads everything again
            with _store_errors("watch candidates"):
                try:
                    await _call(client.get_children_async, self.base, watcher)
                except NoNodeError:
                    await _call(client.exists_async, self.base, watcher)
                with contextlib.suppress(NoNodeError):
                    await _call(client.get_async, self.epoch_path, watcher)
            now = await self.leader()
            if now != last:
                last = now
                yield now
            await fired.wait()

    async def close(self) -> None:
        return None


# -- the registry's entry points (sidecar/backends/__init__.py) -------------

_CHROOT = re.compile(r"^/?[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*/?$")


def check_config(cfg: Config) -> None:
    if any(ep.startswith(("http://", "https://")) for ep in cfg.endpoints):
        raise ConfigError("endpoints", ",".join(cfg.endpoints), "ZooKeeper endpoints are host:port, without a scheme")
    for name in ("ca_file", "cert_file", "key_file", "tls_server_name"):
        # kazoo's TLS is not wired in: refusing beats silently talking plaintext.
        if getattr(cfg, name):
            raise ConfigError(name, getattr(cfg, name), "TLS is not supported for ZooKeeper (etcd only)")
    if cfg.zk_chroot and not _CHROOT.match(cfg.zk_chroot):
        raise ConfigError("zk_chroot", cfg.zk_chroot, "must be a ZooKeeper path like /apps/prod")


def zk_auth(cfg: Config) -> list[tuple[str, str]]:
    """Digest credentials from a file, so they never sit in argv or logs."""
    if not cfg.zk_auth_file:
        return []
    return [("digest", Path(cfg.zk_auth_file).read_text().strip())]


async def connect(cfg: Config, clock: Clock) -> ZooKeeperBackend:
    return ZooKeeperBackend(
        endpoint_hostports(cfg),
        clock,
        request_timeout=cfg.effective_request_timeout,
        retry_interval=cfg.retry_interval,
        chroot=cfg.zk_chroot,
        auth=zk_auth(cfg),
    )


async def _shielded(aw: Any) -> None:
    """Finish ``aw`` even if we are cancelled meanwhile (clean-up must not be cut short)."""
    task = asyncio.ensure_future(aw)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        raise


def _stop_quietly(client: KazooClient) -> None:
    with contextlib.suppress(Exception):
        client.stop()
    with contextlib.suppress(Exception):
        client.close()


async def _four_letter(host: str, port: int, word: bytes, timeout: float) -> str:
    """One ZooKeeper four-letter command, answered and closed by the server."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(word)
            await writer.drain()
            data = await reader.read()  # the server closes once it has answered
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return data.decode(errors="replace")


def _drop_without_closing(client: KazooClient) -> None:
    """End a kazoo client without ending its ZooKeeper session.

    ``stop()`` sends closeSession and the server deletes our ephemeral node
    at once; kazoo's own pings would keep the session alive for ever. To let
    it lapse after its timeout we do what a crashed process would: mark the
    client stopped without queueing the close request (kazoo 2.11, pinned,
    checks ``_stopped`` before every reconnect) and cut its socket, so its
    connection loop ends without a word to the server.
    """
    client._stopped.set()
    conn = client._connection
    sock = conn._socket
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    conn.connection_stopped.wait(5.0)
    client.close()
