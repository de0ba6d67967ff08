"""One self-contained HTML page that shows a demo run or a fault campaign.

What a person judging a failover wants to see, Jepsen-style, on one time
axis (seconds since the run's first event):

* per candidate, a lane with the sidecar's own view (follower, candidate,
  leader, demoting, down) from its ``state_changed`` log lines, and under it
  a lane with its orchestrator's acting interval (first to last recorded
  act) labelled with token and epoch;
* markers for elections, revokes (the demotion that sends ``revoke``),
  SIGTERM and SIGKILL of the orchestrator, and watchdog firings;
* each fault window as a shaded band labelled with its kind;
* a lane of handovers: the gap between one orchestrator's last act and the
  next one's first act in ms, or the overlap, in red;
* failover and recovery distributions as small box plots.

Every time drawn is CLOCK_MONOTONIC, which all the processes of a run read on
the same kernel: the sidecars stamp it on every log line (``mono``, see
sidecar/log.py), the watchdog and the toy orchestrator record it, and the
campaign records it when it injects and heals a fault. Wall-clock
timestamps are not used: they can step.

Plotly draws it (plotly.js embedded, so the file opens offline); the
harness uses it, the runtime package never imports it.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sidecar_harness.checker import Interval, intervals_of, read_records

STATE_COLOURS = {
    "follower": "#c9d6e3",
    "candidate": "#f2c14e",
    "leader": "#2e9e4f",
    "demoting": "#f08a24",
    "down": "#555555",
}
ACTING_COLOUR = "#1f5fa8"
GAP_COLOUR = "#aab4be"
OVERLAP_COLOUR = "#d62728"
# No reds: red means an overlap or a fault with problems.
FAULT_PALETTE = [
    "#636efa", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3",
    "#8c564b", "#b6e880", "#ff97ff", "#7f7f7f", "#bcbd22",
]  # fmt: skip
# Log events drawn as markers: (lane, legend name, symbol, colour).
MARKERS = {
    "elected": ("sidecar", "elected", "star", "#1b7a3a"),
    "revoke": ("sidecar", "revoke (demoting)", "triangle-down", "#f08a24"),
    "orchestrator_stopping": ("orchestrator", "SIGTERM", "x", "#f08a24"),
    "orchestrator_sigkill": ("orchestrator", "SIGKILL", "x", "#d62728"),
    "watchdog_fired_term": ("orchestrator", "watchdog SIGTERM", "diamond-open", "#7b3fa0"),
    "watchdog_fired_kill": ("orchestrator", "watchdog SIGKILL", "diamond", "#7b3fa0"),
    "watchdog_fired_sidecar_gone": ("orchestrator", "watchdog: sidecar gone", "diamond-x", "#7b3fa0"),
}
# Past this many faults the page opens on the first ones; the range slider
# under the timeline moves the window (and zoom or pan reach the rest).
FIRST_VIEW_FAULTS = 12
LANE_PX = 26

# Runs before anything else on the page: script errors end up in the DOM,
# where a headless browser's --dump-dom (and a person) can read them.
ERROR_CAPTURE = """
window.__reportErrors = [];
function __reportNote(msg) {
  window.__reportErrors.push(String(msg));
  var el = document.getElementById("script-errors");
  if (el) {
    el.textContent = window.__reportErrors.join("\\n");
    el.setAttribute("data-count", String(window.__reportErrors.length));
    el.hidden = false;
  }
}
window.addEventListener("error", function (e) {
  __reportNote("error: " + e.message + " at " + e.filename + ":" + e.lineno);
});
window.addEventListener("unhandledrejection", function (e) {
  __reportNote("unhandled rejection: " + ((e.reason && e.reason.stack) || e.reason));
});
var __reportConsoleError = console.error;
console.error = function () {
  __reportNote("console.error: " + Array.prototype.join.call(arguments, " "));
  return __reportConsoleError.apply(console, arguments);
};
document.addEventListener("DOMContentLoaded", function () {
  if (window.__reportErrors.length) { __reportNote("(errors before the page loaded, above)"); }
});
"""
# After each figure is drawn: count it, so a test knows every plot rendered.
PLOTTED = (
    "var r = document.documentElement;"
    'r.setAttribute("data-plotted", String(Number(r.getAttribute("data-plotted") || 0) + 1));'
)


@dataclass
class FaultWindow:
    """A fault from injection to heal (or, in the demo, to the successor)."""

    kind: str
    start: float
    end: float
    label: str
    detail: str = ""
    problem: bool = False


@dataclass
class Span:
    candidate: str
    state: str
    start: float
    end: float
    token: int | None = None
    epoch: int | None = None


@dataclass
class Marker:
    candidate: str
    event: str
    mono: float
    detail: str


@dataclass
class Handover:
    prev: Interval
    next: Interval

    @property
    def gap(self) -> float:
        return self.next.first - self.prev.last


@dataclass
class Timeline:
    candidates: list[str]
    spans: list[Span] = field(default_factory=list)
    acting: list[Interval] = field(default_factory=list)
    epochs: dict[int, int] = field(default_factory=dict)  # token -> epoch, from `elected`
    markers: list[Marker] = field(default_factory=list)
    faults: list[FaultWindow] = field(default_factory=list)
    handovers: list[Handover] = field(default_factory=list)
    start: float = 0.0
    end: float = 0.0

    @property
    def overlaps(self) -> list[Handover]:
        return [h for h in self.handovers if h.gap <= 0]


# -- reading a run ---------------------------------------------------------


def _log_lines(path: Path) -> Iterable[dict[str, Any]]:
    if not path.exists():
        return
    for line in path.read_text(errors="replace").splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue  # the orchestrator's own output, or a line cut short by SIGKILL
        if isinstance(d, dict) and isinstance(d.get("mono"), int | float):
            yield d


def read_sidecar_log(candidate: str, path: Path) -> tuple[list[Span], list[Marker], dict[int, int], float | None]:
    """The sidecar's view over time, its markers, the epoch of each token it
    won, and when its last process went silent if it died (None if it stopped
    as asked, with ``sidecar_stopped``).

    One log file holds every process of that candidate (the campaign restarts
    a killed sidecar into the same file). A process begins with
    ``socket_listening``; between the last line of a process and the first of
    the next, the candidate is drawn as down.
    """
    spans: list[Span] = []
    markers: list[Marker] = []
    epochs: dict[int, int] = {}
    open_span: Span | None = None
    last = None  # mono of the running process's last own line
    stopped = False

    def close(at: float) -> None:
        nonlocal open_span
        if open_span is not None:
            open_span.end = max(at, open_span.start)
            spans.append(open_span)
            open_span = None

    for d in _log_lines(path):
        mono = float(d["mono"])
        event = str(d.get("event", ""))
        if d.get("component") == "watchdog":
            # A separate process, still running after its sidecar died.
            if event in MARKERS:
                markers.append(Marker(candidate, event, mono, _describe(d)))
            continue
        if event == "socket_listening":
            if last is not None:
                close(last)
                spans.append(Span(candidate, "down", last, mono))
            open_span = Span(candidate, "follower", mono, mono)
            stopped = False
        elif event == "state_changed":
            if open_span is None:
                open_span = Span(candidate, str(d.get("from_state", "follower")), last or mono, mono)
            close(mono)
            open_span = Span(candidate, str(d["to_state"]), mono, mono, d.get("token"), d.get("epoch"))
            if d["to_state"] == "demoting":
                markers.append(Marker(candidate, "revoke", mono, f"revoke: {d.get('reason', '?')}"))
        elif event == "elected":
            epochs[int(d["token"])] = int(d["epoch"])
            markers.append(Marker(candidate, event, mono, f"elected: token {d['token']}, epoch {d['epoch']}"))
        elif event in MARKERS:
            markers.append(Marker(candidate, event, mono, _describe(d)))
        elif event == "sidecar_stopped":
            close(mono)
            stopped = True
        last = mono
    if last is not None:
        close(last)
    return spans, markers, epochs, (last if last is not None and not stopped else None)


def _describe(d: dict[str, Any]) -> str:
    skip = {"event", "mono", "timestamp", "level", "component", "election", "candidate"}
    rest = ", ".join(f"{k}={v}" for k, v in d.items() if k not in skip)
    return f"{d.get('event')}: {rest}" if rest else str(d.get("event"))


def build_timeline(logs: dict[str, Path], records: Sequence[Path], faults: Sequence[FaultWindow] = ()) -> Timeline:
    """``logs``: candidate -> its sidecar's log file; ``records``: the orchestrators' record files."""
    tl = Timeline(candidates=list(logs), faults=list(faults))
    dead: list[Span] = []  # sidecars that died and were not restarted: down until the end
    for candidate, path in logs.items():
        spans, markers, epochs, died = read_sidecar_log(candidate, path)
        if died is not None:
            dead.append(Span(candidate, "down", died, died))
        tl.spans += spans
        tl.markers += markers
        tl.epochs.update(epochs)
    tl.acting = intervals_of(read_records(list(records)))
    for iv in tl.acting:
        if iv.writer not in tl.candidates:
            tl.candidates.append(iv.writer)
    # As the checker pairs them: each term with the one that began next.
    tl.handovers = [Handover(prev, nxt) for prev, nxt in zip(tl.acting, tl.acting[1:], strict=False)]
    times = [s.start for s in tl.spans] + [iv.first for iv in tl.acting] + [f.start for f in tl.faults]
    ends = [s.end for s in tl.spans] + [iv.last for iv in tl.acting] + [f.end for f in tl.faults]
    ends += [m.mono for m in tl.markers]
    tl.start = min(times) if times else 0.0
    tl.end = max(ends) if ends else tl.start + 1.0
    for span in dead:
        span.end = tl.end
    tl.spans += dead
    return tl


# -- drawing ---------------------------------------------------------------


def _lanes(tl: Timeline) -> list[str]:
    lanes = ["fault windows"]
    for c in tl.candidates:
        lanes += [f"{c} sidecar", f"{c} orchestrator"]
    return [*lanes, "handovers"]


def _bars(
    name: str, *, lane: list[str], start: list[float], length: list[float], colour: str | list[str],
    hover: list[str], text: list[str] | None = None, legend: bool = True,
) -> go.Bar:  # fmt: skip
    return go.Bar(
        name=name,
        orientation="h",
        y=lane,
        base=start,
        x=length,
        marker={"color": colour, "line": {"width": 0}},
        hovertext=hover,
        hoverinfo="text",
        text=text,
        textposition="inside" if text else "none",
        insidetextanchor="middle",
        textfont={"color": "white", "size": 10},
        showlegend=legend,
        width=0.7,
    )


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def timeline_figure(tl: Timeline, title: str = "") -> go.Figure:
    t0 = tl.start
    lanes = _lanes(tl)
    fig = go.Figure()
    kinds = sorted({f.kind for f in tl.faults})
    fault_colour = {k: FAULT_PALETTE[i % len(FAULT_PALETTE)] for i, k in enumerate(kinds)}

    for state, colour in STATE_COLOURS.items():
        spans = [s for s in tl.spans if s.state == state]
        if not spans:
            continue
        hover = [
            f"{s.candidate}: {s.state} for {s.end - s.start:.3f} s (t+{s.start - t0:.3f} s)"
            + (f"<br>token {s.token}, epoch {s.epoch}" if s.token is not None else "")
            for s in spans
        ]
        fig.add_trace(
            _bars(
                state,
                lane=[f"{s.candidate} sidecar" for s in spans],
                start=[s.start - t0 for s in spans],
                length=[s.end - s.start for s in spans],
                colour=colour,
                hover=hover,
            )
        )

    if tl.acting:
        labels = [f"token {iv.token} · epoch {tl.epochs.get(iv.token, '?')}" for iv in tl.acting]
        hover = [
            f"{iv.writer} orchestrator (pid {', '.join(map(str, sorted(iv.pids or {iv.pid})))})"
            f" acted t+{iv.first - t0:.3f} .. t+{iv.last - t0:.3f} s"
            f"<br>{lab}, {iv.acts} acts"
            for iv, lab in zip(tl.acting, labels, strict=True)
        ]
        fig.add_trace(
            _bars(
                "orchestrator acting",
                lane=[f"{iv.writer} orchestrator" for iv in tl.acting],
                start=[iv.first - t0 for iv in tl.acting],
                length=[max(iv.last - iv.first, 0.01) for iv in tl.acting],
                colour=ACTING_COLOUR,
                hover=hover,
                text=labels,
            )
        )

    if tl.faults:
        fig.add_trace(
            _bars(
                "fault window",
                lane=["fault windows"] * len(tl.faults),
                start=[f.start - t0 for f in tl.faults],
                length=[max(f.end - f.start, 0.02) for f in tl.faults],
                colour=[OVERLAP_COLOUR if f.problem else fault_colour[f.kind] for f in tl.faults],
                hover=[f"{f.label}<br>{f.detail}" for f in tl.faults],
                text=[f.kind for f in tl.faults],
                legend=False,
            ).update(textposition="auto", outsidetextfont={"color": "#222"})
        )
    # Shapes and annotations go in at once: added one by one, plotly re-validates
    # the whole list each time (minutes at 500 faults). The band's label is the
    # text of its bar in the top lane (a shape's own label would sit under it).
    shapes = [
        _band(f.start - t0, max(f.end, f.start + 0.02) - t0, OVERLAP_COLOUR if f.problem else fault_colour[f.kind])
        | {"name": f"fault {f.kind}"}
        for f in tl.faults
    ]
    annotations: list[dict[str, Any]] = []
    _handovers(fig, tl, shapes, annotations)
    _markers(fig, tl)

    span = tl.end - t0
    view = [-0.02 * span, span * 1.02]
    if len(tl.faults) > FIRST_VIEW_FAULTS:
        view = [-0.5, tl.faults[FIRST_VIEW_FAULTS - 1].end - t0 + 1.0]
    fig.update_layout(
        shapes=shapes,
        annotations=annotations,
        title={"text": title, "x": 0, "font": {"size": 15}} if title else None,
        barmode="overlay",
        height=max(320, LANE_PX * len(lanes) + 230),
        margin={"l": 150, "r": 20, "t": 110 if title else 80, "b": 40},
        plot_bgcolor="white",
        hovermode="closest",
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0, "font": {"size": 11}},
        xaxis={
            "title": {"text": "seconds since the run's first event (CLOCK_MONOTONIC)"},
            "range": view,
            "rangeslider": {"visible": True, "thickness": 0.06},
            "showgrid": True,
            "gridcolor": "#eeeeee",
            "zeroline": False,
        },
        yaxis={
            "categoryorder": "array",
            "categoryarray": list(reversed(lanes)),
            "range": [-0.5, len(lanes) - 0.5],
            "fixedrange": True,
            "showgrid": False,
        },
    )
    return fig


def _band(x0: float, x1: float, colour: str, alpha: float = 0.13) -> dict[str, Any]:
    """A band across every lane, so one can see what each sidecar did meanwhile.
    The alpha is in the fill, not the shape's opacity, which would also fade a label."""
    return {
        "type": "rect", "xref": "x", "yref": "paper", "x0": x0, "x1": x1, "y0": 0, "y1": 1,
        "fillcolor": _rgba(colour, alpha), "line": {"width": 0}, "layer": "below",
    }  # fmt: skip


