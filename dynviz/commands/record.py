"""``dynviz record SOURCE --data SPEC --out RECORDS_DIR``: record a model's routes over a data set.

SOURCE is a run directory (its best, else latest, checkpoint), a ``.pt`` checkpoint, or a model
preset / YAML (an untrained network, for smoke tests). Writes the records folder of
:mod:`dynviz.record`: ``gates/`` and ``images/`` Parquet parts and ``records.json``. A re-run
completes an interrupted one and never duplicates rows. Under ``torchrun`` each rank records a
disjoint share and writes its own parts. ``--counting official`` computes the per-image GMACs as
the official code's counters do (docs/official.md); the sidecar records the counting.

Any gated network (:mod:`dynviz.gates`) records the same way, with a ``decisions/`` table in
place of ``gates/``. SOURCE is then its entry point ``module:function`` (or
``path/to/file.py:function``; also ``--builder``), with its weights from ``--checkpoint`` (a bare
state_dict or a checkpoint with its builder), or a checkpoint with its builder alone
(:func:`dynviz.gates.entry.save_gated_checkpoint`); ``--builder`` with a ``.pt`` SOURCE loads
that file's weights. The sidecar keeps the entry point (key ``builder``; a file path made
absolute) and the checkpoint's sha256. ``--data`` is required; ``--route``, ``--aug`` and
``--counting official`` apply to routing networks only.

Examples::

    dynviz record runs/dynamic-a --data synthetic:count=200 --out records/dynamic-a
    dynviz record runs/raw --data synthetic --out records/raw-fcn --route models/fcn32s.yaml
    dynviz record mynets:skipnet --checkpoint skipnet.pt --data synthetic --out records/skipnet
    dynviz record skipnet-with-builder.pt --data synthetic --out records/skipnet
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch

from dynviz.analysis.compare import source_name
from dynviz.commands import (
    add_aug_option,
    add_counting_option,
    add_resize_option,
    add_run_options,
    add_settings_options,
    guarded,
    print_json,
    split_settings,
)
from dynviz.data import Resize, build_dataset
from dynviz.inference.tta import Augment
from dynviz.model import ConfigError
from dynviz.model.checkpoint import CheckpointError, run_data_spec
from dynviz.model.zoo import load_route
from dynviz.record import load_records_model, record

__all__ = ["configure_parser", "main"]

logger = logging.getLogger(__name__)


INTERMIXED = True  # KEY=VALUE overrides may follow the options


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dynviz record``."""
    parser.add_argument(
        "source",
        nargs="?",
        metavar="RUN_DIR|CHECKPOINT|MODEL|MODULE:FUNCTION",
        help="a run directory, a .pt checkpoint, a preset / YAML (untrained), or a gated "
        "network's entry point module:function (or file.py:function)",
    )
    parser.add_argument(
        "--builder",
        metavar="MODULE:FUNCTION",
        help="a gated network's entry point (then SOURCE, if given, is its weights .pt)",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="FILE.pt",
        help="weights of the gated network (a state_dict or a checkpoint with its builder)",
    )
    add_settings_options(parser)
    parser.add_argument(
        "--data", metavar="SPEC", help="dataset spec (default: the run's validation data)"
    )
    parser.add_argument("--out", metavar="RECORDS_DIR", help="records folder (required)")
    parser.add_argument("--split", default="val", help="split to record (default: val)")
    parser.add_argument("--limit", type=int, metavar="N", help="record the first N images")
    parser.add_argument(
        "--route",
        metavar="ROUTE",
        help="force this route spec (preset or YAML) instead of the gates",
    )
    add_resize_option(parser)
    add_aug_option(parser)
    add_counting_option(parser)
    parser.add_argument(
        "--batch", type=int, default=1, metavar="B", help="images per forward pass (default 1)"
    )
    parser.add_argument(
        "--chunk",
        type=int,
        default=256,
        metavar="N",
        help="images per Parquet part file (default 256)",
    )
    parser.add_argument(
        "--name",
        help="label of the model in analyses (default: the run directory's or model's name)",
    )
    add_run_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _main(args: argparse.Namespace) -> int:
    from dynviz.support.distributed import all_reduce_sum, cleanup_distributed, init_distributed

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    _builder_as_source(args)
    args = split_settings(parser, args, "source")
    if not args.out:
        raise ConfigError("dynviz record needs --out RECORDS_DIR")
    gated = _gated_source(args)
    if gated is not None:
        return _record_gated(args, *gated)
    aug = Augment.parse(args.aug)
    info = init_distributed(args.device)
    try:
        if info.device.type == "cpu":
            torch.set_flush_denormal(True)  # denormal activations slow CPU kernels down
        if args.limit is not None and args.limit < 1:
            raise ConfigError(f"--limit {args.limit} must be >= 1")
        path = Path(args.source)
        trained = path.is_dir() or path.suffix == ".pt"
        meta: dict[str, Any] = {}
        spec = args.data
        if trained:
            model, meta = _routing_model(args.source)
            spec = spec or run_data_spec(meta)
            if not spec:
                raise ConfigError(f"{meta['path']}: records no training data; pass --data SPEC")
        elif not spec:
            raise ConfigError("an untrained MODEL needs --data SPEC")
        transform = Resize(tuple(args.size)) if args.size else None
        dataset = build_dataset(spec, split=args.split, transform=transform)
        if not trained:
            model, meta = load_records_model(args.source, num_classes=dataset.num_classes)
        route = load_route(args.route) if args.route else None
        checkpoint = None
        if meta.get("sha256"):
            checkpoint = {
                "path": str(meta["path"]),
                "sha256": meta["sha256"],
                "iteration": meta.get("iteration"),
            }
        model.to(info.device)
        result = record(
            model,
            dataset,
            args.out,
            route=route,
            limit=args.limit,
            batch_size=args.batch,
            chunk_size=args.chunk,
            name=args.name or source_name(args.source),
            checkpoint=checkpoint,
            data_spec=spec,
            split=args.split,
            device=info.device,
            workers=args.workers,
            progress=args.progress,
            aug=aug,
            counting=args.counting,
        )
        counts = all_reduce_sum(torch.tensor([result.recorded, result.parts]))  # all ranks
        if info.is_main and args.json:
            print_json(
                {
                    "records": str(result.path),
                    "name": args.name or source_name(args.source),
                    "recorded": int(counts[0]),
                    "skipped": result.skipped,
                    "parts": int(counts[1]),
                    "data": spec,
                    "split": args.split,
                    "counting": args.counting,
                    "checkpoint": checkpoint,
                }
            )
        elif info.is_main:
            print(
                f"recorded {int(counts[0])} image(s) into {result.path} "
                f"({result.skipped} already there, {int(counts[1])} part file(s) written)"
            )
        return 0
    finally:
        cleanup_distributed()


