"""The whole dynviz chain on synthetic data: train, record, analyze, extract, retrain, compare.

Steps (each one a ``dynviz`` command run in-process through :func:`dynviz.cli.main`, so the chain
exercises exactly what users run):

1. train a dynamic model without budget (Raw) and one with a budget (Budget) in a small space;
2. record both on the validation split;
3. analyze both records (Fig. 5, heatmaps, costs, routing versus scale, ``report.md``);
4. extract the common network of the budgeted model (paths active in more than 95% of images);
5. write special cases modeled in the same space (U-Net-like and FCN-like routes);
6. retrain the common network and the special cases as static networks;
7. compare everything in a Table-1-style table;
8. write ``OUT/report.md`` with the figures and the table.

A re-run reuses finished steps: a run whose last checkpoint reached its iterations is not trained
again (an interrupted one resumes), records skip recorded images, and extraction, specials and
the comparison are kept when their inputs did not change.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dynviz.model.config import RoutingSpaceConfig
from dynviz.model.route import Route

__all__ = [
    "DEMO",
    "FULL",
    "QUICK",
    "ChainResult",
    "ChainSettings",
    "fcn_like",
    "run_chain",
    "unet_like",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChainSettings:
    """Sizes of one chain run."""

    space: str = "small"  # preset of the dynamic models
    size: int = 64  # square synthetic scenes and training crops
    train_count: int = 128
    val_count: int = 48
    iters: int = 150  # per dynamic model
    static_iters: int = 150  # per retrained static network
    batch: int = 8
    budget_lambda: float = 4.0
    budget_mu: float = 0.3
    budget_start: float = 0.1  # share of training before the budget loss starts
    budget_ramp: float = 0.05
    gate_lr_mult: float = 4.0
    threshold: float = 0.95
    seed: int = 0
    threads: int = 1  # several torch threads on shared cores can stall; 1 is robust
    workers: int = 1  # a data worker generates scenes on the second core
    eval_limit: int = 16


# A few minutes on two idle cores; what the slow test and `analysis/run_chain.py --quick` run.
QUICK = ChainSettings()
# The demo: about 15 minutes on a 2-core CPU.
DEMO = ChainSettings(size=96, train_count=384, val_count=64, iters=1200, static_iters=600)
# Longer runs for nicer figures.
FULL = ChainSettings(size=128, train_count=256, val_count=96, iters=1000, static_iters=1000)


@dataclass
class ChainResult:
    out: Path
    report: Path
    table: Path
    figures: dict[str, Path] = field(default_factory=dict)
    common: Route | None = None
    seconds: float = 0.0


def unet_like(config: RoutingSpaceConfig) -> list[list[int]]:
    """U-Net in a space (Fig. 3b): down to the deepest scale, back up to 1/4, and a keep chain at
    each finer scale from the encoder to the decoder (the skip connections)."""
    layers = config.num_layers
    depth = min(config.num_scales - 1, layers // 2)
    main = [min(i, depth, layers - i) for i in range(layers + 1)]
    chains = [main] + [[min(i, s, layers - i) for i in range(layers + 1)] for s in range(depth)]
    return [[config.stride(s) for s in chain] for chain in chains]


def fcn_like(config: RoutingSpaceConfig) -> list[list[int]]:
    """FCN-32s in a space (Fig. 3a): one path straight down to the coarsest scale, ending there."""
    deepest = config.num_scales - 1
    return [[config.stride(min(i, deepest)) for i in range(config.num_layers + 1)]]


def _write_special(
    config: RoutingSpaceConfig, name: str, chains: list[list[int]], description: str, path: Path
) -> Path:
    """A self-contained special-case route spec (the space inline)."""
    route = Route.from_chains(config, chains, name=name, description=description)
    data = route.to_dict()
    data["space"] = config.to_dict()
    data.pop("paths")
    data["chains"] = chains
    text = f"# {description}\n# Written by dynviz.chain.\n" + yaml.safe_dump(
        data, sort_keys=False, default_flow_style=None
    )
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def _run(*argv: str) -> None:
    from dynviz.cli import main as dynviz

    logger.info("$ dynviz %s", " ".join(argv))
    start = time.perf_counter()
    code = dynviz(list(argv))
    if code != 0:
        raise RuntimeError(f"dynviz {argv[0]} failed with exit status {code}")
    logger.info("  done in %.1f s", time.perf_counter() - start)


def _trained_iterations(run_dir: Path) -> int | None:
    """Iterations of the run's last checkpoint, or None when there is none."""
    from dynviz.checkpoint import LATEST, load_checkpoint

    path = run_dir / LATEST
    if not path.is_file():
        return None
    return int(load_checkpoint(path).get("iteration", 0))