def _handovers(fig: go.Figure, tl: Timeline, shapes: list[dict[str, Any]], annotations: list[dict[str, Any]]) -> None:
    if not tl.handovers:
        return
    t0 = tl.start
    gaps = [h for h in tl.handovers if h.gap > 0]
    overlaps = tl.overlaps
    if gaps:
        fig.add_trace(
            _bars(
                "gap between orchestrators",
                lane=["handovers"] * len(gaps),
                start=[h.prev.last - t0 for h in gaps],
                length=[h.gap for h in gaps],
                colour=GAP_COLOUR,
                hover=[f"{h.prev.writer} → {h.next.writer}: gap {_ms(h.gap)}" for h in gaps],
            )
        )
    if overlaps:
        fig.add_trace(
            _bars(
                "OVERLAP",
                lane=["handovers"] * len(overlaps),
                start=[h.next.first - t0 for h in overlaps],
                length=[max(min(h.prev.last, h.next.last) - h.next.first, 0.01) for h in overlaps],
                colour=OVERLAP_COLOUR,
                hover=[f"{h.prev.writer} and {h.next.writer} acted at once for {_ms(-h.gap)}" for h in overlaps],
            )
        )
        shapes += [
            _band(h.next.first - t0, max(min(h.prev.last, h.next.last), h.next.first + 0.01) - t0, OVERLAP_COLOUR, 0.25)
            | {"name": "overlap"}
            for h in overlaps
        ]
    # The ms figure of each handover, in a boxed annotation so it reads over any bar; red for an overlap.
    annotations += [
        {
            "x": (h.prev.last + h.next.first) / 2 - t0,
            "y": "handovers",
            "text": f"+{_ms(h.gap)}" if h.gap > 0 else f"overlap {_ms(-h.gap)}",
            "showarrow": False,
            "font": {"size": 10, "color": "#333" if h.gap > 0 else OVERLAP_COLOUR},
            "bgcolor": "rgba(255,255,255,0.85)",
            "bordercolor": GAP_COLOUR if h.gap > 0 else OVERLAP_COLOUR,
            "borderpad": 1,
            "name": "overlap" if h.gap <= 0 else "gap",
        }
        for h in tl.handovers
    ]