def _routing_model(source: str) -> tuple[Any, dict[str, Any]]:
    """:func:`load_records_model` of a trained source; a ``.pt`` that is no dynviz checkpoint
    gets a hint at ``--builder`` (a gated network's bare state_dict)."""
    try:
        return load_records_model(source)
    except CheckpointError as err:
        if Path(source).suffix != ".pt" or "not a dynviz checkpoint" not in str(err):
            raise
        raise CheckpointError(
            f"{err}; for a gated network's weights, name its builder: --builder MODULE:FUNCTION"
        ) from None


# ------------------------------------------------------------------------ gated networks
def _builder_as_source(args: argparse.Namespace) -> None:
    """``--builder`` without a SOURCE: the entry point is the source (a first positional that
    is a ``KEY=VALUE`` item goes to the overrides, as :func:`split_settings` would move it)."""
    builder = getattr(args, "builder", None)
    source = getattr(args, "source", None)
    if not builder:
        return
    if source is not None and "=" in str(source) and not Path(str(source)).exists():
        args.overrides = [source, *(args.overrides or [])]
        source = None
    if source is None:
        args.source, args.builder = builder, None


def _gated_source(args: argparse.Namespace) -> tuple[str | None, str | None] | None:
    """``(entry point or None, checkpoint or None)`` when SOURCE names a gated network, None
    for a routing network (run directory, dynviz checkpoint, preset or YAML)."""
    from dynviz.gates.entry import is_entry_spec, is_gated_checkpoint

    source, builder, checkpoint = str(args.source), args.builder, args.checkpoint
    path = Path(source)
    if is_entry_spec(source) and not path.exists():
        if builder:
            raise ConfigError(f"{source} and --builder {builder}: give the entry point once")
        return source, checkpoint
    if builder or checkpoint:
        if path.suffix != ".pt" or checkpoint:
            given = "--builder" if builder else "--checkpoint"
            raise ConfigError(
                f"{given} goes with a gated network: SOURCE {source} must be its entry point "
                "module:function (with --checkpoint FILE.pt) or, with --builder, its weights .pt"
            )
        return builder, source
    if path.suffix == ".pt" and is_gated_checkpoint(path):
        return None, source
    return None


