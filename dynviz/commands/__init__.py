"""CLI subcommands, and the options several of them share."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from dynviz.errors import UserError

__all__ = ["add_resize_option", "add_run_options", "guarded", "positive_int"]


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer >= 1 (sizes, counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def guarded(body: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run a command body, turning known errors into ``error: <message>`` on stderr: user
    errors (:class:`dynviz.errors.UserError`) exit 2, I/O and runtime errors exit 1. A process
    group that the body joined (torchrun) is left on the way out.

    The process keeps freed memory for reuse (:func:`dynviz.allocator.tune_malloc`): CPU
    forwards and large-table analyses then stop page-faulting their buffers back in (a
    512x1024 forward 1.9x faster in ``docs/performance.md``), at the price of keeping the peak
    heap."""
    from dynviz.allocator import tune_malloc

    tune_malloc()
    try:
        return int(body(args) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        from dynviz.distributed import cleanup_distributed

        cleanup_distributed()


def add_resize_option(parser: argparse.ArgumentParser) -> None:
    """``--size H W`` of the commands that run a model over a data set."""
    parser.add_argument(
        "--size",
        nargs=2,
        type=positive_int,
        metavar=("H", "W"),
        help="resize every image and label to H x W first",
    )


def add_run_options(parser: argparse.ArgumentParser, *, threads: bool = False) -> None:
    """``--workers``, ``--device``, (``--threads``,) ``--progress`` of the inference commands."""
    parser.add_argument(
        "--workers", type=int, default=0, metavar="N", help="data-loading workers (default 0)"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available")
    if threads:
        parser.add_argument(
            "--threads", type=int, metavar="N", help="torch CPU threads (default: torch's)"
        )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )
