"""etcd v3 backend over etcd's gRPC API (etcd_wire: grpclib on asyncio).

The key layout is that of etcd's own ``concurrency.Election``, so
``etcdctl elect -l NAME`` shows our leader and ``etcdctl elect NAME VALUE``
queues in the same election:

* candidate key ``NAME/<lease id in lowercase hex>``, value = candidate id,
  created with ``create_revision == 0`` in a txn, attached to the lease;
* leader = the key under ``NAME/`` with the lowest create revision; that
  revision is the fencing token;
* ``NAME.epoch`` (outside the prefix, so etcd's tools ignore it) holds the
  term number, bumped by each new leader in a txn that also checks that its
  own key still has the create revision it won with.

The keepalive is ours, not the library's: one LeaseKeepAlive request per
renewal, timed from the moment it is sent, on one stream kept for the
session (a new stream per renewal was a third of an idle sidecar's CPU).
Only one request is ever outstanding on it, and any error, timeout or
cancellation drops the stream, so a late answer can never be taken for the
answer to a later request. The library's own "alive" flag is not evidence
of anything.

Store-side safety (docs/design.md, "Lock-delay"):

* the key can vanish before its lease could have expired (``etcdctl del``,
  ``lease revoke``, ``evict``). A successor honours the last leader's
  *lease*, not its key: the next in line tracks the head's lease with one
  ``LeaseTimeToLive`` per retry interval, and if the head goes without the
  clean-resign marker ``NAME.resigned`` (written in the same txn as a
  confirmed resign's delete), it waits until that lease could have run out;
* watches carry ``hasleader=true`` (etcd's ``WithRequireLeader``), so a member
  cut off from its raft leader cancels them instead of holding a candidate
  asleep; every waiting loop also re-reads the store each retry interval,
  and a watch only ever starts from a revision actually read + 1;
* a malformed ``NAME.epoch`` is repaired by the next winner, never fatal;
* after a clean resign the next in line claims the term in one txn that
  compares what it predicted while waiting (``_claim``); any surprise
  fails a compare and the usual path (lock-delay, step-aside, repair) decides;
* better still, a leader that resigns with its key held writes that claim
  itself, in the txn that deletes its key (``_hand_over``), for a successor
  of ours (one that stated its TTL under ``NAME.ttl/``), comparing all the
  claim would; the next in line watches the whole election and leads on
  that one event (``_handed_to_us``).

Switchover (docs/design.md, "Switchover"): ``NAME.switchover`` holds an
operator's request; the leader watches it and demotes, a candidate that
heads the queue while the request names another queued candidate re-queues
(delete + create its key) instead of leading, and the winner's epoch txn
compares the request's mod revision and deletes it when it is settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from sidecar.backends.base import (
    COMPLETED,
    DEFAULT_PRIORITY,
    NO_LEAD_SUFFIX,
    NO_REQUEST,
    PRIORITY_STEP_ASIDE,
    RE_READ_WITHIN,
    STEP_ASIDE,
    BackendError,
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
    vacancy_winner,
)
from sidecar.backends.etcd_messages import pb
from sidecar.backends.etcd_wire import (
    Compare,
    RpcError,
    SortOrder,
    SortTarget,
    TransportError,
    Wire,
    as_bytes,
    prefix_range_end,
    watch_call,
)
from sidecar.clock import Clock
from sidecar.config import Config, ConfigError, endpoint_hostports, etcd_password
from sidecar.model import Leadership

TOKEN_REFRESH = 120.0  # seconds; etcd's simple tokens live 300 s by default
_DELETE = 1  # mvccpb.Event.EventType.DELETE
_NOPUT = 0  # WatchCreateRequest.FilterType.NOPUT
# etcd's WithRequireLeader: a member without a raft leader refuses (and, after
# about three election timeouts, cancels) streams carrying this, instead of
# serving them from a partitioned minority for ever.
REQUIRE_LEADER = ("hasleader", "true")
MAX_HEADS_SEEN = 64  # keys a waiting candidate remembers having queued behind (see _heads_seen)
NEAR_EXPIRY_POLL = 0.1  # seconds between lease polls once the head's lease runs out (see _Tracked)
# A re-read in one Range over its keys' span (EtcdBackend.span) while the
# span holds no more than this many keys, and of those not asked for at
# most this many more than asked for, and this many bytes.
SPAN_MAX_KEYS = 1000
SPAN_MAX_FOREIGN = 64
SPAN_MAX_FOREIGN_BYTES = 64 << 10
# A leader read still in flight that started this long before a wait began is shared by it (_leader_read).
SHARED_READ_SLACK = 0.05
TTL_SUFFIX = ".ttl"  # NAME.ttl/<lease hex>: the TTL a candidate of ours states (see EtcdElection)
# A closed watch's stream is reset this much later (StreamCall.cancel): after
# the handover step that closed it, not in the loop pass right behind it.
STREAM_RESET_DELAY = 0.01


@contextlib.contextmanager
def _store_errors(what: str) -> Iterator[None]:
    """Turn every transport failure into StoreUnavailable, naming the call; a write
    on a lease the store no longer has into SessionExpired."""
    try:
        yield
    except RpcError as exc:
        details = exc.details
        if exc.code == "UNAUTHENTICATED" and "invalid auth token" in details:
            # Not our credentials: this member no longer knows the token (etcd's
            # simple tokens expire per member; a restarted member knows none).
            # The backend logs in again at once (Wire.on_token_rejected); the
            # elector retries, as after any outage.
            raise StoreUnavailable(
                f"etcd {what}: the member no longer knows our auth token ({details}); logging in again"
            ) from exc
        if exc.code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            raise StoreForbidden(f"etcd {what}: {exc}") from exc
        if exc.code == "INVALID_ARGUMENT" and "user name is empty" in details:
            raise StoreForbidden(
                f"etcd {what}: authentication required (etcd has auth enabled; set --etcd-user)"
            ) from exc
        if exc.code == "INVALID_ARGUMENT" and "authentication failed" in details:
            raise StoreForbidden(f"etcd {what}: authentication failed (wrong user or password)") from exc
        if exc.code == "NOT_FOUND" and "lease not found" in details:
            # A write on our lease after the store ended it (expired while we
            # were cut off, revoked by an operator): the session is over, as a
            # keepalive answering TTL 0 says. Not an outage: retrying on the
            # dead lease would never succeed, and the count would lie.
            raise SessionExpired(f"etcd {what}: our lease is gone ({details})") from exc
        raise StoreUnavailable(f"etcd {what}: {exc}") from exc
    except (TransportError, TimeoutError, OSError) as exc:
        raise StoreUnavailable(f"etcd {what}: {str(exc) or type(exc).__name__}") from exc


# Released etcd bugs that bear on a leader election, with the first release
# of its line that fixes each (docs/design.md, "etcd releases with lease
# bugs"). The sidecar warns at start when the member it talks to is older.
KNOWN_BUGS: tuple[tuple[tuple[int, int, int], str], ...] = (
    ((3, 5, 2), "a watch catching up can panic the member (etcd-io/etcd#12845, #13505)"),
    ((3, 5, 3), "lease renewals and TTL reads are not linearizable (etcd-io/etcd#13675)"),
    ((3, 5, 5), "a read-only txn cancelled by its client panics the member (etcd-io/etcd#14110)"),
    ((3, 5, 8), "a leader on a slow disk can revoke leases after stepping down (etcd-io/etcd#15247)"),
    ((3, 5, 14), "LeaseTimeToLive can answer from a member whose leader changed (etcd-io/etcd#17704)"),
    ((3, 4, 32), "LeaseTimeToLive can answer from a member whose leader changed (etcd-io/etcd#17705)"),
)


def known_bugs(version: str) -> list[str]:
    """The bugs in KNOWN_BUGS that ``version`` (as the member reports it) still has; [] if unparsable."""
    try:
        have = tuple(int(p) for p in version.split("-", maxsplit=1)[0].split(".")[:3])
    except ValueError:
        return []
    if len(have) != 3:
        return []
    return [what for fixed, what in KNOWN_BUGS if have[:2] == fixed[:2] and have < fixed]


class EtcdBackend:
    """One connection to the cluster (etcd_wire.Wire), shared by sessions and elections."""

    def __init__(
        self,
        endpoints: list[str],
        clock: Clock,
        *,
        request_timeout: float = 2.0,
        ca_file: str = "",
        cert_file: str = "",
        key_file: str = "",
        tls_server_name: str = "",
        user: str = "",
        password: str = "",
        retry_interval: float = 1.0,
        drift: float = 0.01,
    ) -> None:
        self._user = user
        self._password = password
        self._refresher: asyncio.Task[None] | None = None
        self._login = asyncio.Lock()
        # One attempt per call: we retry ourselves, on our own clock; a retry
        # below us would hide how long the store has been silent.
        self.wire = Wire(
            endpoints,
            ca_file=ca_file,
            cert_file=cert_file if ca_file else "",
            key_file=key_file if ca_file else "",
            server_name=tls_server_name,
        )
        self.clock = clock
        self.timeout = request_timeout
        self.retry_interval = retry_interval
        self.drift = drift
        self._connected = False
        self._renewed: dict[int, asyncio.Future[None]] = {}  # lease -> its next answered keepalive
        self._split: set[tuple[bytes, bytes]] = set()  # spans read as separate ranges (see span)

    async def connect(self) -> EtcdBackend:
        # The connection opens with the first call: nothing to wait for here.
        self._connected = True
        return self

    def next_renewal(self, lease: int) -> asyncio.Future[None]:
        """Done when ``lease``'s session next has a keepalive acknowledged, or ends.

        The periodic re-reads (a leader's own key and view, a waiting
        candidate's queue, its predecessor's watch and the head's lease) wait
        for it rather than for a timer of their own, so they go out in the
        same moment as the renewal. gRPC's worker threads wake on a backoff
        (15 ms growing to seconds) after every burst of calls, whatever its
        size: measured with one bare client, a burst every 2 s costs 2.1-2.3
        ms of CPU a second, two bursts offset by 1 s 3.5-3.9 ms, and four
        more calls in the one burst 0.6 ms. One per lease, not per channel:
        elections sharing a backend (the contract tests, a fleet in one
        process) would otherwise each re-read on every session's renewal.
        Shared by the waiters of one lease: pass it to asyncio.wait, never
        cancel it.
        """
        renewed = self._renewed.get(lease)
        if renewed is None or renewed.done():
            renewed = self._renewed[lease] = asyncio.get_running_loop().create_future()
        return renewed

    @property
    def re_read_within(self) -> float:
        """The longest a periodic re-read waits for a renewal to ride (none comes while the store is away)."""
        return RE_READ_WITHIN * self.retry_interval

    def wake_re_reads(self, lease: int) -> None:
        """``lease``'s keepalive was answered, or its session ended: its waiters read now."""
        renewed = self._renewed.pop(lease, None)
        if renewed is not None and not renewed.done():
            renewed.set_result(None)

    async def server_version(self) -> str:
        """The version of the member we talk to (logged at start, exported as a label)."""
        with _store_errors("status"):
            resp = await self.wire.status(self.timeout)
        return str(resp.version)

    async def snapshot(self, what: str, reads: list[tuple[str, str | bytes | None]]) -> tuple[list[list[Any]], int]:
        """Several ranges (key, range end) as of one revision: their kvs and that revision.

        Never a read-only txn, though one would do: etcd 3.5.0 to 3.5.4 panic,
        and the member exits, when the client cancels a read-only txn while
        its ranges run (etcd-io/etcd#14110, fixed in 3.5.5), and every call of
        ours carries a deadline and can be cancelled by a stop. A plain range
        answers the same cancellation with an error. One range over the span
        of them all is ``span``, which falls back to this when other keys
        crowd that span.
        The ranges go out together; any answered at an older revision than the
        newest is asked again at that one, so all describe one moment (what
        the txn gave us), in one round trip when nothing changed in between.
        """
        kv = self.kv

        async def get(key: str, end: str | bytes | None, revision: int = 0) -> Any:
            return await kv.get(key, range_end=end, revision=revision, timeout=self.timeout)

        with _store_errors(what):
            for _ in range(3):
                resps = list(await asyncio.gather(*(get(k, e) for k, e in reads)))
                rev = max(int(r.header.revision) for r in resps)
                stale = [i for i, r in enumerate(resps) if int(r.header.revision) != rev]
                again = await asyncio.gather(*(get(*reads[i], rev) for i in stale), return_exceptions=True)
                compacted = False
                for i, r in zip(stale, again, strict=True):
                    if isinstance(r, RpcError) and r.code == "OUT_OF_RANGE":
                        compacted = True  # compacted in between: read afresh
                    elif isinstance(r, BaseException):
                        raise r
                    else:
                        resps[i] = r
                if not compacted:
                    return [list(r.kvs) for r in resps], rev
        raise StoreUnavailable(f"etcd {what}: the store compacted the revision we read, three times in a row")

    async def span(self, what: str, reads: list[tuple[str, str | bytes | None]]) -> tuple[list[list[Any]], int]:
        """``snapshot(what, reads)`` in one Range over the span of all of them.

        An idle sidecar's CPU is per call on grpclib (about 0.4 ms each, most
        of it h2 and hpack): a waiting candidate's four re-reads every
        interval cost as much as the rest of its idle loop. The keys of one
        election sort together (``NAME.epoch``, ``NAME.no-lead/``,
        ``NAME.resigned``, ``NAME.switchover``, ``NAME.ttl/``, ``NAME/``), so
        one range from the first to the end of the last holds them all, at
        one revision by construction. It also holds whatever else sorts in
        between (our own ``NAME.ttl/`` keys, another election ``NAME.x``, an
        application's ``NAME.zzz``): those are dropped here. A span that
        holds more than SPAN_MAX_KEYS, SPAN_MAX_FOREIGN more keys not asked
        for than asked for, or more than SPAN_MAX_FOREIGN_BYTES of them, is
        read as separate ranges (``snapshot``) for the rest of the process:
        someone else's keys are paid for once, and never again (a review saw
        a crowded span tried whole every 10 minutes cost each sidecar
        hundreds of MiB and etcd gigabytes each time, all at once). So is a
        span whose read failed when the separate ranges, read at once, do
        not: others' values can make it too slow to come back within a
        request's timeout, every time (a review stored 150 MiB under
        ``NAME.x/``: every span read timed out, and a leader whose key an
        operator deleted never saw it go, beside its successor). When they
        fail too the store is away, and the span is tried whole next time.
        """
        if len(reads) == 1:
            return await self.snapshot(what, reads)
        bounds = [(as_bytes(k), as_bytes(e) if e is not None else as_bytes(k) + b"\0") for k, e in reads]
        lo, hi = min(k for k, _ in bounds), max(e for _, e in bounds)
        if (lo, hi) in self._split:
            return await self.snapshot(what, reads)
        try:
            with _store_errors(what):
                resp = await self.kv.get(lo, range_end=hi, limit=SPAN_MAX_KEYS, timeout=self.timeout)
        except (StoreUnavailable, StoreForbidden):
            # Forbidden too: a user granted the election's keys one by one,
            # not the range between them, reads them apart.
            apart = await self.snapshot(what, reads)
            self._split.add((lo, hi))
            return apart
        out: list[list[Any]] = [[] for _ in reads]
        foreign = foreign_bytes = 0
        for kv in resp.kvs:
            key = bytes(kv.key)
            hits = [i for i, (k, e) in enumerate(bounds) if k <= key < e]
            for i in hits:
                out[i].append(kv)
            if not hits:
                foreign += 1
                foreign_bytes += len(key) + len(kv.value)
        if resp.more or foreign > SPAN_MAX_FOREIGN + len(resp.kvs) - foreign or foreign_bytes > SPAN_MAX_FOREIGN_BYTES:
            self._split.add((lo, hi))
            return await self.snapshot(what, reads)
        return out, int(resp.header.revision)

    def watch_stream(
        self,
        key: bytes,
        range_end: bytes = b"",
        start_revision: int = 0,
        *,
        no_put: bool = False,
        prev_kv: bool = False,
    ) -> Any:
        """One Watch stream, no retries, with require-leader.

        ``start_revision`` must be a revision we actually read + 1: resuming
        from anything else (a response header's revision, as etcd3aio resumed) can
        skip the very DELETE we wait for. Or 0, "from now", with the read sent
        only after etcd answered the creation (the leader's view watch).
        """
        create = pb.WatchCreateRequest(
            key=key,
            range_end=range_end,
            start_revision=start_revision,
            filters=[_NOPUT] if no_put else [],
            prev_kv=prev_kv,
        )
        return watch_call(self.wire, create, REQUIRE_LEADER)

    async def authenticate(self) -> None:
        """Log in once (then keep the token fresh); a no-op without a user."""
        if not self._user:
            return
        async with self._login:  # first calls made together log in once, with one refresher
            if self._refresher is not None:
                return
            with _store_errors(f"authenticate as {self._user!r}"):
                self.wire.token = await self.wire.authenticate(self._user, self._password, self.timeout)
            relogin = asyncio.Event()
            self.wire.on_token_rejected = relogin.set
            self._refresher = asyncio.create_task(self._refresh_token(relogin))

    async def _refresh_token(self, relogin: asyncio.Event) -> None:
        """A new token every TOKEN_REFRESH (etcd's simple tokens expire), and at once
        when a member rejected ours (``relogin``), at most once a retry interval.

        A login refused (the user was deleted, the password changed) makes every
        rejected call raise that refusal, StoreForbidden, as at start; any other
        failed login is named in the rejected calls' errors and tried again.
        """
        wait = TOKEN_REFRESH
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await relogin.wait()
            try:
                with _store_errors(f"log in again as {self._user!r}"):
                    self.wire.token = await self.wire.authenticate(self._user, self._password, self.timeout)
                self.wire.login_refused, self.wire.login_failed = None, ""
                wait = TOKEN_REFRESH
            except StoreForbidden as exc:
                self.wire.login_refused = exc
                wait = self.retry_interval
            except StoreUnavailable as exc:
                self.wire.login_failed = str(exc)
                wait = self.retry_interval
            # However many calls the old token fails meanwhile: one login per
            # retry interval at most (each costs the store a password hash).
            await asyncio.sleep(self.retry_interval)
            relogin.clear()

    def session(self, ttl: float) -> EtcdSession:
        return EtcdSession(self, int(ttl))

    def election(self, name: str) -> EtcdElection:
        return EtcdElection(self, name)

    async def describe(self) -> dict[str, str]:
        """Facts about the store for the start-up log and the store_info metric."""
        version = await self.server_version()
        return {"version": version, **({"known_bugs": "; ".join(bugs)} if (bugs := known_bugs(version)) else {})}

    def admin(self, name: str) -> EtcdElection:
        # One class serves both roles; the protocols keep each caller to its own part.
        return EtcdElection(self, name)

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
            self.wire.on_token_rejected = None
            self.wire.login_refused, self.wire.login_failed = None, ""
            self.wire.token = ""
        if self._connected:
            self.wire.close()
            self._connected = False

    @property
    def kv(self) -> Any:
        return self.wire.kv

    @property
    def lease(self) -> Any:
        return self.wire.lease


class EtcdSession:
    def __init__(self, backend: EtcdBackend, ttl: int) -> None:
        self._b = backend
        self._ttl = ttl
        self._granted = 0
        self._lease = 0
        self._stream: Any = None  # the session's LeaseKeepAlive stream, opened on first use
        self._stream_token: Any = None  # the auth metadata it was opened with

    @property
    def id(self) -> str:
        return f"{self._lease:x}" if self._lease else ""

    @property
    def ttl(self) -> float:
        """The TTL the store granted (what a successor waits when it knows nothing better)."""
        return float(self._granted or self._ttl)

    async def open(self) -> Renewal:
        await self._b.authenticate()
        sent = self._b.clock.now()
        with _store_errors("lease grant"):
            resp = await self._b.lease.grant(self._ttl, timeout=self._b.timeout)
        if resp.error:
            raise StoreUnavailable(f"etcd lease grant: {resp.error}")
        self._lease = resp.ID
        self._granted = int(resp.TTL)
        return Renewal(sent, float(resp.TTL))

    def _drop_stream(self, *, failed: bool = False) -> None:
        """End the keepalive stream; ``failed``: it got no answer in time or its
        connection went, so the next call goes to the next member (etcd_wire)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            if failed:
                stream.fail()
            else:
                stream.cancel()

    async def keepalive(self) -> Renewal:
        if not self._lease:
            raise SessionExpired("session not open")
        token = self._b.wire.token
        if self._stream is not None and self._stream_token != token:
            self._drop_stream()  # the token was refreshed: a stream carries the one it was opened with
        sent = self._b.clock.now()
        try:
            with _store_errors("lease keepalive"):
                async with asyncio.timeout(self._b.timeout):
                    if self._stream is None:
                        self._stream = self._b.lease.keepalive_stream()
                        self._stream_token = token
                    await self._stream.write(pb.LeaseKeepAliveRequest(ID=self._lease))
                    resp = await self._stream.read()
        except BaseException as exc:
            # Our request may still be answered later: that answer must not be
            # read as the next renewal's, so the stream goes with the error. A
            # member that did not answer in time is not asked the next renewal:
            # with one member silent, a renewal on the next is what keeps the lease.
            self._drop_stream(failed=isinstance(exc, StoreUnavailable))
            raise
        if resp is None:
            self._drop_stream(failed=True)
            raise StoreUnavailable("etcd lease keepalive: stream closed without an answer")
        if resp.TTL <= 0:
            self._drop_stream()
            self._b.wake_re_reads(self._lease)  # ended: its waiters find out from their reads
            raise SessionExpired(f"lease {self._lease:x} expired or was revoked")
        self._b.wake_re_reads(self._lease)
        return Renewal(sent, float(resp.TTL))

    async def close(self) -> None:
        self._drop_stream()
        if not self._lease:
            return
        self._b.wake_re_reads(self._lease)
        try:
            with _store_errors("lease revoke"):
                await self._b.lease.revoke(self._lease, timeout=self._b.timeout)
        except SessionExpired:
            # Already gone (expired, or an operator's revoke): nothing left to
            # close, which the caller tells apart from a revoke (as ZooKeeper's does).
            self._lease = 0
            raise
        # StoreUnavailable goes up with the id kept: the caller may try again when the store is back.
        self._lease = 0

    async def abandon(self) -> None:
        # Nothing to tell the store: closing our keepalive stream sends no
        # renewal, so the lease lapses after its TTL; forget the id.
        self._drop_stream()
        self._b.wake_re_reads(self._lease)
        self._lease = 0


def _priorities(kvs: Any) -> dict[str, int]:
    """id -> priority of candidate keys (an id held twice keeps its higher priority)."""
    out: dict[str, int] = {}
    for kv in kvs:
        cid, prio = parse_candidate(kv.value.decode(errors="replace"))
        out[cid] = max(prio, out.get(cid, prio))
    return out


@dataclass
class _Tracked:
    """What a waiting candidate knows of one leader's lease, on its own clock.

    ``hi``: the lease cannot expire later than this unless it was renewed
    after ``polled``. etcd reports the remaining TTL in whole seconds,
    truncated, so one poll alone leaves a second of doubt; while the lease is
    running out unrenewed (a crashed or frozen leader) we poll every
    NEAR_EXPIRY_POLL and keep the tightest bound, so an expiry is recognised
    within about that long and crash failover stays as fast as before.
    """

    token: int
    key: str
    lease: int
    granted: float
    hi: float
    remaining: int
    polled: float
    alive: bool = True


def _deleted(resp: Any) -> bool | None:
    """A watch response, for one waiting for a key's deletion (a leader its own, a candidate its predecessor's)."""
    if resp.compact_revision:
        return False  # history compacted under us: read the state afresh
    if resp.canceled:
        raise StoreUnavailable(f"etcd watch canceled: {resp.cancel_reason or 'no reason given'}")
    return True if any(ev.type == _DELETE for ev in resp.events) else None


def _changed(resp: Any) -> bool | None:
    """A watch response, for one waiting for any change of a key or range (then it reads)."""
    if resp.canceled:
        raise StoreUnavailable(f"etcd watch canceled: {resp.cancel_reason or 'no reason given'}")
    return True if resp.events or resp.compact_revision else None


@dataclass(frozen=True)
class _Handover:
    """A successor a resigning leader can name in its own delete txn, and what that txn compares."""

    key: bytes
    create_revision: int
    candidate_id: str
    lease: int
    ttl: int
    request: SwitchoverRequest | None
    request_mod: int  # the request key's mod revision (0: absent), compared and, if set, deleted
    revision: int  # the view's revision: with no request, nobody may have joined after it
    queued: frozenset[bytes]  # the keys the view holds, ours excepted
    aside: frozenset[bytes] = frozenset()  # keys queued ahead of a switchover's target: deleted in the txn


class _LeaderView:
    """What a leader knows of the request key and the queue: its last read, then every event since.

    The switchover's first hop is the leader's watch event, and a read
    after it cost a round trip while the request waited. One watch over
    ``[NAME.switchover, end of NAME/)`` delivers the request's writes and
    the queue's changes in revision order, so the read plus the events
    after it describe the store as of the newest event, as a read at that
    revision would: the leader acts on a request at once, and never on a
    target that left before it (a view as old as the last read did; the
    review that caught it wrote a request for a candidate gone 20 ms
    earlier). Events at or below the read's revision are skipped: the kept
    watch may still be delivering what a later read already holds. The
    range also holds other keys that sort between (another election named
    ``NAME.x``): their events wake the leader and are ignored.

    The same view names the successor a resign can hand the term to
    (``successor``): the range holds ``NAME.ttl/`` too, where each of our
    candidates states its lease's TTL. The view only proposes; the handover
    txn compares everything it relied on, so a stale view costs a plain
    resign, never a wrong leader.
    """

    def __init__(self, own_key: str, switch_key: bytes, prefix: bytes, ttl_prefix: bytes, me: str) -> None:
        self._own, self._switch, self._prefix, self._me = own_key.encode(), switch_key, prefix, me
        self._ttl_prefix = ttl_prefix
        self._queue: dict[bytes, Any] = {}  # candidate key -> its kv, others than us
        self._ttls: dict[bytes, int] = {}  # lease id in hex -> the TTL its holder stated
        self.request: SwitchoverRequest | None = None
        self._request_mod = 0
        self._read = 0  # the last read's revision: events at or below it are in the read
        self.revision = 0  # the newest revision the view reflects
        self.acted: SwitchoverRequest | None = None  # the request the watch found to act on
        self.woke = asyncio.Event()  # set when ``acted`` is
        # A watch from now's responses, kept until the read sent after its
        # creation is applied (``hold``).
        self._held: list[Any] | None = None

    def hold(self) -> None:
        """Keep the events of a watch about to start from now until the next ``reset``.

        Applied as they came, an event of the new watch above the next read's
        revision made that read look old, and ``reset`` skipped it: what changed
        between the last read and the new watch's creation (a request, among
        others) was never applied (a review: the leader acted on a request only
        at a later re-read, 1-3 s on). The next read is applied whatever the
        view's revision, then the kept events, those it does not hold already.
        """
        self._held = []

    def reset(self, switch: Any, queue: list[Any], ttls: list[Any], revision: int) -> None:
        """The read's answer: what it found at ``revision``, unless the view is newer.

        The watch runs on while the read is in flight: events above the
        read's revision may already be applied, and the read would drop them
        for good (the watch never sends them again). A view newer than the
        read is the read plus every event since, which is all the read
        would tell.
        """
        held, self._held = self._held, None
        if held is None and revision < self.revision:
            return
        self.request = parse_switchover(bytes(switch.value)) if switch is not None else None
        self._request_mod = int(switch.mod_revision) if switch is not None else 0
        self._queue = {bytes(c.key): c for c in queue if bytes(c.key) != self._own}
        self._ttls = {}
        for t in ttls:
            self._ttl_seen(bytes(t.key), bytes(t.value))
        self._read = self.revision = revision
        for resp in held or ():
            self._apply(resp)

    def _ttl_seen(self, key: bytes, value: bytes | None) -> None:
        lease = key[len(self._ttl_prefix) :]
        ttl = _stated_ttl(value)
        if ttl is None:
            self._ttls.pop(lease, None)
        else:
            self._ttls[lease] = ttl

    def acts_now(self, now: float) -> bool:
        others = {candidate_id_of(bytes(c.value).decode(errors="replace")) for c in self._queue.values()}
        return leader_should_hand_over(self.request, self._me, others, now)

    def seen(self, resp: Any) -> bool | None:
        """A watch response, applied: False to read afresh, None to keep watching (or raises).

        Acting is signalled through ``acted`` and ``woke``, not by ending the
        watch: it goes on feeding the view through the demote, for ``successor``.
        """
        if resp.canceled:
            raise StoreUnavailable(f"etcd watch canceled: {resp.cancel_reason or 'no reason given'}")
        if resp.compact_revision:
            return False  # history compacted under us: read the state afresh
        if self._held is not None:
            self._held.append(resp)
            return None
        self._apply(resp)
        if self.acted is None and self.acts_now(time.time()):
            # Kept as it was: a later event of the same batch may change
            # ``request`` (withdrawn) before the waiter runs, and the stop
            # this starts is not taken back (docs/design.md, 1c).
            self.acted = self.request
            self.woke.set()
        return None

    def _apply(self, resp: Any) -> None:
        """A watch response's events, those the last read does not hold already."""
        for ev in resp.events:
            key = bytes(ev.kv.key)
            if int(ev.kv.mod_revision) <= self._read:
                continue  # the last read already holds it (one txn's events share a revision)
            self.revision = max(self.revision, int(ev.kv.mod_revision))
            if key == self._switch:
                deleted = ev.type == _DELETE
                self.request = None if deleted else parse_switchover(bytes(ev.kv.value))
                self._request_mod = 0 if deleted else int(ev.kv.mod_revision)
            elif key.startswith(self._prefix) and key != self._own:
                if ev.type == _DELETE:
                    self._queue.pop(key, None)
                else:
                    self._queue[key] = ev.kv
            elif key.startswith(self._ttl_prefix):
                self._ttl_seen(key, None if ev.type == _DELETE else bytes(ev.kv.value))

    def successor(self, my_priority: int, now: float) -> _Handover | None:
        """Who a resign now would hand the term to, or None (a plain resign).

        Exactly whom a successor's own claim would elect (``_claim``): the
        next key in the queue, when its verdict with us re-queued beside it
        is "lead" (no request, or one naming it or anyone), and it is one of
        ours (it stated its TTL: an ``etcdctl elect`` candidate never leads
        through our record).
        """
        if not self._queue:
            return None
        queue = sorted(self._queue.values(), key=lambda c: int(c.create_revision))
        nxt, aside = queue[0], frozenset[bytes]()
        request = self.request
        if self._request_mod and request is not None and request.pending(now) and request.to not in ("", self._me):
            # A switchover to a target further back: the candidates ahead of it
            # step aside anyway (1c); the txn takes their keys with ours, so the
            # target need not wait for them. Only keys of ours: an etcdctl elect
            # candidate's key is never touched.
            named = [c for c in queue if candidate_id_of(bytes(c.value).decode(errors="replace")) == request.to]
            if len(named) == 1 and named[0] is not nxt:
                nxt = named[0]
                ahead = [c for c in queue if int(c.create_revision) < int(nxt.create_revision)]
                if any(self._ttl_of(c) is None for c in ahead):
                    return None
                aside = frozenset(bytes(c.key) for c in ahead)
        ttl = self._ttl_of(nxt)
        if ttl is None:
            return None
        cid, prio = parse_candidate(bytes(nxt.value).decode(errors="replace"))
        others = _priorities(c for c in self._queue.values() if c is not nxt)
        others[self._me] = max(my_priority, others.get(self._me, my_priority))
        verdict = priority_verdict(request, cid, prio, others, now)
        if verdict != (NO_REQUEST if self._request_mod == 0 else COMPLETED):
            return None
        return _Handover(
            bytes(nxt.key),
            int(nxt.create_revision),
            cid,
            int(nxt.lease),
            ttl,
            request,
            self._request_mod,
            self.revision,
            frozenset(self._queue),
            aside,
        )

    def _ttl_of(self, kv: Any) -> int | None:
        """The TTL the holder of ``kv`` stated: None for a key not of ours (or not yet stated)."""
        lease = int(kv.lease)
        return self._ttls.get(f"{lease:x}".encode()) if lease else None


