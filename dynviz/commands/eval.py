"""``dynviz eval RUN_DIR|CHECKPOINT [--data SPEC] [--split val] [--json] [--size H W]
[--limit N] [--aug flip scales=...] [--counting paper|official]
[--format cityscapes-test --out DIR] [--evaluator cityscapes] [--check-flops N]
[--config FILE] [KEY=VALUE ...]``: dataset mIoU and the real and expected GMACs of a run or
checkpoint (:func:`dynviz.inference.evaluate.evaluate`), as a table or one JSON object; optionally
the Cityscapes benchmark files and the official evaluator's score
(:mod:`dynviz.data.cityscapes_eval`), and the executed network of N images counted by an
independent counter beside the analytic MACs of their routes (:mod:`dynviz.model.flopcheck`)."""

from __future__ import annotations

import argparse
import math
import tempfile
from typing import TYPE_CHECKING, Any

from dynviz.commands import (
    add_aug_option,
    add_counting_option,
    add_resize_option,
    add_run_options,
    add_settings_options,
    guarded,
    positive_int,
    print_json,
    split_settings,
)
from dynviz.data import Resize, build_dataset
from dynviz.data.cityscapes_eval import CityscapesWriter, evaluate_cityscapes, ground_truth_files
from dynviz.inference.evaluate import EvalResult, evaluate
from dynviz.inference.tta import Augment
from dynviz.model import ConfigError
from dynviz.model.checkpoint import load_model, run_data_spec
from dynviz.support.distributed import init_distributed
from dynviz.units import mac_unit

if TYPE_CHECKING:
    from dynviz.model.flopcheck import FlopCheck

__all__ = ["configure_parser", "main"]

