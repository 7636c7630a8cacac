"""``dynviz models [PATTERN] [--size H W] [--counting ...] [--json]``: the model zoo, one line per
model: its kind (dynamic, fix or static), parameters and GMACs at a size (a dynamic network with
every path open: its upper bound). The names are those of :func:`dynviz.list_models`."""

from __future__ import annotations

import argparse
import json

from dynviz.commands import guarded, positive_int
from dynviz.model.config import ConfigError
from dynviz.model.cost import Counting
from dynviz.model.zoo import list_models, load_spec, model_cost
from dynviz.units import mac_unit

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dynviz models``."""
    parser.add_argument(
        "pattern",
        nargs="?",
        default="*",
        metavar="PATTERN",
        help="only the names this shell-style pattern matches, e.g. 'dynamic-*' (default: all)",
    )
    parser.add_argument(
        "--size",
        nargs=2,
        type=positive_int,
        default=(1024, 2048),
        metavar=("H", "W"),
        help="input size of the GMACs (default 1024 2048, the paper's)",
    )
    parser.add_argument(
        "--counting",
        choices=[c.value for c in Counting],
        default="paper",
        help="cost counting of the GMACs (default paper; see dynviz flops --help)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _main(args: argparse.Namespace) -> int:
    size = (int(args.size[0]), int(args.size[1]))
    names = list_models(args.pattern)
    if not names:
        raise ConfigError(f"no model name matches {args.pattern!r} (dynviz models lists them)")
    costs = [model_cost(load_spec(name), size=size, counting=args.counting) for name in names]
    rows = [
        {
            "model": name,
            "kind": cost.kind,
            "params": cost.params,
            "gmacs": cost.gmacs,
            "macs": cost.macs,
        }
        for name, cost in zip(names, costs, strict=True)
    ]
    if args.json:
        payload = {
            "size": list(size),
            "counting": Counting(args.counting).value,
            "unit": "GMACs (1e9 multiply-adds; the paper's GFLOPs); dynamic: every path open",
            "models": rows,
        }
        print(json.dumps(payload))
        return 0
    width = max(len("model"), *(len(r["model"]) for r in rows))
    unit = mac_unit(r["gmacs"] for r in rows)  # one prefix for the column
    print(f"{'model':<{width}}  {'kind':<8}{'params (M)':>11}{unit.label:>11}")
    for row in rows:
        print(
            f"{row['model']:<{width}}  {row['kind']:<8}{row['params'] / 1e6:>11.2f}"
            f"{unit(row['gmacs']):>11.3f}"
        )
    print(
        f"\n{unit.label} at {size[0]}x{size[1]}, {Counting(args.counting).value} counting; "
        "a dynamic model's with every path open (its upper bound)."
    )
    return 0


def main(args: argparse.Namespace) -> int:
    """``dynviz models``."""
    return guarded(_main, args)
