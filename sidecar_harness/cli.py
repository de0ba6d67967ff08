"""``election-sidecar demo`` and ``election-sidecar validate``, added to the
runtime's CLI through the ``election_sidecar.commands`` entry point."""

from __future__ import annotations

import sys

import click


@click.command()
@click.option("--candidates", default=3, show_default=True, type=click.IntRange(2, 9))
@click.option("--duration", default=20.0, show_default=True, type=click.FloatRange(8, 600), help="Seconds to run.")
@click.option("--ttl", default=3, show_default=True, type=click.IntRange(2, 60), help="Lease TTL of the demo sidecars.")
@click.option("--keep", is_flag=True, help="Keep the logs and records of the run (the path is printed).")
@click.option("--backend", type=click.Choice(["etcd", "zookeeper"]), default="etcd", show_default=True)
@click.option(
    "--fenced-store",
    type=click.Choice(["sqlite", "postgres"]),
    default="sqlite",
    show_default=True,
    help="Where the toy orchestrators write: a SQLite file, or a throwaway PostgreSQL (Debian's postgresql).",
)
@click.option("--report", default="", help="Write a timeline of the run here as one HTML file.")
def demo(candidates: int, duration: float, ttl: int, keep: bool, backend: str, fenced_store: str, report: str) -> None:
    """Start a throwaway etcd (or ZooKeeper) and N sidecars with toy orchestrators; kill, freeze
    and resign the leader in turn; check that no two orchestrators ever acted
    at once."""
    from sidecar_harness.demo import run_demo

    sys.exit(
        run_demo(
            candidates=candidates,
            duration=duration,
            ttl=ttl,
            keep=keep,
            backend=backend,
            fenced_store=fenced_store,
            report=report,
        )
    )


@click.command("validate")
@click.option("--backend", type=click.Choice(["etcd", "zookeeper"]), default="etcd", show_default=True)
@click.option("--candidates", default=5, show_default=True, type=click.IntRange(2, 20))
@click.option("--faults", default=30, show_default=True, type=click.IntRange(1, 100000))
@click.option("--seed", type=int, default=None, help="Replay a campaign; printed at the start of every run.")
@click.option("--report", "report_path", default="", help="Write the full report here as JSON.")
@click.option("--report-html", "html_path", default="", help="Write a timeline of the run here as one HTML file.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--keep", is_flag=True, help="Keep logs and records (the path is printed).")
@click.option("--only", default="", help="Comma-separated fault kinds to draw from (default: the whole catalogue).")
@click.option(
    "--fenced-store",
    type=click.Choice(["sqlite", "postgres"]),
    default="sqlite",
    show_default=True,
    help="Where the toy orchestrators write (and the checker reads): a SQLite file, or a throwaway PostgreSQL.",
)
@click.option("--unsafe-broken", is_flag=True, hidden=True, help="Disable self-fencing: proves the checker can fail.")
def validate(
    backend: str, candidates: int, faults: int, seed: int | None, report_path: str, progress: bool, keep: bool,
    only: str, fenced_store: str, unsafe_broken: bool, html_path: str,
) -> None:  # fmt: skip
    """Run the fault campaign and check that no two orchestrators ever acted at once.

    Starts a 3-member store cluster, N sidecars with toy orchestrators and a
    fault-injecting proxy per sidecar; injects seeded random faults (kills,
    freezes, resigns, store member and quorum loss, partitions, slow links);
    exits 0 only if the checker finds no violation.
    """
    from sidecar_harness.catalogue import CATALOGUE
    from sidecar_harness.faults import run_campaign

    kinds = [k.strip() for k in only.split(",") if k.strip()] or None
    unknown = sorted(set(kinds or []) - set(CATALOGUE[backend]))
    if unknown:
        click.echo(f"election-sidecar: validate: unknown fault kinds {unknown}; known: {CATALOGUE[backend]}", err=True)
        sys.exit(2)
    sys.exit(
        run_campaign(
            backend,
            candidates=candidates,
            faults=faults,
            seed=seed,
            report_path=report_path,
            progress=progress,
            keep=keep,
            broken=unsafe_broken,
            kinds=kinds,
            fenced_store=fenced_store,
            html_path=html_path,
        )
    )