def _stated_ttl(value: bytes | None) -> int | None:
    """The TTL a candidate stated under ``NAME.ttl/``; None when absent or not a sane number."""
    if value is None or not value.isdigit() or len(value) > 6:
        return None
    return int(value) or None


def _noting_lag(
    seen: Callable[[Any], bool | None], from_revision: int, lagging: asyncio.Event
) -> Callable[[Any], bool | None]:
    """``seen``, and ``lagging`` set when the watch's creation shows the store already
    past ``from_revision``: etcd serves such a watch from its 100 ms catch-up loop."""

    def noted(resp: Any) -> bool | None:
        if resp.created and int(resp.header.revision) >= from_revision:
            lagging.set()
        return seen(resp)

    return noted


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Mark a task's failure as seen: its waiters may all be gone (they raise it themselves if not)."""
    if not task.cancelled():
        task.exception()


class _KeptWatch:
    """One watch stream that outlives the re-reads around it.

    The leader re-reads its own key and the switchover key every retry
    interval (the read is the fact, the watch a hint). A new stream per
    interval was half of an idle leader's wake-ups: gRPC's threads wake for
    every stream set up and torn down, while an idle open stream costs
    nothing. So the stream starts once, after the first read, and is kept
    until it ends; as it started from a revision actually read + 1, no
    event after that read is missed, whatever the later reads saw. A
    waiting candidate keeps its predecessor's watch the same way
    (``_Predecessor``); a one-shot wait (``_wait_changed``) is the same
    stream closed after one budget.
    """

    def __init__(self, call: Any, seen: Callable[[Any], bool | None], end: str = "") -> None:
        """``seen(resp)``: True (what we wait for), False (read afresh), None (keep waiting), or raises.

        ``end``: raise StoreUnavailable with it when the stream ends; empty, read afresh.
        """
        self._call = call
        self._task = asyncio.create_task(self._read(seen, end))
        # Its waiter raises a failure; a watch nobody waits on any more (the
        # view's, kept through the demote, when the connection closes) must
        # not log it as never retrieved when collected.
        self._task.add_done_callback(_retrieved)

    async def _read(self, seen: Callable[[Any], bool | None], end: str) -> bool:
        with _store_errors("watch"):
            async for resp in self._call:
                verdict = seen(resp)
                if verdict is not None:
                    return verdict
        if end:
            raise StoreUnavailable(end)
        return False

    @property
    def task(self) -> asyncio.Task[bool]:
        """The reader: done once the stream said what we wait for, ended or failed."""
        return self._task

    async def wait(self, budget: float, until: asyncio.Future[None]) -> bool | None:
        """None when ``budget`` ran out (or ``until`` came) with the stream still open;
        else what ``_read`` returned (or raised)."""
        waits: set[asyncio.Future[Any]] = {self._task, until}
        await asyncio.wait(waits, timeout=budget, return_when=asyncio.FIRST_COMPLETED)
        return self._task.result() if self._task.done() else None

    def close(self) -> None:
        self._task.cancel()
        # The stream's reset waits until the step that closed it has moved on:
        # the successor closes its predecessor's watch as it returns its term.
        self._call.cancel(reset_after=STREAM_RESET_DELAY)


