"""``dynviz eval RUN_DIR|CHECKPOINT [--data SPEC] [--split val] [--json] [--size H W]
[--limit N]``: dataset mIoU and the real and expected GMACs of a run or checkpoint
(:func:`dynviz.evaluate.evaluate`), as a table or one JSON object."""

from __future__ import annotations

import argparse
import json
import math
import sys

import torch

from dynviz.checkpoint import load_model, run_data_spec
from dynviz.commands import add_resize_option, add_run_options, guarded
from dynviz.data import Resize, build_dataset
from dynviz.distributed import init_distributed
from dynviz.evaluate import EvalResult, evaluate
from dynviz.model import ConfigError

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dynviz eval``."""
    parser.add_argument(
        "checkpoint",
        metavar="RUN_DIR|CHECKPOINT",
        help="a run directory (its best, else latest, checkpoint) or a .pt file",
    )
    parser.add_argument(
        "--data", metavar="SPEC", help="dataset spec (default: the run's validation data)"
    )
    parser.add_argument("--split", default="val", help="split to evaluate (default: val)")
    add_resize_option(parser)
    parser.add_argument("--limit", type=int, metavar="N", help="evaluate the first N images")
    add_run_options(parser, threads=True)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _format_table(result: EvalResult, header: dict[str, str]) -> str:
    lines = [f"{k:<12}{v}" for k, v in header.items()]
    lines += [
        f"{'images':<12}{result.num_images}",
        f"{'params':<12}{result.params:,}",
        f"{'mIoU':<12}{100 * result.miou:.2f} %",
        f"{'pixel acc':<12}{100 * result.pixel_accuracy:.2f} %",
    ]
    if result.expected_cost_ratio is not None:
        lines.append(f"{'E / C_all':<12}{result.expected_cost_ratio:.4f}")
    lines += ["", f"{'GMACs':<12}{'mean':>10}{'max':>10}{'min':>10}"]
    for label, stats in (("real", result.real_gmacs), ("expected", result.expected_gmacs)):
        lines.append(f"{label:<12}{stats.mean:>10.4f}{stats.max:>10.4f}{stats.min:>10.4f}")
    lines += ["", "per-class IoU"]
    width = max(len(n) for n in result.class_names) + 2
    for name, value in zip(result.class_names, result.per_class_iou, strict=True):
        shown = "n/a" if not math.isfinite(value) else f"{100 * value:.2f} %"
        lines.append(f"  {name:<{width}}{shown}")
    return "\n".join(lines)


def _main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    info = init_distributed(args.device)
    model, meta = load_model(args.checkpoint)
    spec = args.data or run_data_spec(meta)
    if not spec:
        raise ConfigError(f"{meta['path']}: records no training data; pass --data SPEC")
    transform = Resize(tuple(args.size)) if args.size else None
    dataset = build_dataset(spec, split=args.split, transform=transform)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit} must be >= 1")
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    model.to(info.device)
    result = evaluate(
        model,
        dataset,
        device=info.device,
        limit=args.limit,
        workers=args.workers,
        progress=progress and not args.json,
    )
    if not info.is_main:
        return 0
    if args.json:
        payload = result.to_dict()
        payload.update(
            {
                "checkpoint": meta["path"],
                "sha256": meta["sha256"],
                "iteration": meta.get("iteration"),
                "data": spec,
                "split": args.split,
            }
        )
        print(json.dumps(payload))
    else:
        header = {
            "checkpoint": f"{meta['path']} (iteration {meta.get('iteration')})",
            "data": f"{spec} [{args.split}]",
            "size": f"{args.size[0]}x{args.size[1]}" if args.size else "native",
        }
        print(_format_table(result, header))
    return 0


def main(args: argparse.Namespace) -> int:
    """``dynviz eval``: print mIoU and GMACs of a run or checkpoint."""
    return guarded(_main, args)
