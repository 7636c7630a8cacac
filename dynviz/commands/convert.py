"""``dynviz convert``: the official DynamicRouting checkpoints to and from dynviz.

``dynviz convert official CHECKPOINT [--model dynamic-a] --out model.pt`` maps an official dl_lib
checkpoint onto a dynviz network that computes the official function (``semantics: official``)
and writes a dynviz checkpoint every command takes. ``dynviz convert to-official CHECKPOINT --out
official.pth`` writes a dynviz network in the official format. The logic is
:mod:`dynviz.interop.official`.
"""

from __future__ import annotations

import argparse

from dynviz.commands import guarded

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dynviz convert``."""
    sub = parser.add_subparsers(dest="direction", metavar="DIRECTION", required=True)
    official = sub.add_parser(
        "official",
        help="an official checkpoint to a dynviz checkpoint (official semantics)",
        description="Map an official DynamicRouting (dl_lib) checkpoint onto a dynviz network "
        "that computes the official code's function and write a dynviz checkpoint.",
    )
    official.add_argument("checkpoint", metavar="CHECKPOINT", help="official .pth file")
    official.add_argument(
        "--model",
        help="preset or YAML to map onto (default: guessed from the tensors; full and small "
        "gates cannot be told apart: layer16 vs dynamic-a/b/c needs --model)",
    )
    official.add_argument("--out", required=True, metavar="PT", help="dynviz checkpoint to write")
    official.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load a file the safe loader refuses; this RUNS ANY CODE THE FILE CARRIES: only "
        "for files from a source you trust",
    )
    back = sub.add_parser(
        "to-official",
        help="a dynviz checkpoint to an official checkpoint",
        description="Write a dynviz network's weights with the official keys ({'model': ...}).",
    )
    back.add_argument("checkpoint", metavar="CHECKPOINT", help="dynviz checkpoint or run dir")
    back.add_argument("--out", required=True, metavar="PTH", help="official .pth file to write")


def _main(args: argparse.Namespace) -> int:
    from dynviz.interop.official import convert_official, convert_to_official

    if args.direction == "official":
        network, path = convert_official(
            args.checkpoint, args.out, model=args.model, trust_pickle=args.trust_pickle
        )
        print(
            f"wrote {path}: {network.config.name} (L={network.config.num_layers}, "
            f"{network.config.gate.value} gates, {network.config.num_classes} classes), "
            "official semantics"
        )
    else:
        path = convert_to_official(args.checkpoint, args.out)
        print(f"wrote {path} (official keys)")
    return 0


def main(args: argparse.Namespace) -> int:
    return guarded(_main, args)
