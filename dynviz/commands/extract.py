"""``dynviz extract RECORDS_DIR --threshold 0.95 --out models/NAME.yaml``: the common network.

Keeps the paths active in more than the threshold of the recorded images, removes dangling cells
(:mod:`dynviz.analysis.common`) and writes a route spec that ``dynviz.build_model`` builds as a
static network and ``dynviz train models/NAME.yaml --data ...`` retrains (Common-A/B/C of the
paper's Table 1). The file starts with a comment naming the source records and threshold; its
``notes`` give the parameters and GMACs of the static network.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from dynviz.analysis.common import extract_common
from dynviz.commands import guarded, positive_int
from dynviz.cost import cost_table, param_table
from dynviz.model import ConfigError, build_model
from dynviz.model.route import Route
from dynviz.record import read_records

__all__ = ["configure_parser", "main", "write_common"]

logger = logging.getLogger(__name__)


def write_common(
    records_dir: str | Path,
    out: str | Path,
    *,
    threshold: float = 0.95,
    name: str | None = None,
    size: tuple[int, int] | None = None,
) -> Route:
    """Extract the common network of a records folder and write its route spec.

    Args:
        records_dir: the records folder.
        out: the YAML file to write.
        threshold: keep paths active in more than this share of images.
        name: the route's name (default: the file's stem).
        size: input size for the GMACs in the notes (default: the records' first input size).

    Returns:
        The route, as read back from the written file.
    """
    records = read_records(records_dir)
    out = Path(out)
    name = name or out.stem
    label = records.label
    images = len(records.images)
    route = extract_common(
        records,
        threshold=threshold,
        name=name,
        description=f"common network of {label}: paths active in more than "
        f"{100 * threshold:g}% of {images} images",
    )
    config = records.config
    sizes = records.meta.get("input_sizes") or [[1024, 2048]]
    size = size or (int(sizes[0][0]), int(sizes[0][1]))
    static = cost_table(config, size, route=route).total()
    dynamic = cost_table(config, size).total()
    params = param_table(config, route=route).total
    notes = (
        f"{route.meta.get('notes', '')} Static network: {params:,} parameters, "
        f"{static / 1e9:.4g} GMACs at {size[0]}x{size[1]} (paper counting); the dynamic "
        f"model with every path open: {dynamic / 1e9:.4g} GMACs."
    )
    route = Route(
        route.space,
        route.paths,
        name=route.name,
        description=route.description,
        meta={"notes": notes},
    )
    checkpoint = records.meta.get("checkpoint") or {}
    header = [
        f"# Common network extracted by `dynviz extract` from {Path(records_dir)}",
        f"# ({label}: {images} images of {records.meta.get('data')} "
        f"[{records.meta.get('split')}]; checkpoint sha256 "
        f"{(checkpoint.get('sha256') or 'none (untrained)')[:16]}).",
        f"# Paths active in more than {100 * threshold:g}% of the images, dangling cells removed.",
        f"# Build: dynviz.build_model({str(out)!r}); retrain: dynviz train {out} --data SPEC",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(header) + "\n" + route.to_yaml(), encoding="utf-8")
    written = Route.from_yaml(out)
    build_model(written)  # fail here, not at training time, if it does not build
    return written


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dynviz extract``."""
    parser.add_argument("records", metavar="RECORDS_DIR", help="records folder")
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.95,
        help="keep paths active in more than this share of images (default 0.95)",
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


def _main(args: argparse.Namespace) -> int:
    if not 0.0 <= args.threshold < 1.0:
        raise ConfigError(f"--threshold {args.threshold} must be in [0, 1)")
    route = write_common(
        args.records,
        args.out,
        threshold=args.threshold,
        name=args.name,
        size=tuple(args.size) if args.size else None,
    )
    print(f"wrote {args.out}: {route.name}, {len(route)} paths in {len(route.cells)} cells")
    print(f"  {route.meta.get('notes', '')}")
    return 0


def main(args: argparse.Namespace) -> int:
    """``dynviz extract``."""
    return guarded(_main, args)