@dataclass
class _Seen:
    """The epoch record and the switchover request (None: absent) a waiting candidate last read."""

    epoch: Any
    switch: Any
    marker: Any = None

    @classmethod
    def of(cls, epoch: list[Any], switch: list[Any], marker: list[Any]) -> _Seen:
        """From the answers of three single-key ranges (empty: absent)."""
        return cls(*(kvs[0] if kvs else None for kvs in (epoch, switch, marker)))


@dataclass
class _HandoverSeen:
    """What one watch response holds of a handover txn (``_hand_over``) from ``head``."""

    gone: bool = False  # the head's key deleted
    marked: bool = False  # the head's clean-resign marker put
    raw: bytes = b""  # the record put, as written
    record: EpochRecord | None = None  # the same, parsed (None: none put, or garbled)
    request: SwitchoverRequest | None = None  # the request deleted (settled), from its previous value

    @property
    def complete(self) -> bool:
        return self.gone and self.marked and self.record is not None

    @classmethod
    def of(cls, election: EtcdElection, head: bytes, created: int, events: Any) -> _HandoverSeen:
        seen = cls()
        epoch = election._epoch_key.encode()
        marker_key, switch_key = election._marker_key.encode(), election._switch_key.encode()
        marker = ResignMarker(created, head.decode(errors="replace")).encode()
        for ev in events:
            key = bytes(ev.kv.key)
            if key == head and ev.type == _DELETE:
                seen.gone = True
            elif key == epoch and ev.type != _DELETE:
                seen.raw = bytes(ev.kv.value)
                parsed = parse_epoch_record(election._epoch_key, seen.raw)
                seen.record = parsed if isinstance(parsed, EpochRecord) else None
            elif key == marker_key and ev.type != _DELETE:
                seen.marked = bytes(ev.kv.value) == marker
            elif key == switch_key and ev.type == _DELETE and ev.HasField("prev_kv"):
                seen.request = parse_switchover(bytes(ev.prev_kv.value))
        return seen


class _TakenAside(KeyLost):
    """The next in line's key went in a switchover's handover, over its head: it re-queues.

    A KeyLost to anything that does not catch it: re-registering is what
    the elector does then, and is right whatever took the key.
    """

    def __init__(self, key: str, request: SwitchoverRequest) -> None:
        super().__init__(f"candidate key {key} taken aside by the handover to {request.to}")
        self.request = request


@dataclass
class _Claimed:
    """The term a candidate claimed in one txn as the head's key went, and the request it settled.

    ``settled_at``: the record's kv when a read found the term handed to us;
    the request the handover settled is gone from that read, and is read
    back for the report after we lead (``_report_settled``), not before.
    """

    epoch: int
    request: SwitchoverRequest | None = None
    settled_at: Any = None


@dataclass
class _Predecessor:
    """A waiting candidate's watch on the key just ahead of it (``EtcdElection._watch_predecessor``)."""

    key: bytes
    created: int
    handed: list[_Claimed] | None  # the next in line's: a term handed to us in the txn that deleted ``key``
    watch: _KeptWatch
    lagging: asyncio.Event  # the store had moved past our read when the watch was set up
    fresh: bool = True  # no wait has run on it yet: the set-up's catch-up check is due
    from_now: bool = False  # watched again from now: the read after its creation answer is due

    def follows(self, key: bytes, created: int, next_in_line: bool) -> bool:
        """Still the watch to wait on: the same key, the same place, and the stream said nothing yet."""
        same = (self.key, self.created, self.handed is not None) == (key, created, next_in_line)
        return same and not self.watch.task.done()


