"""``dynviz extract RECORDS_DIR --threshold 0.95 --out models/NAME.yaml``: the common network.

Keeps the paths active in more than the threshold of the recorded images, removes dangling cells
and writes a route spec (:func:`dynviz.analysis.common.write_common`) that ``dynviz.build_model``
builds as a static network and ``dynviz train models/NAME.yaml --data ...`` retrains
(Common-A/B/C of the paper's Table 1). The file starts with a comment naming the source records
and threshold; its ``notes`` give the parameters and GMACs of the static network.

A damaged part of the records is skipped with its chunk by default (a warning names the file,
the fault and the images lost; the summary and the file's header say what was skipped);
``--strict`` refuses it (:mod:`dynviz.record.tables`).

Gate-graph records (any gated network, :mod:`dynviz.gates`) give a plan instead of a route
spec: ``dynviz extract RECORDS_DIR --out plan.yaml [--threshold 0.95] [--lossless]`` writes,
after a comment naming the records and threshold, the keys ``network``, ``builder``,
``threshold``, ``lossless``, ``inputs``, ``keep`` (``{point: [options]}``: the options used by
more than the threshold of the inputs; with ``--lossless`` every option some input used),
``sometimes``, ``never`` and ``usage`` (``{point: {option: share}}``).

With ``--static-out FILE.pt`` the network is rebuilt from its entry point (the records'
``builder``, or ``--builder``) and weights (the records' checkpoint, or ``--checkpoint``; none:
the builder's own weights) and, when it has a method ``static(keep) -> nn.Module``, the static
network of the plan is saved as a checkpoint with its builder
(:func:`dynviz.gates.entry.save_gated_checkpoint` with ``static={point: options}``: the static
network's ``state_dict``, the builder and its kwargs, no pickled code;
``dynviz.gates.entry.load_entry(None, checkpoint=FILE.pt)`` rebuilds it). Its parameters are
printed and, when the graph gives costs, its MACs per input (the base cost plus the kept
options') against the mean real cost the records measured. A network without ``static`` gets a
one-line note: only the plan is written. ``--name`` and ``--size`` apply to routing-space
records only.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch

from dynviz.analysis.common import write_common
from dynviz.analysis.gates import CommonPlan, common_plan
from dynviz.commands import add_strict_option, guarded, positive_int, print_json
from dynviz.model import ConfigError
from dynviz.record import RecordError, Records, read_records
from dynviz.rules import COMMON_THRESHOLD
from dynviz.units import GIGA, format_macs

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dynviz extract``."""
    parser.add_argument("records", metavar="RECORDS_DIR", help="records folder")
    parser.add_argument(
        "--threshold",
        type=float,
        default=COMMON_THRESHOLD,
        help=f"keep paths active in more than this share of images (default {COMMON_THRESHOLD})",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="YAML",
        help="route spec to write, e.g. models/common-a.yaml",
    )
    parser.add_argument("--name", help="route name (default: the file's stem)")
    parser.add_argument(
        "--size",
        nargs=2,
        type=positive_int,
        metavar=("H", "W"),
        help="input size for the GMACs in the notes (default: the records')",
    )
    gated = parser.add_argument_group("gate-graph records (any gated network)")
    gated.add_argument(
        "--lossless",
        action="store_true",
        help="keep every option some input used (drop only the never-used ones)",
    )
    gated.add_argument(
        "--static-out",
        metavar="FILE.pt",
        help="also save the static network of the plan (the model's static(keep))",
    )
    gated.add_argument(
        "--builder",
        metavar="MODULE:FUNCTION",
        help="entry point of the network (default: the records')",
    )
    gated.add_argument(
        "--checkpoint",
        metavar="FILE.pt",
        help="weights of the network (default: the records' checkpoint)",
    )
    add_strict_option(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _main(args: argparse.Namespace) -> int:
    if not 0.0 <= args.threshold < 1.0:
        raise ConfigError(f"--threshold {args.threshold} must be in [0, 1)")
    records = read_records(args.records, strict=args.strict)
    if records.kind == "gate-graph":
        return _extract_plan(args, records)
    for given, option in (
        (args.lossless, "--lossless"),
        (args.static_out, "--static-out"),
        (args.builder, "--builder"),
        (args.checkpoint, "--checkpoint"),
    ):
        if given:
            raise ConfigError(
                f"{option} applies to gate-graph records; {args.records} holds routing-space "
                "records (their common network is a route spec)"
            )
    route = write_common(
        records,
        args.out,
        threshold=args.threshold,
        name=args.name,
        size=tuple(args.size) if args.size else None,
    )
    if not args.json:
        print(f"wrote {args.out}: {route.name}, {len(route)} paths in {len(route.cells)} cells")
        print(f"  {route.meta.get('notes', '')}")
        if records.skipped:
            print(f"  {records.skipped_note}")
        return 0
    from dynviz.analysis.common import PAPER_SIZE
    from dynviz.model.zoo import model_cost

    size = args.size or records.sidecar.input_size or PAPER_SIZE
    size = (int(size[0]), int(size[1]))
    static, dynamic = model_cost(route, size=size), model_cost(route.space, size=size)
    print_json(
        {
            "out": str(args.out),
            "name": route.name,
            "records": str(args.records),
            "threshold": args.threshold,
            "paths": len(route),
            "cells": len(route.cells),
            "params": static.params,
            "gmacs": static.gmacs,
            "dynamic_gmacs": dynamic.gmacs,
            "size": list(size),
            "notes": route.meta.get("notes", ""),
            "skipped": [s.to_dict() for s in records.skipped],
        }
    )
    return 0


# ------------------------------------------------------------------------ gate-graph records
def plan_document(records: Records, plan: CommonPlan, *, lossless: bool) -> dict[str, Any]:
    """The plan file's mapping (see the module docstring)."""
    graph = records.graph
    keep = plan.keep(lossless=lossless)
    return {
        "network": graph.name,
        "builder": records.sidecar.builder,
        "threshold": plan.threshold,
        "lossless": lossless,
        "inputs": len(records.images),
        "keep": {p: list(o) for p, o in keep.items()},
        "sometimes": {p: list(o) for p, o in plan.sometimes.items()},
        "never": {p: list(o) for p, o in plan.never.items()},
        "usage": {
            p.name: {o: round(plan.usage[(p.name, o)], 6) for o in p.option_names} for p in graph
        },
    }


def _write_plan(args: argparse.Namespace, records: Records, document: dict[str, Any]) -> None:
    import yaml

    from dynviz.model.checkpoint import atomic_write

    rule = (
        "every option some input used (--lossless)"
        if args.lossless
        else f"the options used by more than {100 * args.threshold:g}% of the inputs"
    )
    checkpoint = records.sidecar.checkpoint
    header = [
        f"# Common plan extracted by `dynviz extract` from {records.path}",
        f"# ({records.label}: {len(records.images)} inputs of {records.sidecar.data_label}; "
        f"checkpoint sha256 {((checkpoint.sha256 if checkpoint else None) or 'none')[:16]}).",
        f"# keep: {rule}; threshold {args.threshold:g}.",
    ]
    if records.skipped:
        header.append(f"# {records.skipped_note}")
    text = "\n".join(header) + "\n" + yaml.safe_dump(document, sort_keys=False)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda handle: handle.write(text.encode("utf-8")))


