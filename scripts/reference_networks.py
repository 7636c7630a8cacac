"""The two reference gated networks end to end: train, record, plan, cut static networks, measure.

For each of the block-skipping network (:mod:`dynviz.gates.skipnet`: by default ConvNet-AIG's
straight-through Gumbel-sigmoid gates over average- and max-pooled features, trained with a target
execution rate of 0.5 per block; ``--gate-mode soft --gate-pool avg --target-rate -1 --budget 0.5``
is the earlier soft-gate form, whose gates end with one route for every input) and the mixture of
experts (:mod:`dynviz.gates.moe`, trained with a load balance):

1. train it on dynviz's synthetic scenes (:func:`dynviz.train.gated.train_gated`);
2. record the validation split into ``--out/<network>`` (:func:`dynviz.record.record`);
3. read the records back and take the common plan at 0.95 and the lossless plan
   (:func:`dynviz.analysis.gates.common_plan`);
4. build the static networks of both plans (``model.static(plan.keep(...))``);
5. print a table: parameters, MACs per input (the dynamic network's mean real cost from the
   records; a static network's exact cost, or its mean real cost where it kept gates), time per
   image (median of interleaved repeats, batch 1) and mIoU over the validation images; for the
   skipnet, how input-dependent its routes are on the validation images.

Run (about 2 to 4 minutes on one CPU thread)::

    .venv/bin/python scripts/reference_networks.py --out runs/reference --seed 0 --threads 1

The records folders must not exist yet (a folder is never completed with another run's network).
"""

from __future__ import annotations

import argparse
import logging
import platform
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from dynviz.analysis.gates import common_plan, option_usage
from dynviz.data import build_dataset
from dynviz.gates import build_moe, build_skipnet, collect
from dynviz.inference.metrics import ConfusionMatrix
from dynviz.model import ConfigError
from dynviz.record import read_records, record
from dynviz.support.timing import measure_calls
from dynviz.train.gated import GatedTraining, train_gated

logger = logging.getLogger("reference_networks")

MAX_WAIT = 0.05
"""A timing sample whose threads waited longer than this share of it for a CPU is taken again."""


@dataclass
class Cached:
    """A data set's items held in memory (the synthetic scenes are drawn on every access)."""

    items: list[dict[str, Any]]
    num_classes: int
    ignore_index: int
    spec: str
    split: str

    def __len__(self) -> int:
        return len(self.items)

    def image_id(self, i: int) -> str:
        return str(self.items[i]["image_id"])

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


@dataclass
class Row:
    name: str
    kept: str
    params: int
    macs: float
    miou: float
    seconds: float = float("nan")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the records")
    parser.add_argument("--seed", type=int, default=0, help="weights, data and batch order")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--iterations", type=int, default=2000, help="training steps each")
    parser.add_argument("--train-count", type=int, default=512, help="training images")
    parser.add_argument("--val-count", type=int, default=128, help="validation images")
    parser.add_argument("--size", type=int, default=64, help="image side")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="skipnet's target cost share (default: none; the target rate acts instead)",
    )
    parser.add_argument(
        "--target-rate",
        type=float,
        default=0.5,
        help="skipnet: ConvNet-AIG's target execution rate of every block (negative: none)",
    )
    parser.add_argument(
        "--gate-mode",
        choices=("gumbel", "soft"),
        default="gumbel",
        help="skipnet's gates in training: straight-through Gumbel-sigmoid or soft (x + p * body)",
    )
    parser.add_argument("--tau", type=float, default=1.0, help="skipnet: Gumbel temperature")
    parser.add_argument(
        "--gate-pool", choices=("avgmax", "avg"), default="avgmax", help="skipnet's gate pooling"
    )
    parser.add_argument("--balance", type=float, default=0.05, help="moe's load-balance weight")
    parser.add_argument("--repeats", type=int, default=15, help="timing rounds")
    parser.add_argument("--timing-images", type=int, default=32, help="images per timing round")
    return parser.parse_args(argv)


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return platform.processor() or "unknown CPU"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.processor() or "unknown CPU"


def load(spec: str, split: str) -> Cached:
    dataset = build_dataset(spec, split=split)
    items = [dataset[i] for i in range(len(dataset))]
    ignore = int(getattr(dataset, "ignore_index", 255))
    return Cached(items, dataset.num_classes, ignore, spec, split)


