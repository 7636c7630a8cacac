"""The whole dynviz chain on synthetic data: train, record, analyze, extract, retrain, compare.

Steps (each one a library call: :func:`dynviz.train.train`, :func:`dynviz.record.record`,
:func:`dynviz.analysis.report.analyze`, :func:`dynviz.analysis.common.write_common`,
:func:`dynviz.analysis.compare.compare`):

1. train a dynamic model without budget (Dynamic-Raw) and one with a budget (Dynamic-Budget);
2. train the special cases modeled in the same space (U-Net-like and FCN-like routes) as static
   networks;
3. record both dynamic models on the validation scenes;
4. analyze both records (Fig. 5, heatmaps, costs, routing versus scale, ``report/report.md``);
5. extract the common network of Dynamic-Budget (paths active in more than 95% of images) and
   retrain it as a static network;
6. compare everything in a Table-1-style table;
7. write ``OUT/report.md`` with the table, the routing figures and the figures.

Steps that do not depend on each other run side by side, ``jobs`` at a time (2 by default: one
process per core, one torch thread each), so a 2-core machine is kept busy. The chain logs
"step k of n" with the elapsed time and an estimate of the time left, each training shows its own
progress bar (on a terminal), and every step's wall time goes to ``OUT/demo.log`` and
``OUT/demo.json``.

A re-run reuses finished steps: a run whose last checkpoint reached its iterations is not trained
again (an interrupted one resumes), and records, the report, the common network and the
comparison are kept when their inputs did not change. ``demo.json`` keeps the wall time of the
runs that made the outputs, so a re-run that only reuses reports the time it took to make them.

The parts, one file each: the settings (:mod:`dynviz.demo.settings`), the run's folder and
trainings (:mod:`dynviz.demo.workspace`), the step table (:mod:`dynviz.demo.steps`), the job
scheduler (:mod:`dynviz.demo.scheduler`) and the report (:mod:`dynviz.demo.report`);
:func:`run_chain` here puts them together. The special cases' routes
come from the model zoo's route builders (:data:`dynviz.model.zoo.ROUTE_BUILDERS`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from dynviz.demo.report import read_state, timings, write_report, write_state
from dynviz.demo.scheduler import LOG_FORMAT, Step, clock, idle_estimate, schedule
from dynviz.demo.settings import DEMO, FULL, QUICK, ChainResult, ChainSettings
from dynviz.demo.steps import STEPS
from dynviz.demo.workspace import Chain, prepare
from dynviz.model.route import Route
from dynviz.model.zoo import fcn_like, unet_like

__all__ = [
    "DEMO",
    "FULL",
    "QUICK",
    "ChainResult",
    "ChainSettings",
    "fcn_like",
    "idle_estimate",
    "run_chain",
    "unet_like",
]

logger = logging.getLogger(__name__)


@contextmanager
def _logging_into(path: Path) -> Iterator[None]:
    """The package's log lines (at least INFO) also into ``path`` while the chain runs."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(logging.INFO)
    package = logging.getLogger("dynviz")
    package.addHandler(handler)
    level = package.level
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(level)
        handler.close()


def run_chain(
    out: str | Path,
    settings: ChainSettings = QUICK,
    *,
    progress: bool = True,
    on_step: Callable[[str], None] | None = None,
) -> ChainResult:
    """Run the chain into ``out`` and return where its report, table and figures are.

    Args:
        out: the output folder (created; a re-run reuses what is up to date in it).
        settings: sizes and training settings.
        progress: progress bars (trainings and recordings).
        on_step: called with each step's title as it starts (default: logged).

    Raises:
        RuntimeError: a step failed (its error names it).
    """
    started = time.perf_counter()
    out = Path(out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    log_path = out / "demo.log"
    with _logging_into(log_path):
        previous = read_state(out / "demo.json", settings)
        logger.info("dynviz chain into %s: %s", out, json.dumps(asdict(settings)))
        chain = prepare(out, settings, progress=progress)
        steps = [row.bind(chain) for row in STEPS]
        jobs = max(1, min(settings.jobs, os.cpu_count() or 1))
        schedule(steps, jobs, log_path, settings.threads, on_start=on_step)
        return _finish(chain, steps, previous, time.perf_counter() - started, jobs)


def _finish(
    chain: Chain, steps: list[Step], previous: dict | None, seconds: float, jobs: int
) -> ChainResult:
    """``demo.json`` and ``report.md`` of a run whose steps are done."""
    s, out = chain.settings, chain.out
    times = timings(steps, previous, seconds, jobs)
    common_path = chain.common_path
    common = Route.from_yaml(common_path) if common_path.is_file() else None
    adaptivity_file = chain.report_dir / "adaptivity.json"
    adaptivity = (
        json.loads(adaptivity_file.read_text(encoding="utf-8"))
        if adaptivity_file.is_file()
        else None
    )
    extract = next(step for step in steps if step.key == "extract")
    threshold = extract.result.get("threshold") or (previous or {}).get("threshold")
    threshold = threshold or s.threshold
    figures = {
        "Fig. 5: distribution of path activation probability": chain.report_dir
        / "fig5_probability.png",
        "Routing versus object scale": chain.report_dir / "routing_vs_scale.png",
    }
    write_state(out / "demo.json", s, times, threshold)
    table = chain.compare_dir / "table1.md"
    report = write_report(out, s, chain.space, table, figures, common, threshold, adaptivity, times)
    logger.info(
        "chain finished in %s (%d of %d steps reused); made in %s",
        clock(seconds),
        len(times.reused),
        len(steps),
        clock(times.made),
    )
    return ChainResult(
        out,
        report,
        table,
        figures,
        common,
        seconds,
        times.made,
        None if adaptivity is None else adaptivity.get("Dynamic-Budget"),
    )