def _static_network(
    args: argparse.Namespace, records: Records, keep: dict[str, tuple[str, ...]]
) -> dict[str, Any]:
    """Rebuild the network, save its static network; what to print (``note`` when it has no
    ``static``)."""
    from dynviz.gates.entry import (
        class_kwargs,
        load_entry,
        read_gated_checkpoint,
        save_gated_checkpoint,
    )
    from dynviz.model.checkpoint import sha256_file

    sidecar = records.sidecar
    builder = args.builder or sidecar.builder
    if not builder:
        raise ConfigError(
            f"{records.path}: the records name no builder; pass --builder MODULE:FUNCTION"
        )
    checkpoint = args.checkpoint or (sidecar.checkpoint.path if sidecar.checkpoint else None)
    facts: dict[str, Any] = {"builder": builder, "checkpoint": checkpoint}
    ckpt = read_gated_checkpoint(checkpoint) if checkpoint else None
    if ckpt is None:
        facts["weights_note"] = "no checkpoint: the static network has the builder's own weights"
    elif sidecar.checkpoint and sidecar.checkpoint.sha256:
        if sha256_file(ckpt.path) != sidecar.checkpoint.sha256:
            facts["weights_note"] = (
                f"{ckpt.path} is not the checkpoint the records were made with (sha256 differs)"
            )
    classes = class_kwargs(builder, sidecar.num_classes, ckpt.kwargs if ckpt else None)
    model = load_entry(builder, checkpoint=ckpt, kwargs=classes)
    static = getattr(model, "static", None)
    if not callable(static):
        facts.pop("weights_note", None)  # no static network: its weights do not matter
        facts["note"] = (
            f"{type(model).__name__} has no static(keep) method: only the plan was written"
        )
        return facts
    network = static(keep)
    if not isinstance(network, torch.nn.Module):
        raise ConfigError(f"{builder}: static(keep) returned a {type(network).__name__}")
    kwargs = {**(ckpt.kwargs if ckpt is not None else {}), **classes}
    save_gated_checkpoint(network, args.static_out, builder=builder, kwargs=kwargs, static=keep)
    facts["static_out"] = str(args.static_out)
    facts["params"] = int(sum(p.numel() for p in network.parameters()))
    facts["dynamic_params"] = int(sum(p.numel() for p in model.parameters()))
    return facts


