"""CLI subcommands, and the options several of them share."""

from __future__ import annotations

import argparse

__all__ = ["add_run_options"]


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