def _markers(fig: go.Figure, tl: Timeline) -> None:
    t0 = tl.start
    for event, (lane, name, symbol, colour) in MARKERS.items():
        ms = [m for m in tl.markers if m.event == event]
        if not ms:
            continue
        fig.add_trace(
            go.Scatter(
                name=name,
                mode="markers",
                y=[f"{m.candidate} {lane}" for m in ms],
                x=[m.mono - t0 for m in ms],
                marker={"symbol": symbol, "color": colour, "size": 11, "line": {"width": 1.5, "color": colour}},
                hovertext=[f"{m.candidate}: {m.detail} (t+{m.mono - t0:.3f} s)" for m in ms],
                hoverinfo="text",
            )
        )


def distribution_figure(failover: dict[str, list[float]], recovery: dict[str, list[float]]) -> go.Figure:
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "failover: fault injected → another sidecar leads (s)",
            "recovery: fault healed → exactly one leader (s)",
        ),
        horizontal_spacing=0.08,
    )
    kinds = sorted(set(failover) | set(recovery))
    colour = {k: FAULT_PALETTE[i % len(FAULT_PALETTE)] for i, k in enumerate(kinds)}
    for col, data in ((1, failover), (2, recovery)):
        for kind in kinds:
            values = data.get(kind) or []
            if not values:
                continue
            fig.add_trace(
                go.Box(
                    name=kind,
                    y=values,
                    boxpoints="all",
                    jitter=0.4,
                    pointpos=0,
                    marker={"color": colour[kind], "size": 5},
                    line={"width": 1},
                    showlegend=False,
                    hovertemplate=f"{kind}: %{{y:.3f}} s<extra></extra>",
                ),
                row=1,
                col=col,
            )
    for axis, data in (("xaxis", failover), ("xaxis2", recovery)):
        if not any(data.values()):
            d0, d1 = fig.layout[axis].domain  # an axis without traces has no data coordinates to place text by
            fig.add_annotation(
                text="not measured in this run", showarrow=False, x=(d0 + d1) / 2, y=0.5, xref="paper",
                yref="paper", font={"color": "#777"},
            )  # fmt: skip
    fig.update_layout(height=340, margin={"l": 50, "r": 20, "t": 40, "b": 80}, plot_bgcolor="white")
    fig.update_yaxes(rangemode="tozero", gridcolor="#eeeeee")
    return fig