def _refuse_routing_options(args: argparse.Namespace, what: str) -> None:
    """``--route``, ``--aug`` and ``--counting official`` apply to routing networks only."""
    for given, option in (
        (args.route, "--route"),
        (args.aug, "--aug"),
        (args.counting != "paper", "--counting official"),
    ):
        if given:
            raise ConfigError(
                f"{option} applies to routing networks; {what} is a gated network, which "
                "records its own decisions"
            )


def _record_gated(args: argparse.Namespace, builder: str | None, checkpoint: str | None) -> int:
    """Record a gated network built from its entry point (and weights)."""
    from dynviz.gates import gate_graph_of
    from dynviz.gates.entry import (
        canonical_spec,
        class_kwargs,
        load_entry,
        read_gated_checkpoint,
    )
    from dynviz.model.checkpoint import sha256_file
    from dynviz.support.distributed import all_reduce_sum, cleanup_distributed, init_distributed

    what = builder or checkpoint
    _refuse_routing_options(args, str(what))
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit} must be >= 1")
    if not args.data:
        raise ConfigError(f"{what}: a gated network needs --data SPEC")
    ckpt = read_gated_checkpoint(checkpoint) if checkpoint else None
    transform = Resize(tuple(args.size)) if args.size else None
    dataset = build_dataset(args.data, split=args.split, transform=transform)
    classes = class_kwargs(
        builder or (ckpt.builder if ckpt else None),
        getattr(dataset, "num_classes", None),
        ckpt.kwargs if ckpt else None,
    )
    model = load_entry(builder, checkpoint=ckpt, kwargs=classes)
    spec = canonical_spec(builder or ckpt.builder)  # one of the two names the builder
    ref = None
    if ckpt is not None:
        path = ckpt.path.resolve()  # extract rebuilds the network from any folder
        ref = {"path": str(path), "sha256": sha256_file(path), "iteration": None}
    name = args.name or gate_graph_of(model).name
    info = init_distributed(args.device)
    try:
        if info.device.type == "cpu":
            torch.set_flush_denormal(True)  # denormal activations slow CPU kernels down
        model.to(info.device)
        result = record(
            model,
            dataset,
            args.out,
            limit=args.limit,
            batch_size=args.batch,
            chunk_size=args.chunk,
            name=name,
            checkpoint=ref,
            data_spec=args.data,
            split=args.split,
            device=info.device,
            workers=args.workers,
            progress=args.progress,
            builder=spec,
        )
        counts = all_reduce_sum(torch.tensor([result.recorded, result.parts]))  # all ranks
        if info.is_main and args.json:
            print_json(
                {
                    "records": str(result.path),
                    "name": name,
                    "kind": "gate-graph",
                    "builder": spec,
                    "recorded": int(counts[0]),
                    "skipped": result.skipped,
                    "parts": int(counts[1]),
                    "data": args.data,
                    "split": args.split,
                    "checkpoint": ref,
                }
            )
        elif info.is_main:
            print(
                f"recorded {int(counts[0])} image(s) of {name} ({spec}) into {result.path} "
                f"({result.skipped} already there, {int(counts[1])} part file(s) written)"
            )
        return 0
    finally:
        cleanup_distributed()


def main(args: argparse.Namespace) -> int:
    """``dynviz record``."""
    return guarded(_main, args)
