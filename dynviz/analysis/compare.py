"""A Table-1-style comparison of trained models on the same data (what ``dynviz compare`` writes).

Each model (a run directory or ``.pt`` checkpoint) is evaluated with
:func:`dynviz.inference.evaluate.evaluate` (batch 1, real skipping): data-set mIoU and real GMACs
per image
(average, maximum, minimum, as in the paper's Table 1), plus parameters. Rows are dynamic models,
common networks (``dynviz extract``), special cases (route specs carrying the paper's numbers) and
other static networks.

Every row also keeps its per-image confusion matrices (``per_image.parquet``), so that a network
is compared with each other one on the same images with a paired bootstrap interval on the mIoU
difference (:func:`against_each`): "better" only where the interval excludes zero.

The module runs to about 570 lines: the table, the per-image confusions it keeps and the paired
comparisons over them read and write the same rows; the interval maths is
:mod:`dynviz.analysis.intervals`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from dynviz.model import ConfigError

__all__ = [
    "PER_IMAGE",
    "Against",
    "CompareRow",
    "SpecialCaseVerdict",
    "against_each",
    "against_special_cases",
    "comparison_markdown",
    "cost_accuracy_frame",
    "compare",
    "dynamic_against_each",
    "describe_model",
    "markdown",
    "read_confusions",
    "read_rows",
    "read_table",
    "source_name",
    "write_table",
]

logger = logging.getLogger(__name__)

PER_IMAGE = "per_image.parquet"
"""The per-image confusion matrices of a comparison: one row per method and image (``method``,
``image``: its index in the data, ``confusion``: the ``K x K`` counts, row-major)."""


def source_name(source: str) -> str:
    """A label for a model source: the run directory's name, a checkpoint's folder name, or
    the preset / YAML stem."""
    path = Path(source)
    if path.is_dir():
        return path.resolve().name
    if path.suffix == ".pt":
        return path.resolve().parent.name
    return path.stem if path.suffix in (".yaml", ".yml") else str(source)


@dataclass(frozen=True)
class CompareRow:
    """One row of the comparison (GMACs are real, per image)."""

    method: str
    kind: str  # dynamic | fix | common | special case | static
    dynamic: bool
    modeled_from: str
    miou: float  # in [0, 1]
    gmacs_avg: float
    gmacs_max: float
    gmacs_min: float
    expected_gmacs_avg: float
    params: int
    images: int
    checkpoint: str
    iteration: int | None
    confusions: np.ndarray | None = field(default=None, repr=False, compare=False)
    """``(images, K, K)`` int64 per-image confusion matrices (not in ``table1.csv``)."""

    def fields(self) -> dict[str, Any]:
        """The table's fields (everything but the confusions)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "confusions"}


@dataclass(frozen=True)
class SpecialCaseVerdict:
    """A dynamic network against the special cases (and, if asked, the common networks) of one
    comparison (mIoU in [0, 1], GMACs).

    Attributes:
        method: the dynamic network.
        miou: its mIoU.
        gmacs: its mean real GMACs per image.
        cheaper: ``(method, mIoU, GMACs)`` of the special cases that cost no more than it.
        dearer: those that cost more.
        line_miou: the mIoU of the straight line between the dearest cheaper and the cheapest
            dearer special case, at its cost (None unless special cases lie on both sides).
        noun: what the compared networks are called in sentences ("Special cases", or "Static
            networks" when common networks are among them).
    """

    method: str
    miou: float
    gmacs: float
    cheaper: tuple[tuple[str, float, float], ...]
    dearer: tuple[tuple[str, float, float], ...]
    line_miou: float | None
    noun: str = "Special cases"

    @property
    def beats_cheaper(self) -> bool:
        """Better than every compared network that costs no more (vacuously true without one)."""
        return all(self.miou > miou for _, miou, _ in self.cheaper)

    @property
    def beats_dearer(self) -> bool:
        """Better than at least one compared network that costs more."""
        return any(self.miou > miou for _, miou, _ in self.dearer)

    def sentences(self) -> list[str]:
        """The comparison in words (mIoU in %, costs with the automatic unit)."""
        from dynviz.units import format_macs, mac_unit

        unit = mac_unit([self.gmacs, *(g for *_, g in self.cheaper + self.dearer)])

        def case(name: str, miou: float, gmacs: float) -> str:
            gap = 100 * (self.miou - miou)
            return (
                f"{name} ({100 * miou:.1f}% at {format_macs(gmacs, unit)}, "
                f"{abs(gap):.1f} points {'below' if gap >= 0 else 'above'} it)"
            )

        lines = [f"{self.method}: {100 * self.miou:.1f}% at {format_macs(self.gmacs, unit)}."]
        if self.cheaper:
            lines.append(
                f"{self.noun} that cost no more: " + "; ".join(case(*c) for c in self.cheaper) + "."
            )
        if self.dearer:
            lines.append(
                f"{self.noun} that cost more: " + "; ".join(case(*c) for c in self.dearer) + "."
            )
        if self.line_miou is not None:
            gap = 100 * (self.miou - self.line_miou)
            lines.append(
                f"No {self.noun.lower().removesuffix('s')} costs what {self.method} costs; the "
                "straight line between the two around it gives "
                f"{100 * self.line_miou:.1f}% at that cost, "
                f"{abs(gap):.1f} points {'below' if gap >= 0 else 'above'} {self.method}."
            )
        return lines


