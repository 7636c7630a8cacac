"""``dynviz`` command line. Each subcommand lives in a module with ``configure_parser(parser)``
and ``main(args) -> int``; modules are imported only when their command runs."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]

# name -> (one-line help, module implementing it)
COMMANDS: dict[str, tuple[str, str]] = {
    "flops": ("MACs and parameters of a model, by component", "dynviz.commands.flops"),
    "data": ("synthetic data tools", "dynviz.commands.data"),
    "train": ("train a model (budget loss, DDP under torchrun)", "dynviz.commands.train"),
    "eval": ("evaluate a run or checkpoint: mIoU and GMACs", "dynviz.commands.eval"),
    "predict": (
        "segment image files: masks, overlays, routes and GMACs",
        "dynviz.commands.predict",
    ),
    "demo": ("the whole chain on the embedded synthetic data", "dynviz.commands.demo"),
    "bench": ("measure speed and memory figures", "dynviz.commands.bench"),
    "export": (
        "export a route's static network to ONNX (BN folded, no gates)",
        "dynviz.commands.export",
    ),
    "record": ("record a model's routes over a data set (Parquet)", "dynviz.commands.record"),
    "analyze": ("tables, figures and a report from records", "dynviz.commands.analyze"),
    "attribute": (
        "exact gate attribution maps of one image: why it takes its route",
        "dynviz.commands.attribute",
    ),
    "extract": ("extract the common network of records as a route spec", "dynviz.commands.extract"),
    "compare": ("Table-1-style comparison of trained runs", "dynviz.commands.compare"),
    "app": ("the Streamlit route explorer on a folder of runs and records", "dynviz.commands.app"),
    "convert": (
        "official DynamicRouting checkpoints to and from dynviz",
        "dynviz.commands.convert",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynviz", description="Train, run and dissect dynamic-routing segmentation networks."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, _) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    verbose = False
    while argv and argv[0] in ("-v", "--verbose"):
        verbose = True
        argv.pop(0)
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints usage or help and exits
        return 2
    command = argv[0]
    module = importlib.import_module(COMMANDS[command][1])
    sub = argparse.ArgumentParser(prog=f"dynviz {command}", description=COMMANDS[command][0])
    module.configure_parser(sub)
    if getattr(module, "INTERMIXED", False):  # KEY=VALUE items may follow the options
        args = sub.parse_intermixed_args(argv[1:])
    else:
        args = sub.parse_args(argv[1:])
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(module.main(args) or 0)
    except BrokenPipeError:  # e.g. `dynviz flops layer16 | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
