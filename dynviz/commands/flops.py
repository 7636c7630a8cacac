"""``dynviz flops``: MACs and parameters of a model, by component, and the special-case table
(computed by :mod:`dynviz.model.zoo`).

``--check`` also counts the executed network with an independent counter (fvcore's
``FlopCountAnalysis``, else torch's ``FlopCounterMode``; :mod:`dynviz.model.flopcheck`) and prints
it beside the analytic MACs of what ran, with the relative difference: a static network on any
image, a dynamic one on ``--image`` (the route the gates take for it)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dynviz.commands import add_threads_option, positive_int, set_threads
from dynviz.errors import EXIT_BAD_FILE, EXIT_USAGE, BadFileError, UserError
from dynviz.model.config import ConfigError
from dynviz.model.cost import Counting
from dynviz.model.flopcheck import OPERATOR_NAMES, FlopCheck, FlopCounter
from dynviz.model.route import Route
from dynviz.model.zoo import ModelCost, load_spec, model_cost, special_cases
from dynviz.units import GIGA, mac_unit

__all__ = ["DEFAULT_SIZE", "configure_parser", "format_check", "main"]

DEFAULT_SIZE = (1024, 2048)
"""The input size of the tables when neither --size nor --image gives one."""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", nargs="?", help="preset name or YAML path, a checkpoint or a run folder"
    )
    parser.add_argument(
        "--size",
        nargs=2,
        type=positive_int,
        default=None,
        metavar=("H", "W"),
        help=f"input size (default: a run's or checkpoint's training crop, else "
        f"{DEFAULT_SIZE[0]} {DEFAULT_SIZE[1]}; with --image, the image's own size)",
    )
    parser.add_argument(
        "--counting",
        choices=[c.value for c in Counting],
        default="paper",
        help="paper: the official rules; complete: also interpolation, adds, the initial cell "
        "(both at the input padded to a multiple of 32, as the network runs it); official: what "
        "the official code reports at that size (square decoder, every gate, no padding)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--special-cases", action="store_true", help="the special cases beside the paper's Table 1"
    )
    parser.add_argument(
        "--time",
        action="store_true",
        help="also time each node on this machine (cell op, gate, transforms, "
        "decoder lateral per scale) beside its MACs",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="count the executed network with fvcore's FlopCountAnalysis (torch's "
        "FlopCounterMode without fvcore) beside the analytic MACs of what ran; exit 1 if they "
        "differ",
    )
    parser.add_argument(
        "--image",
        metavar="IMAGE",
        help="the image --check runs (a dynamic network's route depends on it; resized to "
        "--size when given)",
    )
    parser.add_argument(
        "--counter",
        choices=[c.value for c in FlopCounter],
        default=FlopCounter.AUTO.value,
        help="--check's counter (default auto: fvcore when installed, else torch)",
    )
    add_threads_option(parser)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _print_model(cost: ModelCost, *, sized: str = "") -> None:
    h, w = cost.size
    ch, cw = cost.counted_size or cost.size
    where = f"at {h}x{w}" + (f" ({sized})" if sized else "")
    if cost.counting == "official":
        where += f", counted at {ch}x{cw} (the size given, unpadded, as officially)"
    elif (ch, cw) != (h, w):
        where += f", counted at {ch}x{cw} (the input padded as the network runs it)"
    print(f"{cost.name} ({cost.kind}) {where}, {cost.counting} counting")
    unit = mac_unit(cost.gmacs)
    rows = [["component", unit.label, "share"]]
    for k, v in cost.breakdown.items():
        rows.append([k, f"{unit(v / GIGA):.3f}", f"{100 * v / cost.macs:.1f}%"])
    rows.append(["total", f"{unit(cost.gmacs):.3f}", "100.0%"])
    print(_table(rows))
    print()
    rows = [["parameters", "count"]]
    rows += [[k, f"{v:,}"] for k, v in cost.params_breakdown.items()]
    print(_table(rows))
    if cost.kind == "dynamic":
        print(f"\nDynamic model: {unit.label} with every path open (the upper bound).")


def _print_special(costs: list[ModelCost]) -> None:
    unit = mac_unit(c.gmacs for c in costs)  # one prefix for the column (GMACs at paper sizes)
    rows = [["model", "params (M)", "paper", "diff", unit.label, "paper", "diff"]]
    for c in costs:
        paper = c.paper or {}
        pp, pg = paper.get("params_m"), paper.get("gflops")
        rows.append(
            [
                c.name,
                f"{c.params / 1e6:.2f}",
                f"{pp:.1f}" if pp else "-",
                f"{100 * (c.params / 1e6 - pp) / pp:+.1f}%" if pp else "-",
                f"{unit(c.gmacs):.1f}",
                f"{unit(pg):.1f}" if pg else "-",
                f"{100 * (c.gmacs - pg) / pg:+.1f}%" if pg else "-",
            ]
        )
    print(_table(rows))
    for c in costs:
        if c.notes:
            print(f"\n{c.name}: {' '.join(c.notes.split())}")


def _difference(counted: int, analytic: int) -> str:
    from dynviz.model.flopcheck import relative_difference

    rel = relative_difference(counted, analytic)
    return "0" if rel == 0 else f"{100 * rel:+.4f}%"


def format_check(check: FlopCheck, *, image: str | None = None) -> str:
    """The text of a flop check: by component and by operator, analytic MACs of what ran, the
    counter's, and the relative difference; then what the counter does not count."""
    total = max(check.analytic_by(), 1)
    unit = mac_unit(total / GIGA)  # the prefix of the largest value, for every column
    scale = GIGA / unit.factor  # MACs per displayed unit
    name = {"fvcore": "fvcore FlopCountAnalysis", "torch": "torch FlopCounterMode"}[check.counter]
    h, w = check.size
    route = (
        f"its route: {check.active_paths} of {check.total_paths} paths"
        if check.kind == "dynamic"
        else f"{check.kind} network"
    )
    lines = [
        f"check: {name} on the executed network, {image or 'a random image'} at {h}x{w} "
        f"({route}), against the analytic MACs of what ran (complete counting)"
    ]
    head = ["", f"analytic {unit.label}", f"{check.counter} {unit.label}", "difference"]
    rows = [["component", *head[1:]]]
    for component in check.components:
        a, c = check.analytic_by(component=component), check.counted_by(component=component)
        if a or c:
            rows.append([component, f"{a / scale:.4f}", f"{c / scale:.4f}", _difference(c, a)])
    a, c = check.analytic_by(), check.counted_by()
    rows.append(["total", f"{a / scale:.4f}", f"{c / scale:.4f}", _difference(c, a)])
    lines += [_table(rows), ""]
    rows = [["operator", *head[1:]]]
    for op in check.compared:
        a, c = check.analytic_by(op=op), check.counted_by(op=op)
        rows.append([OPERATOR_NAMES[op], f"{a / scale:.4f}", f"{c / scale:.4f}", _difference(c, a)])
    lines.append(_table(rows))
    uncounted = check.uncounted
    if uncounted:
        shown = ", ".join(
            f"{OPERATOR_NAMES.get(op, op)} {macs / scale:.4f}" for op, macs in uncounted.items()
        )
        lines.append(f"not counted by {check.counter} (analytic {unit.label}): {shown}")
    return "\n".join(lines)


