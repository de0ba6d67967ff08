"""The Grafana dashboard of election-sidecar, built with grafana-foundation-sdk.

    make dashboard          # or: .venv/bin/python deploy/grafana/dashboard.py

writes deploy/grafana/election.json and the chart's copy
helm/election-sidecar/files/election.json. Edit this file, never the JSON:
tests/deploy/test_dashboard.py regenerates the dashboard in memory and fails
when either committed file differs.

Conventions (kubernetes-mixin / etcd-mixin): a datasource variable, chained
cluster / namespace / election variables from ``label_values`` whose "All"
is ``.*`` (so series without a cluster label still match), every selector
carries all three, every aggregation keeps ``cluster, namespace, election``,
every range is ``$__rate_interval``, every panel has a unit and a description.

This is a dev tool: the runtime package ``sidecar`` never imports it, and the
SDK is a dev dependency only.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders.common import GraphThresholdsStyleConfig, ReduceDataOptions, VizLegendOptions
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = (
    ROOT / "deploy" / "grafana" / "election.json",
    ROOT / "helm" / "election-sidecar" / "files" / "election.json",
)

UID = "election-sidecar"
DS = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
# What every panel groups by; a candidate is unique only within these.
BY = "cluster, namespace, election"
BY_CANDIDATE = f"{BY}, candidate"
# Every selector carries the three variables (tests check it).
SEL = 'cluster=~"$cluster", namespace=~"$namespace", election=~"$election"'
RATE = "$__rate_interval"

GREEN, RED, ORANGE = "green", "red", "orange"


def m(metric: str, extra: str = "") -> str:
    """A selector of ``metric`` restricted to the dashboard's variables."""
    return f"{metric}{{{SEL}{', ' + extra if extra else ''}}}"


def leader_only(expr: str) -> str:
    """``expr`` kept for the candidate that leads now (one series per election)."""
    return f"{expr} and on ({BY_CANDIDATE}) ({m('election_is_leader')} == 1)"


def q(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DS)


def instant(expr: str, ref: str) -> prometheus.Dataquery:
    # A table wants one row per leader, not a time series per column.
    return (
        prometheus.Dataquery()
        .expr(expr)
        .ref_id(ref)
        .datasource(DS)
        .instant()
        .format(PromQueryFormat.TABLE)
        .legend_format("__auto")
    )


def steps(*pairs: tuple[float | None, str]) -> db.ThresholdsConfig:
    return db.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps([model.Threshold(v, c) for v, c in pairs])


def text_for(value: str, text: str, color: str) -> model.ValueMap:
    return model.ValueMap({value: model.ValueMappingResult(text=text, color=color)})


def fixed_color(color: str) -> model.DynamicConfigValue:
    return model.DynamicConfigValue("color", {"mode": "fixed", "fixedColor": color})


def dashed() -> model.DynamicConfigValue:
    return model.DynamicConfigValue("custom.lineStyle", {"fill": "dash", "dash": [10, 10]})


def ts(title: str, description: str, unit: str, targets: Sequence[prometheus.Dataquery]) -> timeseries.Panel:
    p = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .height(8)
        .span(12)
        .fill_opacity(10)
        .legend(db_legend())
    )
    for t in targets:
        p = p.with_target(t)
    return p


def db_legend() -> Builder[common.VizLegendOptions]:
    return (
        VizLegendOptions()
        .display_mode(common.LegendDisplayMode.TABLE)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(["lastNotNull", "max"])
    )


def increase_by(metric: str, by: str, extra: str = "") -> str:
    return f"sum by ({by}) (increase({m(metric, extra)}[{RATE}]))"


def p99(metric: str) -> str:
    return f"histogram_quantile(0.99, sum by ({BY_CANDIDATE}, le) (rate({m(metric)}[{RATE}])))"


# -- variables ------------------------------------------------------------------


def variables() -> list[Builder[model.VariableModel]]:
    def label_var(name: str, label: str, selector: str) -> db.QueryVariable:
        query = f"label_values({selector}, {name})"
        return (
            db.QueryVariable(name)
            .label(label)
            .datasource(DS)
            .query({"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"})
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            # "All" as .*, not a list of values: it matches series without the
            # label too (a single-cluster Prometheus has no `cluster`).
            .all_value(".*")
            .current(model.VariableOption(selected=True, text="All", value="$__all"))
        )

    return [
        db.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        label_var("cluster", "Cluster", "election_is_leader"),
        label_var("namespace", "Namespace", 'election_is_leader{cluster=~"$cluster"}'),
        label_var("election", "Election", 'election_is_leader{cluster=~"$cluster", namespace=~"$namespace"}'),
    ]