def mean_macs(net: nn.Module, images: list[torch.Tensor]) -> float:
    """A network's mean real cost per input: its exact cost without gates, else what ran."""
    try:
        graph = net.gate_graph()
    except ConfigError:
        return float(net.macs())
    total = 0.0
    for x in images:
        with collect(graph) as seen:
            net(x)
        for point, decision in seen.complete().items():
            costs = torch.tensor([o.macs for o in graph[point].options], dtype=torch.float64)
            total += float(decision.ran[0].double() @ costs)
    total += graph.base_macs * len(images)
    return total / len(images)


def miou(net: nn.Module, data: Cached) -> float:
    confusion = ConfusionMatrix(data.num_classes, data.ignore_index)
    for item in data.items:
        confusion.update(net(item["image"][None]).argmax(1)[0], item["label"])
    return confusion.miou()


def describe(keep: dict[str, tuple[str, ...]], network: str) -> str:
    """What a plan keeps: the blocks that run, or the experts."""
    if network == "skipnet":
        kept = [p.removeprefix("block") for p, o in keep.items() if "run" in o]
        return "blocks " + ",".join(kept) if kept else "no block"
    kept = [o.removeprefix("expert") for o in keep["moe"]]
    return "experts " + ",".join(kept) if kept else "no expert"


