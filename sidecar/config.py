"""Configuration: one frozen dataclass, one validate().

Every field maps 1:1 to a CLI flag (``--renew-deadline``) and an environment
variable (``ELECTION_SIDECAR_RENEW_DEADLINE``). Validation rejects unsafe
timing with one line that names the field and the rule it broke, so a bad
deploy fails at start-up instead of during a failover.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from sidecar import backends
from sidecar.backends.base import PRIORITY_MAX, PRIORITY_MIN
from sidecar.model import Timing

ENV_PREFIX = "ELECTION_SIDECAR_"
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes on Linux, the last one NUL
LOG_FORMATS = ("auto", "json", "console")
_ENDPOINT = re.compile(r"^(?:(?P<scheme>https?)://)?(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})/?$")
_ELECTION = re.compile(r"^[A-Za-z0-9_./-]+$")
RESERVED_ELECTION_SUFFIXES = (".ttl", ".no-lead")  # another election's NAME.x/ namespaces


class ConfigError(ValueError):
    """One broken rule. ``str()`` is the single line an operator sees."""

    def __init__(self, field_name: str, value: object, rule: str) -> None:
        self.field = field_name
        self.rule = rule
        super().__init__(f"invalid config: {field_name}={value!r}: {rule}")


def _opt(help_text: str, **extra: Any) -> dict[str, Any]:
    return {"help": help_text, **extra}


@dataclass(frozen=True)
class Config:
    backend: str = field(default="etcd", metadata=_opt("Store to campaign through.", choices=tuple(backends.BUILTIN)))
    endpoints: tuple[str, ...] = field(
        default=("127.0.0.1:2379",),
        metadata=_opt("Store endpoints, comma separated (host:port or http(s)://host:port)."),
    )
    election: str = field(default="election-sidecar", metadata=_opt("Election name (etcd key prefix)."))
    candidate_id: str = field(
        default="", metadata=_opt("This candidate's identity; defaults to hostname-pid.", flag="id")
    )
    priority: int = field(
        default=0,
        metadata=_opt(
            "Preference for a vacancy, -1000..1000, higher first: at the head of the queue a candidate steps aside"
            " for a live queued one of higher priority. Never preempts a sitting leader."
        ),
    )
    no_lead: bool = field(
        default=False,
        metadata=_opt(
            "Never lead (Patroni's nofailover): stay visible as a candidate, outside the queue; --priority is ignored."
        ),
    )
    ttl: float = field(default=10.0, metadata=_opt("Lease TTL in seconds."))
    renew_deadline: float = field(
        default=6.0,
        metadata=_opt("Seconds after the last acknowledged renewal at which a leader gives up and demotes."),
    )
    retry_interval: float = field(default=2.0, metadata=_opt("Seconds between keepalives and retries."))
    drift: float = field(
        default=0.01, metadata=_opt("Assumed worst relative clock-rate error between us and the store.")
    )
    margin: float = field(
        default=0.5, metadata=_opt("Seconds kept between our deadline and the earliest lease expiry.")
    )
    kill_grace: float = field(
        default=2.0,
        metadata=_opt("Seconds between telling the orchestrator to stop (SIGTERM) and SIGKILL."),
    )
    socket: str = field(default="", metadata=_opt("Unix socket for grants to the orchestrator; empty disables it."))
    socket_group: str = field(
        default="", metadata=_opt("Group (name or gid) that may also use the socket; makes it mode 0660.")
    )
    allow_uid: str = field(
        default="",
        metadata=_opt(
            "Comma-separated uids, besides our own and root, allowed on the socket (checked by SO_PEERCRED)."
        ),
    )
    standby: bool = field(
        default=False,
        metadata=_opt("Run CMD all the time (it learns leadership from the socket) instead of only while leading."),
    )
    kill_pidfile: str = field(default="", metadata=_opt("On loss, stop the process whose pid is in this file."))
    kill_peer: bool = field(
        default=False,
        metadata=_opt("On loss, stop the socket clients that acknowledged a grant (needs a shared pid namespace)."),
    )
    orphan_resign_after: float = field(
        default=-1.0,
        metadata=_opt(
            "With --kill-peer: resign when no client that acknowledged a grant has been connected for this many"
            " seconds (the orchestrator is gone); -1 means 2*ttl, 0 never."
        ),
    )
    zk_chroot: str = field(default="", metadata=_opt("ZooKeeper chroot under which the election lives."))
    zk_auth_file: str = field(
        default="", metadata=_opt("File holding user:password for ZooKeeper digest auth (never logged).")
    )
    etcd_user: str = field(default="", metadata=_opt("etcd user for username/password auth."))
    etcd_password_file: str = field(
        default="",
        metadata=_opt("File holding the etcd password (or set ELECTION_SIDECAR_ETCD_PASSWORD); never logged."),
    )
    ca_file: str = field(default="", metadata=_opt("PEM CA bundle; enables TLS to the store."))
    cert_file: str = field(default="", metadata=_opt("PEM client certificate for mutual TLS."))
    key_file: str = field(default="", metadata=_opt("PEM client key for mutual TLS."))
    tls_server_name: str = field(default="", metadata=_opt("Name to verify in the store's certificate."))
    request_timeout: float = field(default=0.0, metadata=_opt("Seconds per store request; 0 means retry_interval."))
    http_addr: str = field(
        default="0.0.0.0:9180",
        metadata=_opt("host:port for /metrics /healthz /readyz /leader; empty disables; port 0 picks one."),
    )
    log_format: str = field(
        default="auto", metadata=_opt("Log format; auto is JSON unless stderr is a terminal.", choices=LOG_FORMATS)
    )
    log_level: str = field(
        default="info", metadata=_opt("Lowest level logged.", choices=("debug", "info", "warning", "error"))
    )

    @property
    def effective_request_timeout(self) -> float:
        return self.request_timeout or self.retry_interval

    @property
    def effective_orphan_resign_after(self) -> float:
        return 2 * self.ttl if self.orphan_resign_after < 0 else self.orphan_resign_after

    @property
    def timing(self) -> Timing:
        return Timing(self.renew_deadline, self.drift, self.margin, self.kill_grace)


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def field_names() -> list[str]:
    return [f.name for f in fields(Config)]


def _finite(name: str, value: float, *, minimum: float | None = None, strict: bool = False) -> None:
    if not math.isfinite(value):
        raise ConfigError(name, value, "must be a finite number")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ConfigError(name, value, f"must be {'>' if strict else '>='} {minimum:g}")


PRIORITY_RULE = f"must be an integer from {PRIORITY_MIN} to {PRIORITY_MAX}"


def parse_priority(value: object) -> int:
    """The priority from a flag or environment string, or one ConfigError line."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ConfigError("priority", value, PRIORITY_RULE)
    return int(text)