# -- annotations ----------------------------------------------------------------


def annotation_queries() -> list[Builder[model.AnnotationQuery]]:
    builtin = (
        db.AnnotationQuery()
        .name("Annotations & Alerts")
        .datasource(model.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
        .built_in(1)
        .enable(True)
        .hide(True)
        .icon_color("rgba(0, 211, 255, 1)")
        .type("dashboard")
    )
    # One mark per candidate that became leader: a counter, so a sidecar
    # restart (a reset) is not mistaken for a change the way a gauge's would be.
    leader = (
        db.AnnotationQuery()
        .name("Leader changes")
        .datasource(DS)
        .enable(True)
        .icon_color("blue")
        .expr(increase_by("election_transitions_total", BY_CANDIDATE, 'to="leader"') + " > 0")
    )
    kills = (
        db.AnnotationQuery()
        .name("Orchestrator SIGKILL or unconfirmed kill")
        .datasource(DS)
        .enable(True)
        .icon_color("red")
        .expr(increase_by("election_orchestrator_kills_total", BY_CANDIDATE, 'signal!="SIGTERM"') + " > 0")
    )
    # One mark per leader that handed over because an operator asked for a
    # switchover: tells a planned move from a failure on the same timeline.
    switchovers = (
        db.AnnotationQuery()
        .name("Switchovers")
        .datasource(DS)
        .enable(True)
        .icon_color("purple")
        .expr(increase_by("election_switchovers_total", BY_CANDIDATE, 'outcome="handed-over"') + " > 0")
    )
    return [builtin, leader, kills, switchovers]


# -- panels ---------------------------------------------------------------------


def leadership() -> list[Builder[model.Panel]]:
    leaders = (
        stat.Panel()
        .title("Leaders")
        .description(
            "Sidecars holding a valid grant, per election. Must be 1: 0 is no leader (alert ElectionNoLeader), "
            "2 or more is split brain (alert ElectionMultipleLeaders)."
        )
        .datasource(DS)
        .with_target(q(f"sum by ({BY}) ({m('election_is_leader')})", "{{namespace}}/{{election}}"))
        .unit("none")
        .decimals(0)
        # Red on both sides of 1.
        .thresholds(steps((None, RED), (1, GREEN), (2, RED)))
        .mappings(
            [
                text_for("0", "no leader", RED),
                model.RangeMap(model.DashboardRangeMapOptions(2, None, model.ValueMappingResult("split brain", RED))),
            ]
        )
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .height(6)
        .span(6)
    )
    per_leader = [
        ("A", "election_leader_epoch"),
        ("B", "election_fencing_token"),
        ("C", "election_lease_remaining_seconds"),
        ("D", "election_seconds_since_renewal"),
        ("E", "election_orchestrator_up"),
    ]
    who = (
        table.Panel()
        .title("Leader")
        .description(
            "The candidate that leads each election now: its epoch (term number), fencing token (what downstream "
            "stores must see), grant time left, time since its last acknowledged renewal, and whether its "
            "orchestrator is there (0 = alert ElectionLeaderWithoutOrchestrator)."
        )
        .datasource(DS)
        .unit("none")
        .height(6)
        .span(18)
        .override_by_name("Lease left", [model.DynamicConfigValue("unit", "s")])
        .override_by_name("Since renewal", [model.DynamicConfigValue("unit", "s")])
        .override_by_name(
            "Orchestrator",
            [
                model.DynamicConfigValue("mappings", [text_for("0", "missing", RED), text_for("1", "up", GREEN)]),
                model.DynamicConfigValue("custom.cellOptions", {"type": "color-text"}),
            ],
        )
    )
    for ref, metric in per_leader:
        who = who.with_target(instant(f"max by ({BY_CANDIDATE}) ({leader_only(m(metric))})", ref))
    who = who.with_transformation(model.DataTransformerConfig("merge", options={})).with_transformation(
        model.DataTransformerConfig(
            "organize",
            options={
                "excludeByName": {"Time": True},
                "indexByName": {"cluster": 0, "namespace": 1, "election": 2, "candidate": 3},
                "renameByName": {
                    "candidate": "Leader",
                    "Value #A": "Epoch",
                    "Value #B": "Token",
                    "Value #C": "Lease left",
                    "Value #D": "Since renewal",
                    "Value #E": "Orchestrator",
                },
            },
        )
    )
    lanes = (
        statetimeline.Panel()
        .title("Who leads")
        .description("One lane per candidate: filled while it holds a valid grant. Overlapping fills are split brain.")
        .datasource(DS)
        .with_target(
            q(f"max by ({BY_CANDIDATE}) ({m('election_is_leader')})", "{{namespace}}/{{election}} {{candidate}}")
        )
        .unit("none")
        .mappings([text_for("0", "follower", "transparent"), text_for("1", "leader", GREEN)])
        .show_value(common.VisibilityMode.NEVER)
        .height(7)
        .span(24)
    )
    return [leaders, who, lanes]


def lease() -> list[Builder[model.Panel]]:
    lateness = ts(
        "Renewal lateness against the renew deadline",
        "Seconds since the send of the leader's last acknowledged renewal (a saw-tooth; healthy peaks near the "
        "retry interval), against its renew deadline (where it demotes) and half of it (alert ElectionLeaseLow).",
        "s",
        [
            q(f"max by ({BY_CANDIDATE}) ({leader_only(m('election_seconds_since_renewal'))})", "{{candidate}}", "A"),
            q(f"max by ({BY}) ({m('election_renew_deadline_seconds')})", "renew deadline {{election}}", "B"),
            q(f"0.5 * max by ({BY}) ({m('election_renew_deadline_seconds')})", "ElectionLeaseLow {{election}}", "C"),
        ],
    ).min(0)
    lateness = lateness.override_by_query("B", [fixed_color(RED), dashed()]).override_by_query(
        "C", [fixed_color(ORANGE), dashed()]
    )
    left = (
        ts(
            "Lease time left (leader)",
            "Seconds until the leader's grant deadline: reset by every renewal. Reaching 0 means the leader demotes "
            "and its orchestrator is stopped.",
            "s",
            [q(f"max by ({BY_CANDIDATE}) ({leader_only(m('election_lease_remaining_seconds'))})", "{{candidate}}")],
        )
        .min(0)
        .thresholds(steps((None, RED), (1, ORANGE), (2, GREEN)))
        .thresholds_style(GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE_AND_AREA))
    )
    rtt = ts(
        "Keepalive round trip p99 against the margin",
        "p99 of acknowledged keepalive round trips (send to answer), against --margin, the time kept between the "
        "grant deadline and the earliest lease expiry. Above it for 10m: alert ElectionKeepaliveSlow.",
        "s",
        [
            q(p99("election_keepalive_rtt_seconds_bucket"), "{{candidate}}", "A"),
            q(f"max by ({BY}) ({m('election_margin_seconds')})", "margin {{election}}", "B"),
        ],
    ).override_by_query("B", [fixed_color(RED), dashed()])
    failures = ts(
        "Keepalive failures",
        "Keepalives that failed or timed out, per candidate. A few are survivable; a leader demotes when none is "
        "acknowledged for the renew deadline.",
        "short",
        [q(increase_by("election_keepalive_failures_total", BY_CANDIDATE), "{{candidate}}")],
    ).min(0)
    return [lateness, left, rtt, failures]


