"""Bad input never crashes the sidecar or reaches leadership state, and the
socket lets in only whom it should."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar import http_api as http_mod
from sidecar.cli import build_config
from sidecar.config import Config, ConfigError, check_files, unknown_env
from sidecar.fencing import server as server_mod
from sidecar.fencing.protocol import CLIENT_TYPES, SERVER_TYPES, ProtocolError, decode
from sidecar.fencing.server import GrantServer
from sidecar.http_api import HttpApi
from sidecar.loopmon import LoopMonitor
from sidecar_harness.shareddir import shared_tempdir
from tests.helpers import RecordingSink

# -- fuzzing -----------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_decoder_only_ever_raises_protocol_error_on_bytes(raw: bytes) -> None:
    for allowed in (CLIENT_TYPES, SERVER_TYPES):
        try:
            msg = decode(raw, allowed)
        except ProtocolError:
            continue
        assert msg["v"] == 1 and msg["type"] in allowed


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["v", "type", "seq", "reason", "token", "leader", "x"]), json_values))
def test_decoder_on_json_objects(obj: dict[str, Any]) -> None:
    import json

    try:
        raw = json.dumps(obj).encode()
    except ValueError:
        return
    try:
        msg = decode(raw, CLIENT_TYPES | SERVER_TYPES)
    except ProtocolError:
        return
    assert isinstance(msg, dict) and msg["type"] in CLIENT_TYPES | SERVER_TYPES


config_values = st.fixed_dictionaries(
    {},
    optional={
        "backend": st.sampled_from(["etcd", "zookeeper", "memory", "consul", ""]),
        "endpoints": st.text(max_size=40),
        "election": st.text(max_size=20),
        "candidate_id": st.text(max_size=20),
        "ttl": st.floats(min_value=-5, max_value=100) | st.sampled_from([float("nan"), float("inf")]),
        "renew_deadline": st.floats(min_value=-1, max_value=50),
        "retry_interval": st.floats(min_value=-1, max_value=20),
        "drift": st.floats(min_value=-1, max_value=1),
        "margin": st.floats(min_value=-1, max_value=10),
        "kill_grace": st.floats(min_value=-1, max_value=10),
        "http_addr": st.text(max_size=20),
        "allow_uid": st.text(max_size=12),
        "zk_chroot": st.text(max_size=12),
    },
)


@settings(max_examples=500)
@given(config_values)
def test_config_loader_accepts_only_safe_configs(values: dict[str, Any]) -> None:
    try:
        cfg = build_config({"candidate_id": "x", **values})
    except ConfigError as exc:
        assert "\n" not in str(exc) and exc.field in str(exc)
        return
    # Whatever got through keeps the safety inequalities.
    assert cfg.ttl > cfg.renew_deadline > 1.2 * cfg.retry_interval
    assert cfg.ttl * (1 - cfg.drift) - cfg.renew_deadline + 1e-9 >= cfg.kill_grace + cfg.margin


# -- config: typos and unreadable files ---------------------------------------


def test_unknown_environment_variables_are_refused() -> None:
    assert unknown_env({"ELECTION_SIDECAR_TTL": "3", "ELECTION_SIDECAR_TLL": "3", "HOME": "/"}) == [
        "ELECTION_SIDECAR_TLL"
    ]
    res = subprocess.run(
        [sys.executable, "-m", "sidecar", "check-config"],
        env={**os.environ, "ELECTION_SIDECAR_RENEW_DEADLIN": "1"},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert res.returncode == 2 and "ELECTION_SIDECAR_RENEW_DEADLIN" in res.stderr and res.stderr.count("\n") == 1


def test_unreadable_or_non_pem_files_fail_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        check_files(Config(ca_file=str(tmp_path / "missing.pem")))
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ConfigError, match="not a PEM"):
        check_files(Config(ca_file=str(junk)))
    with pytest.raises(ConfigError, match="password"):
        check_files(Config(etcd_user="alice"))


# -- the socket --------------------------------------------------------------


@pytest.fixture
async def open_server() -> AsyncIterator[tuple[GrantServer, RecordingSink, list[int]]]:
    """A server whose socket everyone may connect to, so uid checks are what decides."""
    sink = RecordingSink()
    refused: list[int] = []
    d = shared_tempdir("es-sec-")  # uid 65534 must reach the socket

    async def status() -> dict[str, Any]:
        return {"state": "follower"}

    srv = GrantServer(
        str(d / "g.sock"), election="e", candidate="c", version="t", log=sink,
        on_resign=lambda: False, status=status, mode=0o666, on_refused=lambda: refused.append(1),
    )  # fmt: skip
    await srv.start()
    yield srv, sink, refused
    await srv.close()
    d.rmdir()


def connect_as(path: str, uid: int) -> bytes:
    code = (
        "import socket,sys;s=socket.socket(socket.AF_UNIX);s.settimeout(3);s.connect(sys.argv[1]);"
        "d=b''\nwhile True:\n c=s.recv(4096)\n if not c: break\n d+=c\n if b'hello' in d: break\n"
        "sys.stdout.buffer.write(d)"
    )
    # The system Python: the test's own interpreter may sit where uid cannot read.
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    res = subprocess.run([python, "-c", code, path], user=uid, capture_output=True, timeout=10, check=False)
    return res.stdout


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a client as another uid")
async def test_peer_with_another_uid_is_refused_and_counted(
    open_server: tuple[GrantServer, RecordingSink, list[int]],
) -> None:
    srv, sink, refused = open_server
    out = await asyncio.to_thread(connect_as, str(srv.path), 65534)
    assert b"not allowed" in out and b"hello" not in out
    assert refused == [1] and sink.of("client_refused")[0]["uid"] == 65534
    srv._allow_uids.add(65534)  # as --allow-uid 65534 would
    out = await asyncio.to_thread(connect_as, str(srv.path), 65534)
    assert b"hello" in out


async def test_world_writable_directory_without_sticky_bit_is_refused() -> None:
    d = Path(tempfile.mkdtemp(prefix="es-ww-"))
    try:
        d.chmod(0o777)
        srv = GrantServer(
            str(d / "g.sock"), election="e", candidate="c", version="t", log=RecordingSink(),
            on_resign=lambda: False, status=None,  # type: ignore[arg-type]
        )  # fmt: skip
        with pytest.raises(FileExistsError, match="world-writable"):
            await srv.start()
        d.chmod(0o1777)  # like /tmp: the sticky bit stops others from replacing our file
        await srv.start()
        await srv.close()
    finally:
        d.chmod(0o700)
        for f in d.iterdir():
            f.unlink()
        d.rmdir()


async def test_slow_loris_client_is_cut_off_and_others_served(
    open_server: tuple[GrantServer, RecordingSink, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, sink, _ = open_server
    monkeypatch.setattr(server_mod, "FRAME_TIMEOUT", 0.2)
    assert not sink.of("client_protocol_error")
    r, w = await asyncio.open_unix_connection(str(srv.path))
    await r.readline()
    await r.readline()
    w.write(b'{"v":1,"type":')  # and then nothing
    await w.drain()
    err = await asyncio.wait_for(r.readline(), 3)
    assert b"not finished" in err
    assert await asyncio.wait_for(r.read(), 3) == b""
    assert "not finished" in sink.of("client_protocol_error")[0]["error"]
    r2, w2 = await asyncio.open_unix_connection(str(srv.path))
    assert b"hello" in await r2.readline()
    w2.close()
    w.close()


# -- the HTTP endpoints ------------------------------------------------------


@pytest.fixture
async def http_api() -> AsyncIterator[HttpApi]:
    from prometheus_client import CollectorRegistry

    from sidecar.clock import FakeClock
    from sidecar.elector import Elector
    from sidecar_harness.memory import MemoryBackend, MemoryStore
    from tests.unit.test_elector import CFG

    clock = FakeClock()
    elector = Elector(CFG, MemoryBackend(MemoryStore(clock)), clock, RecordingSink())
    api = HttpApi(CFG, elector, LoopMonitor(clock=clock), CollectorRegistry())
    await api.start("127.0.0.1:0")
    yield api
    await api.close()


async def exchange(port: int, raw: bytes, *, wait: float = 5.0) -> bytes:
    """Send ``raw``, return all the server answers until it closes the connection."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(raw)
        await w.drain()
        return await asyncio.wait_for(r.read(), wait)
    finally:
        w.close()