def check_priority(priority: object) -> None:
    if not isinstance(priority, int) or isinstance(priority, bool) or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ConfigError("priority", priority, PRIORITY_RULE)


def check_timing(cfg: Config) -> None:
    """The timing rules alone: at start-up against the asked TTL, and again
    against the TTL the store actually grants (it may grant less)."""
    if not cfg.ttl > cfg.renew_deadline:
        raise ConfigError("renew_deadline", cfg.renew_deadline, f"must be < ttl ({cfg.ttl:g})")
    if not cfg.renew_deadline > 1.2 * cfg.retry_interval:
        raise ConfigError(
            "retry_interval",
            cfg.retry_interval,
            f"renew_deadline ({cfg.renew_deadline:g}) must be > 1.2 * retry_interval",
        )
    spare = cfg.timing.grant_validity(cfg.ttl) - cfg.renew_deadline
    if spare + 1e-9 < cfg.kill_grace:
        raise ConfigError(
            "renew_deadline",
            cfg.renew_deadline,
            f"ttl*(1-drift) - renew_deadline = {spare + cfg.margin:.3f}s must be >= kill_grace + margin = "
            f"{cfg.kill_grace + cfg.margin:.3f}s, or the orchestrator may still run when the lease expires",
        )
    if cfg.request_timeout > cfg.renew_deadline:
        raise ConfigError("request_timeout", cfg.request_timeout, f"must be <= renew_deadline ({cfg.renew_deadline:g})")


