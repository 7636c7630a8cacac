"""What a demo run leaves beside its outputs: ``demo.json`` (the settings and every step's wall
and CPU time, carried over by a re-run that reuses steps) and ``report.md`` (Table 1, the
comparison of Dynamic-Budget with every other network, whether the routes adapt to the image, the
common network, the routing figures and the timings)."""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dynviz.data.spec import parse_spec
from dynviz.demo.scheduler import Step, clock, idle_estimate
from dynviz.demo.settings import ChainSettings
from dynviz.model.config import RoutingSpaceConfig
from dynviz.model.route import Route

__all__ = ["Timings", "read_state", "timings", "write_report", "write_state"]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ demo.json
def read_state(path: Path, settings: ChainSettings) -> dict[str, Any] | None:
    """The previous run's ``demo.json`` when it used the same settings."""
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    saved = state.get("settings", {})
    current = json.loads(json.dumps(asdict(settings)))
    if saved != current:
        logger.info("%s: other settings than this run; its times are not carried over", path)
        return None
    return state


@dataclass(frozen=True)
class Timings:
    """The wall and CPU times of a run's steps, those a re-run reused carried over."""

    seconds: float  # wall time of this call
    made: float  # wall time of the runs that made the outputs
    steps: dict[str, float]  # step key -> wall seconds
    cpu: dict[str, float]  # step key -> CPU seconds
    idle: float | None  # wall seconds on idle cores (None: a step's CPU time is unknown)
    reused: tuple[str, ...]  # keys of the steps reused by this call
    total: int  # steps in all


def timings(
    steps: list[Step], previous: dict[str, Any] | None, seconds: float, jobs: int
) -> Timings:
    """The times of this call's steps over the previous run's (``demo.json``), and the wall time
    on ``jobs`` idle cores (logged)."""
    worked = [step for step in steps if not step.reused]
    made = (previous.get("made_seconds", 0.0) if previous else 0.0) + (seconds if worked else 0.0)
    step_seconds = dict(previous.get("steps", {})) if previous else {}
    step_seconds.update({step.key: round(step.seconds, 1) for step in worked})
    step_cpu = dict(previous.get("cpu_seconds", {})) if previous else {}
    step_cpu.update({step.key: round(step.cpu_seconds, 1) for step in worked})
    idle = None
    if all(step.key in step_cpu for step in steps):
        idle = idle_estimate({step.key: (step_cpu[step.key], step.needs) for step in steps}, jobs)
        logger.info(
            "CPU time of the steps: %.0f s in all; on %d idle cores the chain would take "
            "about %s (steps one core each, scheduled as above)",
            sum(step_cpu.values()),
            jobs,
            clock(idle),
        )
    reused = tuple(step.key for step in steps if step.reused)
    return Timings(seconds, made, step_seconds, step_cpu, idle, reused, len(steps))


def write_state(path: Path, settings: ChainSettings, times: Timings, threshold: float) -> None:
    """``demo.json``: the settings, the times and the common network's threshold."""
    state = {
        "settings": asdict(settings),
        "made_seconds": times.made,
        "last_run_seconds": times.seconds,
        "steps": times.steps,
        "cpu_seconds": times.cpu,
        "idle_estimate_seconds": times.idle,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "reused": list(times.reused),
        "threshold": threshold,
        "cpu_count": os.cpu_count(),
    }
    path.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------ report.md
def _adaptivity_lines(figures: dict[str, Any]) -> list[str]:
    from dynviz.analysis.adaptivity import RouteAdaptivity

    return RouteAdaptivity(**figures).sentences()