def changes() -> list[Builder[model.Panel]]:
    transitions = ts(
        "Transitions",
        "State transitions by the state entered (follower, candidate, leader, demoting). More than three entries "
        "into leader in 15m: alert ElectionFlapping.",
        "short",
        [q(increase_by("election_transitions_total", f"{BY}, to"), "{{election}} {{to}}")],
    ).span(8)
    lost = ts(
        "Leases lost",
        "Leadership or candidacy lost without asking, by reason (lease-lost, backend-unreachable) and role. "
        "Resigns and shutdowns are not losses.",
        "short",
        [q(increase_by("election_lease_lost_total", f"{BY}, reason, role"), "{{election}} {{reason}} ({{role}})")],
    ).span(8)
    kills = ts(
        "Orchestrator kills",
        "Signals sent to the orchestrator on loss of leadership. SIGKILL means it outlived its grace; 'unconfirmed' "
        "means its death could not be confirmed.",
        "short",
        [q(increase_by("election_orchestrator_kills_total", f"{BY}, signal"), "{{election}} {{signal}}")],
    ).span(8)
    unconfirmed = (
        stat.Panel()
        .title("Out of the election (kill unconfirmed)")
        .description(
            "Sidecars whose orchestrator's death is not confirmed: they stay out of the election and not ready "
            "until it is (alert ElectionKillFailed). Must be 0."
        )
        .datasource(DS)
        .with_target(q(f"sum by ({BY}) ({m('election_kill_unconfirmed')})", "{{namespace}}/{{election}}"))
        .unit("none")
        .decimals(0)
        .thresholds(steps((None, GREEN), (1, RED)))
        .mappings([text_for("0", "none", GREEN)])
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .height(8)
        .span(6)
    )
    clients = ts(
        "Grant socket clients",
        "Clients connected to each sidecar's grant socket. The leader's orchestrator should be one of them "
        "(with --kill-peer it is what the sidecar stops on loss).",
        "short",
        [q(f"max by ({BY_CANDIDATE}) ({m('election_grant_clients')})", "{{candidate}}")],
    ).span(9)
    orchestrator = (
        statetimeline.Panel()
        .title("Orchestrator present")
        .description(
            "Per candidate: is its orchestrator there (gate/standby: the child runs; peer: a client that acknowledged "
            "a grant is connected)? Always 1 where the sidecar cannot tell."
        )
        .datasource(DS)
        .with_target(q(f"max by ({BY_CANDIDATE}) ({m('election_orchestrator_up')})", "{{candidate}}"))
        .unit("none")
        .mappings([text_for("0", "missing", RED), text_for("1", "up", GREEN)])
        .show_value(common.VisibilityMode.NEVER)
        .height(8)
        .span(9)
    )
    return [transitions, lost, kills, unconfirmed, clients, orchestrator]