def _plan_costs(records: Records, keep: dict[str, tuple[str, ...]]) -> dict[str, float] | None:
    """The static network's cost per input (base plus the kept options) and the dynamic mean
    real cost of the records, in GMACs; None when the graph gives no costs."""
    graph = records.graph
    if not graph.has_costs:
        return None
    macs = graph.option_macs()
    static = float(graph.base_macs) + sum(macs[(p, o)] for p, opts in keep.items() for o in opts)
    real = records.images["real_gmacs"].astype(float)
    return {
        "static_gmacs": static / GIGA,
        "dynamic_gmacs": float(real.mean()) if real.notna().any() else math.nan,
        "all_run_gmacs": float(graph.all_run_macs) / GIGA,
    }


def _extract_plan(args: argparse.Namespace, records: Records) -> int:
    """``dynviz extract`` of gate-graph records: the plan, and the static network if asked."""
    for given, option in ((args.name, "--name"), (args.size, "--size")):
        if given:
            raise ConfigError(
                f"{option} applies to routing-space records; {args.records} holds a gated "
                "network's records (its plan names options, not a route)"
            )
    if records.images.empty:
        raise RecordError(f"{records.path}: no image recorded yet; record again")
    plan = common_plan(records.decisions, records.graph, threshold=args.threshold)
    document = plan_document(records, plan, lossless=args.lossless)
    _write_plan(args, records, document)
    keep = plan.keep(lossless=args.lossless)
    static = _static_network(args, records, keep) if args.static_out else None
    costs = _plan_costs(records, keep)
    kept = sum(len(o) for o in keep.values())
    total = sum(len(p.options) for p in records.graph)
    if args.json:
        print_json(
            {
                "out": str(args.out),
                "kind": "gate-graph",
                "records": str(args.records),
                "network": document["network"],
                "builder": document["builder"],
                "threshold": args.threshold,
                "lossless": args.lossless,
                "kept": kept,
                "options": total,
                "keep": document["keep"],
                "never": document["never"],
                "static": static,
                "costs": costs,
                "skipped": [s.to_dict() for s in records.skipped],
            }
        )
        return 0
    print(f"wrote {args.out}: {document['network']}, {kept} of {total} options kept")
    if static is not None:
        for key in ("weights_note", "note"):
            if key in static:
                print(f"  note: {static[key]}")
        if "static_out" in static:
            print(
                f"  wrote {static['static_out']}: static network, {static['params']:,} "
                f"parameters (the gated network: {static['dynamic_params']:,})"
            )
    if costs is not None:
        print(
            f"  MACs per input: static {format_macs(costs['static_gmacs'])}; dynamic mean real "
            f"{format_macs(costs['dynamic_gmacs'])} over {len(records.images)} inputs "
            f"(every option running: {format_macs(costs['all_run_gmacs'])})"
        )
    if records.skipped:
        print(f"  {records.skipped_note}")
    return 0


def main(args: argparse.Namespace) -> int:
    """``dynviz extract``."""
    return guarded(_main, args)
