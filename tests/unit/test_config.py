"""Config validation: unsafe timing is refused with one line naming field and rule."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from sidecar.cli import build_config
from sidecar.config import Config, ConfigError, validate


def test_defaults_are_safe() -> None:
    cfg = validate(Config())
    assert cfg.timing.grant_validity(cfg.ttl) == pytest.approx(10 * 0.99 - 0.5)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"ttl": 1}, "ttl", ">= 2 s for etcd"),
        ({"ttl": 2.5, "renew_deadline": 1, "retry_interval": 0.5, "kill_grace": 0.5}, "ttl", "whole seconds"),
        ({"renew_deadline": 10}, "renew_deadline", "must be < ttl"),
        ({"retry_interval": 5}, "retry_interval", "1.2 * retry_interval"),
        ({"kill_grace": 4}, "renew_deadline", "kill_grace + margin"),
        ({"margin": 4}, "renew_deadline", "kill_grace + margin"),
        ({"margin": 0}, "margin", "must be > 0"),
        ({"socket": "/tmp/" + "d" * 120 + "/grant.sock"}, "socket", "AF_UNIX path limit"),
        ({"drift": 0.2}, "drift", "below 0.1"),
        ({"drift": -0.1}, "drift", ">= 0"),
        ({"ttl": float("nan")}, "ttl", "finite"),
        ({"endpoints": ()}, "endpoints", "at least one"),
        ({"endpoints": ("nohostport",)}, "endpoints", "host:port"),
        ({"endpoints": ("https://etcd:2379",)}, "endpoints", "ca_file"),
        ({"election": "bad name"}, "election", "A-Z"),
        ({"election": "x/"}, "election", "not end with /"),
        ({"election": "orders.ttl"}, "election", "reserved"),
        ({"election": "orders.no-lead"}, "election", "reserved"),
        ({"candidate_id": "a b"}, "candidate_id", "without spaces"),
        ({"cert_file": "c.pem"}, "key_file", "go together"),
        ({"request_timeout": 7}, "request_timeout", "renew_deadline"),
        ({"backend": "consul"}, "backend", "one of"),
    ],
)
def test_each_unsafe_value_names_its_field_and_rule(change: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(replace(Config(), **change))  # type: ignore[arg-type]
    assert err.value.field == field
    message = str(err.value)
    assert "\n" not in message and field in message and words in message


def test_memory_backend_allows_sub_second_ttl() -> None:
    validate(Config(backend="memory", ttl=1, renew_deadline=0.5, retry_interval=0.1, kill_grace=0.2, margin=0.1))


def test_endpoints_are_split_and_id_defaults_to_host_and_pid() -> None:
    cfg = build_config({"endpoints": "a:1, http://b:2,", "candidate_id": ""})
    assert cfg.endpoints == ("a:1", "http://b:2")
    assert cfg.candidate_id.endswith(f"-{__import__('os').getpid()}")


def test_check_config_cli_fails_with_one_line_and_env_maps_to_fields() -> None:
    env = {"ELECTION_SIDECAR_TTL": "5", "ELECTION_SIDECAR_RENEW_DEADLINE": "4.9", "PATH": ""}
    res = subprocess.run(
        [sys.executable, "-m", "sidecar", "check-config"], capture_output=True, text=True, env=env, check=False
    )
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0
    assert "renew_deadline=4.9" in res.stderr and "kill_grace + margin" in res.stderr
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecar",
            "check-config",
            "--ttl",
            "5",
            "--renew-deadline",
            "2.4",
            "--retry-interval",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0 and "config ok" in ok.stdout