def validate(cfg: Config, command: Sequence[str] | None = None) -> Config:
    """Return ``cfg`` unchanged or raise ConfigError for the first broken rule.

    ``command`` is the orchestrator of ``run -- CMD`` (empty: none); None
    skips the rules about it, for commands that start no orchestrator.
    """
    if cfg.backend not in backends.known():
        raise ConfigError("backend", cfg.backend, f"must be one of {', '.join(backends.known())}")
    if not cfg.endpoints:
        raise ConfigError("endpoints", "", "needs at least one host:port")
    for ep in cfg.endpoints:
        m = _ENDPOINT.match(ep)
        if not m or not 0 < int(m["port"]) < 65536:
            raise ConfigError("endpoints", ep, "each endpoint must be host:port or http(s)://host:port")
        if m["scheme"] == "https" and not cfg.ca_file:
            raise ConfigError(
                "endpoints", ep, "https endpoints need ca_file (TLS is never enabled without a CA to verify)"
            )
    if not cfg.election or not _ELECTION.match(cfg.election) or cfg.election.endswith("/"):
        raise ConfigError(
            "election", cfg.election, "must be non-empty, use only A-Z a-z 0-9 _ . / - and not end with /"
        )
    if cfg.election.endswith(RESERVED_ELECTION_SUFFIXES):
        # Election NAME keeps NAME.ttl/... and NAME.no-lead/... beside its queue
        # NAME/...: an election named NAME.ttl would queue among those keys.
        raise ConfigError(
            "election", cfg.election, f"must not end with {' or '.join(RESERVED_ELECTION_SUFFIXES)} (reserved)"
        )
    if len(cfg.candidate_id) > 253 or any(c.isspace() or not c.isprintable() for c in cfg.candidate_id):
        raise ConfigError("candidate_id", cfg.candidate_id, "must be at most 253 printable characters without spaces")

    check_priority(cfg.priority)
    _finite("ttl", cfg.ttl, minimum=0, strict=True)
    _finite("renew_deadline", cfg.renew_deadline, minimum=0, strict=True)
    _finite("retry_interval", cfg.retry_interval, minimum=0, strict=True)
    _finite("margin", cfg.margin, minimum=0, strict=True)  # covers the SIGKILL landing; 0 leaves none
    _finite("kill_grace", cfg.kill_grace, minimum=0)
    _finite("request_timeout", cfg.request_timeout, minimum=0)
    _finite("drift", cfg.drift, minimum=0)
    _finite("orphan_resign_after", cfg.orphan_resign_after, minimum=-1)
    if cfg.drift >= 0.1:
        raise ConfigError("drift", cfg.drift, "must be below 0.1 (a clock that drifts 10% is broken)")
    backends.load(cfg.backend).check_config(cfg)
    check_timing(cfg)
    if bool(cfg.cert_file) != bool(cfg.key_file):
        raise ConfigError("cert_file" if not cfg.cert_file else "key_file", "", "cert_file and key_file go together")
    if cfg.cert_file and not cfg.ca_file:
        raise ConfigError("ca_file", "", "client certificates need ca_file to verify the store")
    if cfg.allow_uid and not all(u.strip().isdigit() for u in cfg.allow_uid.split(",") if u.strip()):
        raise ConfigError("allow_uid", cfg.allow_uid, "must be comma-separated numeric uids")
    if cfg.socket and len(os.fsencode(cfg.socket)) > SOCKET_PATH_MAX:
        raise ConfigError("socket", cfg.socket, f"must be at most {SOCKET_PATH_MAX} bytes (the AF_UNIX path limit)")
    if cfg.kill_peer and not cfg.socket:
        raise ConfigError("kill_peer", True, "needs socket: the peers are the socket's clients")
    if cfg.kill_pidfile and cfg.kill_peer:
        raise ConfigError("kill_pidfile", cfg.kill_pidfile, "choose one kill target: kill_pidfile or kill_peer")
    if cfg.http_addr:
        _, sep, port = cfg.http_addr.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise ConfigError("http_addr", cfg.http_addr, "must be host:port (port 0-65535), or empty to disable")
    if cfg.log_format not in LOG_FORMATS:
        raise ConfigError("log_format", cfg.log_format, f"must be one of {', '.join(LOG_FORMATS)}")
    socket_gid(cfg)  # an unknown group fails here, not after the socket exists
    if command is not None:
        _check_command(cfg, command)
    return cfg


def _check_command(cfg: Config, command: Sequence[str]) -> None:
    if cfg.standby and not command:
        raise ConfigError("standby", True, "needs a command after --")
    if command and (cfg.kill_pidfile or cfg.kill_peer):
        raise ConfigError("command", " ".join(command), "choose one kill target: command, kill_pidfile or kill_peer")
    if command and shutil.which(command[0]) is None:
        raise ConfigError("command", command[0], "not found or not executable")


def endpoint_hostports(cfg: Config) -> list[str]:
    """Endpoints stripped of their scheme, as gRPC wants them."""
    out = []
    for ep in cfg.endpoints:
        m = _ENDPOINT.match(ep)
        assert m is not None  # validate() ran
        out.append(f"{m['host']}:{m['port']}")
    return out


def allowed_uids(cfg: Config) -> set[int]:
    return {int(u) for u in cfg.allow_uid.split(",") if u.strip()}


def socket_gid(cfg: Config) -> int | None:
    """The gid named by socket_group, or None. Raises ConfigError for an unknown group."""
    if not cfg.socket_group:
        return None
    if cfg.socket_group.isdigit():
        return int(cfg.socket_group)
    import grp

    try:
        return grp.getgrnam(cfg.socket_group).gr_gid
    except KeyError:
        raise ConfigError("socket_group", cfg.socket_group, "no such group") from None


# Environment variables with our prefix that are not config fields but are
# read elsewhere (secrets, test and tool locations).
OTHER_ENV = {
    "ETCD_PASSWORD",
    "UNSAFE_IGNORE_DEADLINE",
    "TEST_SERVERS",
    "ETCD_BIN",
    "ETCDCTL_BIN",
    "ZK_CLASSPATH",
    "PROMETHEUS_BIN",
    "PROMTOOL_BIN",
    "KILL_TREE",
    "LOG_WAKE_DELAY",
}