@dataclass
class _SharedRead:
    """One leader re-read in flight or done (``EtcdElection._leader_read``), and how many wait for it."""

    task: asyncio.Task[tuple[list[list[Any]], int]]
    started: float
    users: int = 0


def _mod_is(key: str, mod_revision: int) -> Compare:
    """The key was last written at ``mod_revision`` (0: it does not exist)."""
    return Compare(result=Compare.EQUAL, target=Compare.MOD, key=key.encode(), mod_revision=mod_revision)


class EtcdElection:
    def __init__(self, backend: EtcdBackend, name: str) -> None:
        self._b = backend
        self._name = name
        self._prefix = name + "/"
        self._epoch_key = name + ".epoch"
        self._marker_key = name + ".resigned"
        self._switch_key = name + ".switchover"
        # --no-lead candidates register here, beside the queue and never in
        # it: nobody queues behind them, and etcdctl elect never sees them.
        self._no_lead_prefix = name + NO_LEAD_SUFFIX + "/"
        # NAME.ttl/<lease hex> = the TTL our candidate's lease was granted, on
        # that lease: a resigning leader names its successor in its own txn
        # (``_LeaderView.successor``), and the record it writes holds this.
        self._ttl_prefix = name + TTL_SUFFIX + "/"
        self._key = ""
        self._rev = 0
        self._cid = ""
        self._priority = DEFAULT_PRIORITY
        self._record = b""  # the epoch record of our term while we lead: the handover compares it
        self._led = b""  # the record of the last term we led: never taken as a handover to us
        # The leader's view, still fed by its watch after wait_switchover
        # returns, through the demote, until resign uses it (or we drop it).
        self._view: _LeaderView | None = None
        self._view_watch: _KeptWatch | None = None
        self._shared_read: _SharedRead | None = None  # the leader's re-read, shared by its waits
        self._pred: _Predecessor | None = None  # a waiting candidate's watch on the key ahead of it
        self._tracked: _Tracked | None = None  # the head we polled last
        # Every head polled lately, by token: a head that dies and then a
        # candidate that steps aside (priority, switchover) make us poll the
        # new head before we lead, and the dead leader's bound must survive that.
        self._tracks: dict[int, _Tracked] = {}
        # token -> (key, lease) of every head this candidate queued behind
        # since it last led (the newest few): when the epoch record is gone
        # too (`etcdctl del --prefix NAME`), they are the only trace of a
        # leader whose grant may still run. All of them, not the last: after
        # such a delete the queue re-forms behind candidates that never led.
        self._heads_seen: dict[int, tuple[str, int]] = {}
        self._own_ttl = 0  # our lease's granted TTL: our lock-delay bound, and recorded when we lead
        self._lease = 0  # the lease our key is on: its renewals pace our re-reads (next_renewal)
        self.wakeups = 0  # watch events that woke this candidate; O(1) per change
        self._reporting: set[asyncio.Future[None]] = set()  # report reads left running after we lead

    @property
    def name(self) -> str:
        return self._name

    async def _candidate_kvs(self, prefix: str = "") -> tuple[list[Any], int]:
        """The keys under ``prefix`` (default: the queue), oldest first, and the revision read."""
        prefix = prefix or self._prefix
        await self._b.authenticate()
        with _store_errors("range"):
            resp = await self._b.kv.get(
                prefix,
                range_end=prefix_range_end(prefix),
                sort_order=SortOrder.ASCEND,
                sort_target=SortTarget.CREATE,
                timeout=self._b.timeout,
            )
        return list(resp.kvs), int(resp.header.revision)

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
        if not session.id:
            raise SessionExpired("session not open")
        if no_lead:
            return await self._stand_by(session, candidate_id, on_wait)
        self._drop_view()
        key = self._prefix + session.id
        lease = self._lease = int(session.id, 16)
        value = encode_candidate(candidate_id, priority)
        self._own_ttl = int(float(getattr(session, "ttl", 0.0)))
        self._led = self._record or self._led
        self._cid, self._priority, self._record = candidate_id, priority, b""
        self._key = key
        read: tuple[list[Any], int, _Seen] | None
        self._rev, read = await self._queue_after_create("campaign txn", value, lease)
        while True:
            try:
                waited = await self._wait_for_predecessors(candidate_id, lease, priority, on_wait, report, read=read)
            finally:
                self._close_predecessor_watch()
            read = None
            if isinstance(waited, _Claimed):
                if waited.request is not None and report is not None:
                    report.switchover(COMPLETED, waited.request)
                if waited.settled_at is not None and report is not None:
                    self._report_settled(waited.settled_at, report)
                self._heads_seen.clear()  # waited out: from now on we are the leader to honour
                return Leadership(candidate_id, self._rev, waited.epoch)
            kvs = waited
            others = _priorities(kv for kv in kvs if kv.key.decode() != self._key)
            # One read for the switchover request and what the lock-delay needs.
            record, marker, request, mod = await self._read_at_once()
            verdict = priority_verdict(request, candidate_id, priority, others, time.time())
            if verdict in (STEP_ASIDE, PRIORITY_STEP_ASIDE):
                if report is not None and verdict == STEP_ASIDE:
                    assert request is not None
                    report.switchover(verdict, request)
                elif report is not None:
                    best = max(others, key=lambda i: others[i])
                    report.priority_step_aside(best, others[best])
                read = await self._requeue(value, lease)
                continue
            await self._lock_delay(report, float(self._own_ttl), (record, marker))
            epoch = await self._bump_epoch(candidate_id, lease, report, mod, consume=verdict != NO_REQUEST)
            if epoch is None:
                continue  # the request changed since we read it: decide again
            if verdict != NO_REQUEST and request is not None and report is not None:
                report.switchover(verdict, request)
            self._heads_seen.clear()  # waited out: from now on we are the leader to honour
            return Leadership(candidate_id, self._rev, epoch)

    async def _create_once(
        self,
        what: str,
        key: str,
        value: str,
        lease: int,
        *,
        also: list[Any] | None = None,
        reads: list[Any] | None = None,
    ) -> tuple[int, Any]:
        """Create ``key`` on ``lease`` unless it exists; its create revision either way, and
        the txn's answer. ``also``: more ops when it creates; ``reads``: ops run last in
        either branch.

        The same lease registering again (after a retried request whose first
        attempt did land) keeps the key it has, and so its place in the queue.
        """
        kv = self._b.kv
        with _store_errors(what):
            resp = await kv.txn(
                compare=[kv.txn_compare_create_revision(key, 0)],
                success=[kv.txn_op_put(key, value, lease=lease), *(also or []), *(reads or [])],
                failure=[kv.txn_op_get(key), *(reads or [])],
                timeout=self._b.timeout,
            )
        if resp.succeeded:
            return int(resp.header.revision), resp
        return int(resp.responses[0].response_range.kvs[0].create_revision), resp

    async def _queue_after_create(self, what: str, value: str, lease: int) -> tuple[int, tuple[list[Any], int, _Seen]]:
        """``_create_once`` of our candidate key with our TTL statement, and the queue
        read in the same txn.

        A candidate reads the queue right after it registers (a campaign, a
        step-aside): in the txn that writes the key, the read costs no round
        trip of its own. Not a read-only txn, so not the cancellation bug
        ``snapshot`` avoids.
        """
        # Our TTL goes in the same txn, on the same lease: it lives exactly as long as our candidacy can.
        stated = [self._ttl_statement(lease)]
        rev, resp = await self._create_once(what, self._key, value, lease, also=stated, reads=self._queue_ops())
        return rev, self._queue_in(resp)

    async def _read_switchover(self) -> tuple[SwitchoverRequest | None, int]:
        """The request and its mod revision (0: absent), which the epoch txn compares."""
        with _store_errors("switchover read"):
            resp = await self._b.kv.get(self._switch_key, timeout=self._b.timeout)
        if not resp.kvs:
            return None, 0
        return parse_switchover(resp.kvs[0].value), int(resp.kvs[0].mod_revision)

    async def _stand_by(self, session: Session, candidate_id: str, on_wait: OnWait | None) -> Leadership:
        """A --no-lead candidacy: one key under NAME.no-lead/ on our lease, then reads only.

        It never returns a leadership: it raises KeyLost when the key goes
        (evicted; the elector registers again) and is cancelled otherwise.
        No write after the registration (etcd's keepalives do not touch the
        revision), so a no-lead candidate left alone costs the store nothing.
        """
        kv = self._b.kv
        key = self._no_lead_prefix + session.id
        lease = int(session.id, 16)
        rev, _ = await self._create_once("no-lead register", key, candidate_id, lease)
        told: tuple[str, int] | None = None
        end = prefix_range_end(self._prefix)
        while True:
            with _store_errors("no-lead read"):
                own = await kv.get(key, timeout=self._b.timeout)
            if not own.kvs or int(own.kvs[0].create_revision) != rev:
                raise KeyLost(f"no-lead key {key} vanished")
            kvs, _ = await self._candidate_kvs()
            if kvs and on_wait is not None:
                head = (candidate_id_of(kvs[0].value.decode(errors="replace")), int(kvs[0].create_revision))
                if head != told:
                    on_wait(Leadership(head[0], head[1], 0))
                    told = head
            # NAME.no-lead/ and NAME/ both lie in [NAME, end of NAME/): one
            # watch from the first read's revision wakes us for either.
            until = self._b.next_renewal(lease)
            await self._wait_changed(
                self._name.encode(), int(own.header.revision) + 1, self._b.re_read_within, end, until
            )

    def _ttl_statement(self, lease: int) -> Any:
        """The put of our TTL statement, ``NAME.ttl/<lease hex>``, on our lease.

        Written with every (re-)creation of our key, not only the campaign's:
        something that deleted our key may have taken it too (a wipe of the
        election between a step-aside's two txns, found by a review), and
        without it no leader of ours would hand us a term.
        """
        return self._b.kv.txn_op_put(self._ttl_prefix + f"{lease:x}", str(self._own_ttl), lease=lease)

    async def _requeue(self, value: str, lease: int) -> tuple[list[Any], int, _Seen]:
        """Step aside: go to the end of the queue without ever leading; the queue then.

        etcd refuses a delete and a put of one key in one txn, so two: between
        them we hold no key, which is only ever safe (we are not leader). The
        second reads the queue too, as ``_queue_after_create`` does.
        """
        kv = self._b.kv
        ops = self._queue_ops()
        with _store_errors("switchover step-aside"):
            gone = await kv.txn(
                compare=[kv.txn_compare_create_revision(self._key, self._rev)],
                success=[kv.txn_op_delete(self._key)],
                failure=[],
                timeout=self._b.timeout,
            )
            if not gone.succeeded:
                raise KeyLost(f"candidate key {self._key} vanished while stepping aside")
            resp = await kv.txn(
                compare=[kv.txn_compare_create_revision(self._key, 0)],
                success=[kv.txn_op_put(self._key, value, lease=lease), self._ttl_statement(lease), *ops],
                failure=[],
                timeout=self._b.timeout,
            )
        if not resp.succeeded:
            raise KeyLost(f"candidate key {self._key} reappeared while stepping aside")
        self._rev = int(resp.header.revision)
        return self._queue_in(resp)

    async def _wait_for_predecessors(
        self,
        candidate_id: str,
        lease: int,
        priority: int,
        on_wait: OnWait | None,
        report: CampaignReport | None,
        *,
        read: tuple[list[Any], int, _Seen] | None = None,
    ) -> list[Any] | _Claimed:
        """Return, with the queue as last read, once nobody is ahead of us;
        or the term we claimed in one txn the moment the head's key went.
        ``read``: the queue as the txn that registered us read it, if it did.
        The watch on our predecessor it keeps (``_pred``) is the caller's to close."""
        told: tuple[str, int] | None = None
        duplicates_told = False
        while True:
            kvs, revision, seen = read if read is not None else await self._queue_read()
            read = None
            if not any(kv.key.decode() == self._key for kv in kvs):
                taken = await self._taken_aside_in_read(seen)
                if taken is None:
                    raise KeyLost(f"candidate key {self._key} vanished while campaigning")
                read = await self._taken_aside(taken, candidate_id, priority, lease, report)
                continue
            twins = [
                kv.key.decode(errors="replace")
                for kv in kvs
                if candidate_id_of(kv.value.decode(errors="replace")) == candidate_id
            ]
            if len(twins) > 1 and not duplicates_told and report is not None:
                report.duplicate_candidate_id(candidate_id, twins)
                duplicates_told = True
            ahead = [kv for kv in kvs if kv.create_revision < self._rev]
            if not ahead:
                given = await self._handed_in_read(seen)
                return given if given is not None else kvs
            head = ahead[0]
            # Every key ahead of us may lead before we next read the queue (a
            # handover between two reads), so remember them all, not the head.
            for kv in ahead:
                self._heads_seen[int(kv.create_revision)] = (kv.key.decode(errors="replace"), int(kv.lease))
            excess = len(self._heads_seen) - MAX_HEADS_SEEN
            if excess > 0:  # bounded: forget first those no longer queued, oldest first
                queued = {int(kv.create_revision) for kv in ahead}
                for t in sorted(t for t in self._heads_seen if t not in queued)[:excess]:
                    del self._heads_seen[t]
            behind = {
                candidate_id_of(kv.value.decode(errors="replace")) for kv in kvs if kv.create_revision > self._rev
            }
            request = parse_switchover(seen.switch.value) if seen.switch is not None else None
            if steps_aside_early(request, candidate_id, behind, time.time()):
                assert request is not None
                if report is not None:
                    report.switchover(STEP_ASIDE, request)
                read = await self._requeue(encode_candidate(candidate_id, priority), lease)
                continue
            leader = (candidate_id_of(head.value.decode(errors="replace")), int(head.create_revision))
            if on_wait is not None and leader != told:
                # Once per leader: the re-reads below are a backstop, not news.
                on_wait(Leadership(leader[0], leader[1], 0))
                told = leader
            # Re-read when our own keepalive is next acknowledged (next_renewal).
            budget, until = self._b.re_read_within, self._b.next_renewal(lease)
            poll: asyncio.Future[_Tracked | None] | None = None
            if head.lease and (len(ahead) == 1 or self._takes_next_vacancy(kvs)):
                # Next in line, or the one whose priority takes the vacancy
                # (the others step aside for it): follow the leader's lease, so
                # that if its key goes before the lease could have run out we
                # know how long to wait, and a crash costs no full-TTL fallback.
                polled = self._poll_lease(int(head.create_revision), head.key.decode(), int(head.lease))
                if int(head.create_revision) not in self._tracks:
                    # New to us (we just came next, as a switchover's target does
                    # while the leader hands over): the watch goes up first and
                    # the poll runs beside it, off the hand-over's path; the wait
                    # is as short as a near-expiry one, then we poll in turn. A
                    # lock-delay polls for itself whatever we tracked.
                    poll = asyncio.ensure_future(polled)
                    budget = min(budget, NEAR_EXPIRY_POLL)
                else:
                    tracked = await polled
                    if tracked is not None and tracked.alive and tracked.remaining <= 1:
                        budget = min(budget, NEAR_EXPIRY_POLL)
            # No waiting candidate watches the request key (docs/design.md, 1c):
            # a leader of ours hands the term to a switchover's target in the
            # txn that deletes its own key and the keys of those ahead of the
            # target, so the target learns of it from its predecessor's delete
            # and one read. Every candidate woken by the request's write cost
            # the leader's own stop CPU on a shared machine. A request found
            # in a read still sends a candidate ahead of its target aside
            # above: the way on when the leader could not hand over.
            # The next in line watches everything of the election instead:
            # the leader may hand it the term in the txn that deletes its key.
            pred = ahead[-1]
            kept = self._pred
            if kept is None or not kept.follows(bytes(pred.key), int(pred.create_revision), len(ahead) == 1):
                self._close_predecessor_watch()
                kept = self._pred = self._watch_predecessor(
                    bytes(pred.key), revision + 1, created=int(pred.create_revision), next_in_line=len(ahead) == 1
                )
            handed = kept.handed if kept.handed is not None else []
            try:
                gone = await self._wait_deleted(kept, budget, until)
            except _TakenAside as taken:
                if poll is not None:
                    poll.cancel()
                read = await self._taken_aside(taken.request, candidate_id, priority, lease, report)
                continue
            except BaseException:
                if poll is not None:
                    poll.cancel()
                raise
            if poll is not None:
                if handed:
                    poll.cancel()  # we lead: its answer is moot
                else:
                    await poll  # bounded by the store's timeout; a store error surfaces here, as before
            if gone:
                self.wakeups += 1
                if handed:
                    return handed[0]
                if len(ahead) == 1:
                    # The head went: claim on what we read while waiting, in one
                    # round trip; a failed claim reads the queue in its failure
                    # branch, so a wrong guess costs no round trip more than before.
                    claimed = await self._claim(
                        candidate_id, lease, priority=priority, kvs=kvs, revision=revision, seen=seen
                    )
                    if isinstance(claimed, _Claimed):
                        return claimed
                    read = claimed  # a failed claim read the queue again: no second round trip

    async def _taken_aside(
        self, request: SwitchoverRequest, candidate_id: str, priority: int, lease: int, report: CampaignReport | None
    ) -> tuple[list[Any], int, _Seen]:
        """A switchover's handover took our key with the leader's: we step aside as
        if we had done it ourselves (1c), behind its target; the queue then."""
        if report is not None:
            report.switchover(STEP_ASIDE, request)
        value = encode_candidate(candidate_id, priority)
        self._rev, read = await self._queue_after_create("switchover step-aside", value, lease)
        return read

    async def _taken_aside_in_read(self, seen: _Seen) -> SwitchoverRequest | None:
        """The request whose handover took our key, when a read finds our key gone.

        A candidate further ahead of a switchover's target than the next in
        line learns of the handover from its predecessor's delete: its read
        then holds a record naming a candidate queued after us, written with
        another head's marker (a handover), and one read of the revision
        before it shows our key still there and the request naming that
        candidate. Anything else (an eviction, an expired lease) is None:
        KeyLost, and the elector registers us again. Either way we hold no
        grant; this only decides what is reported, and saves the elector's
        round of logging and re-registering.
        """
        if seen.epoch is None or seen.marker is None or int(seen.marker.mod_revision) != int(seen.epoch.mod_revision):
            return None
        record = parse_epoch_record(self._epoch_key, bytes(seen.epoch.value))
        if not isinstance(record, EpochRecord) or record.token <= self._rev:
            return None
        own, switch = await self._just_before(seen.epoch, self._key, self._switch_key)
        if own and int(own[0].create_revision) == self._rev and switch:
            request = parse_switchover(switch[0].value)
            if request is not None and request.to == record.leader:
                return request
        return None

    async def _just_before(self, written: Any, *keys: str) -> list[list[Any]]:
        """``keys`` as of the revision before ``written`` (a kv) was last written: a
        handover's txn deletes what it settled, and a read after it no longer sees that.

        For the report only: a compacted revision or a silent store reads as
        nothing found, and must not stop what the caller's read already proved.
        """
        before = int(written.mod_revision) - 1
        with contextlib.suppress(StoreUnavailable), _store_errors("switchover read"):
            found = await asyncio.gather(*(self._b.kv.get(k, revision=before, timeout=self._b.timeout) for k in keys))
            return [list(r.kvs) for r in found]
        return [[] for _ in keys]

    async def _queue_read(self) -> tuple[list[Any], int, _Seen]:
        """The queue (oldest first) and the records a claim predicts from, as of one revision.

        One Range over the four (``EtcdBackend.span``), so a waiting candidate
        pays one call: what it learns here is what ``_claim`` compares.
        """
        await self._b.authenticate()
        kvs, revision = await self._b.span("queue read", self._queue_ranges())
        return self._queue_of(kvs, revision)

    def _queue_ranges(self) -> list[tuple[str, str | bytes | None]]:
        """What ``_queue_of`` reads, in its order: the queue, the epoch record, the switchover key, the marker."""
        return [
            (self._prefix, prefix_range_end(self._prefix)),
            (self._epoch_key, None),
            (self._switch_key, None),
            (self._marker_key, None),
        ]

    def _queue_ops(self) -> list[Any]:
        """The same reads inside a txn (the claim's failure branch)."""
        return [self._b.kv.txn_op_get(key, range_end=end) for key, end in self._queue_ranges()]

    def _queue_in(self, txn: Any) -> tuple[list[Any], int, _Seen]:
        """``_queue_of`` the ``_queue_ops`` a txn ran last in the branch it took."""
        ranges = txn.responses[len(txn.responses) - len(self._queue_ranges()) :]
        return self._queue_of([list(r.response_range.kvs) for r in ranges], int(txn.header.revision))

    @staticmethod
    def _queue_of(kvs: list[list[Any]], revision: int) -> tuple[list[Any], int, _Seen]:
        queue, epoch, switch, marker = kvs
        queue.sort(key=lambda c: int(c.create_revision))
        return queue, revision, _Seen.of(epoch, switch, marker)

    async def _claim(
        self, candidate_id: str, lease: int, *, priority: int, kvs: list[Any], revision: int, seen: _Seen
    ) -> _Claimed | tuple[list[Any], int, _Seen] | None:
        """Lead in one txn, right after the head's key went. Otherwise the
        queue as the failed txn read it (the slow path goes on from there), or
        None when the claim was not even tried.

        We predict the common case: the head led (it bumped the epoch, before
        or after our read) and resigned cleanly. The txn then wins only if
        the store holds exactly what the slow path would have read and led
        on without a lock-delay: our key at its create revision; no key under
        the prefix created before it (a range compare); the epoch record as
        read (if it names the head already) or as the head's own bump of it
        writes it; no switchover request (or a pending one naming us or
        anyone, which the txn then deletes); and the marker the head's clean
        resign writes in the txn that deletes its key. A marker with its
        token is only ever written after its orchestrator was confirmed
        stopped, and the record names the last leader, so the lock-delay
        rule (section 1b) holds with no wait. Anything else (a head that
        never led, a key gone without that marker, a garbled record, a
        request for someone else, a newcomer or bump we did not predict) fails a
        compare or is not tried, and the slow path (queue read, lock-delay,
        step-aside, repair) decides as before, on the queue the failed txn
        read: no round trip more than before the claim existed.

        Priorities: the verdict is taken on the queue as read (``kvs``, the
        head counted too, since it re-queues on the same key with the same
        priority), and the txn compares that nobody else joined since that
        read (``revision``): a newcomer of higher priority would have taken
        the vacancy on the slow path, so any newcomer sends us there.
        """
        head = kvs[0]
        record = parse_epoch_record(self._epoch_key, seen.epoch.value if seen.epoch is not None else None)
        if not isinstance(record, EpochRecord) or not head.lease:
            return None  # a record to repair, a head with no lease: the slow path
        others = _priorities(c for c in kvs if c.key.decode() != self._key)
        request = parse_switchover(seen.switch.value) if seen.switch is not None else None
        verdict = priority_verdict(request, candidate_id, priority, others, time.time())
        if verdict != (NO_REQUEST if seen.switch is None else COMPLETED):
            # Someone queued outranks us, or a request to weigh that does not
            # name us (or "anyone"): expired, garbled, its target gone or
            # ahead of us. The slow path steps aside, or leads and clears it.
            return None
        switch_mod = int(seen.switch.mod_revision) if seen.switch is not None else 0
        kv = self._b.kv
        token, key = int(head.create_revision), head.key.decode(errors="replace")
        if record.token == token:
            last, same = record, _mod_is(self._epoch_key, int(seen.epoch.mod_revision))
        else:
            # Read before the head bumped: expect the record its bump writes.
            tracked = self._tracks.get(token)
            if tracked is None:
                return None  # its TTL, which its bump records, is unknown to us: the slow path
            leader = candidate_id_of(head.value.decode(errors="replace"))
            last = EpochRecord(record.epoch + 1, token, leader, key, int(head.lease), int(tracked.granted))
            same = kv.txn_compare_value(self._epoch_key, last.encode())
        epoch = last.epoch + 1
        end, joined = prefix_range_end(self._prefix), revision + 1
        # With no request, nobody may have joined since our read, but for the
        # head's own key (the same key, re-created when it re-queues after its
        # resign): a newcomer might outrank us. A pending request naming us
        # decides over priorities, as on the slow path, so newcomers do not
        # matter then; and the candidates it sends aside re-queue behind us
        # while we wait, often after our last read.
        no_newcomer = [
            kv.txn_compare_create_revision(self._prefix, joined, result=Compare.LESS, range_end=head.key),
            kv.txn_compare_create_revision(head.key + b"\0", joined, result=Compare.LESS, range_end=end),
        ]
        compare = [
            kv.txn_compare_create_revision(self._key, self._rev),
            # etcd's range compare holds only if every key in the range passes:
            # nobody under the prefix was created before us.
            kv.txn_compare_create_revision(self._prefix, self._rev - 1, result=Compare.GREATER, range_end=end),
            *(no_newcomer if verdict == NO_REQUEST else []),
            same,
            # The request as read (or still none): one naming us is settled here.
            _mod_is(self._switch_key, switch_mod),
            kv.txn_compare_value(self._marker_key, ResignMarker(token, key).encode()),
        ]
        new = EpochRecord(epoch, self._rev, candidate_id, self._key, lease, self._own_ttl).encode()
        success = [kv.txn_op_put(self._epoch_key, new), *([kv.txn_op_delete(self._switch_key)] if switch_mod else [])]
        with _store_errors("claim txn"):
            txn = await kv.txn(compare=compare, success=success, failure=self._queue_ops(), timeout=self._b.timeout)
        if txn.succeeded:
            self._record = new
            return _Claimed(epoch, request)
        return self._queue_in(txn)

    def _takes_next_vacancy(self, kvs: list[Any]) -> bool:
        waiting = [
            (kv.key.decode(errors="replace"), parse_candidate(kv.value.decode(errors="replace"))[1]) for kv in kvs[1:]
        ]
        best = vacancy_winner(waiting)
        return best >= 0 and waiting[best][0] == self._key

    async def _poll_lease(self, token: int, key: str, lease: int) -> _Tracked | None:
        """One LeaseTimeToLive of a leader's lease; the tracking of it, updated."""
        clock = self._b.clock
        prev = self._tracks.get(token)
        sent = clock.now()
        with _store_errors("lease ttl"):
            resp = await self._b.lease.time_to_live(lease, timeout=self._b.timeout)
        got = clock.now()
        if resp.TTL < 0:  # gone (revoked or expired): what we knew before is all we will know
            if prev is not None and prev.alive:
                slack = 2 * NEAR_EXPIRY_POLL + min(self._b.timeout, 0.5)
                if not (prev.remaining <= 1 and sent - prev.polled <= slack):
                    # Revoked, not expired: it may have been renewed after our last
                    # poll (then frozen) and its grant runs from that renewal, which
                    # came before this answer. Only two near-expiry polls around the
                    # disappearance prove an expiry with no renewal in between.
                    prev.hi = max(prev.hi, got + prev.granted * (1 + self._b.drift))
                prev.alive = False
            return prev
        remaining, granted = int(resp.TTL), float(resp.grantedTTL)
        # The server's "remaining" second is truncated and counts on its clock.
        hi = got + (remaining + 1) * (1 + self._b.drift)
        if (
            prev is not None
            and prev.alive
            and remaining <= 1
            and prev.remaining <= 1
            and granted >= 3
            and got - prev.polled < granted - 2
        ):
            # Neither poll could have followed a renewal (that would read at
            # least 2 s left), so both bound the same expiry: keep the tighter.
            hi = min(hi, prev.hi)
        self._tracked = self._tracks[token] = _Tracked(token, key, lease, granted, hi, remaining, sent)
        while len(self._tracks) > 8:  # bounded: only the last few heads can matter
            del self._tracks[min(self._tracks)]
        return self._tracked

    async def _read_at_once(
        self,
    ) -> tuple[EpochRecord | str, ResignMarker | None, SwitchoverRequest | None, int]:
        """The epoch record, the resign marker, the switchover request and its mod revision, as of one revision."""
        (rec_kvs, marker_kvs, switch_kvs), _ = await self._b.span(
            "epoch read", [(self._epoch_key, None), (self._marker_key, None), (self._switch_key, None)]
        )
        record = parse_epoch_record(self._epoch_key, rec_kvs[0].value if rec_kvs else None)
        request = parse_switchover(switch_kvs[0].value) if switch_kvs else None
        mod = int(switch_kvs[0].mod_revision) if switch_kvs else 0
        return record, parse_resign_marker(marker_kvs[0].value if marker_kvs else None), request, mod

    async def _marker_token(self) -> int:
        with _store_errors("resign marker read"):
            resp = await self._b.kv.get(self._marker_key, timeout=self._b.timeout)
        marker = parse_resign_marker(resp.kvs[0].value if resp.kvs else None)
        return marker.token if marker is not None else -1

    async def _lock_delay(
        self,
        report: CampaignReport | None,
        own_ttl: float,
        read: tuple[EpochRecord | str, ResignMarker | None] | None = None,
    ) -> None:
        """Return once the last leader's grant cannot still be valid.

        We lead the queue now. If the last leader left by a confirmed resign
        (its token is in the marker) or never existed, nothing to wait for.
        Otherwise its key vanished (deleted, lease revoked, evicted, or its
        lease expired): wait until its lease could have run out, which for an
        expiry has already happened. The wait ends early if it confirms
        its orchestrator stopped (it writes the marker then).
        """
        clock = self._b.clock
        record, marker = read if read is not None else (await self._read_at_once())[:2]
        tracked = self._tracked
        recorded_ttl = 0.0  # the last leader's TTL as its epoch record gives it, for a lease we never polled
        headless = False  # no record: waiting on remembered keys, bounded by our own TTL
        if isinstance(record, EpochRecord) and record.token == 0:
            # No record: a fresh election, or one whose record went with the
            # leader's key (`etcdctl del --prefix NAME` while it leads). The
            # heads we queued behind tell them apart: one whose lease still
            # lives had its key deleted under it, and its grant may run.
            alive = []
            for t, (k, le) in sorted(self._heads_seen.items(), reverse=True):
                if t == self._rev or not le or (marker is not None and marker.token == t):
                    continue
                self._tracks.pop(t, None)  # only a poll from now counts here
                polled = await self._poll_lease(t, k, le)
                if polled is not None and polled.alive:
                    alive.append(polled)
            if not alive:
                # None, or all gone: expired, or revoked by their holders on a
                # clean exit (`etcdctl elect` does; such a candidate held no grant).
                return
            latest = max(alive, key=lambda x: x.hi)
            token, key, lease = latest.token, latest.key, latest.lease
            # Our own TTL bounds this wait, not theirs: a remembered key may be a
            # plain recipe's (etcdctl elect's 60 s session outlives its key and
            # never held a grant), and a 500-fault run sat 44 s on one.
            headless = True
        elif isinstance(record, EpochRecord):
            if record.token == self._rev or (marker is not None and marker.token == record.token):
                return
            token, key, lease = record.token, record.key, record.lease
            recorded_ttl = float(record.ttl)
        elif tracked is not None:  # the record is garbage: the head we followed is the best we know
            if marker is not None and marker.token == tracked.token:
                return
            token, key, lease = tracked.token, tracked.key, tracked.lease
        else:
            token, key, lease = 0, "", 0
        known = self._tracks.get(token)
        if (
            known is not None
            and known.alive
            and known.polled < clock.now() - 2 * self._b.retry_interval - self._b.timeout
        ):
            # Polled long ago and not since (we stopped being next in line or the
            # vacancy's winner): renewals may have followed, so its bound is stale.
            del self._tracks[token]  # or a poll that finds it gone would hand it back
            known = None
        if lease and (known is None or known.alive):
            known = await self._poll_lease(token, key, lease) or known
        now = clock.now()
        # The longest lease we know of, ours or this leader's: --ttl may differ
        # between sidecars (a rolling change), and the leader's bounds its grant.
        # Only this leader's: a process-wide maximum would carry one long lease
        # (etcdctl elect's sessions are 60 s) into every later wait.
        ttl = own_ttl if headless else max(own_ttl, recorded_ttl, known.granted if known is not None else 0.0)
        if known is None:
            until, why = now + ttl, "the last leader's lease is unknown: waiting one TTL"
        else:
            until = known.hi
            why = (
                "the last leader's key was deleted while its lease lives"
                if known.alive
                else "the last leader's key went before its lease could have expired"
            )
        if until <= now:
            return  # its lease had run out: an expiry, and the wait is already over
        # A lease that outlives its deleted key by a whole TTL is renewed by a
        # live holder, which reads its own key after every renewal and so has
        # seen it go, stopped its orchestrator (kill_grace) and ended the term
        # long before: the wait never needs to run past this, even when the
        # holder's marker was lost or overwritten (it re-queues on that lease).
        cap = now + ttl + self._b.retry_interval
        until = min(until, cap)
        if report is not None:
            report.lock_delay(LockDelay(key or "(unknown)", token, round(until - now, 3), why))
        while now < until:
            await clock.sleep(min(self._b.retry_interval, until - now))
            if token and await self._marker_token() == token:
                return  # it confirmed its orchestrator stopped
            if known is not None and known.alive:
                # Its lease still runs (a deleted key): it bounds the grant while it lives.
                known = await self._poll_lease(token, key, lease) or known
                until = min(known.hi, cap)
            now = clock.now()

    def _close_predecessor_watch(self) -> None:
        if self._pred is not None:
            self._pred.watch.close()
            self._pred = None

    def _watch_predecessor(
        self,
        key: bytes,
        from_revision: int,
        *,
        created: int,
        next_in_line: bool,
        handed: list[_Claimed] | None = None,
    ) -> _Predecessor:
        """A watch for the deletion of ``key`` (created at ``created``), from ``from_revision``.

        The next in line watches the whole election, ``[NAME.epoch, end of
        NAME/)``: if the txn that deleted ``key`` handed its term to us
        (``_handed_to_us``), the term is appended to the watch's ``handed``.

        The watch is kept over the quiet intervals' re-reads, as the
        leader's are (``_KeptWatch``): on grpclib a stream set up and reset
        every interval cost an idle candidate about as much as a call. It
        started from a read's revision + 1, so no later read can hold a
        deletion it has not seen; a new one starts when the predecessor or
        our place changes, or after the stream said anything but "not yet".
        ``handed``: the list to append a handed term to, when a watch
        replaces one whose list the caller already holds. ``from_revision``
        0: from now, and its creation answer sets ``lagging``, for the read
        after it that covers what came before (``_rewatch_from_now``).
        """
        lagging = asyncio.Event()
        if handed is None and next_in_line:
            handed = []
        judge = _deleted if handed is None else partial(self._head_went, head=(key, created), handed=handed)
        seen = _noting_lag(judge, from_revision, lagging)
        if handed is None:
            call = self._b.watch_stream(key, start_revision=from_revision, no_put=True)
        else:
            whole = prefix_range_end(self._prefix)
            call = self._b.watch_stream(self._epoch_key.encode(), whole, start_revision=from_revision, prev_kv=True)
        return _Predecessor(key, created, handed, _KeptWatch(call, seen, end="etcd watch ended"), lagging)

    async def _wait_deleted(self, pred: _Predecessor, budget: float, until: asyncio.Future[None]) -> bool:
        """True once the predecessor's key is deleted; False when ``budget`` runs out or ``until`` comes.

        A watch from a revision the store has already passed is "unsynced"
        in etcd: its events come from a catch-up loop that runs every 100 ms
        (mvcc's syncWatchersLoop), not at once. Our watch starts from our
        last read + 1, so anything written between that read and the watch's
        creation (the leader resigning at the moment we queued) reached us up
        to 100 ms late: measured, a switchover's target sat 87 ms on a
        predecessor gone 1 ms after its read. The creation answer carries
        the store's revision; when the store moved, one read answers at once
        (in the first wait on a watch; it is in sync after that).

        When that read finds the predecessor still there, the watch is still
        in the catch-up loop, and a delete after the read reached us up to
        100 ms late too: a switchover's target, the last of a fleet to queue,
        sat 37-54 ms on a handover (any write between its read and its watch,
        another candidate queueing, is enough). So the watch is replaced by one
        from now (start revision 0), in sync whatever the store does; once
        its creation is answered a read is made (``from_now``), and that read
        holds everything before its first event. Once only: a store written
        to without pause costs one read and one watch more, never a loop of
        them. (A watch from the read's revision + 1 can lag again while a
        fleet is still queueing, as the leader's did.)
        """
        loop = asyncio.get_running_loop()
        end = loop.time() + budget
        if pred.fresh:
            pred.fresh = False
            if await self._lag_shown(pred, end, until):
                if await self._look_now(pred.key, pred.created, handed=pred.handed):
                    return True
                if not pred.watch.task.done():  # what it said meanwhile is kept, not thrown away
                    self._rewatch_from_now(pred)
        if pred.from_now and await self._lag_shown(pred, end, until):
            # Only once its creation was answered, and only then no more due: a
            # wait that ran out first leaves the read to the next wait on it (a
            # review delayed the creation past the wait, and the deletion came
            # in between: seen at the next interval's re-read, 2.9 s on).
            pred.from_now = False
            if await self._look_now(pred.key, pred.created, handed=pred.handed):
                return True
        return bool(await pred.watch.wait(max(0.0, end - loop.time()), until))

    @staticmethod
    async def _lag_shown(pred: _Predecessor, end: float, until: asyncio.Future[None]) -> bool:
        """True once the watch's creation answer showed a lag (for a watch from now: its
        creation answer) and the watch has said nothing else; False when it said something,
        or the time ran out, or ``until`` came."""
        loop = asyncio.get_running_loop()
        lag = asyncio.ensure_future(pred.lagging.wait())
        waits: set[asyncio.Future[Any]] = {pred.watch.task, lag, until}
        try:
            done, _ = await asyncio.wait(
                waits, timeout=max(0.0, end - loop.time()), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            lag.cancel()
        return lag in done and pred.watch.task not in done

    def _rewatch_from_now(self, pred: _Predecessor) -> None:
        """``pred`` watched again from now, in place (the caller holds it and its ``handed``);
        its ``lagging`` is set by the creation answer (any revision is >= 0), and the read
        after that answer is due (``from_now``)."""
        pred.watch.close()
        fresh = self._watch_predecessor(
            pred.key, 0, created=pred.created, next_in_line=pred.handed is not None, handed=pred.handed
        )
        pred.watch, pred.lagging, pred.from_now = fresh.watch, fresh.lagging, True

    async def _look_now(self, key: bytes, created: int, *, handed: list[_Claimed] | None = None) -> bool:
        """What a lagging watch will say: whether ``key`` is gone (or re-created).

        Re-created counts as gone: a candidate that steps aside deletes its
        key and puts the same key again, behind us. With ``handed`` (the
        next in line) the same read holds the record, the request and the
        marker, and a term handed to us is appended there, as the watch would.
        """
        if handed is None:
            (found,), _ = await self._b.snapshot("watch catch-up read", [(key.decode(errors="replace"), None)])
        else:  # the queue read's span, so its own split state holds here too
            kvs, _ = await self._b.span("watch catch-up read", self._queue_ranges())
            queue, seen = kvs[0], _Seen.of(*kvs[1:])
            found = [kv for kv in queue if bytes(kv.key) == key]
        if found and (not created or int(found[0].create_revision) == created):
            return False
        if handed is not None:
            claimed = await self._handed_in_read(seen)
            if claimed is not None:
                handed.append(claimed)
        return True

    def _head_went(self, resp: Any, *, head: tuple[bytes, int], handed: list[_Claimed]) -> bool | None:
        """``_deleted`` for the next in line's election-wide watch: True once the head's
        key (``head``: key, create revision) is deleted, with our term appended to
        ``handed`` if the same txn handed it to us. Our own key deleted (a
        switchover's handover took it, with those of everyone ahead of its
        target, or an operator evicted us) raises KeyLost at once: a claim
        or a read would only find that out one round trip later."""
        if resp.compact_revision or resp.canceled:
            return _deleted(resp)
        own = self._key.encode()
        went = any(ev.type == _DELETE and bytes(ev.kv.key) == head[0] for ev in resp.events)
        if any(ev.type == _DELETE and bytes(ev.kv.key) == own for ev in resp.events):
            request = self._taken_aside_by(head[0], head[1], resp.events)
            if request is not None:
                raise _TakenAside(self._key, request)
            raise KeyLost(f"candidate key {self._key} deleted while next in line")
        if not went:
            return None
        claimed = self._handed_to_us(head[0], head[1], resp.events)
        if claimed is not None:
            handed.append(claimed)
        return True

    def _handed_to_us(self, head: bytes, created: int, events: Any) -> _Claimed | None:
        """Our term, if the txn whose ``events`` deleted the head's key handed it to us.

        All three writes of a handover (``_hand_over``) must be there, in
        one revision: the head's key deleted, its clean-resign marker (its
        orchestrator was confirmed stopped: no lock-delay), and a record
        naming our key at our create revision, which only a handover (or our
        own bump) ever writes. A settled request's deletion carries the
        request (the watch asks for previous values), for the report.
        """
        handover = _HandoverSeen.of(self, head, created, events)
        record = handover.record
        if record is None or not handover.complete or record.token != self._rev or record.key != self._key:
            return None
        self._record = handover.raw
        return _Claimed(record.epoch, handover.request)

    def _taken_aside_by(self, head: bytes, created: int, events: Any) -> SwitchoverRequest | None:
        """The request, if the txn whose ``events`` deleted our key was a switchover's
        handover over our head: the handover's three writes, a record naming the
        request's target (queued after us), and the request settled in it. Not
        a wipe of the election (``etcdctl del --prefix`` deletes the head, us and
        the request at one revision too, but writes no record or marker)."""
        handover = _HandoverSeen.of(self, head, created, events)
        record, request = handover.record, handover.request
        if record is None or request is None or not handover.complete:
            return None
        if request.to in ("", self._cid) or record.leader != request.to or record.token <= self._rev:
            return None
        return request

    async def _handed_in_read(self, seen: _Seen) -> _Claimed | None:
        """Our term, when a read finds us at the head with a record naming us
        and another head's marker written in the same revision.

        Only a handover writes both at once: it compared that we were next,
        and its marker says the last leader's orchestrator was confirmed
        stopped. (Our own bump, whose answer we lost, writes no marker: it is
        refused and we bump again, skipping one epoch; so is the record of a
        term we led ourselves.) The watch that would have told us lagged or
        started too late; the read is as good. The request it settled is gone
        from the read: one read of the revision before the record's gives it
        back, for the report, after we lead (``_Claimed.settled_at``).
        """
        if seen.epoch is None or seen.marker is None:
            return None
        raw = bytes(seen.epoch.value)
        record = parse_epoch_record(self._epoch_key, raw)
        if not isinstance(record, EpochRecord) or record.token != self._rev or record.key != self._key:
            return None
        marker = parse_resign_marker(bytes(seen.marker.value))
        if (
            raw == self._led
            or marker is None
            or marker.token == self._rev
            or int(seen.marker.mod_revision) != int(seen.epoch.mod_revision)
        ):
            # Not a handover: the term we led ourselves (our resign failed and
            # we campaign again on the same key; leading on it again would be
            # the same term twice, and a late handover txn of ours, comparing
            # that very record, could still land), or a record without the
            # previous head's marker in the same txn (our own bump whose
            # answer we lost, or a hand-written one). The slow path bumps.
            return None
        self._record = raw
        # No request in the read: the handover may have settled one (it
        # deletes it). Which one is for the report only: read after we lead.
        return _Claimed(record.epoch, settled_at=seen.epoch if seen.switch is None else None)

    def _report_settled(self, written: Any, report: CampaignReport) -> None:
        """Report the request a handover to us settled, read back in the background.

        A switchover's target that learns of its term from a read was one
        read away from leading; this second one (as of the revision before
        the handover) only names the request for the report, so it runs
        after we lead instead of before. Errors and a compacted revision
        read as nothing found (``_just_before``); ``close`` cancels it.
        """

        async def read_back() -> None:
            try:
                (settled,) = await self._just_before(written, self._switch_key)
            except BackendError:
                return  # refused or gone (credentials, session): the report is all we lose
            request = parse_switchover(settled[0].value) if settled else None
            if request is not None:
                report.switchover(COMPLETED, request)

        task = asyncio.ensure_future(read_back())
        self._reporting.add(task)
        task.add_done_callback(self._reporting.discard)

    async def _bump_epoch(
        self, candidate_id: str, lease: int, report: CampaignReport | None, switch_mod: int = 0, consume: bool = False
    ) -> int | None:
        """The new epoch, or None when the switchover request moved since ``switch_mod`` was read.

        The txn compares the request key's mod revision (0: absent), so no
        candidate leads on a decision made before a request landed; a settled
        request (``consume``) is deleted in the same txn.
        """
        kv = self._b.kv
        unchanged = Compare(
            result=Compare.EQUAL, target=Compare.MOD, key=self._switch_key.encode(), mod_revision=switch_mod
        )
        while True:
            with _store_errors("epoch read"):
                resp = await kv.get(self._epoch_key, timeout=self._b.timeout)
            version = int(resp.kvs[0].version) if resp.kvs else 0
            old = parse_epoch_record(self._epoch_key, resp.kvs[0].value if resp.kvs else None)
            # A garbled record is overwritten: every term bumped it with one
            # put, so its version is a fair stand-in for the lost term number.
            epoch = old.epoch + 1 if isinstance(old, EpochRecord) else version + 1
            record = EpochRecord(epoch, self._rev, candidate_id, self._key, lease, self._own_ttl).encode()
            with _store_errors("epoch txn"):
                txn = await kv.txn(
                    compare=[
                        kv.txn_compare_create_revision(self._key, self._rev),
                        kv.txn_compare_version(self._epoch_key, version),
                        unchanged,
                    ],
                    success=[
                        kv.txn_op_put(self._epoch_key, record),
                        *([kv.txn_op_delete(self._switch_key)] if consume else []),
                    ],
                    failure=[kv.txn_op_get(self._key), kv.txn_op_get(self._switch_key)],
                    timeout=self._b.timeout,
                )
            if txn.succeeded:
                self._record = record
                if isinstance(old, str) and report is not None:
                    report.epoch_record_repaired(self._epoch_key, old)
                return int(epoch)
            mine = txn.responses[0].response_range.kvs
            if not mine or mine[0].create_revision != self._rev:
                raise KeyLost(f"candidate key {self._key} vanished before the epoch bump")
            switch = txn.responses[1].response_range.kvs
            if (int(switch[0].mod_revision) if switch else 0) != switch_mod:
                return None
            # Someone else wrote the epoch between our read and our txn: read again.

    async def resign(self, *, hand_over: bool = False) -> str:
        if not self._key:
            self._drop_view()
            return ""
        # The view's watch is cancelled after the txn, not before: nothing needs
        # it gone first, and its cancellation then never queues ahead of the
        # txn on the shared connection (two alternating runs: handover median
        # 11.2/10.2 ms against 12.3/14.7 ms when cancelled first).
        view = self._view
        try:
            kv = self._b.kv
            marker = ResignMarker(self._rev, self._key).encode()
            mine = kv.txn_compare_create_revision(self._key, self._rev)
            successor = view.successor(self._priority, time.time()) if hand_over and view and self._record else None
            if successor is not None and await self._hand_over(successor, marker):
                self._key, self._rev = "", 0
                return successor.candidate_id
        finally:
            self._drop_view()
        # One txn: the successor never sees our key gone without the marker
        # that says our orchestrator was confirmed stopped first. Put even
        # when the key is already gone (lease lost): the marker still saves
        # the successor its lock-delay.
        with _store_errors("resign"):
            await kv.txn(
                compare=[mine],
                success=[kv.txn_op_delete(self._key), kv.txn_op_put(self._marker_key, marker)],
                failure=[kv.txn_op_put(self._marker_key, marker)],
                timeout=self._b.timeout,
            )
        self._key, self._rev = "", 0
        return ""

    async def _hand_over(self, to: _Handover, marker: bytes) -> bool:
        """Resign and start the successor's term in one txn; False (nothing written) if the store moved.

        The successor's own claim (``_claim``) would take one more round trip
        after our delete reached it; here our txn compares everything that
        claim compares, as of the same instant, and writes the record it
        would write, so the successor leads on the watch event alone
        (``_handed_to_us``). The compares: our key and the successor's are
        the ones we know; nobody but us was created before it (it heads the
        queue once we go); with no request, nobody joined after the view's
        revision (a newcomer might outrank it); the record is our term's;
        the request is the one the view holds (0: none), deleted when it is
        settled. The marker says our orchestrator was confirmed stopped, as
        in every resign: the elector calls this only after the stop.
        """
        kv = self._b.kv
        end = prefix_range_end(self._prefix)
        own = self._key.encode()
        holes = sorted({own, *to.aside})
        # etcd's range compare holds only if every key in the range passes; our
        # own key and those of the candidates we take aside are cut out of the
        # ranges: they go in this txn. An empty range
        # compares as one key with every field 0, so "created after the
        # successor" is asked only of a range the view holds keys in (a key
        # there now and not in the view was created after the view's
        # revision, so after the successor: the view alone excludes it).
        edges = [self._prefix.encode(), *(h for k in holes for h in (k, k + b"\0")), end]
        around = [(edges[i], edges[i + 1]) for i in range(0, len(edges), 2) if edges[i] < edges[i + 1]]
        others = to.queued - to.aside
        compare = [
            kv.txn_compare_create_revision(self._key, self._rev),
            kv.txn_compare_create_revision(to.key, to.create_revision),
            *(
                kv.txn_compare_create_revision(lo, to.create_revision - 1, result=Compare.GREATER, range_end=hi)
                for lo, hi in around
                if any(lo <= k < hi for k in others)
            ),
            *(
                kv.txn_compare_create_revision(lo, to.revision + 1, result=Compare.LESS, range_end=hi)
                for lo, hi in around
                if to.request_mod == 0
            ),
            kv.txn_compare_value(self._epoch_key, self._record),
            _mod_is(self._switch_key, to.request_mod),
        ]
        last = parse_epoch_record(self._epoch_key, self._record)
        assert isinstance(last, EpochRecord)  # we wrote it
        record = EpochRecord(last.epoch + 1, to.create_revision, to.candidate_id, to.key.decode(), to.lease, to.ttl)
        success = [
            kv.txn_op_delete(self._key),
            *(kv.txn_op_delete(k) for k in sorted(to.aside)),
            kv.txn_op_put(self._marker_key, marker),
            kv.txn_op_put(self._epoch_key, record.encode()),
            *([kv.txn_op_delete(self._switch_key)] if to.request_mod else []),
        ]
        with _store_errors("resign"):
            txn = await kv.txn(compare=compare, success=success, failure=[], timeout=self._b.timeout)
        return bool(txn.succeeded)

    async def wait_lost(self, seen: Callable[[float], None] | None = None) -> None:
        if not self._key:
            return
        own = self._key.encode()
        watch: _KeptWatch | None = None
        since = asyncio.get_running_loop().time()
        try:
            while True:
                # The view's read (one range over the request key, NAME.ttl/ and
                # the queue) holds our key: no read of our own (_leader_read).
                (_, queue, _), revision, sent = await self._leader_read(since)
                since = asyncio.get_running_loop().time()
                if not any(bytes(kv.key) == own and kv.create_revision == self._rev for kv in queue):
                    return
                if seen is not None:
                    seen(since - sent)
                # Re-read every retry interval: a watch is a hint, the read is the fact.
                if watch is None:
                    call = self._b.watch_stream(own, start_revision=revision + 1, no_put=True)
                    watch = _KeptWatch(call, _deleted, end="etcd watch ended")
                ended = await watch.wait(self._b.re_read_within, self._b.next_renewal(self._lease))
                if ended:
                    return
                if ended is False:  # compacted: watch afresh from the next read
                    watch.close()
                    watch = None
        finally:
            if watch is not None:
                watch.close()

    async def _leader_read(self, since: float) -> tuple[list[list[Any]], int, float]:
        """The request key, the queue and NAME.ttl/, read at one revision after ``since`` (loop time),
        and when that read was sent (loop time).

        A leader's two waits (its own key's deletion, a switchover request)
        both re-read when its keepalive is answered, and both find what they
        need in one read: it is made once and shared. Each waiter passes the
        loop time it began waiting; a read started since then, in flight or
        answered, is as fresh as one of its own, and so is one still in
        flight that started at most SHARED_READ_SLACK before (the two waits
        start a step of the loop apart, and a review saw each make its own
        first read). One that failed is never shared: a wait tried again
        after a failure reads again. The read is cancelled only when every
        waiter has gone.
        """
        shared = self._shared_read
        if (
            shared is None
            or shared.task.cancelling()  # abandoned by its last waiter: a waiter now must not await it
            or shared.started < since - (0.0 if shared.task.done() else SHARED_READ_SLACK)
            or (shared.task.done() and (shared.task.cancelled() or shared.task.exception() is not None))
        ):
            task = asyncio.create_task(self._b.span("leader read", self._leader_ranges()))
            task.add_done_callback(_retrieved)
            shared = self._shared_read = _SharedRead(task, asyncio.get_running_loop().time())
        shared.users += 1
        try:
            ranges, revision = await asyncio.shield(shared.task)
            return ranges, revision, shared.started
        finally:
            shared.users -= 1
            if not shared.users and not shared.task.done():
                shared.task.cancel()

    def _leader_ranges(self) -> list[tuple[str, str | bytes | None]]:
        """What a leader re-reads, in ``_LeaderView.reset``'s order: the request key, the queue, NAME.ttl/."""
        return [
            (self._switch_key, None),
            (self._prefix, prefix_range_end(self._prefix)),
            (self._ttl_prefix, prefix_range_end(self._ttl_prefix)),
        ]

    async def wait_switchover(self, candidate_id: str) -> SwitchoverRequest:
        self._drop_view()
        view = self._view = _LeaderView(
            self._key, self._switch_key.encode(), self._prefix.encode(), self._ttl_prefix.encode(), candidate_id
        )
        watch: _KeptWatch | None = None
        # Set when the watch's creation shows the store already past the read it
        # started from (the fleet still queueing as we were elected): etcd then
        # serves it from its catch-up loop, every 100 ms, and a request written
        # meanwhile reached us up to 100 ms late (bench: 34-73 ms, the first
        # switchover of a fresh fleet).
        lagging = asyncio.Event()
        loop = asyncio.get_running_loop()
        since = loop.time()
        try:
            while True:
                (found, queue, ttls), revision, _ = await self._leader_read(since)
                since = loop.time()
                view.reset(found[0] if found else None, queue, ttls, revision)
                # Re-read every retry interval: a watch is a hint, the read is the fact.
                # One watch over the request key, NAME.ttl/ and the queue, kept over quiet
                # intervals (see _KeptWatch) and started afresh after a compaction or an end;
                # started before acting on the read too, to feed the view through the demote.
                if watch is None:
                    call = self._b.watch_stream(self._switch_key.encode(), prefix_range_end(self._prefix), revision + 1)
                    watch = self._view_watch = _KeptWatch(call, _noting_lag(view.seen, revision + 1, lagging))
                if view.acts_now(time.time()):
                    assert view.request is not None
                    return view.request
                woke = asyncio.ensure_future(view.woke.wait())
                lag = asyncio.ensure_future(lagging.wait())
                waits: set[asyncio.Future[Any]] = {watch.task, woke, lag, self._b.next_renewal(self._lease)}
                try:
                    await asyncio.wait(
                        waits,
                        timeout=self._b.re_read_within,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    woke.cancel()
                    lag.cancel()
                if view.acted is not None:
                    return view.acted
                if watch.task.done():
                    watch.task.result()  # a failed stream raises here (the finally closes it); False: read afresh
                    watch.close()
                    watch = self._view_watch = None
                elif lagging.is_set():
                    # Watched again from now, and read once etcd answered that: a
                    # watch from now is in sync whatever the store does, so this
                    # happens once, and a store written to without pause never
                    # makes it a loop. The read after the creation holds everything
                    # before the watch's first event; the view holds the new watch's
                    # events until that read is applied (``_LeaderView.hold``).
                    lagging.clear()
                    watch.close()
                    view.hold()
                    watch = self._view_watch = await self._watch_from_now(view)
                    # Only a read sent after the creation answer (_leader_read shares
                    # one in flight that started up to SHARED_READ_SLACK before ``since``).
                    since = loop.time() + SHARED_READ_SLACK
        finally:
            # A live watch goes on feeding the view through the demote: resign
            # may hand over on it. Without one the view only ages: drop it.
            if self._view_watch is None or self._view_watch.task.done():
                self._drop_view()

    async def _watch_from_now(self, view: _LeaderView) -> _KeptWatch:
        """The view's watch from the store's next revision, once etcd answered its creation
        (or within the request timeout: the read that follows is the fact either way)."""
        created = asyncio.Event()  # any creation answer's revision is >= 0
        call = self._b.watch_stream(self._switch_key.encode(), prefix_range_end(self._prefix))
        watch = _KeptWatch(call, _noting_lag(view.seen, 0, created))
        answered = asyncio.ensure_future(created.wait())
        try:
            await asyncio.wait({answered, watch.task}, timeout=self._b.timeout, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            watch.close()  # nobody else holds it yet
            raise
        finally:
            answered.cancel()
        return watch

    def _drop_view(self) -> None:
        if self._view_watch is not None:
            self._view_watch.close()
        self._view, self._view_watch = None, None

    async def _wait_changed(
        self,
        key: bytes,
        from_revision: int,
        budget: float,
        range_end: bytes,
        until: asyncio.Future[None],
    ) -> None:
        """Return on the first event on ``key`` (or in [key, range_end)) after ``from_revision``,
        or when ``budget`` runs out or ``until`` comes."""
        watch = _KeptWatch(self._b.watch_stream(key, range_end, start_revision=from_revision), _changed)
        try:
            await watch.wait(budget, until)
        finally:
            watch.close()

    async def switchover_request(self) -> SwitchoverRequest | None:
        await self._b.authenticate()
        return (await self._read_switchover())[0]

    async def request_switchover(self, request: SwitchoverRequest) -> None:
        await self._b.authenticate()
        with _store_errors("switchover write"):
            await self._b.kv.put(self._switch_key, request.encode(), timeout=self._b.timeout)

    async def _epoch_at(self, revision: int) -> EpochRecord | str:
        with _store_errors("epoch read"):
            resp = await self._b.kv.get(self._epoch_key, revision=revision, timeout=self._b.timeout)
        return parse_epoch_record(self._epoch_key, resp.kvs[0].value if resp.kvs else None)

    async def leader(self) -> Leadership | None:
        kvs, revision = await self._candidate_kvs()
        if not kvs:
            return None
        first = kvs[0]
        token = int(first.create_revision)
        recorded = await self._epoch_at(revision)
        # Until the new leader bumped the epoch, the recorded term is its
        # predecessor's: report 0 ("not yet confirmed") rather than a lie.
        # A garbled record also reads as 0; problems() names it.
        epoch = recorded.epoch if isinstance(recorded, EpochRecord) and recorded.token == token else 0
        return Leadership(candidate_id_of(first.value.decode(errors="replace")), token, epoch)

    async def problems(self) -> list[str]:
        kvs, revision = await self._candidate_kvs()
        out = []
        recorded = await self._epoch_at(revision)
        if isinstance(recorded, str):
            out.append(f"{recorded} (the next leader rewrites it)")
        ids: dict[str, list[str]] = {}
        for kv in kvs:
            ids.setdefault(candidate_id_of(kv.value.decode(errors="replace")), []).append(
                kv.key.decode(errors="replace")
            )
        for cid, keys in ids.items():
            if len(keys) > 1:
                out.append(f"candidate id {cid!r} is used by {len(keys)} keys ({', '.join(keys)}): ids must be unique")
        return out

    async def candidates(self) -> list[Candidate]:
        """The queue, leader first, then the --no-lead candidates (never leaders, never queued)."""
        # One moment for all three: a key read without the statement its
        # campaign txn wrote beside it would look foreign.
        await self._b.authenticate()
        (queued, standing, stated), _ = await self._b.snapshot(
            "list candidates",
            [(p, prefix_range_end(p)) for p in (self._prefix, self._no_lead_prefix, self._ttl_prefix)],
        )
        queued = sorted(queued, key=lambda kv: int(kv.create_revision))
        standing = sorted(standing, key=lambda kv: int(kv.create_revision))
        kvs = queued + standing
        # Each of our candidates states its TTL on its lease with its key (1c);
        # a queued key without one is not ours to move (an `etcdctl elect`
        # candidate, or a sidecar older than the statements).
        stating = {kv.key.decode(errors="replace")[len(self._ttl_prefix) :] for kv in stated}

        async def ttl_of(lease: int) -> float | None:
            if not lease:
                return None
            with _store_errors("lease ttl"):
                r = await self._b.lease.time_to_live(lease, timeout=self._b.timeout)
            return float(r.TTL) if r.TTL >= 0 else None

        ttls = await asyncio.gather(*(ttl_of(int(kv.lease)) for kv in kvs))
        out = []
        for i, (kv, ttl) in enumerate(zip(kvs, ttls, strict=True)):
            no_lead = i >= len(queued)
            cid, prio = (
                (kv.value.decode(errors="replace"), DEFAULT_PRIORITY)
                if no_lead
                else parse_candidate(kv.value.decode(errors="replace"))
            )
            key = kv.key.decode(errors="replace")
            out.append(
                Candidate(
                    cid,
                    int(kv.create_revision),
                    key,
                    ttl,
                    stale=ttl is None or ttl <= 0,
                    priority=prio,
                    no_lead=no_lead,
                    # No lease at all (a hand-written key) is never ours either, and never goes.
                    foreign=not no_lead
                    and (not kv.lease or (ttl is not None and ttl > 0 and f"{int(kv.lease):x}" not in stating)),
                )
            )
        return out

    async def evict(self, candidate_id: str, key: str = "") -> list[str]:
        queued, _ = await self._candidate_kvs()
        standing, _ = await self._candidate_kvs(self._no_lead_prefix)
        gone = []
        for i, kv in enumerate(queued + standing):
            value = kv.value.decode(errors="replace")
            if (value if i >= len(queued) else candidate_id_of(value)) != candidate_id:
                continue
            if key and kv.key.decode(errors="replace") != key:
                continue
            try:
                with _store_errors("evict"):
                    if kv.lease:
                        await self._b.lease.revoke(int(kv.lease), timeout=self._b.timeout)
                    else:
                        await self._b.kv.delete(kv.key, timeout=self._b.timeout)
            except SessionExpired:
                pass  # its lease ran out since our read: the key went with it, as evicting it would
            gone.append(kv.key.decode(errors="replace"))
        return gone

    async def observe(self) -> AsyncIterator[Leadership | None]:
        current: object = object()
        end = prefix_range_end(self._prefix)
        while True:
            _, revision = await self._candidate_kvs()
            now = await self.leader()
            if now != current:
                current = now
                yield now
            # One range covers NAME.epoch, NAME.resigned and NAME/...: all sort
            # between NAME and the end of the NAME/ prefix. Re-read every retry
            # interval whatever the watch says (a backstop).
            call = self._b.watch_stream(self._name.encode(), end, revision + 1)
            try:
                async with asyncio.timeout(self._b.retry_interval):
                    with _store_errors("watch"):
                        async for resp in call:
                            if resp.canceled:
                                raise StoreUnavailable(f"etcd watch canceled: {resp.cancel_reason or 'compacted'}")
                            if resp.events:
                                break
            except TimeoutError:
                pass
            finally:
                call.cancel()

    async def close(self) -> None:
        self._drop_view()
        for task in list(self._reporting):
            task.cancel()


# -- the registry's entry points (sidecar/backends/__init__.py) -------------

MIN_TTL = 2.0  # etcd's own minimum lease TTL


def check_config(cfg: Config) -> None:
    if cfg.ttl < MIN_TTL:
        raise ConfigError("ttl", cfg.ttl, f"must be >= {MIN_TTL:g} s for etcd (its minimum lease TTL)")
    if cfg.ttl != int(cfg.ttl):
        raise ConfigError("ttl", cfg.ttl, "must be whole seconds for etcd (leases are granted in seconds)")


async def connect(cfg: Config, clock: Clock) -> EtcdBackend:
    return await EtcdBackend(
        endpoint_hostports(cfg),
        clock,
        request_timeout=cfg.effective_request_timeout,
        ca_file=cfg.ca_file,
        cert_file=cfg.cert_file,
        key_file=cfg.key_file,
        tls_server_name=cfg.tls_server_name,
        user=cfg.etcd_user,
        password=etcd_password(cfg) if cfg.etcd_user else "",
        retry_interval=cfg.retry_interval,
        drift=cfg.drift,
    ).connect()
