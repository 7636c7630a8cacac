"""``dynviz data ...`` subcommands.

``dynviz data synth --out DIR --format cityscapes [--count N] [--size H W] [--classes K]
[--seed S] [--regime R] [--splits train val]`` writes synthetic scenes in the Cityscapes layout,
loadable back with the spec ``cityscapes:DIR``; ``--format folder`` writes ``images/<split>/``,
``masks/<split>/`` and ``dataset.yaml`` instead, loadable with ``folder:DIR``.

The top-level CLI (:mod:`dynviz.cli`) calls :func:`configure_parser` on its ``data`` sub-parser
and dispatches to :func:`main`.
"""

from __future__ import annotations

import argparse
import logging

from dynviz.commands import positive_int
from dynviz.data.cityscapes import write_cityscapes_layout
from dynviz.data.errors import DataError
from dynviz.data.folder import write_folder_layout
from dynviz.data.spec import SYNTHETIC_DEFAULTS
from dynviz.data.synthetic import REGIMES, SyntheticScenes

__all__ = ["configure_parser", "main"]

logger = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``synth`` sub-subcommand and its options to the ``data`` parser.

    Args:
        parser: the parser of ``dynviz data``.
    """
    commands = parser.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    synth = commands.add_parser(
        "synth",
        help="write synthetic scenes to disk",
        description="Write synthetic scenes in the Cityscapes folder layout "
        "(load them back with the spec cityscapes:DIR).",
    )
    synth.add_argument("--out", required=True, metavar="DIR", help="output folder")
    synth.add_argument(
        "--format",
        choices=["cityscapes", "folder"],
        default="cityscapes",
        help="folder layout: cityscapes (load with cityscapes:DIR) or folder (images/, masks/ "
        "and dataset.yaml; load with folder:DIR)",
    )
    synth.add_argument(
        "--count",
        type=int,
        default=SYNTHETIC_DEFAULTS["count"],
        metavar="N",
        help="images per split (default: %(default)s)",
    )
    synth.add_argument(
        "--size",
        type=positive_int,
        nargs=2,
        default=list(SYNTHETIC_DEFAULTS["size"]),
        metavar=("H", "W"),
        help="image height and width (default: %(default)s)",
    )
    synth.add_argument(
        "--classes",
        type=int,
        default=SYNTHETIC_DEFAULTS["classes"],
        metavar="K",
        help="classes including background (default: %(default)s)",
    )
    synth.add_argument(
        "--seed", type=int, default=SYNTHETIC_DEFAULTS["seed"], metavar="S", help="base seed"
    )
    synth.add_argument(
        "--regime",
        choices=REGIMES,
        default=SYNTHETIC_DEFAULTS["regime"],
        help="object-scale regime (default: %(default)s)",
    )
    synth.add_argument(
        "--splits",
        nargs="+",
        default=["train", "val"],
        metavar="SPLIT",
        help="splits to write (default: train val)",
    )


def main(args: argparse.Namespace) -> int:
    """Run a ``dynviz data`` subcommand.

    Args:
        args: parsed arguments from a parser set up by :func:`configure_parser`.

    Returns:
        Exit status: 0 on success, 2 on bad input (the error is logged).
    """
    command = getattr(args, "data_command", None)
    if command != "synth":
        logger.error("unknown data command %r", command)
        return 2
    try:
        for split in args.splits:
            dataset = SyntheticScenes(
                count=args.count,
                size=tuple(args.size),
                num_classes=args.classes,
                seed=args.seed,
                regime=args.regime,
                split=split,
            )
            if args.format == "folder":
                write_folder_layout(dataset, args.out, split)
            else:
                write_cityscapes_layout(dataset, args.out, split)
    except DataError as exc:
        logger.error("%s", exc)
        return 2
    logger.info(
        "wrote splits %s to %s; load with %s:%s", args.splits, args.out, args.format, args.out
    )
    return 0
