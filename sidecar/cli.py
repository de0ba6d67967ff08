"""Command line: parsing and printing only; the work lives elsewhere.

Every Config field is a flag (``--renew-deadline``) and an environment
variable (``ELECTION_SIDECAR_RENEW_DEADLINE``), generated from the
dataclass so the two can never drift apart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import click

from sidecar import __version__
from sidecar.config import (
    DERIVED_TIMING,
    Config,
    ConfigError,
    check_files,
    derive_timing,
    env_name,
    parse_priority,
    unknown_env,
    validate,
)

F = Callable[..., Any]

STORE_FIELDS = (
    "backend",
    "endpoints",
    "election",
    "zk_chroot",
    "zk_auth_file",
    "etcd_user",
    "etcd_password_file",
    "ca_file",
    "cert_file",
    "key_file",
    "tls_server_name",
    "request_timeout",
)
LOG_FIELDS = ("log_format", "log_level")


def _run(main: Any) -> Any:
    """``asyncio.run``, then what its loop logged in its last 20 ms is written before we go on.

    Info lines logged on the loop wait for a timer of that loop before
    they are written (sidecar/log.py); the timer ends with the loop, and
    what the command prints next would come before them.
    """
    from sidecar import log as logmod

    try:
        return asyncio.run(main)
    finally:
        logmod.wake_writer(wait=1.0)


def _flag(f: dataclasses.Field[Any]) -> str:
    return "--" + str(f.metadata.get("flag", f.name)).replace("_", "-")


def config_options(names: tuple[str, ...] | None = None) -> Callable[[F], F]:
    """Add one click option per Config field (all, or the ``names`` given)."""
    chosen = [f for f in dataclasses.fields(Config) if names is None or f.name in names]

    def decorate(fn: F) -> F:
        for f in reversed(chosen):
            # int fields arrive as strings: build_config turns a bad one into one line naming the field.
            extra: dict[str, Any] = {"type": {"float": float, "bool": bool}.get(str(f.type), str)}
            if f.metadata.get("choices"):
                extra["type"] = click.Choice(f.metadata["choices"])
            if f.type == "bool":
                extra["is_flag"] = True
            default = ",".join(f.default) if isinstance(f.default, tuple) else f.default
            show: bool | str = default not in ("", None, False)
            if f.name in DERIVED_TIMING:
                # Unset means "fit to --ttl" (build_config), so `run --ttl T` alone is safe.
                default, show = None, "derived from --ttl"
            fn = click.option(
                _flag(f),
                f.name,
                default=default,
                show_default=show,
                envvar=env_name(f.name),
                show_envvar=True,
                help=f.metadata.get("help", ""),
                **extra,
            )(fn)
        return fn

    return decorate


def build_config(values: dict[str, Any], command: tuple[str, ...] | None = None) -> Config:
    names = {f.name for f in dataclasses.fields(Config)}
    kwargs = {k: v for k, v in values.items() if k in names}
    kwargs = derive_timing(kwargs)  # absent or None: fitted to the TTL
    if kwargs.get("priority") is not None:
        kwargs["priority"] = parse_priority(kwargs["priority"])
    if "endpoints" in kwargs:
        kwargs["endpoints"] = tuple(e.strip() for e in str(kwargs["endpoints"]).split(",") if e.strip())
    if "candidate_id" in kwargs and not kwargs["candidate_id"]:
        kwargs["candidate_id"] = f"{socket.gethostname()}-{os.getpid()}"
    return validate(Config(**kwargs), command)


def derived(values: dict[str, Any]) -> list[str]:
    """The timing fields the operator left to be fitted to the TTL."""
    return [n for n in DERIVED_TIMING if values.get(n) is None]


def load_config(values: dict[str, Any], command: tuple[str, ...] | None = None, *, logs: bool = False) -> Config:
    """build_config, or one line on stderr and exit status 2.

    With ``logs``, also apply --log-format/--log-level, so every command that
    talks to the store logs the way the operator asked.
    """
    typos = unknown_env(dict(os.environ))
    if typos:
        click.echo(f"election-sidecar: invalid config: environment {typos[0]}: not a known setting", err=True)
        sys.exit(2)
    from sidecar import log as logmod

    try:
        logmod.wake_delay_from_env()
    except ValueError as exc:
        click.echo(f"election-sidecar: invalid config: {exc}", err=True)
        sys.exit(2)
    try:
        cfg = build_config(values, command)
        check_files(cfg)
    except ConfigError as exc:
        click.echo(f"election-sidecar: {exc}", err=True)
        sys.exit(2)
    if logs:
        logmod.configure(cfg.log_format, cfg.log_level)
    return cfg


EXIT_CODES = """\b
Exit codes (every command):
  0 done; `run`: stopped by SIGTERM/SIGINT after handing over
  1 the store or the sidecar could not be reached or answered no
    (`status`, `watch`, `evict`, `resign`)
  2 invalid configuration, a file or port that cannot be used, or the
    store refused our credentials (`run` stops on it)
  3 `run`: an orchestrator kill could not be confirmed; `status
    --sidecars`: a sidecar disagrees with the store
  4 `switchover` refused, nothing written: no leader, the target is not a
    candidate, runs with --no-lead, is stale, already leads, or its id is
    ambiguous, another switchover is in flight, the leader is not a
    sidecar, or one that is not (`foreign` in status) is queued ahead
  5 `switchover --wait`: the request expired or someone other than the
    target leads