def _train(spec: str, run_dir: Path, iters: int, args: list[str]) -> None:
    done = _trained_iterations(run_dir)
    if done is not None and done >= iters:
        logger.info("reusing %s (%d iterations)", run_dir, done)
        return
    resume = ["--resume"] if done is not None else []
    _run("train", spec, "--out", str(run_dir), "--iters", str(iters), *resume, *args)


def _newer(target: Path, *sources: Path) -> bool:
    """Whether ``target`` exists and is newer than every existing source."""
    if not target.exists():
        return False
    stamp = target.stat().st_mtime
    return all(not s.exists() or s.stat().st_mtime <= stamp for s in sources)


def run_chain(
    out: str | Path,
    settings: ChainSettings = QUICK,
    *,
    progress: bool = True,
    on_step: Callable[[str], None] | None = None,
) -> ChainResult:
    """Run the chain into ``out`` and return where its report, table and figures are."""
    from dynviz.analysis.common import CommonNetError, write_common
    from dynviz.checkpoint import LATEST

    started = time.perf_counter()
    out = Path(out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    s = settings
    size = f"{s.size}x{s.size}"
    train_data = f"synthetic:count={s.train_count},size={size},seed={s.seed}"
    val_data = f"synthetic:count={s.val_count},size={size},seed={s.seed}"
    quiet = [] if progress else ["--no-progress"]
    common_args = [
        "--data", train_data, "--val-data", val_data, "--batch", str(s.batch),
        "--crop", str(s.size), str(s.size), "--workers", str(s.workers), "--seed", str(s.seed),
        "--eval-limit", str(s.eval_limit), "--log-every", "50", "--no-tensorboard",
        "--threads", str(s.threads), *quiet,
    ]  # fmt: skip
    step = on_step or (lambda name: logger.info("== %s", name))
    runs = out / "runs"

    step("1/7 train Dynamic-Raw and Dynamic-Budget")
    _train(s.space, runs / "raw", s.iters, ["--budget-lambda", "0", *common_args])
    _train(s.space, runs / "budget", s.iters, [
        "--budget-lambda", str(s.budget_lambda), "--budget-mu", str(s.budget_mu),
        "--budget-start", str(s.budget_start), "--budget-ramp", str(s.budget_ramp),
        "--gate-lr-mult", str(s.gate_lr_mult), *common_args,
    ])  # fmt: skip

    step("2/7 record both on the validation scenes")
    records = out / "records"
    for name, label in (("raw", "Dynamic-Raw"), ("budget", "Dynamic-Budget")):
        target = records / name
        if not _newer(target / "records.json", runs / name / LATEST):
            _run(
                "record",
                str(runs / name),
                "--data",
                val_data,
                "--split",
                "val",
                "--out",
                str(target),
                "--name",
                label,
                *quiet,
            )

    step("3/7 analyze")
    report_dir = out / "report"
    if not _newer(
        report_dir / "report.md",
        records / "raw" / "records.json",
        records / "budget" / "records.json",
    ):
        _run(
            "analyze",
            str(records / "raw"),
            str(records / "budget"),
            "--out",
            str(report_dir),
            "--threshold",
            str(s.threshold),
        )

    step("4/7 extract the common network of Dynamic-Budget")
    common_path: Path | None = out / "models" / "common-budget.yaml"
    threshold = s.threshold
    common: Route | None = None
    if _newer(common_path, records / "budget" / "records.json"):
        common = Route.from_yaml(common_path)
    while common is None and common_path is not None:
        try:
            common = write_common(records / "budget", common_path, threshold=threshold)
        except CommonNetError as err:  # a barely trained model: lower the threshold a little
            if threshold <= 0.5:
                logger.warning("no common network (%s); the comparison goes on without it", err)
                common_path = None
            else:
                threshold = round(threshold - 0.05, 2)
                logger.warning("%s; trying %.2f", err, threshold)
    if common is not None:
        logger.info("common network: %d paths in %d cells", len(common), len(common.cells))

    step("5/7 special cases in the same space")
    config = RoutingSpaceConfig.from_dict(
        yaml.safe_load((runs / "raw" / "config.yaml").read_text(encoding="utf-8"))["model"]
    )
    unet = _write_special(
        config,
        "unet-like",
        unet_like(config),
        f"special case: U-Net-like route (Fig. 3b) in the {config.name} space",
        out / "models" / "unet-like.yaml",
    )
    fcn = _write_special(
        config,
        "fcn-like",
        fcn_like(config),
        f"special case: FCN-32s-like single path (Fig. 3a) in the {config.name} space",
        out / "models" / "fcn-like.yaml",
    )

    step("6/7 retrain the static networks")
    methods = [("raw", "Dynamic-Raw"), ("budget", "Dynamic-Budget")]
    statics = [("unet-like", unet, "U-Net-like"), ("fcn-like", fcn, "FCN-like")]
    if common_path is not None:
        statics.insert(0, ("common", common_path, "Common-Budget"))
    for name, spec, label in statics:
        run_dir = runs / name
        if (run_dir / LATEST).is_file() and not _newer(run_dir / LATEST, spec):
            logger.info("%s changed: training %s again", spec, run_dir)
            shutil.rmtree(run_dir)
        _train(str(spec), run_dir, s.static_iters, common_args)
        methods.append((name, label))

    step("7/7 compare")
    compare_dir = out / "compare"
    checkpoints = [runs / name / LATEST for name, _ in methods]
    if not _newer(compare_dir / "table1.md", *checkpoints):
        _run(
            "compare",
            *(str(runs / name) for name, _ in methods),
            "--data",
            val_data,
            "--out",
            str(compare_dir),
            "--names",
            *(label for _, label in methods),
        )

    figures = {
        "Fig. 5: distribution of path activation probability": report_dir / "fig5_probability.png",
        "Routing versus object scale": report_dir / "routing_vs_scale.png",
    }
    seconds = time.perf_counter() - started
    report = _write_report(
        out, s, config, compare_dir / "table1.md", figures, common, threshold, seconds
    )
    return ChainResult(out, report, compare_dir / "table1.md", figures, common, seconds)


def _write_report(
    out: Path,
    s: ChainSettings,
    config: RoutingSpaceConfig,
    table: Path,
    figures: dict[str, Path],
    common: Route | None,
    threshold: float,
    seconds: float,
) -> Path:
    lines = [
        "# dynviz demo report",
        "",
        f"The `{config.name}` routing space (L={config.num_layers}, base width "
        f"{config.base_channels}, {config.num_scales} scales) trained on synthetic scenes of "
        f"{s.size}x{s.size} ({s.train_count} training, {s.val_count} validation images): "
        f"{s.iters} iterations per dynamic model, {s.static_iters} per static network. "
        f"Dynamic-Budget uses lambda={s.budget_lambda}, mu={s.budget_mu}. These numbers show "
        "the chain at work on a laptop CPU; they are not the paper's Cityscapes results.",
        "",
        "## Table 1 on synthetic data",
        "",
        table.read_text(encoding="utf-8").strip(),
        "",
    ]
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
    lines += [
        "## More",
        "",
        "- The full analysis: `report/report.md` (CSV tables, PDF and interactive HTML figures).",
        "- Records: `records/raw`, `records/budget` (Parquet, one row per image and path).",
        f"- Open the route explorer on this folder: `dynviz app {out}`",
        "",
        f"Made in {seconds / 60:.1f} minutes.",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "demo.json").write_text(
        json.dumps({"settings": s.__dict__, "seconds": seconds}, indent=2), encoding="utf-8"
    )
    return report