# -- the page --------------------------------------------------------------


def _div(fig: go.Figure, div_id: str, with_js: bool) -> str:
    out: str = fig.to_html(
        full_html=False,
        include_plotlyjs=with_js,  # the whole plotly.js, once: the page must open offline
        div_id=div_id,
        config={"displaylogo": False, "scrollZoom": True, "responsive": True},
        post_script=PLOTTED,
    )
    return out


def page(title: str, *, verdict: str, summary: str, tl: Timeline, dist: go.Figure | None, note: str = "") -> str:
    ok = verdict.startswith("PASS")
    overlaps = len(tl.overlaps)
    facts = (
        f"{len(tl.candidates)} candidates, {len(tl.acting)} orchestrator terms, {len(tl.faults)} fault windows, "
        f"{len(tl.handovers)} handovers"
        + (f", <b class='bad'>{overlaps} overlapping</b>" if overlaps else ", none overlapping")
        + (f", smallest gap {_ms(min(h.gap for h in tl.handovers))}" if tl.handovers and not overlaps else "")
    )
    help_text = (
        "Each candidate has two lanes: its sidecar's own view (follower, candidate, leader, demoting; "
        "down while the process is dead) and, beneath it, the interval in which its orchestrator acted "
        "(first to last recorded write) with its token and epoch. Shaded bands are fault windows (injected "
        "to healed). Markers: elections, revokes, SIGTERM/SIGKILL of the orchestrator, watchdog firings. "
        "The bottom lane shows each handover's gap, or overlap in red. Drag to zoom, use the slider under "
        "the timeline to move, double-click to reset; hover for details."
    )
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='verdict {'good' if ok else 'bad'}' id='verdict'>verdict: {html.escape(verdict)}</p>",
        f"<p id='facts'>{facts}</p>",
        f"<p class='help'>{help_text}{(' ' + html.escape(note)) if note else ''}</p>",
        _div(timeline_figure(tl), "timeline", with_js=True),
    ]
    if dist is not None:
        body += ["<h2>Failover and recovery</h2>", _div(dist, "distributions", with_js=False)]
    body += [
        "<details><summary>the run's text report</summary>",
        f"<pre>{html.escape(summary)}</pre></details>",
    ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            "<html lang='en'><head><meta charset='utf-8'>",
            f"<title>{html.escape(title)}</title>",
            f"<script>{ERROR_CAPTURE}</script>",
            "<style>body{font-family:system-ui,sans-serif;margin:16px 24px;color:#222}"
            "h1{font-size:20px;margin:0 0 6px}h2{font-size:16px}.verdict{font-weight:bold;font-size:16px}"
            ".good{color:#1b7a3a}.bad{color:#d62728}.help{color:#555;font-size:13px;max-width:1100px}"
            "pre{font-size:12px;background:#f6f6f6;padding:8px;overflow:auto}"
            "#script-errors{color:#d62728;background:#fff0f0}</style>",
            "</head><body>",
            "<pre id='script-errors' data-count='0' hidden></pre>",
            *body,
            "</body></html>",
        ]
    )