def train(name: str, args: argparse.Namespace, data: Cached) -> tuple[nn.Module, GatedTraining]:
    torch.manual_seed(args.seed)
    size = (args.size, args.size)
    if name == "skipnet":
        model = build_skipnet(
            num_classes=data.num_classes,
            size=size,
            gate_mode=args.gate_mode,
            tau=args.tau,
            gate_pool=args.gate_pool,
        )
        rate = None if args.target_rate < 0 else args.target_rate
        extra = dict(budget=args.budget, budget_weight=2.0, target_rates=rate, target_weight=2.0)
    else:
        model = build_moe(num_classes=data.num_classes, size=size)
        extra = dict(balance_weight=args.balance)
    start = time.perf_counter()
    result = train_gated(
        model,
        data,
        iterations=args.iterations,
        batch_size=8,
        lr=2e-3,
        seed=args.seed,
        ignore_index=data.ignore_index,
        log_every=max(1, args.iterations // 4),
        **extra,
    )
    logger.info("%s trained in %.0f s", name, time.perf_counter() - start)
    return model.eval(), result


def networks(name: str, model: nn.Module, records: Any) -> dict[str, tuple[nn.Module, str]]:
    """The dynamic network and the static networks of its plans, with what each keeps."""
    graph = records.graph
    plan = common_plan(records.decisions, graph, threshold=0.95)
    nets = {"dynamic": (model, "all, gated")}
    nets["static, common@0.95"] = (model.static(plan.keep()), describe(plan.keep(), name))
    lossless = plan.keep(lossless=True)
    nets["static, lossless"] = (model.static(lossless), describe(lossless, name))
    if name == "skipnet" and any(len(o) == 2 for o in lossless.values()):
        gated = model.static(lossless, keep_gates=True)
        nets["lossless, gates kept"] = (gated, describe(lossless, name))
    return nets


def measure(
    name: str, model: nn.Module, args: argparse.Namespace, val: Cached, out: Path
) -> list[Row]:
    record(model, val, out, builder=f"dynviz.gates.{name}:build_{name}", progress=False)
    records = read_records(out)
    usage = option_usage(records.decisions)
    logger.info("%s option usage:\n%s", name, usage[["point", "option", "usage"]].to_string())
    nets = networks(name, model, records)
    images = [item["image"][None] for item in val.items]
    rows = []
    with torch.inference_mode():
        for label, (net, kept) in nets.items():
            net.eval()
            macs = (
                records.images["real_gmacs"].mean() * 1e9
                if net is model
                else mean_macs(net, images)
            )
            params = sum(p.numel() for p in net.parameters())
            rows.append(Row(label, kept, params, macs, miou(net, val)))
        timed = images[: args.timing_images]
        calls = {label: (lambda n=net: [n(x) for x in timed]) for label, (net, _) in nets.items()}
        timings = measure_calls(calls, repeats=args.repeats, warmup=1, max_wait=MAX_WAIT)
    for row in rows:
        row.seconds = timings.median[row.name] / len(timed)
    wait = timings.median_wait
    logger.info(
        "%s timing: %d samples retaken, %d still waited more than %.0f%% for a CPU (median %s)",
        name,
        timings.retaken,
        timings.contended,
        100 * MAX_WAIT,
        "unknown" if wait is None else f"{100 * wait:.1f}%",
    )
    return rows


def routes(model: nn.Module, val: Cached) -> str:
    """How input-dependent the skip gates are on the validation images: each block's share of
    inputs it runs for, the distinct routes, how well the route tells the scene's regime (the
    share of images whose route's most common regime is theirs, against always guessing the most
    common regime) and Spearman's rho of the real cost against the largest object's area."""
    images = torch.stack([item["image"] for item in val.items])
    with torch.inference_mode():
        _, gates = model.forward_gates(images)
    names = list(gates)
    ran = torch.stack([gates[n].ran[:, 1] for n in names], 1)  # (N, blocks)
    graph = model.gate_graph()
    macs = torch.tensor([graph[n].options[1].macs for n in names], dtype=torch.float64)
    cost = pd.Series((ran.double() @ macs).numpy())
    route = ["".join("1" if r else "0" for r in row) for row in ran.tolist()]
    regime = [int(item["stats"]["regime_code"]) for item in val.items]
    area = pd.Series([float(item["stats"]["max_object_area"]) for item in val.items])
    frame = pd.DataFrame({"route": route, "regime": regime})
    told = frame.groupby("route")["regime"].agg(lambda r: r.value_counts().iloc[0]).sum()
    guess = frame["regime"].value_counts().iloc[0]
    rho = cost.rank().corr(area.rank()) if cost.std() > 0 else float("nan")  # Spearman
    shares = ", ".join(f"{n} {float(ran[:, i].double().mean()):.2f}" for i, n in enumerate(names))
    counts = frame["route"].value_counts()
    common = ", ".join(f"{r} {c}" for r, c in counts.head(4).items())
    return (
        f"  routes (validation): share of inputs each block runs for: {shares}\n"
        f"  {len(counts)} distinct routes (block1.., 1 runs), most common: {common}\n"
        f"  the route tells the regime (tiny/huge/mixed) of {told / len(route):.2f} of the images "
        f"(always the most common: {guess / len(route):.2f}); Spearman rho(cost, "
        f"max_object_area) {rho:.2f}"
    )


def table(name: str, rows: list[Row], training: GatedTraining) -> str:
    mu = "" if training.mu is None else f", budget mu {training.mu}"
    lines = [
        f"{name}: final training cross-entropy {training.final_loss:.3f}, expected cost share "
        f"{training.final_share:.3f}{mu}, load balance {training.balance[-1]:.3f}",
        f"  {'network':<22} {'kept':<24} {'params':>8} {'MACs/input':>11} {'ms/image':>9} "
        f"{'x dynamic':>9} {'mIoU':>7}",
    ]
    base = rows[0].seconds
    for r in rows:
        lines.append(
            f"  {r.name:<22} {r.kept:<24} {r.params:>8,} {r.macs / 1e6:>10.2f}M "
            f"{r.seconds * 1e3:>9.3f} {r.seconds / base:>9.2f} {r.miou:>7.4f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    spec = f"synthetic:size={args.size}x{args.size},classes=4,seed={args.seed}"
    train_set = load(f"{spec},count={args.train_count}", "train")
    val = load(f"{spec},count={args.val_count}", "val")
    folders = {name: args.out / name for name in ("skipnet", "moe")}
    taken = [str(f) for f in folders.values() if f.exists()]
    if taken:
        logger.error("records folders exist already: %s (give another --out)", taken)
        return 2
    start = time.perf_counter()
    tables = []
    for name, folder in folders.items():
        model, training = train(name, args, train_set)
        text = table(name, measure(name, model, args, val, folder), training)
        if name == "skipnet":
            text += "\n" + routes(model, val)
        tables.append(text)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    print(f"command: {command}")
    print(
        f"machine: {cpu_model()}, {torch.get_num_threads()} torch thread(s), torch "
        f"{torch.__version__}; total {time.perf_counter() - start:.0f} s"
    )
    print(
        f"data: synthetic scenes {args.size}x{args.size}, 4 classes, {args.train_count} train / "
        f"{args.val_count} val images; time per image: batch 1, median of {args.repeats} "
        f"interleaved rounds over {min(args.timing_images, args.val_count)} validation images"
    )
    for text in tables:
        print()
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
