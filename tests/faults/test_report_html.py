"""The HTML timelines, opened in a real headless Chromium.

A short campaign and a short demo write their pages; the browser runs every
script on them (offline: no network, a fresh profile) and the tests read the
DOM it leaves: every plot drawn, no script error, a lane per candidate,
a band per fault, and, for a build without self-fencing, the overlap in red.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sidecar_harness.headless import dump_dom, find_browser, screenshot
from sidecar_harness.report_html import OVERLAP_COLOUR
from tests.conftest import missing

pytestmark = pytest.mark.integration

FIGURES = 2  # the timeline and the distributions


@pytest.fixture(scope="module")
def browser() -> str:
    found = find_browser()
    if found is None:
        missing("no headless Chromium (Debian's 'chromium'; scripts/ensure-servers.sh installs it)")
    assert found is not None
    return found


def run(*args: str, timeout: float = 300) -> tuple[int, str]:
    res = subprocess.run(
        [sys.executable, "-m", "sidecar", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    return res.returncode, res.stdout + res.stderr


def timeline_dom(dom: str) -> str:
    """The DOM of the timeline figure (the distributions come after it)."""
    start = dom.index('id="timeline"')
    end = dom.find('id="distributions"', start)
    return dom[start : end if end > 0 else len(dom)]


def assert_rendered(dom: str) -> None:
    """Every figure drawn, and no script error caught on the page."""
    errors = re.search(r'<pre id="script-errors"[^>]*data-count="(\d+)"[^>]*>(.*?)</pre>', dom, re.S)
    assert errors is not None, "the page lost its script-error catcher"
    assert errors.group(1) == "0", f"script errors on the page: {errors.group(2)}"
    plotted = re.search(r'<html[^>]*data-plotted="(\d+)"', dom)
    assert plotted is not None and int(plotted.group(1)) == FIGURES, "not every figure was drawn"


def lanes(dom: str) -> list[str]:
    return re.findall(r'class="ytick"><text[^>]*>([^<]+)</text>', timeline_dom(dom))


def band_fills(dom: str) -> list[str]:
    """Fill colours of the shaded bands (fault windows, overlaps) behind the lanes."""
    return re.findall(r'<path data-index="\d+"[^>]*style="[^"]*fill: (rgb\([^)]*\))', timeline_dom(dom))


def bar_texts(dom: str) -> list[str]:
    return re.findall(r'class="bartext[^"]*"[^>]*>(?:<[^>]*>)*([^<]+)<', timeline_dom(dom))


def rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def assert_screenshot(page: Path, png: Path, browser: str) -> None:
    screenshot(page, png, browser=browser)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # A blank 1400x1000 page compresses to a few KB; lanes, bars and text take far more.
    assert len(data) > 30_000, f"the screenshot looks empty ({len(data)} bytes)"


def assert_offline(page: Path) -> None:
    text = page.read_text()
    assert not re.search(r"<(script|link)[^>]+(src|href)=[\"']?https?:", text), "the page loads something online"


@pytest.mark.timeout(400)
def test_campaign_report_opens_in_a_browser_with_lanes_and_fault_bands(etcd: Any, browser: str, tmp_path: Path) -> None:
    page, report = tmp_path / "campaign.html", tmp_path / "campaign.json"
    code, out = run(
        "validate", "--no-progress", "--candidates", "3", "--faults", "5",
        "--only", "sidecar-kill,resign,partition,orchestrator-kill,leader-member-kill",
        "--report", str(report), "--report-html", str(page),
    )  # fmt: skip
    assert code == 0, out
    assert f"HTML timeline written to {page}" in out.splitlines()[-1], "the path is not the last thing printed"
    assert_offline(page)
    r = json.loads(report.read_text())
    assert all(x["injected_mono"] and x["healed_mono"] >= x["injected_mono"] for x in r["results"])

    dom = dump_dom(page, browser)
    assert_rendered(dom)
    for c in ("s0", "s1", "s2"):
        assert {f"{c} sidecar", f"{c} orchestrator"} <= set(lanes(dom)), lanes(dom)
    assert {"fault windows", "handovers"} <= set(lanes(dom))
    fills = band_fills(dom)
    assert len(fills) == r["faults"], f"{len(fills)} bands for {r['faults']} faults"
    assert rgb(OVERLAP_COLOUR) not in fills, "a passing campaign drew an overlap"
    assert any(t.startswith("token ") and "epoch" in t for t in bar_texts(dom)), "no orchestrator term labelled"
    assert "overlap" not in " ".join(re.findall(r'class="annotation-text"[^>]*>([^<]*)<', dom))
    assert_screenshot(page, tmp_path / "campaign.png", browser)


@pytest.mark.timeout(400)
def test_broken_build_report_draws_the_overlap_in_red(etcd: Any, browser: str, tmp_path: Path) -> None:
    """Without self-fencing a frozen leader's orchestrator acts on: the page must show it."""
    page = tmp_path / "broken.html"
    code, out = run(
        "validate", "--no-progress", "--unsafe-broken", "--only", "sidecar-stop", "--faults", "2", "--seed", "1",
        "--candidates", "3", "--report-html", str(page),
    )  # fmt: skip
    assert code == 1 and "overlap:" in out, out
    dom = dump_dom(page, browser)
    assert_rendered(dom)
    assert "verdict: FAIL" in dom
    red = rgb(OVERLAP_COLOUR)
    assert red in band_fills(dom), "no red band over the overlap"
    bars = re.findall(r'<g class="point"><path[^>]*style="[^"]*fill: (rgb\([^)]*\))', timeline_dom(dom))
    assert red in bars, "no red bar in the handovers lane"
    notes = re.findall(r'class="annotation-text"[^>]*>([^<]*)<', timeline_dom(dom))
    assert any(re.fullmatch(r"overlap \d+ ms", n) for n in notes), notes
    assert_screenshot(page, tmp_path / "broken.png", browser)


@pytest.mark.timeout(300)
def test_demo_report_shows_its_three_steps(etcd: Any, browser: str, tmp_path: Path) -> None:
    page = tmp_path / "demo.html"
    code, out = run("demo", "--duration", "8", "--report", str(page), timeout=200)
    assert code == 0, out
    assert f"HTML timeline written to {page}" in out
    dom = dump_dom(page, browser)
    assert_rendered(dom)
    assert {"sidecar-0 sidecar", "sidecar-2 orchestrator"} <= set(lanes(dom))
    assert len(band_fills(dom)) == 3
    assert {"SIGKILL", "SIGSTOP", "resign"} <= set(bar_texts(dom))