def against_special_cases(
    rows: list[CompareRow], method: str, *, kinds: tuple[str, ...] = ("special case",)
) -> SpecialCaseVerdict | None:
    """How the dynamic network ``method`` compares with the special cases among ``rows`` (None
    when it or every special case is missing).

    Args:
        rows: the comparison.
        method: the dynamic network.
        kinds: the kinds of rows it is compared with; ``("special case", "common")`` adds its
            common networks (every static network of a demo report).
    """
    own = next((r for r in rows if r.method == method), None)
    cases = sorted(
        ((r.method, r.miou, r.gmacs_avg) for r in rows if r.kind in kinds),
        key=lambda c: c[2],
    )
    if own is None or not cases:
        return None
    cheaper = tuple(c for c in cases if c[2] <= own.gmacs_avg)
    dearer = tuple(c for c in cases if c[2] > own.gmacs_avg)
    line = None
    if cheaper and dearer:
        (_, low_miou, low), (_, high_miou, high) = cheaper[-1], dearer[0]
        share = (own.gmacs_avg - low) / (high - low) if high > low else 0.0
        line = low_miou + share * (high_miou - low_miou)
    noun = "Special cases" if set(kinds) == {"special case"} else "Static networks"
    return SpecialCaseVerdict(own.method, own.miou, own.gmacs_avg, cheaper, dearer, line, noun)


def describe_model(model: Any, train_args: dict[str, Any] | None = None) -> tuple[str, str]:
    """``(kind, modeled from)`` of a network: what Table 1's first columns say about it.
    ``train_args`` (the run's resolved training arguments) give the budget it was trained with."""
    route = model.route
    config = model.config
    if route is None:
        if not config.has_gates:
            return "fix", "every path open, no gates (Network-Fix)"
        args = train_args or {}
        lam, mu = float(args.get("budget_lambda") or 0.0), float(args.get("budget_mu") or 0.0)
        budget = f"budget lambda={lam:g}, mu={mu:g}" if lam > 0 else "no budget"
        return "dynamic", f"gates, {config.gate.value} ({budget})"
    text = route.description or route.name
    if "paper" in route.meta or route.description.lower().startswith("special case"):
        return "special case", text
    if route.name.startswith("common") or route.description.lower().startswith("common"):
        return "common", text
    return "static", text


def compare(
    runs: list[str],
    data: str,
    *,
    split: str = "val",
    limit: int | None = None,
    size: tuple[int, int] | None = None,
    names: list[str] | None = None,
    progress: bool | None = False,
    counting: str = "paper",
) -> list[CompareRow]:
    """Evaluate each run on ``data`` and return the comparison rows (in the given order), their
    GMACs in ``counting`` (``paper`` or ``official``, :class:`dynviz.model.cost.Counting`).
    ``progress`` is :func:`dynviz.inference.evaluate.evaluate`'s (``None``: a bar on a terminal,
    else log lines)."""
    from dynviz.data import Resize, build_dataset
    from dynviz.inference.evaluate import evaluate
    from dynviz.model.checkpoint import load_model

    if names is not None and len(names) != len(runs):
        raise ConfigError(f"--names gives {len(names)} names for {len(runs)} runs")
    transform = Resize(size) if size else None
    dataset = build_dataset(data, split=split, transform=transform)
    rows = []
    for i, run in enumerate(runs):
        model, meta = load_model(run)
        classes = max(int(model.config.num_classes), int(dataset.num_classes))
        per_image: list[np.ndarray] = []

        def count(item: dict[str, Any], pred: np.ndarray, k: int = classes, into=per_image) -> None:
            into.append(_confusion(item["label"], pred, k, int(dataset.ignore_index)))

        result = evaluate(
            model, dataset, limit=limit, progress=progress, counting=counting, on_prediction=count
        )
        kind, modeled = describe_model(model, meta.get("train_args"))
        rows.append(
            CompareRow(
                method=names[i] if names else source_name(run),
                kind=kind,
                dynamic=kind == "dynamic",
                modeled_from=modeled,
                miou=result.miou,
                gmacs_avg=result.real_gmacs.mean,
                gmacs_max=result.real_gmacs.max,
                gmacs_min=result.real_gmacs.min,
                expected_gmacs_avg=result.expected_gmacs.mean,
                params=result.params,
                images=result.num_images,
                checkpoint=str(meta.get("path")),
                iteration=meta.get("iteration"),
                confusions=np.stack(per_image) if per_image else None,
            )
        )
        logger.info(
            "%s: mIoU %.4f, %.4g GMACs", rows[-1].method, result.miou, result.real_gmacs.mean
        )
    return rows