# What the kubelet injects for every Service in the namespace (docker-links
# style): a Service named "election-sidecar-..." lands in our prefix. Names
# alone would also excuse typos such as ..._HTTP_PORT, so the value must
# look like one the kubelet writes, too.
_IP = r"[0-9A-Fa-f.:]+"
_URL = r"(?:tcp|udp|sctp)://[0-9A-Fa-f.:\[\]]+:\d+"
_LINKS = [
    (re.compile(name), re.compile(value))
    for name, value in (
        (r".+_SERVICE_HOST", _IP),
        (r".+_SERVICE_PORT(?:_[A-Z0-9_]+)?", r"\d+"),
        (r".+_PORT", _URL),
        (r".+_PORT_\d+_(?:TCP|UDP|SCTP)", _URL),
        (r".+_PORT_\d+_(?:TCP|UDP|SCTP)_PROTO", r"tcp|udp|sctp"),
        (r".+_PORT_\d+_(?:TCP|UDP|SCTP)_PORT", r"\d+"),
        (r".+_PORT_\d+_(?:TCP|UDP|SCTP)_ADDR", _IP),
    )
]


def _service_link(name: str, value: str) -> bool:
    return any(n.fullmatch(name) and v.fullmatch(value) for n, v in _LINKS)


def unknown_env(environ: dict[str, str]) -> list[str]:
    """Our-prefix variables that name nothing we know: likely typos.

    Kubernetes service links are not typos: any Service whose name starts
    with "election-sidecar" injects them, and refusing them would crash-loop
    the pod (the chart also turns them off with enableServiceLinks: false).
    """
    known = {env_name(n) for n in field_names()} | {ENV_PREFIX + n for n in OTHER_ENV}
    return sorted(
        k for k, v in environ.items() if k.startswith(ENV_PREFIX) and k not in known and not _service_link(k, v)
    )


# Timing a TTL alone implies (run --ttl T): the defaults scaled, so
# --ttl 10 gives the documented 6 / 2 / 2, and whatever the operator gave
# explicitly is kept and the rest fitted around it.
DERIVED_TIMING = ("renew_deadline", "retry_interval", "kill_grace")


def _floor_ms(x: float) -> float:
    return math.floor(x * 1000) / 1000


def derive_timing(values: dict[str, Any]) -> dict[str, Any]:
    """Fill the timing fields that are None in ``values`` from ttl, drift and margin."""
    out = dict(values)
    d = Config()

    def given(name: str) -> float:
        v = out.get(name)
        return float(v) if v is not None else float(getattr(d, name))

    ttl, drift, margin = given("ttl"), given("drift"), given("margin")
    spare = ttl * (1 - drift) - margin  # seconds a grant is valid after each renewal send
    rd, ri, kg = (out.get(n) for n in DERIVED_TIMING)
    if not all(math.isfinite(x) for x in (ttl, spare, rd or 0.0, kg or 0.0)):
        # Nothing sensible to fit to: the fixed defaults, and validate() names the bad value.
        out.update({n: getattr(d, n) for n in DERIVED_TIMING if out.get(n) is None})
        return out
    if rd is None:
        rd = _floor_ms(min(0.6 * ttl, spare - (kg if kg is not None else 0.2 * ttl)))
    if kg is None:
        kg = _floor_ms(max(0.0, min(0.2 * ttl, spare - rd)))
    if ri is None:
        ri = _floor_ms(min(0.2 * ttl, rd / 3))
    out.update(renew_deadline=rd, retry_interval=ri, kill_grace=kg)
    return out


def check_files(cfg: Config) -> None:
    """Every file the config names must be readable now, not at the first failover."""
    for name in ("ca_file", "cert_file", "key_file", "zk_auth_file", "etcd_password_file"):
        path = getattr(cfg, name)
        if not path:
            continue
        try:
            with open(path, "rb") as f:
                head = f.read(64)
        except OSError as exc:
            raise ConfigError(name, path, f"cannot be read: {exc.strerror}") from None
        if name in ("ca_file", "cert_file", "key_file") and b"-----BEGIN" not in head:
            raise ConfigError(name, path, "is not a PEM file")
    if cfg.etcd_user and not (cfg.etcd_password_file or os.environ.get(ENV_PREFIX + "ETCD_PASSWORD")):
        raise ConfigError("etcd_password_file", "", "etcd_user needs a password file or ELECTION_SIDECAR_ETCD_PASSWORD")


def etcd_password(cfg: Config) -> str:
    if cfg.etcd_password_file:
        with open(cfg.etcd_password_file) as f:
            return f.read().strip()
    return os.environ.get(ENV_PREFIX + "ETCD_PASSWORD", "")
