"""Open a page in Debian's headless Chromium: its DOM after scripts ran, or a screenshot.

For the tests of the HTML reports and for docs/timeline.png. Each call runs
a fresh browser with a new profile directory and every background network
feature off: the page must render from the file alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
    """The browser to use: $ELECTION_SIDECAR_CHROMIUM, else the first of CANDIDATES on PATH."""
    chosen = os.environ.get("ELECTION_SIDECAR_CHROMIUM")
    if chosen:
        return chosen
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def _run(browser: str, page: Path, extra: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="election-sidecar-chromium-") as profile:
        args = [
            browser,
            "--headless",
            "--no-sandbox",  # we run as root, where Chromium's sandbox refuses to start
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            # Let plotly's promises and timers settle before the DOM or pixels are taken,
            # without a wall-clock sleep: virtual time runs as fast as the page allows.
            "--virtual-time-budget=15000",
            *extra,
            page.resolve().as_uri(),
        ]
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def dump_dom(page: Path, browser: str | None = None, timeout: float = 90.0) -> str:
    """The page's DOM, serialised after its scripts ran."""
    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium found: apt-get install chromium")
    # The size of the screenshots, so text that fits in them is in this DOM too.
    res = _run(browser, page, ["--window-size=1400,1000", "--dump-dom"], timeout)
    if res.returncode != 0 or not res.stdout.strip():
        raise RuntimeError(f"chromium --dump-dom failed ({res.returncode}): {res.stderr[-2000:]}")
    return res.stdout


def screenshot(
    page: Path, png: Path, *, width: int = 1400, height: int = 1000, browser: str | None = None, timeout: float = 90.0
) -> Path:
    """A PNG of the page's first ``width`` x ``height`` pixels."""
    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium found: apt-get install chromium")
    png = png.resolve()
    png.unlink(missing_ok=True)
    res = _run(browser, page, [f"--window-size={width},{height}", f"--screenshot={png}"], timeout)
    if res.returncode != 0 or not png.exists():
        raise RuntimeError(f"chromium --screenshot failed ({res.returncode}): {res.stderr[-2000:]}")
    return png


def main(argv: list[str] | None = None) -> int:
    """``python -m sidecar_harness.headless PAGE.html OUT.png [WIDTH HEIGHT]``: how docs/timeline.png is made."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 4):
        print(main.__doc__, file=sys.stderr)
        return 2
    width, height = (int(args[2]), int(args[3])) if len(args) == 4 else (1400, 1000)
    print(screenshot(Path(args[0]), Path(args[1]), width=width, height=height))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