async def test_http_slow_loris_is_cut_off_and_others_served(http_api: HttpApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_mod, "REQUEST_TIMEOUT", 0.3)
    r, w = await asyncio.open_connection("127.0.0.1", http_api.port)
    w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and then nothing
    await w.drain()
    answer = await asyncio.wait_for(r.read(), 5)  # closed by the server, not by us
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408")
    w.close()
    ok = await exchange(http_api.port, b"GET /leader/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 503") and b'"leader": false' in ok


async def test_http_idle_keepalive_connection_is_closed(http_api: HttpApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_mod, "REQUEST_TIMEOUT", 0.3)
    r, w = await asyncio.open_connection("127.0.0.1", http_api.port)
    w.write(b"GET /leader HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive by default
    await w.drain()
    first = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
    assert first.startswith(b"HTTP/1.1 200")
    rest = await asyncio.wait_for(r.read(), 5)  # the body, then the server closes the idle connection
    assert b'"state": "follower"' in rest
    w.close()


async def test_http_oversized_head_is_refused_with_431(http_api: HttpApi) -> None:
    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (http_mod.MAX_HEAD + 10) + b"\r\n\r\n"
    answer = await exchange(http_api.port, big)
    assert answer.startswith(b"HTTP/1.1 431")


async def test_http_many_headers_are_refused_with_431(http_api: HttpApi) -> None:
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(2000))
    answer = await exchange(http_api.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431")


async def test_http_body_too_large_is_refused_with_413(http_api: HttpApi) -> None:
    body = b"x" * (http_mod.MAX_BODY + 1)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    assert (await exchange(http_api.port, head + body)).startswith(b"HTTP/1.1 413")


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, b"400"),  # a TLS hello
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", b"400"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"400"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"404"),
        (b"POST /leader HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}", b"405"),
    ],
)
async def test_http_garbage_gets_a_4xx_and_the_server_stays_up(http_api: HttpApi, raw: bytes, status: bytes) -> None:
    answer = await exchange(http_api.port, raw)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:80]
    ok = await exchange(http_api.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200")


async def test_http_connections_beyond_the_limit_are_closed(http_api: HttpApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_mod, "MAX_CLIENTS", 2)
    held = [await asyncio.open_connection("127.0.0.1", http_api.port) for _ in range(2)]
    await asyncio.sleep(0.1)  # let the server take them
    try:
        refused = await exchange(http_api.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    except ConnectionResetError:
        refused = b""  # closed with our request unread: the kernel resets
    assert refused == b""
    for _, w in held:
        w.close()
    await asyncio.sleep(0.1)
    ok = await exchange(http_api.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200")