def _load(ref: str) -> tuple[Any, Any, tuple[int, int] | None]:
    """``(spec, model or None, size or None)``: a checkpoint or run folder gives its trained
    network and its training crop (the size its costs mean something at)."""
    path = Path(ref).expanduser()
    if path.is_dir() or path.suffix == ".pt":
        from dynviz.model.checkpoint import load_model

        model, meta = load_model(path)
        crop = (meta.get("train_args") or {}).get("crop")
        size = (int(crop[0]), int(crop[1])) if crop else None
        return (model.route if model.route is not None else model.config), model, size
    return load_spec(ref), None, None


def _check(args: argparse.Namespace, spec: Any, model: Any, size: tuple[int, int]) -> FlopCheck:
    import torch

    import dynviz
    from dynviz.model.flopcheck import check_flops

    if model is None:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = dynviz.build_model(spec)
    if args.image:
        from dynviz.data import check_image_size, normalize, read_image

        image = read_image(args.image, exif_transpose=True)
        image = normalize(check_image_size(image, args.image))
        if args.size is not None:
            image = torch.nn.functional.interpolate(
                image[None], size=size, mode="bilinear", align_corners=False
            )[0]
    elif model.is_dynamic:
        raise UserError(
            f"{args.model} is a dynamic network: its route depends on the image, "
            "give --check an --image IMAGE"
        )
    else:
        generator = torch.Generator().manual_seed(0)
        image = torch.randn(3, size[0], size[1], generator=generator)
    return check_flops(model, image, counter=args.counter)


def main(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    size = DEFAULT_SIZE if args.size is None else (args.size[0], args.size[1])
    sized = ""  # where a default size came from
    try:
        if args.special_cases:
            costs = special_cases(size=size, counting=args.counting)
            if args.json:
                json.dump([c.to_json() for c in costs], sys.stdout, indent=2)
                print()
            else:
                _print_special(costs)
            return 0
        if not args.model:
            print("error: give a MODEL or --special-cases", file=sys.stderr)
            return 2
        if args.image and not args.check:
            print("error: --image is the image of --check; add --check", file=sys.stderr)
            return 2
        spec, model, crop = _load(args.model)
        if args.size is None and crop is not None:
            size, sized = crop, "the run's training crop"
        check = _check(args, spec, model, size) if args.check else None
        if check is not None:
            size = check.size  # an image's own size without --size
        cost = model_cost(spec, size=size, counting=args.counting)
    except BadFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_FILE
    except (ConfigError, UserError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    latency = None
    if getattr(args, "time", False):
        from dynviz.inference.latency import measure_node_latency

        latency = measure_node_latency(  # the explorer's Latency page uses these settings
            spec.space if isinstance(spec, Route) else spec, size, tune_malloc=True, max_wait=0.05
        )
    differs = check is not None and any(
        check.analytic_by(op=op) != check.counted_by(op=op) for op in check.compared
    )
    if args.json:
        data = cost.to_json()
        if latency is not None:
            from dynviz.inference.latency import latency_rows

            data["latency"] = {
                **latency.to_json(),
                "rows": [r.to_json() for r in latency_rows(latency)],
            }
        if check is not None:
            data["check"] = {**check.to_json(), "image": args.image, "agree": not differs}
        json.dump(data, sys.stdout, indent=2)
        print()
    else:
        _print_model(cost, sized=sized)
        if latency is not None:
            from dynviz.inference.latency import format_latency

            print()
            print(format_latency(latency))
        if check is not None:
            print()
            print(format_check(check, image=args.image))
    return 1 if differs else 0
