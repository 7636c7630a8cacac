"""The whole dynviz chain on synthetic data, through the CLI, and the figures of ``docs/``.

Steps (each one a ``dynviz`` command run in-process through :func:`dynviz.cli.main`):

1. train a dynamic model without budget (Raw) and one with a budget (Budget) in a small space;
2. record both on the validation split;
3. analyze both records (Fig. 5, heatmaps, costs, routing versus scale, ``report.md``);
4. extract the common network of the budgeted model (paths active in more than 95% of images);
5. write two special cases modeled in the same space (U-Net-like and FCN-like routes);
6. retrain the common network and the special cases as static networks;
7. compare everything in a Table-1-style table;
8. copy ``fig5.png``, ``routing_vs_scale.png`` and ``table1.md`` to ``docs/``.

The default (``--quick``) trains every model for 150 iterations in the ``small`` space (L=8,
width 16) on 64x64 scenes: a few minutes on two idle CPU cores. ``--full`` trains 1000
iterations on 128x128 scenes. Numbers from these runs show that the chain works; they are not
the paper's.

Usage::

    python analysis/run_chain.py                 # quick, into runs/chain, docs/ refreshed
    python analysis/run_chain.py --full --out runs/chain-full --no-docs
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from dynviz.analysis.common import CommonNetError
from dynviz.cli import main as dynviz
from dynviz.model import RoutingSpaceConfig
from dynviz.model.route import Route

logger = logging.getLogger("run_chain")

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Settings:
    space: str
    size: int
    train_count: int
    val_count: int
    iters: int
    batch: int
    budget_lambda: float
    budget_mu: float


QUICK = Settings(
    space="small",
    size=64,
    train_count=128,
    val_count=48,
    iters=150,
    batch=8,
    budget_lambda=4.0,
    budget_mu=0.3,
)
FULL = Settings(
    space="small",
    size=128,
    train_count=256,
    val_count=96,
    iters=1000,
    batch=8,
    budget_lambda=4.0,
    budget_mu=0.3,
)


def run(*argv: str) -> None:
    """Run one ``dynviz`` command; stop the chain if it fails."""
    logger.info("$ dynviz %s", " ".join(argv))
    start = time.perf_counter()
    code = dynviz(list(argv))
    if code != 0:
        raise SystemExit(f"dynviz {argv[0]} failed with exit status {code}")
    logger.info("  done in %.1f s", time.perf_counter() - start)


def unet_like(config: RoutingSpaceConfig) -> list[list[int]]:
    """U-Net in the space (Fig. 3b): down to the deepest scale, back up to 1/4, and a keep
    chain at each finer scale from the encoder to the decoder (the skip connections)."""
    layers = config.num_layers
    depth = min(config.num_scales - 1, layers // 2)
    main = [min(i, depth, layers - i) for i in range(layers + 1)]
    chains = [main]
    for scale in range(depth):
        chains.append([min(i, scale, layers - i) for i in range(layers + 1)])
    return [[config.stride(s) for s in chain] for chain in chains]


def fcn_like(config: RoutingSpaceConfig) -> list[list[int]]:
    """FCN-32s in the space (Fig. 3a): one path straight down to the coarsest scale, ending there
    (the decoder sees only the coarsest feature map)."""
    deepest = config.num_scales - 1
    return [[config.stride(min(i, deepest)) for i in range(config.num_layers + 1)]]


def write_special(
    config: RoutingSpaceConfig, name: str, chains: list[list[int]], description: str, path: Path
) -> Path:
    """Write a special-case route spec in ``config``'s space (inline, self-contained)."""
    route = Route.from_chains(config, chains, name=name, description=description)
    data = route.to_dict()
    data["space"] = config.to_dict()
    data.pop("paths")
    data["chains"] = chains
    header = f"# {description}\n# Written by analysis/run_chain.py.\n"
    path.write_text(
        header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None), encoding="utf-8"
    )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_true",
        help="150 iterations per model on 64x64 scenes (the default)",
    )
    mode.add_argument(
        "--full", action="store_true", help="1000 iterations per model on 128x128 scenes"
    )
    parser.add_argument("--out", default="runs/chain", help="output folder (default runs/chain)")
    parser.add_argument(
        "--docs",
        default=str(ROOT / "docs"),
        help="where fig5.png, routing_vs_scale.png and table1.md go",
    )
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    parser.add_argument("--iters", type=int, help="training iterations of every model")
    parser.add_argument(
        "--threshold", type=float, default=0.95, help="common-network threshold (default 0.95)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: several threads on shared cores can stall)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    settings = FULL if args.full else QUICK
    iters = args.iters or settings.iters
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    (out / "models").mkdir(parents=True)
    size = settings.size
    train_data = f"synthetic:count={settings.train_count},size={size}x{size},seed={args.seed}"
    val_data = f"synthetic:count={settings.val_count},size={size}x{size},seed={args.seed}"
    common_args = [
        "--data",
        train_data,
        "--val-data",
        val_data,
        "--iters",
        str(iters),
        "--batch",
        str(settings.batch),
        "--crop",
        str(size),
        str(size),
        "--workers",
        "0",
        "--seed",
        str(args.seed),
        "--eval-limit",
        "16",
        "--log-every",
        str(max(1, iters // 4)),
        "--no-progress",
        "--no-tensorboard",
        "--threads",
        str(args.threads),
    ]
    started = time.perf_counter()

    # 1. dynamic models: Raw (no budget) and Budget
    runs = out / "runs"
    run("train", settings.space, "--out", str(runs / "raw"), "--budget-lambda", "0", *common_args)
    run(
        "train",
        settings.space,
        "--out",
        str(runs / "budget"),
        "--budget-lambda",
        str(settings.budget_lambda),
        "--budget-mu",
        str(settings.budget_mu),
        "--budget-start",
        "0.1",
        "--budget-ramp",
        "0.05",
        "--gate-lr-mult",
        "4",
        *common_args,
    )

    # 2-3. record and analyze
    records = out / "records"
    for name, label in (("raw", "Dynamic-Raw"), ("budget", "Dynamic-Budget")):
        run(
            "record",
            str(runs / name),
            "--data",
            val_data,
            "--split",
            "val",
            "--out",
            str(records / name),
            "--name",
            label,
            "--no-progress",
        )
    report = out / "report"
    run(
        "analyze",
        str(records / "raw"),
        str(records / "budget"),
        "--out",
        str(report),
        "--threshold",
        str(args.threshold),
    )

    # 4. the common network of the budgeted model (lower the threshold only if nothing survives)
    from dynviz.commands.extract import write_common

    common: Path | None = out / "models" / "common-budget.yaml"
    threshold = args.threshold
    while common is not None:
        try:
            route = write_common(records / "budget", common, threshold=threshold)
            logger.info(
                "common network: %d paths in %d cells (threshold %g)",
                len(route),
                len(route.cells),
                threshold,
            )
            break
        except CommonNetError as err:
            if threshold <= 0.5:
                logger.warning("no common network (%s); the comparison goes on without it", err)
                common = None
            else:
                logger.warning("%s; trying %.2f", err, threshold - 0.05)
                threshold = round(threshold - 0.05, 2)

    # 5. special cases in the same space
    config = RoutingSpaceConfig.from_dict(
        yaml.safe_load((runs / "raw" / "config.yaml").read_text())["model"]
    )
    unet = write_special(
        config,
        "unet-like",
        unet_like(config),
        f"special case: U-Net-like route (Fig. 3b) in the {config.name} space",
        out / "models" / "unet-like.yaml",
    )
    fcn = write_special(
        config,
        "fcn-like",
        fcn_like(config),
        f"special case: FCN-32s-like single path (Fig. 3a) in the {config.name} space",
        out / "models" / "fcn-like.yaml",
    )

    # 6. retrain the static networks
    methods = [("raw", "Dynamic-Raw"), ("budget", "Dynamic-Budget")]
    statics = [("unet-like", unet, "U-Net-like"), ("fcn-like", fcn, "FCN-like")]
    if common is not None:
        statics.insert(0, ("common", common, "Common-Budget"))
    for name, spec, label in statics:
        run("train", str(spec), "--out", str(runs / name), *common_args)
        methods.append((name, label))

    # 7. compare
    compare = out / "compare"
    run(
        "compare",
        *(str(runs / name) for name, _ in methods),
        "--data",
        val_data,
        "--out",
        str(compare),
        "--names",
        *(label for _, label in methods),
    )

    # 8. docs
    if not args.no_docs:
        docs = Path(args.docs)
        docs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(report / "fig5_probability.png", docs / "fig5.png")
        shutil.copyfile(report / "routing_vs_scale.png", docs / "routing_vs_scale.png")
        mode_text = "--full" if args.full else "--quick"
        header = (
            "# Table 1 on synthetic data (generated)\n\n"
            f"Written by `python analysis/run_chain.py {mode_text}`: the `{config.name}` space "
            f"(L={config.num_layers}, width {config.base_channels}), {iters} training iterations "
            f"per model on {train_data}, evaluated on {settings.val_count} validation scenes of "
            f"{size}x{size}. "
            + (
                f"Common-Budget keeps the paths of Dynamic-Budget active in more than "
                f"{100 * threshold:g}% of the images. "
                if common is not None
                else ""
            )
            + "These numbers show that the chain runs end to end; they are not comparable with "
            "the paper's Cityscapes results.\n\n"
        )
        table = (compare / "table1.md").read_text(encoding="utf-8")
        (docs / "table1.md").write_text(header + table, encoding="utf-8")
        logger.info("docs refreshed in %s", docs)
    print(
        f"chain finished in {time.perf_counter() - started:.0f} s; report: {report / 'report.md'}"
        f", table: {compare / 'table1.md'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