"""


PLUGIN_GROUP = "election_sidecar.commands"


class PluginGroup(click.Group):
    """Our commands plus those other packages add through entry points.

    The test harness adds ``demo`` and ``validate`` this way, so the runtime
    never imports it; a plugin is imported only when its command runs.
    """

    def _plugins(self) -> dict[str, Any]:
        from importlib.metadata import entry_points
        from importlib.util import find_spec

        # An image without the harness still carries its entry points: list only what can load.
        return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP) if find_spec(ep.module.split(".")[0])}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._plugins()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is not None:
            return found
        ep = self._plugins().get(cmd_name)
        return ep.load() if ep is not None else None


@click.group(
    cls=PluginGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    epilog=EXIT_CODES,
)
@click.version_option(__version__, prog_name="election-sidecar")
def main() -> None:
    """Leader election with fencing grants for one orchestrator per sidecar."""


@main.command(context_settings={"allow_interspersed_args": False})
@config_options()
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(command: tuple[str, ...], **values: Any) -> None:
    """Campaign until SIGTERM/SIGINT, then hand over and revoke the lease.

    With `-- CMD ARGS`, CMD is the orchestrator: started only while this
    sidecar leads (or always, with --standby) and stopped, killed if need
    be, before leadership can pass to anyone else.
    """
    from sidecar import log as logmod
    from sidecar.app import Sidecar

    cfg = load_config(values, command, logs=True)
    logger = logmod.get()
    fitted = derived(values)
    if fitted:
        logger.info("timing_derived", ttl=cfg.ttl, **{n: getattr(cfg, n) for n in DERIVED_TIMING}, derived=fitted)
    try:
        code = _run(Sidecar(cfg, logger, command=list(command)).run())
    except FileExistsError as exc:
        click.echo(f"election-sidecar: socket: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        click.echo(f"election-sidecar: http_addr {cfg.http_addr}: address already in use", err=True)
        sys.exit(2)
    sys.exit(code)


@main.command("check-config")
@config_options()
def check_config(**values: Any) -> None:
    """Validate the configuration and print the timing it implies."""
    cfg = load_config(values)
    click.echo("config ok")
    fitted = derived(values)
    if fitted:
        click.echo(f"  derived from the ttl: {', '.join(fitted)}")
    rows = [
        ("lease ttl", cfg.ttl),
        ("leader gives up after renewals fail for", cfg.renew_deadline),
        ("grant valid for (after each renewal send)", cfg.timing.grant_validity(cfg.ttl)),
        ("leader demotes after silence of", cfg.timing.demote_after(cfg.ttl)),
        ("orchestrator gets to stop before SIGKILL", cfg.kill_grace),
        ("keepalive every", cfg.retry_interval),
    ]
    for label, seconds in rows:
        click.echo(f"  {label:<44} {seconds:7.3f}s")


@main.command()
@config_options(STORE_FIELDS + LOG_FIELDS)
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--sidecars", default="", help="Sidecar HTTP base URLs, comma separated: cross-check their /leader.")
def status(output: str, sidecars: str, **values: Any) -> None:
    """Show the leader, its token and epoch, and every candidate.

    With --sidecars, also ask each sidecar who it thinks leads and mark any
    that disagree with the store (exit status 3 if one does).
    """
    from sidecar.status import cross_check, fetch_leader_view, gather, render_cross_check, render_table

    cfg = load_config(values, logs=True)
    try:
        view = _run(gather(cfg))
    except Exception as exc:  # one line for the operator, whatever broke
        click.echo(f"election-sidecar: status: {exc}", err=True)
        sys.exit(1)
    urls = [u.strip() for u in sidecars.split(",") if u.strip()]
    rows = cross_check(view, [{"url": u, **fetch_leader_view(u)} for u in urls]) if urls else []
    if urls:
        view["sidecars"] = rows
    if output == "json":
        click.echo(json.dumps(view, indent=2))
    else:
        click.echo(render_table(view) + (render_cross_check(rows) if rows else ""))
    if any(r["agrees"] is False for r in rows):
        sys.exit(3)


@main.command()
@config_options(STORE_FIELDS + LOG_FIELDS)
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True)
def watch(output: str, **values: Any) -> None:
    """Print one line per leader change until interrupted."""
    from sidecar.status import watch_leader

    cfg = load_config(values, logs=True)
    try:
        _run(watch_leader(cfg, json_lines=output == "json"))
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        click.echo(f"election-sidecar: watch: {exc}", err=True)
        sys.exit(1)


@main.command()
@config_options(STORE_FIELDS + LOG_FIELDS)
@click.option("--candidate", "candidate", required=True, help="Candidate id to evict (as `status` lists it).")
@click.option("--key", "key", default="", help="The candidate's key, when two sidecars share an id.")
@click.option("--force", is_flag=True, help="Evict even the leader (its successor then waits out its lease).")
def evict(candidate: str, key: str, force: bool, **values: Any) -> None:
    """Revoke a stuck candidate's lease (etcd) or delete its node (ZooKeeper).

    Uses the same credentials as the sidecars' writes; the candidate's
    sidecar sees its key go and demotes, like after a lease expiry. The
    leader is evicted only with --force: its successor cannot know whether
    the evicted orchestrator still acts, so it waits until the evicted
    lease could have expired (lock-delay) before it leads. A leader that is
    merely slow is better asked to `resign`.
    """
    from sidecar.backends.base import BackendError, StoreForbidden
    from sidecar.status import EvictRefused
    from sidecar.status import evict as evict_candidate

    cfg = load_config(values, logs=True)
    try:
        gone = _run(evict_candidate(cfg, candidate, key=key, force=force))
    except EvictRefused as exc:
        click.echo(f"election-sidecar: evict: {exc}", err=True)
        sys.exit(1)
    except BackendError as exc:
        click.echo(f"election-sidecar: evict: {exc}", err=True)
        sys.exit(2 if isinstance(exc, StoreForbidden) else 1)
    if not gone:
        click.echo(f"election-sidecar: evict: no candidate {candidate!r} in election {cfg.election!r}", err=True)
        sys.exit(1)
    for k in gone:
        click.echo(f"evicted {candidate}: {k}")


@main.command()
@config_options(STORE_FIELDS + LOG_FIELDS)
@click.option("--to", "to", default="", help="Candidate id that must lead next (default: the next in line).")
@click.option("--wait", is_flag=True, help="Wait until the new leader recorded its term, or the request expired.")
@click.option(
    "--request-ttl",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds the request stays pending; a target that has not taken over by then no longer blocks others.",
)
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True)
def switchover(to: str, wait: bool, request_ttl: float, output: str, **values: Any) -> None:
    """Move leadership to --to (or the next candidate) through the store, from any machine.

    Writes NAME.switchover; the leader stops its orchestrator (confirmed)
    and hands over; until the target leads, no other candidate holds a
    grant (each steps aside). Needs the sidecars' store credentials.
    Refused, changing nothing, if it cannot succeed (see exit codes).
    """
    from sidecar.backends.base import BackendError, StoreForbidden
    from sidecar.status import SwitchoverRefused, render_switchover, switchover_view
    from sidecar.status import switchover as request_switchover

    if not request_ttl > 0:
        click.echo(f"election-sidecar: invalid config: request_ttl {request_ttl:g}: must be > 0", err=True)
        sys.exit(2)
    cfg = load_config(values, logs=True)
    try:
        res = _run(request_switchover(cfg, to, ttl=request_ttl, wait=wait))
    except SwitchoverRefused as exc:
        click.echo(f"election-sidecar: switchover refused: {exc}", err=True)
        sys.exit(4)
    except BackendError as exc:
        click.echo(f"election-sidecar: switchover: {exc}", err=True)
        sys.exit(2 if isinstance(exc, StoreForbidden) else 1)
    view = switchover_view(res.request)
    if output == "json":
        out: dict[str, Any] = {"request": view, "old_leader": res.old_leader, "reused": res.reused}
        if wait:
            out.update(done=res.done, leader=res.new_leader, token=res.token, epoch=res.epoch, seconds=res.seconds)
        click.echo(json.dumps(out))
    else:
        assert view is not None
        click.echo(("already requested: " if res.reused else "requested: ") + render_switchover(view))
        if wait and res.done:
            click.echo(f"switchover done: leader {res.new_leader} token {res.token} epoch {res.epoch} "
                       f"({res.seconds * 1000:.0f} ms)")  # fmt: skip
    if wait and not res.done:
        who = f"leader is {res.new_leader!r}" if res.new_leader else "no leader"
        click.echo(f"election-sidecar: switchover not done: {who} after {res.seconds:.1f}s", err=True)
        sys.exit(5)


@main.command()
@click.option(
    "--socket",
    "socket_path",
    required=True,
    envvar=env_name("socket"),
    show_envvar=True,
    help="The sidecar's grant socket.",
)
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for the sidecar's answer.")
def resign(socket_path: str, timeout: float) -> None:
    """Ask a running sidecar to hand leadership over to the next candidate."""
    from sidecar.fencing.oneshot import request

    try:
        reply = request(socket_path, {"type": "resign"}, timeout)
    except (OSError, ValueError) as exc:
        click.echo(f"election-sidecar: resign: {socket_path}: {exc}", err=True)
        sys.exit(1)
    if reply.get("accepted"):
        click.echo("resign accepted: leadership is being handed over")
        return
    click.echo(f"resign refused: {reply.get('detail') or reply.get('error') or reply}", err=True)
    sys.exit(1)


if __name__ == "__main__":
    main()
