"""Do the demo's routes hinge on closing weak paths, or on its scenes? (issue 20, docs/demo.md)

For each seed, trains Dynamic-Budget alone with the demo's settings (``dynviz.demo.chain.DEMO``)
but without closing weak paths (``close_below`` 0), into ``OUT/seedN`` (a finished run is
reused). Then it records the network on ``--val`` validation scenes of that seed (the first 96
are the demo's own) with its active threshold at each of ``--thresholds``, as ``close_below``
would leave it (after PreciseBN), and prints per seed and threshold: mIoU, mean MMACs, the
regimes' mean costs, the cost spread (dearest / cheapest tenth), the dearest image's cost over the
cheapest's (what the paper's Table 1 gives: 1.11-1.12x), how far apart the regimes' mean costs
are, and the nearest-centroid classifier's accuracy against chance
(:mod:`dynviz.analysis.adaptivity`). ``--scenes`` trains and records on a variant of the scenes
(:class:`dynviz.data.synthetic.SceneOptions`), ``--mu`` and ``--lambda`` with another budget,
``--budget-gate`` with other gates, ``--gate-bias`` with the gates' bias initialised to another
value, ``--gate-warmup`` with another share of the run before the gates route, ``--bn-samples
routed`` with each node's BatchNorm statistics taken over the samples routed through it.

Usage (the sixth round of docs/demo.md, a row of the seventh, the eighth round's demo)::

    python analysis/closing_thresholds.py --seeds 0 1 2 3 4 --out runs/closing --budget-gate full
    python analysis/closing_thresholds.py --seeds 0 1 --thresholds 0.3 --budget-gate full
        --scenes tiny=3-8,checker=2.4-4 --out runs/sparse-coarse      (one command)
    python analysis/closing_thresholds.py --seeds 0 1 2 3 4 --thresholds 0.3 0.5 --out runs/gates
    python analysis/closing_thresholds.py --seeds 0 1 2 3 4 --thresholds 0.3 0.5 --gate-bias 1
        --out runs/bias1                                              (one command; the ninth)
    python analysis/closing_thresholds.py --seeds 0 1 2 3 4 --thresholds 0.3 0.5
        --scenes large=radial,small=hue --out runs/radial-hue         (one command; the tenth)
    python analysis/closing_thresholds.py --seeds 0 1 2 3 4 --thresholds 0.3 --lambda 0.5
        --mu 0.3 --out runs/lambda05-mu03                             (one command; the eleventh)
    python analysis/closing_thresholds.py --seeds 0 1 2 3 4 --thresholds 0.3 0.5 --bn-samples
        routed --out runs/routed-bn                                   (one command; the twelfth)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from concurrent.futures import ProcessPoolExecutor
from math import nan
from pathlib import Path

import torch

from dynviz.analysis.adaptivity import records_adaptivity
from dynviz.analysis.costs import cost_statistics
from dynviz.data import build_dataset
from dynviz.data.errors import DataError
from dynviz.data.synthetic import REGIME_CODES
from dynviz.demo.chain import DEMO, ChainSettings
from dynviz.demo.workspace import prepare
from dynviz.model.checkpoint import load_model
from dynviz.model.config import GateKind
from dynviz.record import read_records, record
from dynviz.train import TrainConfig, train

THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def run_seed(
    seed: int, out: Path, val: int, thresholds: tuple[float, ...], settings: ChainSettings
) -> list[dict]:
    """Train (or reuse) seed ``seed``'s open Dynamic-Budget, record it at every threshold."""
    torch.set_num_threads(1)
    settings = dataclasses.replace(settings, seed=seed, close_below=0.0)
    folder = out / f"seed{seed}"
    (folder / "models").mkdir(parents=True, exist_ok=True)
    chain = prepare(folder, settings, progress=False)
    config = TrainConfig.from_dict(chain.configs["budget"])
    done = (Path(config.out) / "checkpoint_latest.pt").is_file()
    train(config, resume=done, label=f"seed {seed}")
    model, _ = load_model(config.out)
    space = model.config
    data = build_dataset(dataclasses.replace(settings, val_count=val).val_data, split="val")
    rows = []
    for t in thresholds:
        model.config = dataclasses.replace(space, active_threshold=t)
        path = folder / "records" / f"t{t:g}"
        if not (path / "images").is_dir():
            record(model, data, path, name=f"t{t:g}", progress=False)
        records = read_records(path)
        costs = cost_statistics(records.images).iloc[0]
        row = {"scenes": settings.scenes, "mu": settings.budget_mu, "lambda": config.budget_lambda}
        row["gate"] = model.config.gate.value
        row["gate_bias"] = model.config.gate_bias_init
        row["gate_warmup"] = config.gate_warmup  # as the training ran it
        row["bn_samples"] = config.bn_samples
        row |= {"seed": seed, "threshold": t}
        row["miou"] = float(costs["miou"])
        row["mmacs"] = 1e3 * float(costs["real_gmacs_mean"])
        means = records.images.groupby("stat_regime_code")[["real_gmacs", "miou"]].mean()
        for regime, code in REGIME_CODES.items():  # each regime's mean cost and image mIoU
            row[f"mmacs_{regime}"] = 1e3 * float(means["real_gmacs"].get(code, nan))
            row[f"miou_{regime}"] = float(means["miou"].get(code, nan))
        for limit in dict.fromkeys((DEMO.val_count, val)):  # the demo's images, then all
            kept = records.images.sort_values("image_id").head(limit)
            gates = records.gates[records.gates["image_id"].isin(kept["image_id"])]
            a = records_adaptivity(dataclasses.replace(records, images=kept, gates=gates))
            row[f"spread_{limit}"] = a.cost_spread
            row[f"max_min_{limit}"] = a.cost_range
            row[f"apart_{limit}"] = a.regime_difference
            row[f"classifier_{limit}"] = a.classifier_accuracy
            row[f"chance_{limit}"] = a.chance
            row[f"rho_{limit}"] = a.scale_correlation
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS))
    parser.add_argument("--val", type=int, default=288, help="validation scenes (default 288)")
    parser.add_argument("--jobs", type=int, default=2, help="seeds side by side (default 2)")
    parser.add_argument("--out", default="runs/closing", help="output folder")
    parser.add_argument("--iters", type=int, default=DEMO.iters, help="(default: the demo's)")
    parser.add_argument("--mu", type=float, default=DEMO.budget_mu, help="(default: the demo's)")
    parser.add_argument(
        "--lambda",
        dest="lam",
        type=float,
        default=DEMO.budget_lambda,
        help="the budget loss weight (default: the demo's)",
    )
    parser.add_argument(
        "--scenes", default="", help="a variant of the scenes, e.g. tiny=3-8 (default: the demo's)"
    )
    parser.add_argument(
        "--budget-gate",
        choices=[kind.value for kind in GateKind],
        default=DEMO.budget_gate,
        help="Dynamic-Budget's gates (default: the demo's)",
    )
    parser.add_argument(
        "--gate-bias",
        type=float,
        default=DEMO.gate_bias_init,
        help="the gates' initial bias (default: the demo's)",
    )
    parser.add_argument(
        "--gate-warmup",
        type=float,
        default=DEMO.gate_warmup,
        help="share of the run with every path open, gates idle (default: the demo's)",
    )
    parser.add_argument(
        "--bn-samples",
        choices=("batch", "routed"),
        default=DEMO.bn_samples,
        help="the samples each node's BatchNorm statistics cover in training (default: the demo's)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = dataclasses.replace(
            DEMO,
            iters=args.iters,
            budget_mu=args.mu,
            budget_lambda=args.lam,
            scenes=args.scenes,
            budget_gate=args.budget_gate,
            gate_bias_init=args.gate_bias,
            gate_warmup=args.gate_warmup,
            bn_samples=args.bn_samples,
        )
    except DataError as err:
        parser.error(f"--scenes: {err}")
    out = Path(args.out)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [
            pool.submit(run_seed, s, out, args.val, tuple(args.thresholds), settings)
            for s in args.seeds
        ]
        rows = [row for f in futures for row in f.result()]
    (out / "closing.json").write_text(json.dumps(rows, indent=1))
    demo, val = DEMO.val_count, args.val  # the demo's images, then all (run_seed's row keys)
    print(
        f"seed  t    mIoU  MMACs  tiny/mixed/huge  spread {demo}/all  max/min {demo}/all"
        f"  apart {demo}/all"
        f"   classifier {demo}/all (chance)"
    )
    for r in rows:
        by_regime = "/".join(f"{r[f'mmacs_{regime}']:.2f}" for regime in ("tiny", "mixed", "huge"))
        print(
            f"{r['seed']:>4}  {r['threshold']:<3g}  {100 * r['miou']:4.1f}  {r['mmacs']:5.2f}"
            f"  {by_regime}"
            f"  {r[f'spread_{demo}']:.2f}x/{r[f'spread_{val}']:.2f}x"
            f"  {r[f'max_min_{demo}']:.2f}x/{r[f'max_min_{val}']:.2f}x"
            f"  {100 * r[f'apart_{demo}']:4.1f}%/{100 * r[f'apart_{val}']:4.1f}%"
            f"  {100 * r[f'classifier_{demo}']:.0f}%/{100 * r[f'classifier_{val}']:.0f}%"
            f" ({100 * r[f'chance_{demo}']:.0f}%/{100 * r[f'chance_{val}']:.0f}%)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
