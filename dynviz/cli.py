"""``dynviz`` command line. Each subcommand lives in a module with ``configure_parser(parser)``
and ``main(args) -> int``; modules are imported only when their command runs, so ``dynviz
--help`` and ``dynviz --version`` import no torch.

The global options ``-v`` (DEBUG) and ``-q`` (warnings only, no progress; ``-qq`` errors only)
go before or after the command. Log lines go to stderr around the progress bars
(``tqdm.contrib.logging.logging_redirect_tqdm``)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from dynviz.version import __version__

__all__ = ["build_parser", "log_level", "main"]

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
    "models": (
        "the model zoo: kind, parameters and GMACs of each model",
        "dynviz.commands.models",
    ),
}

_VERBOSE, _QUIET = "global_verbose", "global_quiet"  # their dests; dropped before the command
_GLOBAL_FLAG = re.compile(r"^-[vq]+$|^--verbose$|^--quiet$")


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    """``-v`` and ``-q``, on the main parser and on each command's (so either place works)."""
    group = parser.add_argument_group("global options (before or after the command)")
    group.add_argument(
        "-v", "--verbose", action="count", default=0, dest=_VERBOSE, help="log at DEBUG level"
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=0,
        dest=_QUIET,
        help="only warnings and errors, no progress (-qq: errors only); results still print",
    )


def log_level(verbose: int, quiet: int) -> int:
    """INFO, one level down per ``-v`` and up per ``-q``, from DEBUG to ERROR."""
    return min(logging.ERROR, max(logging.DEBUG, logging.INFO + 10 * (quiet - verbose)))


_OWN: list[logging.Handler] = []
"""The console handler :func:`_logging` gave the root logger (a second ``main`` in one process
sets its level again)."""


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.stderr)


@contextmanager
def _logging(level: int) -> Iterator[None]:
    """Log at ``level`` to stderr, the lines written around tqdm bars; the ``dynviz`` logger's
    level is restored afterwards (``main`` may run inside another program, e.g. the tests)."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
        _OWN.extend(root.handlers)
    for handler in _OWN:  # the level holds even where a run's log.txt asks for INFO
        root.setLevel(level)
        handler.setLevel(level)
    package = logging.getLogger("dynviz")
    previous = package.level
    package.setLevel(level)
    # logging_redirect_tqdm adds a stderr handler even where the root logger has none (a
    # program that runs main and handles its logs itself): redirect only console handlers; the
    # handler it puts in their place keeps their level
    before = list(root.handlers)
    levels = [h.level for h in before if _is_console(h)]
    try:
        if levels:
            with logging_redirect_tqdm():
                for handler in root.handlers:
                    if handler not in before:
                        handler.setLevel(max(levels))
                yield
        else:
            yield
    finally:
        package.setLevel(previous)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynviz", description="Train, run and dissect dynamic-routing segmentation networks."
    )
    parser.add_argument("--version", action="version", version=f"dynviz {__version__}")
    _add_global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, _) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text)
    return parser


def _quiet_progress(args: argparse.Namespace) -> None:
    """``-q``: no progress bars or progress lines unless ``--progress`` asked for them."""
    if getattr(args, "progress", False) is None:
        args.progress = False
    if hasattr(args, "no_progress"):
        args.no_progress = True


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    verbose = quiet = 0
    while argv and _GLOBAL_FLAG.match(argv[0]):
        flag = argv.pop(0)
        if flag.startswith("--"):
            verbose, quiet = verbose + (flag == "--verbose"), quiet + (flag == "--quiet")
        else:
            verbose, quiet = verbose + flag.count("v"), quiet + flag.count("q")
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints usage, help or the version and exits
        return 2
    command = argv[0]
    module = importlib.import_module(COMMANDS[command][1])
    sub = argparse.ArgumentParser(prog=f"dynviz {command}", description=COMMANDS[command][0])
    module.configure_parser(sub)
    _add_global_options(sub)
    if getattr(module, "INTERMIXED", False):  # KEY=VALUE items may follow the options
        args = sub.parse_intermixed_args(argv[1:])
    else:
        args = sub.parse_args(argv[1:])
    verbose += vars(args).pop(_VERBOSE)
    quiet += vars(args).pop(_QUIET)
    if quiet:
        _quiet_progress(args)
    with _logging(log_level(verbose, quiet)):
        try:
            return int(module.main(args) or 0)
        except BrokenPipeError:  # e.g. `dynviz flops layer16 | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1


if __name__ == "__main__":
    sys.exit(main())