def _by_kind(results: Sequence[dict[str, Any]], key: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in results:
        if r.get(key) is not None:
            out.setdefault(str(r["kind"]), []).append(float(r[key]))
    return out


def campaign_html(report: dict[str, Any], workdir: Path, candidates: Sequence[str], summary: str = "") -> str:
    """The page for `validate`: ``report`` is the campaign's JSON report."""
    faults = [
        FaultWindow(
            kind=str(r["kind"]),
            start=float(r["injected_mono"]),
            end=float(r["healed_mono"] or r["injected_mono"]),
            label=f"#{r['n']} {r['kind']} → {r['target']}",
            detail=(
                f"leader before {r['leader_before']} (token {r['token_before']}), after {r['leader_after']} "
                f"(token {r['token_after']})<br>failover {r['failover_s']} s, recovered {r['recovered_s']} s"
                + ("<br>PROBLEMS: " + "; ".join(r["problems"]) if r["problems"] else "")
            ),
            problem=bool(r["problems"]),
        )
        for r in report["results"]
        if r.get("injected_mono") is not None
    ]
    tl = build_timeline(
        {c: workdir / f"{c}.log" for c in candidates}, sorted(workdir.glob("s*.jsonl")), faults
    )  # fmt: skip
    results = report["results"]
    dist = distribution_figure(_by_kind(results, "failover_s"), _by_kind(results, "recovered_s"))
    title = (
        f"election-sidecar validate: {report['backend']}, {report['sidecars']} sidecars, "
        f"{report['faults']} faults, seed {report['seed']}"
    )
    return page(title, verdict=report["verdict"], summary=summary, tl=tl, dist=dist)


def write(path: str | Path, text: str) -> Path:
    p = Path(path).resolve()
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


def write_campaign(
    path: str | Path, report: dict[str, Any], workdir: Path, candidates: Sequence[str],
    render: Callable[[dict[str, Any]], str],
) -> Path:  # fmt: skip
    """Write the campaign's page; ``render`` is its text report, shown folded at the bottom."""
    return write(path, campaign_html(report, workdir, candidates, render(report)))


def write_demo(
    path: str | Path, *, workdir: Path, candidates: Sequence[str],
    windows: Sequence[tuple[str, str, float, float, float | None]], ok: bool, verdict: str,
) -> Path:  # fmt: skip
    """Write the demo's page; ``windows``: (step, target, start, end, seconds to a successor)."""
    faults = [
        FaultWindow(
            kind=step,
            start=start,
            end=end,
            label=f"{step} {target}",
            detail=f"successor after {took * 1000:.0f} ms" if took is not None else "no successor",
            problem=took is None,
        )
        for step, target, start, end, took in windows
    ]
    logs = {c: workdir / f"{c}.log" for c in candidates}
    tl = build_timeline(logs, sorted(workdir.glob("orchestrator-*.jsonl")), faults)
    failover = {step: [took] for step, _, _, _, took in windows if took is not None}
    note = "Fault windows run from the step to the moment its successor was seen."
    dist = distribution_figure(failover, {})
    title = f"election-sidecar demo: {len(candidates)} sidecars"
    verdict_line = ("PASS: " if ok else "FAIL: ") + verdict
    return write(path, page(title, verdict=verdict_line, summary=verdict, tl=tl, dist=dist, note=note))