def _confusion(label: Any, pred: np.ndarray, classes: int, ignore: int) -> np.ndarray:
    """``(K, K)`` int64 confusion of one image (rows: target, columns: prediction)."""
    target = np.asarray(label.cpu() if hasattr(label, "cpu") else label).astype(np.int64).ravel()
    pred = np.asarray(pred).astype(np.int64).ravel()
    keep = (target != ignore) & (target < classes)
    flat = target[keep] * classes + pred[keep]
    return np.bincount(flat, minlength=classes * classes).reshape(classes, classes)


_ORDER = {"dynamic": 0, "fix": 1, "common": 2, "special case": 3, "static": 4}


def markdown(rows: list[CompareRow], *, note: str = "") -> str:
    """The Table 1 layout as Markdown: dynamic models first, then common nets and static ones.

    Costs follow :mod:`dynviz.units` (GMACs, or MMACs when the dearest is under 1 GMAC).
    """
    from dynviz.units import mac_unit

    ordered = sorted(rows, key=lambda r: _ORDER.get(r.kind, 9))
    unit, scale = mac_unit([r.gmacs_max for r in rows])
    lines = [
        f"| Method | Kind | Dynamic | Modeled from | mIoU (%) | {unit} avg | {unit} max | "
        f"{unit} min | Params (M) |",
        "| --- | --- | :---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]

    def num(v: float, fmt: str) -> str:
        return "n/a" if not math.isfinite(v) else format(v, fmt)

    for r in ordered:
        lines.append(
            f"| {r.method} | {r.kind} | {'yes' if r.dynamic else 'no'} | {r.modeled_from} | "
            f"{num(100 * r.miou, '.2f')} | {num(scale * r.gmacs_avg, '.3f')} | "
            f"{num(scale * r.gmacs_max, '.3f')} | {num(scale * r.gmacs_min, '.3f')} | "
            f"{r.params / 1e6:.3f} |"
        )
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def read_table(path: str | Path) -> list[CompareRow]:
    """The rows of a ``table1.csv`` written by :func:`write_table`."""
    import pandas as pd

    frame = pd.read_csv(path, keep_default_na=False)
    rows = []
    for record in frame.to_dict("records"):
        iteration = record.get("iteration")
        record["iteration"] = None if iteration in ("", None) else int(iteration)
        record["dynamic"] = str(record["dynamic"]) == "True"
        record["checkpoint"] = str(record["checkpoint"])
        rows.append(CompareRow(**record))
    return rows


def write_table(
    rows: list[CompareRow],
    out: str | Path,
    *,
    data: str,
    split: str = "val",
    counting: str = "paper",
) -> Path:
    """Write ``table1.md`` (:func:`markdown`, with a note on what was measured) and
    ``table1.csv`` (every field of the rows) into ``out``; returns the Markdown file."""
    import pandas as pd

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = rows[0].images if rows else 0
    counted = (
        "the paper's counting"
        if counting == "paper"
        else "the official code's counting (docs/official.md)"
    )
    note = (
        f"Evaluated on {data} [{split}], {images} images, batch 1 with closed paths "
        f"skipped. mIoU is data-set level; cost is the real (executed) cost per image in "
        f"{counted} (1 multiply-add = 1; the paper's FLOPs)."
    )
    (out / "table1.md").write_text(markdown(rows, note=note), encoding="utf-8")
    pd.DataFrame([r.fields() for r in rows]).to_csv(  # read back by read_table
        out / "table1.csv", index=False, float_format="%.6g"
    )
    kept = [r for r in rows if r.confusions is not None]
    if kept:
        pd.DataFrame(
            {
                "method": [r.method for r in kept for _ in r.confusions],
                "image": [i for r in kept for i in range(len(r.confusions))],
                "confusion": [c.ravel() for r in kept for c in r.confusions],
            }
        ).to_parquet(out / PER_IMAGE, index=False)
    elif (out / PER_IMAGE).exists():
        (out / PER_IMAGE).unlink()  # not this table's
    return out / "table1.md"


def read_confusions(folder: str | Path) -> dict[str, np.ndarray]:
    """The per-image confusion matrices ``(images, K, K)`` per method of a comparison folder
    (empty when it has none: written before they were kept; or when the file is damaged, with
    a warning naming it: the table's rows stay usable, without intervals)."""
    import pandas as pd

    path = Path(folder) / PER_IMAGE
    if not path.is_file():
        return {}
    out = {}
    try:
        frame = pd.read_parquet(path).sort_values(["method", "image"], kind="stable")
        for method, group in frame.groupby("method", sort=False):
            flat = np.stack(group["confusion"].to_numpy()).astype(np.int64)
            k = int(round(math.sqrt(flat.shape[1])))
            out[str(method)] = flat.reshape(len(flat), k, k)
    except (OSError, ValueError, KeyError, TypeError) as err:  # ArrowInvalid is a ValueError
        fault = " ".join(str(err).split()) or type(err).__name__
        logger.warning("%s: unreadable (%s); its per-image confusions are ignored", path, fault)
        return {}
    return out


def read_rows(folder: str | Path) -> list[CompareRow]:
    """The rows of a comparison folder (``table1.csv``) with their per-image confusions."""
    from dataclasses import replace

    confusions = read_confusions(folder)
    return [
        replace(row, confusions=confusions.get(row.method))
        for row in read_table(Path(folder) / "table1.csv")
    ]


@dataclass(frozen=True)
class Against:
    """A network against one other on the same images.

    Attributes:
        method, kind: the other network.
        miou: its mIoU.
        gmacs: its mean real GMACs per image.
        difference: the first network's mIoU minus this one's, with its paired bootstrap
            interval (None without per-image confusions of both).
    """

    method: str
    kind: str
    miou: float
    gmacs: float
    difference: Any  # dynviz.analysis.intervals.Interval | None

    @property
    def verdict(self) -> str:
        """``better``, ``worse`` (the first network against this one) or ``no clear
        difference``, by the interval (``n/a`` without one)."""
        if self.difference is None:
            return "n/a"
        if self.difference.above(0.0):
            return "better"
        if self.difference.below(0.0):
            return "worse"
        return "no clear difference"


def against_each(rows: list[CompareRow], method: str, *, seed: int = 0) -> list[Against]:
    """``method`` against every other row of a comparison, cheapest first: mIoU difference with
    a 95% paired bootstrap interval over the images (:func:`dynviz.analysis.intervals.
    miou_difference`). Empty when ``method`` is not among the rows.
    """
    from dynviz.analysis.intervals import miou_difference

    own = next((r for r in rows if r.method == method), None)
    if own is None:
        return []
    out = []
    for row in sorted((r for r in rows if r.method != method), key=lambda r: r.gmacs_avg):
        paired = (
            own.confusions is not None
            and row.confusions is not None
            and own.confusions.shape == row.confusions.shape
        )
        difference = miou_difference(own.confusions, row.confusions, seed=seed) if paired else None
        out.append(Against(row.method, row.kind, row.miou, row.gmacs_avg, difference))
    return out


def comparison_markdown(
    rows: list[CompareRow], method: str, *, others: list[Against] | None = None, seed: int = 0
) -> list[str]:
    """The Markdown lines of :func:`against_each`: a table of every other network with its
    cost, mIoU and the difference's interval, then the claims the intervals support."""
    from dynviz.units import format_macs, mac_unit

    own = next((r for r in rows if r.method == method), None)
    others = against_each(rows, method, seed=seed) if others is None else others
    if own is None or not others:
        return []
    unit = mac_unit([own.gmacs_avg, *(o.gmacs for o in others)])
    lines = [
        f"| network | kind | cost ({unit.label}) | mIoU (%) | {method} minus it, points "
        "(95% interval) | verdict |",
        "| --- | --- | ---: | ---: | --- | --- |",
        f"| **{method}** | {own.kind} | {unit(own.gmacs_avg):.3f} | {100 * own.miou:.1f} | | |",
    ]
    for o in others:
        shown = "n/a" if o.difference is None else o.difference.format(100, 1, sign=True)
        lines.append(
            f"| {o.method} | {o.kind} | {unit(o.gmacs):.3f} | {100 * o.miou:.1f} | {shown} | "
            f"{o.verdict} |"
        )
    images = own.confusions.shape[0] if own.confusions is not None else own.images
    lines += [
        "",
        f"Intervals: the paired percentile bootstrap over the {images} images (the same draws "
        "for both networks). A network is called better or worse only where the interval "
        "excludes zero.",
    ]
    cheap = [o for o in others if o.gmacs <= own.gmacs_avg]
    claims = []
    better = [o.method for o in cheap if o.verdict == "better"]
    level = [o.method for o in cheap if o.verdict == "no clear difference"]
    worse = [o.method for o in cheap if o.verdict == "worse"]
    cost = format_macs(own.gmacs_avg, unit)
    if better:
        claims.append(f"better than {', '.join(better)}, which cost no more than its {cost}")
    if level:
        claims.append(f"not clearly different from {', '.join(level)} (cost no more)")
    if worse:
        claims.append(f"worse than {', '.join(worse)}, which cost no more")
    if claims:
        lines += ["", f"{method} is " + "; ".join(claims) + "."]
    return lines


def cost_accuracy_frame(
    rows: list[CompareRow], method: str, *, others: list[Against] | None = None, seed: int = 0
) -> Any:
    """What :func:`dynviz.plots.mpl.cost_accuracy` draws: one row per network (``method``,
    ``kind``, ``cost`` in the automatic unit, ``unit``, ``miou`` in %), and for the others
    ``low``/``high``: the mIoU that ``method``'s minus the difference interval gives, in %."""
    import pandas as pd

    from dynviz.units import mac_unit

    unit = mac_unit([r.gmacs_avg for r in rows])
    own = next((r for r in rows if r.method == method), None)
    if others is None:
        others = against_each(rows, method, seed=seed)
    by_method = {o.method: o for o in others}
    frame = []
    for r in rows:
        entry = {
            "method": r.method,
            "kind": r.kind,
            "cost": unit(r.gmacs_avg),
            "unit": unit.label,
            "miou": 100 * r.miou,
            "low": math.nan,
            "high": math.nan,
        }
        other = by_method.get(r.method)
        if own is not None and other is not None and other.difference is not None:
            entry["low"] = 100 * (own.miou - other.difference.high)
            entry["high"] = 100 * (own.miou - other.difference.low)
        frame.append(entry)
    return pd.DataFrame(frame)


def dynamic_against_each(folder: str | Path, *, seed: int = 0) -> tuple[str, Any, Any]:
    """The dynamic network of a comparison folder against every other network in it.

    The dynamic network is the budgeted one (``budget`` in its name) when there are several,
    else the first; only networks with per-image confusions count.

    Returns:
        ``(method, table, figure)``: the dynamic network's name; one row per other network
        (``network``, ``kind``, ``gmacs``, ``mIoU (%)``, the mIoU ``difference`` with its
        ``low`` and ``high`` bounds in points (:func:`against_each`), ``verdict`` and ``costs
        no more``); and what the cost-accuracy figure draws (:func:`cost_accuracy_frame`).
        ``("", empty, empty)`` without a dynamic network with per-image confusions.
    """
    import pandas as pd

    rows = read_rows(folder)
    dynamic = [r.method for r in rows if r.kind == "dynamic" and r.confusions is not None]
    if not dynamic:
        return "", pd.DataFrame(), pd.DataFrame()
    method = next((m for m in dynamic if "budget" in m.lower()), dynamic[0])
    own = next(r for r in rows if r.method == method)
    others = against_each(rows, method, seed=seed)  # the bootstrap, once
    table_rows = [
        {
            "network": o.method,
            "kind": o.kind,
            "gmacs": o.gmacs,
            "mIoU (%)": 100 * o.miou,
            "difference": o.difference.value * 100 if o.difference else float("nan"),
            "low": o.difference.low * 100 if o.difference else float("nan"),
            "high": o.difference.high * 100 if o.difference else float("nan"),
            "verdict": o.verdict,
            "costs no more": o.gmacs <= own.gmacs_avg,
        }
        for o in others
    ]
    return method, pd.DataFrame(table_rows), cost_accuracy_frame(rows, method, others=others)
