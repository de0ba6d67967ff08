"""TLS, client certificates, RBAC and ACLs against real servers; secrets stay secret."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.backends.base import Session, StoreForbidden, StoreUnavailable
from sidecar.backends.etcd import EtcdBackend
from sidecar.clock import MonotonicClock
from sidecar_harness.fleet import FAST_TIMING, SidecarProcess
from sidecar_harness.localetcd import LocalEtcd, find_binary
from sidecar_harness.localstore import free_ports
from tests.conftest import ZkServer
from tests.helpers import wait_until

pytestmark = pytest.mark.integration
SECRET = "s3cr3t-Pa55w0rd-never-logged"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for localhost/127.0.0.1, a good and a foreign client certificate."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", cwd=d)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", "san.ext", "-out", f"{name}.crt", cwd=d)  # fmt: skip
    # A client certificate from a CA the server does not trust.
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=rogue",
            "-keyout", "rogue.key", "-out", "rogue.crt", cwd=d)  # fmt: skip
    return {p.stem + p.suffix.replace(".", "_"): p for p in d.iterdir()}


@pytest.fixture(scope="module")
def tls_etcd(certs: dict[str, Path]) -> Iterator[LocalEtcd]:
    tls = {"cert": str(certs["server_crt"]), "key": str(certs["server_key"]), "ca": str(certs["ca_crt"])}
    with LocalEtcd(1, tls=tls) as etcd:
        yield etcd


def tls_args(certs: dict[str, Path], client: str = "client") -> list[str]:
    return [
        "--ca-file", str(certs["ca_crt"]), "--cert-file", str(certs[f"{client}_crt"]),
        "--key-file", str(certs[f"{client}_key"]), "--tls-server-name", "localhost",
    ]  # fmt: skip


def log_text(s: SidecarProcess) -> str:
    return s.log_path.read_text(errors="replace")


def test_sidecar_leads_over_mutual_tls(tls_etcd: LocalEtcd, certs: dict[str, Path], workdir: Path) -> None:
    s = SidecarProcess("t0", workdir, tls_etcd.endpoints, "tls", dict(FAST_TIMING), extra_args=tls_args(certs)).start()
    try:
        wait_until(lambda: (s.status() or {}).get("state") == "leader", 20, what="leader over mTLS")
    finally:
        s.stop()


def test_untrusted_client_certificate_is_refused_clearly(
    tls_etcd: LocalEtcd, certs: dict[str, Path], workdir: Path
) -> None:
    s = SidecarProcess("t1", workdir, tls_etcd.endpoints, "tls-bad", dict(FAST_TIMING),
                       extra_args=tls_args(certs, "rogue")).start()  # fmt: skip
    try:
        wait_until(lambda: '"store_unreachable"' in log_text(s), 20, what="a store_unreachable line")
        assert (s.status() or {}).get("state") != "leader"
        line = next(json.loads(x) for x in log_text(s).splitlines() if '"store_unreachable"' in x)
        # The TLS alert itself, not a bare UNAVAILABLE: the operator sees which certificate to fix.
        assert line["during"] == "session-open" and "bad certificate" in line["error"], line
    finally:
        s.stop()


def test_missing_certificate_file_fails_at_start(tls_etcd: LocalEtcd, workdir: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "sidecar", "run", "--endpoints", tls_etcd.endpoints[0],
         "--ca-file", "/nonexistent/ca.pem"],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert (
        res.returncode == 2
        and res.stderr.count("\n") == 1
        and "ca_file" in res.stderr
        and "cannot be read" in res.stderr
    )


def enable_auth(etcd: LocalEtcd, prefix: str) -> None:
    """root, alice (read-write on ``prefix``), bob (no rights); then auth on."""
    ep = ",".join(etcd.endpoints)
    ctl = find_binary("etcdctl")

    def run(*args: str, user: str = "") -> None:
        auth = ["--user", user] if user else []
        subprocess.run([ctl, "--endpoints", ep, *auth, *args], check=True, capture_output=True, timeout=20)

    run("user", "add", "root:rootpw")
    run("user", "grant-role", "root", "root")
    run("auth", "enable")
    root = "root:rootpw"
    run("user", "add", f"alice:{SECRET}", user=root)
    run("user", "add", "bob:bobpw", user=root)
    run("role", "add", "elector", user=root)
    run("role", "grant-permission", "elector", "--prefix=true", "readwrite", prefix, user=root)
    run("user", "grant-role", "alice", "elector", user=root)


@pytest.fixture(scope="module")
def rbac_etcd() -> Iterator[tuple[LocalEtcd, str]]:
    """etcd with auth on: root, alice (read-write on the election), bob (no rights)."""
    with LocalEtcd(1) as etcd:
        enable_auth(etcd, "rbac")
        yield etcd, etcd.endpoints[0]


async def renew_and_read(backend: EtcdBackend, session: Session, seconds: float) -> list[str]:
    """Renew and read every 0.2 s for ``seconds``, as a sidecar does: each outcome that changed."""
    seen: list[str] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            await session.keepalive()
            await backend.snapshot("auth re-read", [("auth/k", None)])
            out = "ok"
        except StoreUnavailable as exc:
            out = f"unavailable: {exc}"
        if not seen or seen[-1] != out:
            seen.append(out)
        await asyncio.sleep(0.2)
    return seen


async def test_a_member_that_forgot_our_token_costs_one_retry_not_the_sidecar(workdir: Path) -> None:
    """A restarted member knows no token issued before; its "invalid auth token" is not a
    refusal of our credentials (StoreForbidden, exit 2) but a call to log in again."""
    with LocalEtcd(1) as etcd:
        enable_auth(etcd, "auth")
        backend = await EtcdBackend(etcd.endpoints, MonotonicClock(), user="alice", password=SECRET).connect()
        try:
            session = backend.session(10)
            await session.open()
            assert await renew_and_read(backend, session, 0.5) == ["ok"]
            member = etcd.members[0]
            etcd.kill(member)
            etcd.start_member(member)
            etcd.wait_healthy(30)
            seen = await renew_and_read(backend, session, 3)
            assert seen[-1] == "ok", seen
            assert any("no longer knows our auth token" in s for s in seen), seen
        finally:
            await backend.close()


def etcdctl_as_root(etcd: LocalEtcd, *args: str, stdin_text: str | None = None) -> None:
    ep = ",".join(etcd.endpoints)
    subprocess.run(
        [find_binary("etcdctl"), "--endpoints", ep, "--user", "root:rootpw", *args],
        check=True,
        capture_output=True,
        input=stdin_text,
        text=True,
        timeout=20,
    )


@pytest.mark.parametrize("change", ["user-deleted", "password-changed"])
async def test_credentials_that_stopped_working_stop_the_sidecar_clearly(workdir: Path, change: str) -> None:
    """Logging in again after a rejected token is for tokens the store forgot. When the
    login itself is refused, that refusal (StoreForbidden: exit 2) is what the calls raise,
    not an outage retried for ever; and the logins are spaced, not one per rejected call."""
    with LocalEtcd(1) as etcd:
        enable_auth(etcd, "auth")
        backend = await EtcdBackend(
            etcd.endpoints, MonotonicClock(), user="alice", password=SECRET, retry_interval=0.5
        ).connect()
        logins = 0
        authenticate = backend.wire.authenticate

        async def counted(*args: Any, **kwargs: Any) -> str:
            nonlocal logins
            logins += 1
            return await authenticate(*args, **kwargs)

        backend.wire.authenticate = counted  # type: ignore[method-assign]
        try:
            session = backend.session(10)
            await session.open()
            assert await renew_and_read(backend, session, 0.3) == ["ok"]
            if change == "user-deleted":
                etcdctl_as_root(etcd, "user", "delete", "alice")  # etcd drops alice's tokens
            else:
                etcdctl_as_root(etcd, "user", "passwd", "alice", "--interactive=false", stdin_text="new-password\n")
                etcd.kill(etcd.members[0])  # a restarted member knows no earlier token
                etcd.start_member(etcd.members[0])
                etcd.wait_healthy(30)
            started = time.monotonic()
            with pytest.raises(StoreForbidden, match="authentication failed"):
                await renew_and_read(backend, session, 10)
            elapsed = time.monotonic() - started
            assert elapsed < 5, elapsed
            assert logins <= 1 + elapsed / 0.5 + 1, (logins, elapsed)
        finally:
            await backend.close()


async def test_first_calls_made_together_log_in_once(workdir: Path) -> None:
    with LocalEtcd(1) as etcd:
        enable_auth(etcd, "auth")
        backend = EtcdBackend(etcd.endpoints, MonotonicClock(), user="alice", password=SECRET)
        await backend.connect()
        try:
            election = backend.election("auth")
            await asyncio.gather(backend.authenticate(), election.candidates(), election.switchover_request())
            refreshers = [t for t in asyncio.all_tasks() if "_refresh_token" in repr(t.get_coro())]
            assert len(refreshers) == 1, refreshers
        finally:
            await backend.close()
        await asyncio.sleep(0)
        assert not [t for t in asyncio.all_tasks() if "_refresh_token" in repr(t.get_coro()) and not t.done()]


async def test_after_a_failover_an_expired_token_costs_one_retry(workdir: Path) -> None:
    """etcd's simple tokens expire per member, each copy timed from its own last use: with
    calls on one member at a time, the others' copies run out, and the member a failover
    lands on rejects the token. The sidecar logs in again and goes on."""
    with LocalEtcd(3, extra_args=["--auth-token", "simple", "--auth-token-ttl", "2"]) as etcd:
        enable_auth(etcd, "auth")
        backend = await EtcdBackend(
            etcd.endpoints, MonotonicClock(), request_timeout=0.5, user="alice", password=SECRET, retry_interval=0.5
        ).connect()
        try:
            session = backend.session(10)
            await session.open()
            assert await renew_and_read(backend, session, 3) == ["ok"]  # the other members' copies expire
            etcd.kill(etcd.members[0])  # the member every call went to
            seen = await renew_and_read(backend, session, 4)
            assert seen[-1] == "ok", seen
        finally:
            await backend.close()


def test_rbac_user_with_rights_leads_and_the_password_never_shows(
    rbac_etcd: tuple[LocalEtcd, str], workdir: Path
) -> None:
    _, ep = rbac_etcd
    pw = workdir / "etcd-password"
    pw.write_text(SECRET + "\n")
    pw.chmod(0o600)
    port = free_ports(1)[0]
    s = SidecarProcess("alice-1", workdir, [ep], "rbac", dict(FAST_TIMING), http_port=port,
                       extra_args=["--etcd-user", "alice", "--etcd-password-file", str(pw)]).start()  # fmt: skip
    try:
        wait_until(lambda: (s.status() or {}).get("state") == "leader", 20, what="alice leads")
        evict = [
            sys.executable,
            "-m",
            "sidecar",
            "evict",
            "--force",  # alice leads: evicting a leader must be asked for
            "--endpoints",
            ep,
            "--election",
            "rbac",
            "--candidate",
            "alice-1",
        ]
        res = subprocess.run(evict, capture_output=True, text=True, timeout=20, check=False)
        assert res.returncode == 2, res.stderr
        assert "authentication required" in res.stderr, res.stderr
        for path in ("/leader", "/metrics", "/healthz"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                assert SECRET not in r.read().decode()
        assert SECRET not in log_text(s)
        # With the same credentials as the sidecars, evict works and the candidate loses its lease.
        res = subprocess.run(
            [*evict, "--etcd-user", "alice", "--etcd-password-file", str(pw)],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert res.returncode == 0, res.stderr
        wait_until(lambda: '"reason": "lease-lost"' in log_text(s), 15, what="evicted leader demotes")
        assert SECRET not in log_text(s) and SECRET not in res.stdout + res.stderr
    finally:
        s.stop()


@pytest.mark.parametrize(
    ("user", "password", "words"), [("bob", "bobpw", "permission denied"), ("alice", "wrong", "authentication failed")]
)
def test_user_without_rights_or_with_a_wrong_password_is_refused(
    rbac_etcd: tuple[LocalEtcd, str], workdir: Path, user: str, password: str, words: str
) -> None:
    _, ep = rbac_etcd
    pw = workdir / f"{user}-password"
    pw.write_text(password)
    res = subprocess.run(
        [sys.executable, "-m", "sidecar", "run", "--endpoints", ep, "--election", "rbac", "--id", user,
         "--http-addr", "", "--etcd-user", user, "--etcd-password-file", str(pw), "--log-format", "json",
         *[f"--{k.replace('_', '-')}={v}" for k, v in FAST_TIMING.items()]],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr[-2000:]
    forbidden = [json.loads(x) for x in res.stderr.splitlines() if '"store_forbidden"' in x]
    assert forbidden and words in forbidden[0]["error"].lower()
    # Nothing of the attempted password appears, not even as part of an argv dump.
    assert f"{user}:{password}" not in res.stderr and f'"{password}"' not in res.stderr


def log_events(s: SidecarProcess, event: str) -> list[dict[str, Any]]:
    out = []
    for line in log_text(s).splitlines():
        if f'"{event}"' in line:
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if rec.get("event") == event:
                    out.append(rec)
    return out


def test_a_leader_that_can_renew_but_not_read_demotes_before_its_successor_leads(workdir: Path) -> None:
    """An operator takes the read right from the leader's user; etcd checks no rights on
    keepalives, so its lease lives on. Its key is then deleted: the successor waits out
    the lock-delay's cap (TTL + retry interval, resting on the leader's re-reads) and
    leads. Before, the leader could not read that its key went and led on beside it."""
    election = "rbac-read"
    with LocalEtcd(1) as etcd:
        enable_auth(etcd, election)
        etcdctl_as_root(etcd, "user", "add", f"carol:{SECRET}")
        etcdctl_as_root(etcd, "user", "grant-role", "carol", "elector")
        # alice's own role, so that taking its read right leaves carol's.
        etcdctl_as_root(etcd, "user", "revoke-role", "alice", "elector")
        etcdctl_as_root(etcd, "role", "add", "alice-role")
        etcdctl_as_root(etcd, "role", "grant-permission", "alice-role", "--prefix=true", "readwrite", election)
        etcdctl_as_root(etcd, "user", "grant-role", "alice", "alice-role")
        pw = workdir / "pw"
        pw.write_text(SECRET)

        def sidecar(user: str) -> SidecarProcess:
            return SidecarProcess(user, workdir, etcd.endpoints, election, dict(FAST_TIMING),
                                  extra_args=["--etcd-user", user, "--etcd-password-file", str(pw)])  # fmt: skip

        a = sidecar("alice").start()
        b: SidecarProcess | None = None
        try:
            wait_until(lambda: (a.status() or {}).get("state") == "leader", 20, what="alice leads")
            b = sidecar("carol").start()
            wait_until(lambda: bool(log_events(b, "race_lost")), 20, what="carol queued")
            etcdctl_as_root(etcd, "role", "revoke-permission", "alice-role", "--prefix=true", election)
            etcdctl_as_root(etcd, "role", "grant-permission", "alice-role", "--prefix=true", "write", election)
            # Her watch on her key, opened while she could read, would still tell
            # her of the delete (etcd checks rights when a watch is created): wait
            # until a refused read has closed it, so only the reads are left.
            wait_until(
                lambda: any(r.get("during") == "watch-own-key" for r in log_events(a, "store_unreachable")),
                20,
                what="alice's read of her key refused",
            )
            keys = subprocess.run(
                [find_binary("etcdctl"), "--endpoints", etcd.endpoints[0], "--user", "root:rootpw",
                 "get", "--prefix", f"{election}/", "--keys-only", "--sort-by=CREATE"],
                check=True, capture_output=True, text=True, timeout=20,
            ).stdout.split()  # fmt: skip
            etcdctl_as_root(etcd, "del", keys[0])  # alice's key; her lease lives on
            wait_until(lambda: bool(log_events(b, "elected")), 20, what="carol leads")
            elected = log_events(b, "elected")[0]
            assert log_events(b, "lock_delay"), "carol did not wait out alice's lease: not the case under test"
            demoted = log_events(a, "demoted")
            assert demoted, "alice led on beside carol: her key's deletion went unseen"
            assert demoted[0]["mono"] < elected["mono"], "alice stopped only after carol led"
            lost = [r for r in log_events(a, "state_changed") if r.get("to_state") == "demoting"]
            assert lost[0]["reason"] == "backend-unreachable", lost[0]
            assert "not confirmed our candidate key" in lost[0]["detail"], lost[0]
            assert not log_events(a, "keepalive_failed"), "alice's keepalives failed: not the case under test"
        finally:
            for s in (a, b):
                if s is not None:
                    s.stop()


def test_zookeeper_nodes_belong_to_our_identity(zookeeper: ZkServer, workdir: Path) -> None:
    from kazoo.client import KazooClient
    from kazoo.exceptions import NoAuthError
    from kazoo.recipe.election import Election

    auth = workdir / "zk-auth"
    auth.write_text(f"elector:{SECRET}")
    s = SidecarProcess("zk-acl", workdir, zookeeper.endpoints, "acl-test", dict(FAST_TIMING), backend="zookeeper",
                       extra_args=["--zk-auth-file", str(auth)]).start()  # fmt: skip
    other = KazooClient(hosts=",".join(zookeeper.endpoints), auth_data=[("digest", "mallory:other")])
    other.start(10)
    try:
        wait_until(lambda: (s.status() or {}).get("state") == "leader", 20, what="leader with digest auth")
        assert Election(other, "/acl-test").contenders() == ["zk-acl"]  # anyone may read
        (node,) = other.get_children("/acl-test")
        with pytest.raises(NoAuthError):
            other.delete(f"/acl-test/{node}")
        with pytest.raises(NoAuthError):
            other.set("/acl-test.epoch", b'{"epoch": 99}')
        assert (s.status() or {}).get("state") == "leader"
        assert SECRET not in log_text(s)
    finally:
        other.stop()
        other.close()
        s.stop()
