"""CLI subcommands, and the options several of them share."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable

from dynviz.errors import EXIT_BAD_FILE, EXIT_USAGE, BadFileError, UserError, error_message

__all__ = [
    "add_aug_option",
    "add_counting_option",
    "add_resize_option",
    "add_run_options",
    "add_settings_options",
    "add_strict_option",
    "add_threads_option",
    "guarded",
    "positive_int",
    "print_json",
    "set_threads",
    "split_settings",
]


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer >= 1 (sizes, counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def _plain(value: object) -> object:
    """``value`` with NaN and infinities as None, paths and tuples as strings and lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def print_json(payload: dict[str, object]) -> None:
    """The ``--json`` summary of a command: one JSON object on one line of stdout (strict JSON:
    a NaN is ``null``)."""
    print(json.dumps(_plain(payload), allow_nan=False))


def guarded(body: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run a command body, turning known errors into ``error: <message>`` on stderr, each with
    its exit status (:mod:`dynviz.errors`): a bad file (:class:`dynviz.errors.BadFileError`, or
    a file that does not exist) exits 3, other user errors 2, I/O and runtime errors 1, each as
    one line (an error from a DataLoader worker too: :func:`dynviz.errors.error_message`). A
    process group that the body joined (torchrun) is left on the way out. ``args.threads``, when
    the command has it, sets torch's CPU threads first.

    The process keeps freed memory for reuse (:func:`dynviz.inference.allocator.tune_malloc`): CPU
    forwards and large-table analyses then stop page-faulting their buffers back in (a
    512x1024 forward 1.9x faster in ``docs/performance.md``), at the price of keeping the peak
    heap."""
    from dynviz.inference.allocator import tune_malloc

    tune_malloc()
    set_threads(getattr(args, "threads", None))
    try:
        return int(body(args) or 0)
    except BadFileError as err:
        print(f"error: {error_message(err)}", file=sys.stderr)
        return EXIT_BAD_FILE
    except UserError as err:
        print(f"error: {error_message(err)}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as err:
        print(f"error: {err.filename or err}: no such file or folder", file=sys.stderr)
        return EXIT_BAD_FILE
    except (OSError, RuntimeError) as err:
        print(f"error: {error_message(err)}", file=sys.stderr)
        return 1
    finally:
        from dynviz.support.distributed import cleanup_distributed

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


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` when given (``--threads``)."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` of every compute command (applied by :func:`guarded`)."""
    parser.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="torch CPU threads (default: torch's); on a busy machine 1 can be much faster",
    )


def add_strict_option(parser: argparse.ArgumentParser) -> None:
    """``--strict`` of the commands that read records (:func:`dynviz.record.read_records`)."""
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse records with a damaged part (zero bytes, truncated, another schema); by "
        "default its chunk is skipped with a warning naming the file and the images lost",
    )


def add_aug_option(parser: argparse.ArgumentParser) -> None:
    """``--aug flip scales=S1,S2,...`` (:class:`dynviz.inference.tta.Augment`)."""
    parser.add_argument(
        "--aug",
        action="extend",
        nargs="+",
        metavar="AUG",
        help="test-time augmentation: flip and/or scales=0.5,0.75,1,1.25,1.5,1.75 (softmax "
        "averaged; every forward pass's route and GMACs counted)",
    )


def add_counting_option(parser: argparse.ArgumentParser) -> None:
    """``--counting paper|official`` of the commands that report per-image GMACs
    (:class:`dynviz.model.cost.Counting`)."""
    parser.add_argument(
        "--counting",
        choices=("paper", "official"),
        default="paper",
        help="cost counting of the GMACs: paper (default) or official, what the official "
        "code's counters report (square decoder, every gate; docs/official.md)",
    )


def add_settings_options(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and trailing ``KEY=VALUE`` overrides of the command's own options
    (:func:`dynviz.train.runconfig.command_settings`), also as ``--cfg-options KEY=VALUE ...``
    (mmseg's spelling)."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="settings file: a YAML mapping of this command's options, or a run's config.yaml",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="options by name, over --config (e.g. split=train limit=10 aug=flip)",
    )
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="the KEY=VALUE options as mmseg spells them (--cfg-options split=train limit=10)",
    )


def split_settings(
    parser: argparse.ArgumentParser, args: argparse.Namespace, source_key: str
) -> argparse.Namespace:
    """Apply ``--config`` and ``KEY=VALUE`` items to ``args`` (the trailing ones, then those of
    ``--cfg-options``): a first positional that is a ``KEY=VALUE`` item (argparse took it for
    the source) and ``--aug`` items that are not augmentations are moved to the overrides
    first."""
    from pathlib import Path

    from dynviz.train.runconfig import command_settings

    overrides = list(getattr(args, "overrides", None) or [])
    source = getattr(args, source_key, None)
    if source is not None and "=" in str(source) and not Path(str(source)).exists():
        overrides.insert(0, source)
        setattr(args, source_key, None)
    overrides += list(getattr(args, "cfg_options", None) or [])
    aug = getattr(args, "aug", None)
    if aug:
        keep = [a for a in aug if "=" not in a or a.split("=", 1)[0].strip() in ("scales", "scale")]
        overrides += [a for a in aug if a not in keep]
        args.aug = keep or None
    args = command_settings(
        parser, args, config=args.config, overrides=overrides, source_key=source_key
    )
    if getattr(args, source_key, None) is None:
        raise UserError(f"{source_key.upper()} is required (or --config with a run's config.yaml)")
    return args


def add_run_options(parser: argparse.ArgumentParser, *, threads: bool = True) -> None:
    """``--workers``, ``--device``, ``--threads``, ``--progress`` of the inference commands."""
    parser.add_argument(
        "--workers", type=int, default=0, metavar="N", help="data-loading workers (default 0)"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available")
    if threads:
        add_threads_option(parser)
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal, else a log line every half minute)",
    )
