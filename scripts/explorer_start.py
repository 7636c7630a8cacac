"""How fast the explorer opens: ``dynviz app DIR`` started cold, its first page in a real browser.

Each repeat starts a fresh server as a user does (``dynviz app DIR --server.headless true
--server.port P``, a subprocess), polls its health endpoint (``/_stcore/health``) every 50 ms
until it answers, then opens the explorer's address in Debian's chromium (headless, driven by
playwright) and waits until the Overview page is drawn; then it reloads the page and waits
again, and stops the server. Three figures per repeat:

- **start to health**: from starting ``dynviz app`` until ``/_stcore/health`` answers 200 (the
  server preloads the explorer before it listens: ``dynviz.commands.app``);
- **health to first page**: from that answer until the Overview is drawn in the browser (the
  browser was launched before the server, so this is the page's own time: the frontend's
  scripts, the websocket, the first script run and the drawing);
- **reload**: a reload of the same page on the warm server once it is at rest (under 10% of a
  core for 6 s: the work started in the background, such as the gate-row summaries of the
  records shown, is done; the server's CPU seconds until then are ``background_cpu_s``),
  ``--reloads`` of them, the median.

"Drawn" is: the Overview's last section, the "Training curves" heading, present (the page's
script has run to its end: the skeleton and the sidebar alone do not count), the run over (no
running indicator), no element still a placeholder (``stSkeleton``: the frontend loads a
table's or a chart's code on first use), every table (``stDataFrame``) holding its canvas,
every chart (``stVegaLiteChart``) its drawing and every picture (``stImage``: the training
curves, drawn on the server until the page's Interactive toggle asks for charts) decoded, and
no exception shown.

By default every first page opens with an empty browser cache (a first visit: the frontend's
scripts, about 5 MB, are fetched and compiled); ``--returning`` keeps one browser cache across
the starts, filled by a visit before them (Streamlit's scripts are cached for a year). The
medians of ``--repeats`` repeats are printed with the load average (at the start of each
repeat, and at the end); timings on a shared machine move with it.

Records to measure on: a folder given as DIR (``dynviz demo``'s ``runs/demo``, records written
by ``dynviz record``), or ``--images N`` for generated records of N images
(``scripts/explorer_load.py``'s ``make_records``, ``--model`` their config) written under
``--dir`` (kept, and reused when there) or a temporary folder. Run::

    .venv/bin/python scripts/explorer_start.py runs/demo --repeats 5
    .venv/bin/python scripts/explorer_start.py --images 100000 --repeats 5
    .venv/bin/python scripts/explorer_start.py --images 100000 --model layer16 --dir /tmp/big16

It exits 1 when a page failed or the median of "health to first page" exceeds ``--target``
seconds (2 s, issue 26). The servers' output goes to ``$TMPDIR/explorer-start-PID.log``. Needs
``/usr/bin/chromium`` (``bash scripts/install-browser.sh``; never ``playwright install``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TARGET = 2.0  # seconds from the health check's answer to the first page drawn (issue 26)
SETTLE = 6.0  # seconds of a quiet server before the reloads (after its background work)
VIEWPORT = {"width": 1280, "height": 800}

DRAWN = """() => {
  const has = (id) => document.querySelector(`[data-testid="${id}"]`) !== null;
  if (has('stException')) return 'exception';
  const headings = [...document.querySelectorAll('h1, h2, h3')].map(h => h.innerText.trim());
  if (!headings.includes('Overview') || !headings.includes('Training curves')) return false;
  if (has('stStatusWidgetRunningIcon') || has('stSkeleton')) return false;
  const tables = [...document.querySelectorAll('[data-testid="stDataFrame"]')];
  if (!tables.every(t => t.querySelector('canvas'))) return false;
  const charts = [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')];
  if (!charts.every(c => c.querySelector('canvas, svg'))) return false;
  const pictures = [...document.querySelectorAll('[data-testid="stImage"] img')];
  return pictures.every(i => i.complete && i.naturalWidth > 0);
}"""
"""The Overview is drawn: ``true``; an exception on the page: ``'exception'``."""


@dataclass
class Repeat:
    """One cold start of the explorer."""

    start_to_health_s: float
    health_to_page_s: float
    reloads_s: list[float] = field(default_factory=list)
    problem: str = ""
    load_average: float = float("nan")  # the 1-minute load average when it started
    background_cpu_s: float = 0.0  # server CPU seconds after the first page, until at rest

    @property
    def reload_s(self) -> float:
        return statistics.median(self.reloads_s) if self.reloads_s else float("nan")


# -------------------------------------------------------------------------------- records
def _sibling(name: str):
    """``scripts/<name>.py`` as a module (the scripts folder is no package)."""
    path = Path(__file__).resolve().with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _explorer_load():
    """``scripts/explorer_load.py`` as a module (its record generator)."""
    return _sibling("explorer_load")


def generated_folder(folder: Path, images: int, model: str) -> Path:
    """``folder`` with generated records of ``images`` images of ``model`` in it (written
    unless already there): what the explorer is started on."""
    if not (folder / "records" / "generated").is_dir():
        _explorer_load().make_records(folder, images, model)
    return folder


# --------------------------------------------------------------------------------- server
@contextmanager
def explorer(
    folder: Path, log: Path, *, timeout: float = 120.0
) -> Iterator[tuple[str, float, int]]:
    """``dynviz app FOLDER`` on a free local port, started now (``explorer_load``'s
    ``explorer_server``): ``(url, seconds until the health check answered, the server's
    process id)``; stopped afterwards."""
    start = time.perf_counter()
    with _explorer_load().explorer_server(folder, log, timeout=timeout) as (url, pid):
        yield url, time.perf_counter() - start, pid


def wait_idle(pid: int, *, settle: float, timeout: float, busy: float = 0.1) -> float:
    """Wait until the server ``pid`` has been at rest (under ``busy`` of a core) for ``settle``
    seconds in a row: the background work its first page started (the gate-row summaries of
    the records shown, which start a few seconds later) is done. Returns the CPU seconds it
    used meanwhile."""
    import psutil

    process = psutil.Process(pid)
    started = time.perf_counter()
    first = last = sum(process.cpu_times()[:2])
    quiet_since = started
    while time.perf_counter() - started < timeout:
        time.sleep(0.25)
        now = sum(process.cpu_times()[:2])
        if now - last > busy * 0.25:
            quiet_since = time.perf_counter()
        elif time.perf_counter() - quiet_since >= settle:
            break
        last = now
    return last - first


def wait_drawn(page, timeout: float) -> str:  # noqa: ANN001 - a playwright Page
    """Wait until the Overview is drawn (:data:`DRAWN`); "" or what went wrong."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        handle = page.wait_for_function(DRAWN, timeout=timeout * 1000, polling=50)
    except PlaywrightTimeout:
        return f"the Overview was not drawn within {timeout:.0f} s"
    return "an exception on the page" if handle.json_value() == "exception" else ""


def one_start(
    new_page: Callable[[], Any],
    folder: Path,
    log: Path,
    *,
    reloads: int,
    timeout: float,
    settle: float = SETTLE,
) -> Repeat:
    """Start the explorer cold on ``folder``, open its first page in ``new_page()``, reload it
    ``reloads`` times."""
    load = os.getloadavg()[0]
    with explorer(folder, log, timeout=timeout) as (url, to_health, pid):
        answered = time.perf_counter()
        page = new_page()
        try:
            page.goto(url, wait_until="commit")
            problem = wait_drawn(page, timeout)
            to_page = time.perf_counter() - answered
            busy = 0.0
            if reloads and not problem:
                busy = wait_idle(pid, settle=settle, timeout=timeout)
            times = []
            for _ in range(reloads if not problem else 0):
                started = time.perf_counter()
                page.reload(wait_until="commit")
                problem = wait_drawn(page, timeout)
                times.append(time.perf_counter() - started)
                if problem:
                    break
        finally:
            page.close()
    return Repeat(to_health, to_page, times, problem, load, busy)


def measure(
    folder: Path,
    *,
    repeats: int,
    reloads: int = 3,
    timeout: float = 120.0,
    returning: bool = False,
) -> list[Repeat]:
    """``repeats`` cold starts of the explorer on ``folder`` (:class:`Repeat` each). Each first
    page opens in a new browser context (an empty cache: a first visit, every script of the
    frontend fetched and compiled), or with ``returning`` in one context whose cache a visit
    before the measured starts filled (a returning visitor: Streamlit's scripts are cached for
    a year, so only the page itself is fetched)."""
    log = Path(tempfile.gettempdir()) / f"explorer-start-{os.getpid()}.log"
    with _sibling("browser").chromium() as browser:
        if not returning:
            return [
                one_start(
                    lambda: browser.new_page(viewport=VIEWPORT),
                    folder,
                    log,
                    reloads=reloads,
                    timeout=timeout,
                )
                for _ in range(repeats)
            ]
        context = browser.new_context(viewport=VIEWPORT)
        try:
            one_start(context.new_page, folder, log, reloads=0, timeout=timeout)  # the cache
            return [
                one_start(context.new_page, folder, log, reloads=reloads, timeout=timeout)
                for _ in range(repeats)
            ]
        finally:
            context.close()


def summary(runs: list[Repeat]) -> dict[str, object]:
    """Medians (and the extremes) of the repeats, the machine's load average and cores."""

    def stats(values: list[float]) -> dict[str, float]:
        return {
            "median": round(statistics.median(values), 2),
            "min": round(min(values), 2),
            "max": round(max(values), 2),
        }

    return {
        "repeats": len(runs),
        "start_to_health_s": stats([r.start_to_health_s for r in runs]),
        "health_to_first_page_s": stats([r.health_to_page_s for r in runs]),
        "start_to_first_page_s": stats([r.start_to_health_s + r.health_to_page_s for r in runs]),
        "reload_s": stats([r.reload_s for r in runs]),
        "background_cpu_s": stats([r.background_cpu_s for r in runs]),
        "failures": [r.problem for r in runs if r.problem],
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "cores": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, help="the folder given to dynviz app")
    parser.add_argument("--images", type=int, help="generated records of this many images")
    parser.add_argument("--model", default="tiny", help="config of the generated records")
    parser.add_argument("--dir", type=Path, help="where the generated records go (kept)")
    parser.add_argument("--repeats", type=int, default=3, help="cold starts (default 3)")
    parser.add_argument("--reloads", type=int, default=3, help="reloads per start (default 3)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per wait")
    parser.add_argument("--target", type=float, default=TARGET, help="seconds, health to page")
    parser.add_argument(
        "--returning",
        action="store_true",
        help="a returning visitor: the browser's cache holds the frontend's scripts (default: "
        "a first visit, an empty cache on every start)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if (args.folder is None) == (args.images is None):
        parser.error("give a folder or --images N (not both)")
    chromium = _sibling("browser").CHROMIUM
    if not chromium.exists():
        parser.error(f"{chromium} is missing: run `bash scripts/install-browser.sh`")
    with tempfile.TemporaryDirectory(prefix="explorer-start-") as tmp:
        folder = args.folder
        if folder is None:
            folder = generated_folder(args.dir or Path(tmp), args.images, args.model)
        runs = measure(
            folder,
            repeats=args.repeats,
            reloads=args.reloads,
            timeout=args.timeout,
            returning=args.returning,
        )
    result = {"browser_cache": "returning" if args.returning else "empty", **summary(runs)}
    if args.json:
        result["runs"] = [{**asdict(r), "reload_s": r.reload_s} for r in runs]
        sys.stdout.write(json.dumps(result, indent=1) + "\n")
    else:
        sys.stdout.write(f"explorer on {folder}\n")
        for i, run in enumerate(runs, 1):
            sys.stdout.write(
                f"  start {i}: health {run.start_to_health_s:5.2f} s, first page "
                f"{run.health_to_page_s:5.2f} s after it, reload {run.reload_s:5.2f} s "
                f"(load average {run.load_average:.2f})"
                + (f"  FAILED: {run.problem}" if run.problem else "")
                + "\n"
            )
        for key, value in result.items():
            sys.stdout.write(f"{key:>24}: {value}\n")
    first = result["health_to_first_page_s"]["median"]
    return 1 if result["failures"] or first > args.target else 0


if __name__ == "__main__":
    raise SystemExit(main())
