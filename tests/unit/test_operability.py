"""Issue 15: what an operator meets on a real cluster, below the chart.

Service-link variables, refused ZooKeeper TLS flags, log flags on every
command, a taken HTTP port, the exit-code table, timing derived from the
TTL, process metrics, the renewal-lateness gauges, the leader-only route,
liveness vs readiness while out of the election, and the orphan resign.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from sidecar.cli import build_config, main
from sidecar.clock import FakeClock
from sidecar.config import Config, ConfigError, unknown_env, validate
from sidecar.http_api import HttpApi
from sidecar.loopmon import LoopMonitor
from sidecar.metrics import SidecarMetrics
from tests.unit.test_observability import World, get


@pytest.fixture
async def w() -> AsyncIterator[World]:
    world = World()
    yield world
    for t in world.tasks:
        t.cancel()
    await asyncio.gather(*world.tasks, return_exceptions=True)


def test_kubernetes_service_links_are_not_typos() -> None:
    # What the kubelet injects for a Service named "election-sidecar-metrics" (port 9180).
    links = {
        "ELECTION_SIDECAR_METRICS_SERVICE_HOST": "10.0.0.7",
        "ELECTION_SIDECAR_METRICS_SERVICE_PORT": "9180",
        "ELECTION_SIDECAR_METRICS_SERVICE_PORT_ELECTION_HTTP": "9180",
        "ELECTION_SIDECAR_METRICS_PORT": "tcp://10.0.0.7:9180",
        "ELECTION_SIDECAR_METRICS_PORT_9180_TCP": "tcp://10.0.0.7:9180",
        "ELECTION_SIDECAR_METRICS_PORT_9180_TCP_PROTO": "tcp",
        "ELECTION_SIDECAR_METRICS_PORT_9180_TCP_PORT": "9180",
        "ELECTION_SIDECAR_METRICS_PORT_9180_TCP_ADDR": "10.0.0.7",
    }
    assert unknown_env(links) == []
    # A real typo is still one, even when it ends like a link.
    assert unknown_env({"ELECTION_SIDECAR_TTLL": "5", "ELECTION_SIDECAR_HTTP_PORT": "9180"}) == [
        "ELECTION_SIDECAR_HTTP_PORT",
        "ELECTION_SIDECAR_TTLL",
    ]


@pytest.mark.parametrize("flag", ["ca_file", "cert_file", "key_file", "tls_server_name"])
def test_zookeeper_refuses_tls_flags_it_would_ignore(flag: str) -> None:
    cfg = replace(Config(backend="zookeeper", endpoints=("zk:2181",)), **{flag: "/x.pem"})  # type: ignore[arg-type]
    if flag == "cert_file":
        cfg = replace(cfg, key_file="/k.pem")
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert "\n" not in str(err.value) and "ZooKeeper" in str(err.value)


@pytest.mark.parametrize("command", ["status", "watch", "evict"])
def test_log_flags_configure_logging_on_every_store_command(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr("sidecar.log.configure", lambda fmt, level: seen.append((fmt, level)))
    args = [command, "--endpoints=127.0.0.1:1", "--log-format=json", "--log-level=debug", "--request-timeout=0.2"]
    if command == "evict":
        args.append("--candidate=x")
    CliRunner().invoke(main, args)
    assert seen and seen[0] == ("json", "debug")


def test_http_port_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = subprocess.run(
            [sys.executable, "-m", "sidecar", "run", "--endpoints=127.0.0.1:1", f"--http-addr=127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if not line.startswith("{")]  # JSON logs aside
    assert len(lines) == 1 and "in use" in lines[0] and str(port) in lines[0]


def test_help_carries_one_exit_code_table() -> None:
    text = CliRunner().invoke(main, ["--help"]).output
    assert "Exit codes" in text
    table = text.split("Exit codes", 1)[1]
    for code in ("0", "1", "2", "3"):
        assert re.search(rf"^\s+{code} \S", table, re.M), code


def test_ttl_alone_derives_the_rest_and_check_config_prints_it() -> None:
    cfg = build_config({"ttl": 30.0})
    assert cfg.ttl == 30 and cfg.renew_deadline == pytest.approx(18)  # scales with the TTL
    build_config({"ttl": 3.0})  # the fixed defaults (renew 6 s) do not fit a 3 s TTL
    assert 0 < cfg.retry_interval * 1.2 < cfg.renew_deadline < cfg.ttl
    spare = cfg.timing.grant_validity(cfg.ttl) - cfg.renew_deadline
    assert spare >= cfg.kill_grace > 0
    # Explicit values still win over derived ones.
    assert build_config({"ttl": 30.0, "renew_deadline": 20.0}).renew_deadline == 20
    res = CliRunner().invoke(main, ["check-config", "--ttl=30"])
    assert res.exit_code == 0, res.output
    assert "derived" in res.output


def test_default_config_still_validates_and_keeps_its_timing() -> None:
    cfg = build_config({})
    assert (cfg.ttl, cfg.renew_deadline, cfg.retry_interval, cfg.kill_grace) == (10, 6, 2, 2)


def test_process_and_platform_metrics_are_exported() -> None:
    reg = CollectorRegistry()
    SidecarMetrics(reg, "e", "c", "etcd")
    names = {m.name for m in reg.collect()}
    assert {"process_resident_memory_bytes", "python_info", "python_gc_objects_collected"} <= names, names


async def test_renewal_lateness_and_renew_deadline_are_gauges(w: World) -> None:
    e, m = w.elector("a")
    await w.clock.advance(0.1)
    m.bind_renewal(lambda: e.snapshot().at - e.snapshot().renewed_at, 6.0)
    assert w.value("election_renew_deadline_seconds") == 6.0
    late = w.value("election_seconds_since_renewal")
    assert late is not None and 0 <= late < 2.5


def test_kill_unconfirmed_gauge() -> None:
    reg = CollectorRegistry()
    m = SidecarMetrics(reg, "e", "c", "etcd")
    labels = {"election": "e", "candidate": "c"}
    assert reg.get_sample_value("election_kill_unconfirmed", labels) == 0
    m.kill_unconfirmed(True)
    assert reg.get_sample_value("election_kill_unconfirmed", labels) == 1


async def test_leader_route_follows_the_leader_and_liveness_survives_leaving(w: World) -> None:
    from tests.unit.test_elector import CFG

    a, _ = w.elector("a")
    await w.clock.advance(0.1)
    b, _ = w.elector("b")
    await w.clock.advance(0.1)
    apis = [HttpApi(replace(CFG, candidate_id=n), e, LoopMonitor(), w.registries[n]) for n, e in (("a", a), ("b", b))]
    ports = [await api.start("127.0.0.1:0") for api in apis]
    try:
        codes = [(await asyncio.to_thread(get, f"http://127.0.0.1:{p}/leader/ready"))[0] for p in ports]
        assert codes == [200, 503]
        # Out of the election (an unconfirmed kill): alive, so liveness must not restart it; not ready.
        b._set_out("an orchestrator kill could not be confirmed")
        assert (await asyncio.to_thread(get, f"http://127.0.0.1:{ports[1]}/healthz"))[0] == 200
        assert (await asyncio.to_thread(get, f"http://127.0.0.1:{ports[1]}/readyz"))[0] == 503
    finally:
        for api in apis:
            await api.close()


class _Fake:
    def __init__(self) -> None:
        self.leading = True
        self.clients = 0
        self.resigns = 0

    def resign(self) -> bool:
        self.resigns += 1
        return True


async def test_orphan_guard_resigns_a_leader_without_grant_clients() -> None:
    from sidecar.orphan import OrphanGuard

    clock = FakeClock()
    f = _Fake()
    logs: list[tuple[str, dict[str, Any]]] = []
    guard = OrphanGuard(
        clock, 4.0, leading=lambda: f.leading, clients=lambda: f.clients, resign=f.resign,
        warn=lambda ev, **kw: logs.append((ev, kw)),
    )  # fmt: skip
    task = asyncio.create_task(guard.run())
    try:
        await clock.advance(3.0)
        assert f.resigns == 0
        f.clients = 1  # an orchestrator connects and acks: the clock restarts
        await clock.advance(3.0)
        f.clients = 0
        await clock.advance(2.5)
        assert f.resigns == 0
        await clock.advance(2.5)
        assert f.resigns == 1 and logs[0][0] == "resigning_without_orchestrator"
        # Disabled with 0.
        assert OrphanGuard(clock, 0, leading=lambda: True, clients=lambda: 0, resign=f.resign).enabled is False
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_orphan_resign_after_defaults_to_two_ttls_and_zero_disables() -> None:
    assert build_config({"ttl": 10.0}).effective_orphan_resign_after == 20
    assert build_config({"ttl": 10.0, "orphan_resign_after": 0.0}).effective_orphan_resign_after == 0
    with pytest.raises(ConfigError):
        validate(Config(orphan_resign_after=-2))