def _comparison_lines(folder: Path, report: Path) -> list[str]:
    """The report's comparison of Dynamic-Budget with every other network of the comparison
    folder (its common network, the special cases, Dynamic-Raw): a table with paired bootstrap
    intervals on the mIoU differences, the claims they support, and the cost-accuracy figure
    (``report/cost_accuracy.png``)."""
    from dynviz.analysis.compare import (
        against_each,
        comparison_markdown,
        cost_accuracy_frame,
        read_rows,
    )

    if not (folder / "table1.csv").is_file():
        return []
    rows = read_rows(folder)
    others = against_each(rows, "Dynamic-Budget")  # the bootstrap, once
    lines = comparison_markdown(rows, "Dynamic-Budget", others=others)
    if not lines:
        return []
    from dynviz.plots.mpl import cost_accuracy

    ax = cost_accuracy(
        cost_accuracy_frame(rows, "Dynamic-Budget", others=others),
        reference="Dynamic-Budget",
        title="Every network of the demo on the validation scenes",
    )
    report.mkdir(parents=True, exist_ok=True)
    ax.figure.savefig(report / "cost_accuracy.png", dpi=120, bbox_inches="tight")
    own = next(r for r in rows if r.method == "Dynamic-Budget")
    statics = [o for o in others if o.kind != "dynamic"]
    cheaper = [o for o in statics if o.gmacs <= own.gmacs_avg]
    aims = [
        (
            "better than every static network that costs no more (its common network and the "
            "special cases), by the intervals",
            all(o.verdict == "better" for o in cheaper),
        ),
        (
            "better than a static network that costs more, by the intervals",
            any(o.verdict == "better" for o in statics if o not in cheaper),
        ),
    ]
    return [
        "## Dynamic against every other network",
        "",
        *lines,
        "",
        "![mIoU against cost](report/cost_accuracy.png)",
        "",
        "Dynamic-Budget is "
        + "; ".join(f"{aim}: {'yes' if ok else 'no'}" for aim, ok in aims)
        + ".",
        "",
    ]


def _intro(s: ChainSettings, config: RoutingSpaceConfig, table: Path) -> list[str]:
    return [
        "# dynviz demo report",
        "",
        f"The `{config.name}` routing space (L={config.num_layers}, base width "
        f"{config.base_channels}, {config.num_scales} scales) trained on synthetic scenes of "
        f"{s.size}x{s.size} ({s.train_count} training, {s.val_count} validation images"
        + (f"; a variant of the scenes: {s.scenes}" if s.scenes else "")
        + f"): {s.iters} iterations per dynamic model, {s.static_iters} per static network. "
        f"Dynamic-Budget uses lambda={s.budget_lambda:g}, mu={s.budget_mu:g}"
        + (
            f" and {s.budget_gate} gates (Dynamic-Raw: {config.gate.value}; the paper's "
            "budgeted networks gate on the input resized by 0.25, small gates)"
            if s.budget_gate and s.budget_gate != config.gate.value
            else ""
        )
        + "."
        + (
            f" The dynamic models train with every path open for the first {s.gate_warmup:.0%} "
            "of their iterations (gate warm-up)."
            if s.gate_warmup
            else ""
        )
        + (
            " Their BatchNorms take training statistics over the samples routed through each "
            "node, not the whole batch (`bn_samples: routed`)."
            if s.bn_samples == "routed"
            else ""
        )
        + (
            f" After training, their paths with alpha <= {s.close_below:g} are closed (the "
            "paper closes only alpha = 0)."
            if s.close_below
            else ""
        )
        + " These numbers show the chain at work on a laptop CPU; they are not the paper's "
        "Cityscapes results.",
        "",
        "## Table 1 on synthetic data",
        "",
        table.read_text(encoding="utf-8").strip() if table.is_file() else "(no table)",
        "",
    ]