INTERMIXED = True  # KEY=VALUE overrides may follow the options


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dynviz eval``."""
    parser.add_argument(
        "checkpoint",
        nargs="?",
        metavar="RUN_DIR|CHECKPOINT",
        help="a run directory (its best, else latest, checkpoint) or a .pt file",
    )
    add_settings_options(parser)
    parser.add_argument(
        "--data", metavar="SPEC", help="dataset spec (default: the run's validation data)"
    )
    parser.add_argument("--split", default="val", help="split to evaluate (default: val)")
    add_resize_option(parser)
    parser.add_argument("--limit", type=int, metavar="N", help="evaluate the first N images")
    add_aug_option(parser)
    add_counting_option(parser)
    add_run_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--format",
        choices=("cityscapes-test",),
        help="also write the predictions as files: cityscapes-test = labelIds PNGs named for "
        "the Cityscapes benchmark server, into --out",
    )
    parser.add_argument("--out", metavar="DIR", help="folder of the --format files")
    parser.add_argument(
        "--check-flops",
        type=positive_int,
        metavar="N",
        help="also count the executed network of the first N images with fvcore's "
        "FlopCountAnalysis (torch's FlopCounterMode without fvcore) beside the analytic MACs "
        "of their routes (one forward each, no --aug); exit 1 if they differ",
    )
    parser.add_argument(
        "--evaluator",
        choices=("dynviz", "cityscapes"),
        default="dynviz",
        help="cityscapes: also score with cityscapesscripts' evalPixelLevelSemanticLabeling "
        "(needs the split's *_gtFine_labelIds.png)",
    )


def _cost_rows(costs: dict[str, Any], *, title: str, note: str = "") -> list[str]:
    """A blank line, a header in the unit of the largest cost (:mod:`dynviz.units`), and one
    ``mean max min`` row per entry of ``costs``."""
    unit = mac_unit([value for stats in costs.values() for value in (stats.mean, stats.max)])
    lines = ["", f"{title + unit.label:<12}{'mean':>10}{'max':>10}{'min':>10}{note}"]
    for label, stats in costs.items():
        mean, high, low = (unit(v) for v in (stats.mean, stats.max, stats.min))
        lines.append(f"{label:<12}{mean:>10.4f}{high:>10.4f}{low:>10.4f}")
    return lines


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
    costs = {"real": result.real_gmacs, "expected": result.expected_gmacs}
    lines += _cost_rows(costs, title="")
    if result.aug_real_gmacs:
        lines += _cost_rows(result.aug_real_gmacs, title="real ", note="  per variant")
    lines += ["", "per-class IoU"]
    width = max(len(n) for n in result.class_names) + 2
    for name, value in zip(result.class_names, result.per_class_iou, strict=True):
        shown = "n/a" if not math.isfinite(value) else f"{100 * value:.2f} %"
        lines.append(f"  {name:<{width}}{shown}")
    return "\n".join(lines)


def _check_output_options(args: argparse.Namespace) -> None:
    """``--format`` and ``--out`` go together."""
    if args.format and not args.out:
        raise ConfigError(f"--format {args.format} needs --out DIR")
    if args.out and not args.format:
        raise ConfigError("--out is the folder of --format files; add --format cityscapes-test")


def _run_evaluation(
    args: argparse.Namespace, model: Any, dataset: Any, device: Any, aug: Augment | None
) -> tuple[EvalResult, dict[str, Any] | None, CityscapesWriter | None]:
    """Evaluate ``model`` on ``dataset``; with ``--format`` or ``--evaluator cityscapes`` also
    write the benchmark files (into a scratch folder without ``--out``) and score them.

    Returns:
        ``(result, official, writer)``: ``official`` is the Cityscapes evaluator's result or
        None, ``writer`` the file writer or None.
    """
    writer = None
    scratch = None
    if args.format or args.evaluator == "cityscapes":
        out = args.out
        if out is None:
            scratch = tempfile.TemporaryDirectory(prefix="dynviz-cityscapes-")
            out = scratch.name
        writer = CityscapesWriter(out, dataset)
    try:
        result = evaluate(
            model,
            dataset,
            device=device,
            limit=args.limit,
            workers=args.workers,
            progress=args.progress,
            aug=aug,
            on_prediction=writer,
            counting=args.counting,
        )
        official = None
        if args.evaluator == "cityscapes":
            assert writer is not None
            truths = ground_truth_files(dataset, writer.files)
            official = evaluate_cityscapes(writer.files, truths)
    finally:
        if scratch is not None:
            scratch.cleanup()
    return result, official, writer


def _print_json_result(
    args: argparse.Namespace,
    result: EvalResult,
    meta: dict[str, Any],
    spec: str,
    official: dict[str, Any] | None,
    writer: CityscapesWriter | None,
    checks: list[tuple[str, FlopCheck]],
    differs: bool,
) -> None:
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
    if official is not None:
        payload["cityscapes_evaluator"] = official
    if checks:
        payload["check_flops"] = {
            "images": [{"image_id": i, **c.to_json()} for i, c in checks],
            "agree": not differs,
        }
    if writer is not None and args.out:
        payload["files"] = {"format": args.format, "out": args.out, "count": len(writer.files)}
    print_json(payload)


def _print_text_result(
    args: argparse.Namespace,
    result: EvalResult,
    meta: dict[str, Any],
    spec: str,
    aug: Augment | None,
    official: dict[str, Any] | None,
    writer: CityscapesWriter | None,
    checks: list[tuple[str, FlopCheck]],
) -> None:
    header = {
        "checkpoint": f"{meta['path']} (iteration {meta.get('iteration')})",
        "data": f"{spec} [{args.split}]",
        "size": f"{args.size[0]}x{args.size[1]}" if args.size else "native",
        "counting": f"{result.counting} (GMACs)",
    }
    if aug is not None:
        header["aug"] = f"{aug} ({len(aug.variants)} forward passes per image)"
    print(_format_table(result, header))
    if official is not None:
        shown = "n/a" if official["miou"] is None else f"{100 * official['miou']:.2f} %"
        print(f"\ncityscapes evaluator (evalPixelLevelSemanticLabeling): mIoU {shown}")
    if writer is not None and args.out:
        print(f"\nwrote {len(writer.files)} {args.format} file(s) to {args.out}")
    if checks:
        print()
        print(format_flop_checks(checks))


def _main(args: argparse.Namespace) -> int:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = split_settings(parser, args, "checkpoint")
    aug = Augment.parse(args.aug)
    _check_output_options(args)
    info = init_distributed(args.device)
    if info.world_size > 1 and (args.format or args.evaluator == "cityscapes"):
        raise ConfigError("--format and --evaluator cityscapes run in one process (no torchrun)")
    model, meta = load_model(args.checkpoint)
    spec = args.data or run_data_spec(meta)
    if not spec:
        raise ConfigError(f"{meta['path']}: records no training data; pass --data SPEC")
    transform = Resize(tuple(args.size)) if args.size else None
    dataset = build_dataset(spec, split=args.split, transform=transform)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit} must be >= 1")
    model.to(info.device)
    result, official, writer = _run_evaluation(args, model, dataset, info.device, aug)
    if not info.is_main:
        return 0
    checks = []
    if args.check_flops:
        from dynviz.model.flopcheck import check_dataset

        checks = check_dataset(model, dataset, args.check_flops)
    differs = any(
        check.analytic_by(op=op) != check.counted_by(op=op)
        for _, check in checks
        for op in check.compared
    )
    if args.json:
        _print_json_result(args, result, meta, spec, official, writer, checks, differs)
    else:
        _print_text_result(args, result, meta, spec, aug, official, writer, checks)
    return 1 if differs else 0


def format_flop_checks(checks: list[tuple[str, FlopCheck]]) -> str:
    """One row per image: its route's paths, the analytic MACs of what ran, the counter's and
    the relative difference (the compared operators: convolutions, and with fvcore also batch
    norms, interpolation and pooling)."""
    from dynviz.model.flopcheck import relative_difference

    first = checks[0][1]
    name = {"fvcore": "fvcore FlopCountAnalysis", "torch": "torch FlopCounterMode"}
    ops = ", ".join(first.compared)
    lines = [
        f"flops check: {name[first.counter]} on the executed network of {len(checks)} "
        f"image(s) against the analytic MACs of their routes (complete counting; {ops})",
        f"{'image':<28}{'paths':>8}{'analytic MMACs':>16}{'counted MMACs':>16}{'difference':>12}",
    ]
    for image_id, check in checks:
        a, c = check.analytic_by(), check.counted_by()
        rel = relative_difference(c, a)
        shown = "0" if rel == 0 else f"{100 * rel:+.4f}%"
        paths = f"{check.active_paths}/{check.total_paths}"
        lines.append(f"{image_id:<28}{paths:>8}{a / 1e6:>16.4f}{c / 1e6:>16.4f}{shown:>12}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """``dynviz eval``: print mIoU and GMACs of a run or checkpoint."""
    return guarded(_main, args)
