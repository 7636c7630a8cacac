"""``dynviz flops``: MACs and parameters of a model, by component, and the special-case table
(computed by :mod:`dynviz.zoo`)."""

from __future__ import annotations

import argparse
import json
import sys

from dynviz.commands import add_threads_option, positive_int, set_threads
from dynviz.cost import Counting
from dynviz.model.config import ConfigError
from dynviz.model.route import Route
from dynviz.model.zoo import load_spec
from dynviz.zoo import ModelCost, model_cost, special_cases

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help="preset name or YAML path")
    parser.add_argument(
        "--size",
        nargs=2,
        type=positive_int,
        default=(1024, 2048),
        metavar=("H", "W"),
        help="input size (default 1024 2048)",
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


def _print_model(cost: ModelCost) -> None:
    h, w = cost.size
    ch, cw = cost.counted_size or cost.size
    if cost.counting == "official":
        where = f"at {h}x{w}, counted at {ch}x{cw} (the size given, unpadded, as officially)"
    elif (ch, cw) != (h, w):
        where = f"at {h}x{w}, counted at {ch}x{cw} (the input padded as the network runs it)"
    else:
        where = f"at {h}x{w}"
    print(f"{cost.name} ({cost.kind}) {where}, {cost.counting} counting")
    rows = [["component", "GMACs", "share"]]
    for k, v in cost.breakdown.items():
        rows.append([k, f"{v / 1e9:.3f}", f"{100 * v / cost.macs:.1f}%"])
    rows.append(["total", f"{cost.gmacs:.3f}", "100.0%"])
    print(_table(rows))
    print()
    rows = [["parameters", "count"]]
    rows += [[k, f"{v:,}"] for k, v in cost.params_breakdown.items()]
    print(_table(rows))
    if cost.kind == "dynamic":
        print("\nDynamic model: GMACs with every path open (the upper bound).")


def _print_special(costs: list[ModelCost]) -> None:
    rows = [["model", "params (M)", "paper", "diff", "GMACs", "paper", "diff"]]
    for c in costs:
        paper = c.paper or {}
        pp, pg = paper.get("params_m"), paper.get("gflops")
        rows.append(
            [
                c.name,
                f"{c.params / 1e6:.2f}",
                f"{pp:.1f}" if pp else "-",
                f"{100 * (c.params / 1e6 - pp) / pp:+.1f}%" if pp else "-",
                f"{c.gmacs:.1f}",
                f"{pg:.1f}" if pg else "-",
                f"{100 * (c.gmacs - pg) / pg:+.1f}%" if pg else "-",
            ]
        )
    print(_table(rows))
    for c in costs:
        if c.notes:
            print(f"\n{c.name}: {' '.join(c.notes.split())}")


def main(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    size = (args.size[0], args.size[1])
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
        cost = model_cost(load_spec(args.model), size=size, counting=args.counting)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    latency = None
    if getattr(args, "time", False):
        from dynviz.latency import measure_node_latency

        spec = load_spec(args.model)
        latency = measure_node_latency(  # the explorer's Latency page uses these settings
            spec.space if isinstance(spec, Route) else spec, size, tune_malloc=True, max_wait=0.05
        )
    if args.json:
        data = cost.to_json()
        if latency is not None:
            from dynviz.latency import latency_rows

            data["latency"] = {
                **latency.to_json(),
                "rows": [r.to_json() for r in latency_rows(latency)],
            }
        json.dump(data, sys.stdout, indent=2)
        print()
    else:
        _print_model(cost)
        if latency is not None:
            from dynviz.latency import format_latency

            print()
            print(format_latency(latency))
    return 0