def store_and_process() -> list[Builder[model.Panel]]:
    up = (
        statetimeline.Panel()
        .title("Store reachable")
        .description("Per candidate: did its last store call succeed? Down for 1m: alert ElectionBackendDown.")
        .datasource(DS)
        .with_target(q(f"min by ({BY_CANDIDATE}) ({m('election_backend_up')})", "{{candidate}}"))
        .unit("none")
        .mappings([text_for("0", "down", RED), text_for("1", "up", GREEN)])
        .show_value(common.VisibilityMode.NEVER)
        .height(8)
        .span(12)
    )
    errors = ts(
        "Store errors by call",
        "Store calls that failed or timed out, by call (session-open, keepalive, campaign, resign, watch-own-key).",
        "short",
        [q(increase_by("election_store_unreachable_total", f"{BY}, during"), "{{election}} {{during}}")],
    )
    lag = ts(
        "Event-loop lag",
        "How late a 100 ms timer fires on each sidecar's event loop: latest sample and p99. /healthz fails above "
        "min(1 s, retry interval); a stalled loop cannot renew.",
        "s",
        [
            q(f"max by ({BY_CANDIDATE}) ({m('election_event_loop_lag_seconds')})", "{{candidate}} latest", "A"),
            q(p99("election_event_loop_lag_distribution_seconds_bucket"), "{{candidate}} p99", "B"),
        ],
    ).span(8)

    # process_* series carry no election label: join them to election_build_info,
    # which every sidecar exports once with its election and candidate.
    def per_sidecar(expr: str) -> str:
        info = m("election_build_info")
        return (
            f"max by ({BY_CANDIDATE}) ({expr} * on (cluster, namespace, job, instance) "
            f"group_left (election, candidate) {info})"
        )

    scope = 'cluster=~"$cluster", namespace=~"$namespace"'
    memory = ts(
        "Resident memory",
        "Resident set size of each sidecar process (process_resident_memory_bytes), against the chart's 128Mi limit.",
        "bytes",
        [q(per_sidecar(f"process_resident_memory_bytes{{{scope}}}"), "{{candidate}}")],
    ).span(8)
    cpu = ts(
        "CPU",
        "CPU time used per second by each sidecar process (process_cpu_seconds_total).",
        "percentunit",
        [q(per_sidecar(f"rate(process_cpu_seconds_total{{{scope}}}[{RATE}])"), "{{candidate}}")],
    ).span(8)
    return [up, errors, lag, memory, cpu]


def build() -> model.Dashboard:
    d = (
        db.Dashboard("election-sidecar")
        .uid(UID)
        .description("Leader election with fencing grants: who leads, how close the lease runs, what was killed.")
        .tags(["election-sidecar"])
        .editable()
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("utc")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .variables(variables())
        .annotations(annotation_queries())
    )
    for title, panels in (
        ("Leadership", leadership()),
        ("Lease and renewals", lease()),
        ("Changes, losses and kills", changes()),
        ("Store and process", store_and_process()),
    ):
        d = d.with_row(db.Row(title))
        for p in panels:
            d = d.with_panel(p)
    dash = d.build()
    # Stable ids in layout order (Grafana needs them unique; links and
    # "view panel" URLs use them), given after layout rather than by hand.
    for n, panel in enumerate(dash.panels or [], start=1):
        panel.id_val = n
    return dash


def render() -> str:
    """The dashboard as committed: sorted keys, two-space indent, final newline."""
    return JSONEncoder(sort_keys=True, indent=2).encode(build()) + "\n"


def main(argv: Sequence[str] = ()) -> int:
    text = render()
    json.loads(text)  # never write something Grafana cannot parse
    for path in OUTPUTS:
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
