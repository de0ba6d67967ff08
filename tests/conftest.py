"""Real servers for the tests: testcontainers where a Docker engine answers,
local processes otherwise. In CI (CI=true) a missing server fails the run;
elsewhere it skips the tests that need it, saying why."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sidecar.log import WAKE_DELAY_ENV
from sidecar_harness.localetcd import EtcdNotFound, LocalEtcd
from sidecar_harness.localpg import LocalPostgres, PostgresNotFound
from sidecar_harness.localstore import last_words
from sidecar_harness.localzk import LocalZooKeeper, ZooKeeperNotFound

# The sidecars these tests start write their info lines at once, not up to
# 20 ms later (sidecar/log.py, WAKE_DELAY): the tests read their log files
# right after seeing a state change by another way, and a line still held
# read as missing (a leader's `demoted` checked against its successor's
# `elected`). tests/unit/test_log.py covers the delay itself; bench.py,
# `make demo` and `election-sidecar validate` run with it.
os.environ.setdefault(WAKE_DELAY_ENV, "0")

ETCD_IMAGE = "quay.io/coreos/etcd:v3.5.17"
ZK_IMAGE = "zookeeper:3.8"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str) -> None:
    if in_ci():
        pytest.fail(f"{what} (in CI a missing server is a failure, not a skip)")
    pytest.skip(what)


def docker_engine() -> bool:
    """Use containers only where an engine really answers (a client alone is not enough)."""
    choice = os.environ.get("ELECTION_SIDECAR_TEST_SERVERS", "auto")
    if choice == "local":
        return False
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        if choice == "docker":
            missing("ELECTION_SIDECAR_TEST_SERVERS=docker but no Docker engine answers")
        return False


@dataclass
class EtcdServer:
    """What a test needs to know of an etcd, however it was started."""

    endpoints: list[str]
    local: LocalEtcd | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _etcd_container() -> Iterator[EtcdServer]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    container = (
        DockerContainer(ETCD_IMAGE)
        .with_exposed_ports(2379)
        .with_command("etcd --listen-client-urls http://0.0.0.0:2379 --advertise-client-urls http://127.0.0.1:2379")
    )
    with container:
        wait_for_logs(container, "ready to serve client requests", timeout=30)
        host = container.get_container_host_ip()
        yield EtcdServer([f"{host}:{container.get_exposed_port(2379)}"])


def _local_etcd(size: int) -> Iterator[EtcdServer]:
    try:
        cluster = LocalEtcd(size).start()
    except EtcdNotFound as exc:
        missing(str(exc))
        raise
    try:
        yield EtcdServer(cluster.endpoints, cluster)
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdServer]:
    """One etcd member shared by the session; tests use unique election names."""
    if docker_engine():
        yield from _etcd_container()
    else:
        yield from _local_etcd(1)


@pytest.fixture
def etcd_cluster() -> Iterator[EtcdServer]:
    """A fresh 3-member loopback cluster per test: tests kill its members."""
    yield from _local_etcd(3)


@dataclass
class ZkServer:
    endpoints: list[str]
    local: LocalZooKeeper | None = None


def _zk_container() -> Iterator[ZkServer]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    container = DockerContainer(ZK_IMAGE).with_exposed_ports(2181).with_env("ZOO_TICK_TIME", "200")
    with container:
        wait_for_logs(container, "binding to port", timeout=60)
        yield ZkServer([f"{container.get_container_host_ip()}:{container.get_exposed_port(2181)}"])


def _local_zk(size: int) -> Iterator[ZkServer]:
    try:
        zk = LocalZooKeeper(size).start()
    except ZooKeeperNotFound as exc:
        missing(str(exc))
        raise
    try:
        yield ZkServer(zk.endpoints, zk)
    finally:
        zk.stop()


@pytest.fixture(scope="session")
def zookeeper() -> Iterator[ZkServer]:
    """One ZooKeeper server shared by the session (tickTime 200 ms)."""
    if docker_engine():
        yield from _zk_container()
    else:
        yield from _local_zk(1)


@pytest.fixture
def zk_ensemble() -> Iterator[ZkServer]:
    """A fresh 3-server loopback ensemble per test: tests kill its servers."""
    yield from _local_zk(3)


_reported_dead: set[int] = set()


@pytest.fixture(autouse=True)
def _session_stores_survive(request: pytest.FixtureRequest) -> Iterator[None]:
    """A shared store that exits fails every later test with "connection
    refused" and takes its log with it at the end of the session: name the
    test it died in, and why, once."""
    yield
    for name in ("etcd", "zookeeper"):
        server = request.node.funcargs.get(name) if hasattr(request.node, "funcargs") else None
        local = getattr(server, "local", None)
        for m in getattr(local, "members", ()):
            if not m.alive and id(m) not in _reported_dead:
                _reported_dead.add(id(m))
                code = m.proc.returncode if m.proc is not None else None
                pytest.fail(
                    f"the session's {name} member {m.name} exited during this test (exit code {code}): "
                    f"{last_words(m.log_path)}"
                )


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """One PostgreSQL server (Debian's package) shared by the session; tests use unique resource names."""
    try:
        pg = LocalPostgres().start()
    except PostgresNotFound as exc:
        missing(str(exc))
        raise
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture
def election_name() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Unix socket paths must stay under 108 bytes; pytest's tmp_path can be long.
    short = Path(tempfile.mkdtemp(prefix="es-"))
    yield short
    shutil.rmtree(short, ignore_errors=True)


_MEASURED: list[tuple[str, str]] = []


@pytest.fixture(scope="session")
def measure() -> Any:
    """Record a figure to print in the run's summary (latencies, gaps)."""

    def record(name: str, value: str) -> None:
        _MEASURED.append((name, value))

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _MEASURED:
        terminalreporter.section("measured")
        for name, value in _MEASURED:
            terminalreporter.write_line(f"{name}: {value}")