def _adaptivity_section(adaptivity: dict[str, Any], s: ChainSettings) -> list[str]:
    scenes = parse_spec(s.train_data).scenes
    share = "half" if scenes.dark == 0.5 else f"{scenes.dark:g} times"
    small = (
        "its hue (the two classes of a pair on either side of the pair's hue)"
        if scenes.small == "hue"
        else "its fine texture (plain or checkered)"
    )
    large = (
        " by how its brightness runs from its centre to its rim (a bright centre for the first "
        "class of each pair, a bright rim for the second)"
        if scenes.large == "radial"
        else ", always plain, by its brightness (the second class of each pair is drawn at "
        f"{share} the brightness of the first)"
    )
    lines = [
        "## Do the routes adapt to the image?",
        "",
        f"In these scenes a small object shows its class by {small} and a large one{large}: "
        "which cue applies depends on the object's size.",
        "",
    ]
    for label, figures_of in adaptivity.items():
        lines += [f"**{label}**", ""]
        lines += [f"- {line}" for line in _adaptivity_lines(figures_of)]
        lines.append("")
    budget = adaptivity.get("Dynamic-Budget")
    if budget:
        aims = [
            ("cost spread of at least 1.5x", budget["cost_spread"] >= 1.5),
            ("regime means at least 20% apart", budget["regime_difference"] >= 0.2),
            (
                "regime told from the route clearly above chance (+15 points)",
                budget["classifier_accuracy"] >= budget["chance"] + 0.15,
            ),
        ]
        lines += [
            "Aims for Dynamic-Budget: "
            + "; ".join(f"{aim}: {'met' if ok else 'not met'}" for aim, ok in aims)
            + ".",
            "",
        ]
        from dynviz.analysis.adaptivity import paper_cost_range

        low, high = paper_cost_range()
        here = budget.get("cost_range", math.nan)
        lines += [
            f"For scale: the paper's budgeted networks cost {low:.2f}-{high:.2f}x "
            "from their dearest Cityscapes validation image to their cheapest (its Table 1)"
            + (
                f"; here Dynamic-Budget's dearest image costs {here:.2f}x its cheapest."
                if not math.isnan(here)
                else "."
            ),
            "",
        ]
    return lines


def _closing(out: Path, s: ChainSettings, times: Timings) -> list[str]:
    reused = len(times.reused)
    lines = [
        "## More",
        "",
        "- The full analysis: `report/report.md` (CSV tables, PDF and interactive HTML figures).",
        "- Records: `records/raw`, `records/budget` (Parquet, one row per image and path).",
        "- Timings of every step: `demo.log` and `demo.json`.",
        f"- Open the route explorer on this folder: `dynviz app {out}`",
        "",
        f"Made in {times.made / 60:.1f} minutes on {os.cpu_count()} cores"
        + (
            f" (this re-run took {times.seconds / 60:.1f} minutes and reused {reused} of "
            f"{times.total} steps)."
            if reused
            else "."
        ),
    ]
    if times.idle is not None:
        cpu = sum(times.cpu.values())
        lines.append(
            f"The steps took {cpu / 60:.1f} minutes of CPU time; on {s.jobs} idle cores, two "
            f"steps side by side, that is about {times.idle / 60:.1f} minutes (the load average "
            f"was {os.getloadavg()[0]:.1f} when this report was written)."
        )
    return lines


def write_report(
    out: Path,
    s: ChainSettings,
    config: RoutingSpaceConfig,
    table: Path,
    figures: dict[str, Path],
    common: Route | None,
    threshold: float,
    adaptivity: dict[str, Any] | None,
    times: Timings,
) -> Path:
    """``out/report.md`` (and ``out/report/cost_accuracy.png``) of a run."""
    lines = _intro(s, config, table)
    special = _comparison_lines(table.parent, out / "report")
    if special and s.static_iters < s.iters:
        special[-1:-1] = [
            "",
            f"The static networks trained for {s.static_iters} iterations and the dynamic ones "
            f"for {s.iters}, which favours the dynamic ones.",
        ]
    lines += special
    if adaptivity:
        lines += _adaptivity_section(adaptivity, s)
    if common is not None:
        lines += [
            "## The common network",
            "",
            f"Common-Budget keeps the paths of Dynamic-Budget active in more than "
            f"{100 * threshold:g}% of the validation images: {len(common)} paths in "
            f"{len(common.cells)} cells (`models/common-budget.yaml`).",
            "",
        ]
    for title, path in figures.items():
        if path.is_file():
            lines += [f"## {title}", "", f"![{title}]({path.relative_to(out).as_posix()})", ""]
    lines += _closing(out, s, times)
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report
