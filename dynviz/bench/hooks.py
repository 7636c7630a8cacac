"""Figures that measure other parts of dynviz: recording (c) and analysis at scale (f).

They import :mod:`dynviz.record`, :mod:`dynviz.analysis` and pandas, so they live apart from the
model figures and are imported only when those modules exist.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynviz.bench.core import BenchSettings, Figure, Section
from dynviz.inference.folding import inference_form
from dynviz.model import build_model
from dynviz.model.route import Route
from dynviz.model.zoo import load_spec
from dynviz.support.timing import measure_calls, torch_threads

__all__ = ["InMemoryDataset", "generated_records", "measure_analysis", "measure_recording"]

logger = logging.getLogger(__name__)


class InMemoryDataset:
    """Items of a data set generated once and kept in memory, so that timing a model over it
    measures the model (and the recorder), not the image generator."""

    def __init__(
        self, items: list[dict[str, Any]], *, num_classes: int, ignore_index: int = 255
    ) -> None:
        self.items = items
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = [str(k) for k in range(num_classes)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]

    def image_id(self, index: int) -> str:
        return str(self.items[index]["image_id"])


def _synthetic(count: int, size: tuple[int, int]) -> InMemoryDataset:
    from dynviz.data import build_dataset

    data = build_dataset(f"synthetic:count={count},size={size[0]}x{size[1]}", split="val")
    items = [data[i] for i in range(len(data))]
    return InMemoryDataset(
        items, num_classes=data.num_classes, ignore_index=int(getattr(data, "ignore_index", 255))
    )


class _PairedDataset(InMemoryDataset):
    """The recorder's data set that also runs plain inference on every image as the recorder
    loads it, so that each image's plain forward pass and its recorded one run a few
    milliseconds apart.

    On this project's 2-core machines a single-threaded forward pass drifts by +-5% from one
    5-second round to the next (CPU time too, so it is the machine, not the scheduler); timed
    in separate calls, that drift hid an overhead of 1%. Paired per image, it hits both sides
    alike. ``before`` alternates per round: True runs image i's plain pass just before the
    recorder's (in ``__getitem__(i)``), False just after it (in ``__getitem__(i + 1)``, and
    the last one after the call), so neither side always finds the caches the other left.
    """

    def __init__(self, data: InMemoryDataset, plain: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(data.items, num_classes=data.num_classes, ignore_index=data.ignore_index)
        self.plain = plain
        self.before = True
        self.seconds = 0.0  # plain inference timed in the current round

    def run_plain(self, index: int) -> None:
        start = time.perf_counter()
        self.plain(self.items[index])
        self.seconds += time.perf_counter() - start

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.before:
            self.run_plain(index)
        elif index > 0:
            self.run_plain(index - 1)
        return self.items[index]


def measure_recording(
    settings: BenchSettings, section: Section, target: float, spread: float
) -> tuple[Section, list[Figure]]:
    """(c) ``dynviz.record.record`` over N images against plain inference over them, paired per
    image (:class:`_PairedDataset`).

    Both run the same network (dynamic, gates evaluated, batch 1) in its inference form (BN
    folded, as ``record`` runs it) under ``torch.inference_mode`` over the same in-memory
    items; recording adds the gate and cost tables, the per-image confusion matrix and the
    Parquet writes (and its data loader, which plain inference does not need). One round is
    one ``record`` call into a fresh folder (a folder that already holds the images would be
    skipped) with every image's plain pass timed beside it: its recording time is the call's
    wall time less those plain passes, and its overhead that over the plain time, less one.
    """
    from dynviz.record import record

    size = settings.batch_size
    count = settings.record_images
    data = _synthetic(count, size)
    torch.manual_seed(0)
    model = build_model(settings.model, num_classes=max(data.num_classes, 2)).eval()
    runner = inference_form(model)  # as record runs it (folded once, not per call)

    def plain(item: dict[str, Any]) -> None:  # what inference without recording runs
        out = runner(item["image"].unsqueeze(0))
        _ = out.logits.max(1).indices  # the prediction record makes (argmax is slower)

    dataset = _PairedDataset(data, plain)

    with torch_threads(settings.record_threads), tempfile.TemporaryDirectory() as tmp:
        rounds = iter(range(1_000_000))

        def paired() -> float:
            """One record call and every image's plain pass; returns the plain seconds."""
            dataset.before = not dataset.before
            dataset.seconds = 0.0
            record(runner, dataset, Path(tmp) / f"r{next(rounds)}", progress=False)
            if not dataset.before:  # the last image's plain pass, after its recorded one
                with torch.inference_mode():
                    dataset.run_plain(count - 1)
            return dataset.seconds

        timings = measure_calls(
            {"paired": paired},
            repeats=settings.ratio_repeats,
            warmup=1,
            max_wait=settings.max_wait,
            keep_results=True,
        )
    section.add_timings(timings)
    plains = timings.results["paired"]
    recorded = [wall - p for wall, p in zip(timings.samples["paired"], plains, strict=True)]
    per_round = [100.0 * (r / p - 1.0) for r, p in zip(recorded, plains, strict=True)]
    median_plain, median_record = statistics.median(plains), statistics.median(recorded)
    section.columns = ["variant", "s", "per image ms", "overhead"]
    section.title = (
        f"Recording overhead: {settings.model}, {count} images at {size[0]}x{size[1]}, batch 1, "
        f"{settings.record_threads} thread{'s' if settings.record_threads > 1 else ''}"
    )
    section.rows += [
        [
            "plain inference (same network and prediction, eval, inference_mode)",
            median_plain,
            1e3 * median_plain / count,
            None,
        ],
        [
            "dynviz.record.record (loader, gates, costs, confusion, Parquet)",
            median_record,
            1e3 * median_record / count,
            f"{statistics.median(per_round):+.1f}%",
        ],
    ]
    section.notes.append(
        "paired per image: each round is one record call whose data set runs every image's "
        "plain pass beside the recorder's (before it in one round, after it in the next), so "
        "the machine's drift between rounds hits both; the recorder's time is the call's wall "
        "time less those plain passes. Same in-memory images for both (the synthetic generator "
        "is not timed); each call writes a fresh folder. A negative overhead is noise."
    )
    figure = Figure.of(
        "c", "recording overhead", per_round, 100.0 * target, "<=", "%", spread_limit=100 * spread
    )
    return section, [figure]


# ---------------------------------------------------------------------------- analysis
def generated_records(
    images: int, config_name: str = "layer16", *, seed: int = 0
) -> tuple[Any, Any, Any]:
    """Frames shaped like :func:`dynviz.record.read_records` output, for ``images`` images.

    Each image draws a route: every path is active with its own probability (spread over
    [0, 1] like Fig. 5), alpha uniform on the active paths. Returns ``(gates, images, config)``.
    """
    import pandas as pd

    from dynviz.record import DIRECTION_DTYPE, DIRECTIONS

    spec = load_spec(config_name)
    config = spec.space if isinstance(spec, Route) else spec
    rng = np.random.default_rng(seed)
    paths = np.array([(layer, scale, int(d)) for layer, scale, d in config.paths], dtype=np.int64)
    p = len(paths)
    prob = rng.beta(0.6, 0.4, size=p)
    # a chain of keeps at 1/4 is taken by nearly every image, so a common network exists
    chain = (paths[:, 1] == 0) & (paths[:, 2] == 0)
    prob[chain] = rng.uniform(0.97, 1.0, size=int(chain.sum()))
    active = rng.random((images, p)) < prob  # (images, paths)
    alpha = np.where(active, rng.uniform(0.05, 1.0, size=(images, p)), 0.0).astype(np.float32)
    ids = pd.array([f"img{i:07d}" for i in range(images)], dtype="string")
    gates = pd.DataFrame(
        {
            "image_id": ids.repeat(p) if hasattr(ids, "repeat") else np.repeat(ids, p),
            "layer": np.tile(paths[:, 0], images).astype(np.int16),
            "scale": (4 * 2 ** np.tile(paths[:, 1], images)).astype(np.int16),
            "scale_index": np.tile(paths[:, 1], images).astype(np.int8),
            "direction": pd.Categorical.from_codes(
                np.tile(paths[:, 2], images), dtype=DIRECTION_DTYPE
            ),
            "alpha": alpha.reshape(-1),
            "active": active.reshape(-1),
        }
    )
    assert list(DIRECTION_DTYPE.categories) == list(DIRECTIONS)
    real = rng.uniform(30.0, 110.0, size=images)
    frame = pd.DataFrame(
        {
            "image_id": ids,
            "real_gmacs": real,
            "expected_gmacs": real * rng.uniform(0.9, 1.1, size=images),
            "miou": rng.uniform(0.3, 0.9, size=images),
            "pixel_accuracy": rng.uniform(0.7, 0.99, size=images),
            "height": np.full(images, 1024, dtype=np.int32),
            "width": np.full(images, 2048, dtype=np.int32),
            "stat_mean_object_area": rng.lognormal(6.0, 1.5, size=images),
        }
    )
    return gates, frame, config


def measure_analysis(
    settings: BenchSettings, section: Section, target: float, page_target: float
) -> tuple[Section, list[Figure]]:
    """(f) The analyses of :mod:`dynviz.analysis` and the explorer's pages on generated records.

    "N records" is read two ways, both measured: N *images* (each with one gate row per path,
    149 for layer16: 100,000 images are 14.9 M gate rows) and N *gate rows* (the records' row
    unit: 100,000 rows are 672 layer16 images). Page renders are measured when the Streamlit
    explorer exists (see :func:`_page_times`).
    """
    from dynviz.analysis import (
        activation_probability,
        cost_statistics,
        extract_common,
        probability_distribution,
    )

    spec = load_spec(settings.model)
    config = spec.space if isinstance(spec, Route) else spec
    n = settings.records
    scales = {f"{n:,} images": n, f"{n:,} gate rows": max(1, -(-n // len(config.paths)))}
    section.columns = ["step", *scales]
    columns: dict[str, dict[str, float | None]] = {}
    figures = []
    generated = []
    for label, count in scales.items():
        start = time.perf_counter()
        gates, images, config = generated_records(count, settings.model)
        generated.append(
            f"{label}: {count:,} images, {len(gates):,} gate rows, generated in "
            f"{time.perf_counter() - start:.1f} s"
        )
        steps: dict[str, Callable[[], object]] = {
            "activation probability per path": lambda g=gates: activation_probability(g),
            "Fig. 5 distribution": lambda g=gates: probability_distribution(g),
            "common network extraction (95%)": lambda g=gates, c=config: extract_common(g, c),
            "Table 1 statistics": lambda i=images: cost_statistics(i),
        }
        timings = measure_calls(
            steps, repeats=max(1, min(settings.repeats, 3)), warmup=0, max_wait=settings.max_wait
        )
        section.add_timings(timings)
        times: dict[str, float | None] = dict(timings.median)
        total = sum(v for v in times.values() if v is not None)
        times["all analyses"] = total
        per_round = [sum(round_) for round_ in zip(*timings.samples.values(), strict=True)]
        figures.append(Figure.of("f", f"analyses, {label}", per_round, target, "<=", "s"))
        pages = _page_times(settings, gates, images, config) if settings.pages else None
        if pages is None:
            figures.append(
                Figure(
                    "f",
                    f"slowest explorer page, {label}",
                    None,
                    page_target,
                    "<=",
                    "s",
                    note="explorer not measurable" if settings.pages else "not timed (quick)",
                )
            )
        else:
            times.update({f"explorer: {k}": v for k, v in pages.items()})
            renders = {k: v for k, v in pages.items() if not k.startswith("app start")}
            slowest = max(renders, key=lambda k: renders[k])
            figures.append(
                Figure(
                    "f",
                    f"slowest explorer page ({slowest}), {label}",
                    renders[slowest],
                    page_target,
                    "<=",
                    "s",
                )
            )
        columns[label] = times
        del gates, images
    keys = list(dict.fromkeys(k for times in columns.values() for k in times))
    section.rows += [[k, *(columns[label].get(k) for label in scales)] for k in keys]
    section.title = f"Analysis at scale: generated records of {settings.model}"
    section.notes.append(
        "; ".join(generated) + " (generation not timed). Each path is active "
        "with its own probability (Beta(0.6, 0.4), as spread as in Fig. 5), "
        "the 1/4 keep chain in 97-100% of the images."
    )
    if not settings.pages:
        section.notes.append("explorer page renders: not timed in a quick run.")
    elif any(f.value is None for f in figures):
        section.notes.append(
            "explorer page renders: not measurable (the Streamlit explorer or "
            "streamlit.testing is missing)."
        )
    else:
        section.notes.append(
            "explorer: Streamlit AppTest (no browser) on the generated records "
            "written as a records folder; app start reads and caches them, "
            "then each page is opened as a user clicking through."
        )
    return section, figures


def _page_times(
    settings: BenchSettings, gates: Any, images: Any, config: Any
) -> dict[str, float] | None:
    """Render time of each explorer page under Streamlit's ``AppTest`` on the generated
    records (written to a temporary records folder), or None when the app is unavailable.

    The app starts once (reading and caching the records: timed as "app start"); each page is
    then opened with ``switch_page`` and timed, as a user clicking through it.
    """
    import importlib.util
    import os

    from dynviz.explorer import APP_DIR_ENV, explorer_script

    app = explorer_script()
    if not app.is_file() or importlib.util.find_spec("streamlit") is None:
        return None
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from dynviz.record import Sidecar, write_records

    pages = sorted(
        p.relative_to(app.parent).as_posix()
        for p in (app.parent / "views").glob("*.py")
        if not p.name.startswith("_")
    )
    out: dict[str, float] = {}
    previous = os.environ.get(APP_DIR_ENV)
    with tempfile.TemporaryDirectory() as tmp:
        sidecar = Sidecar(
            name="generated",
            config_dict=config.to_dict(),
            dynamic=True,
            num_classes=int(config.num_classes),
            threshold=float(config.active_threshold),
            input_sizes=((1024, 2048),),
            num_images=int(len(images)),
        )
        write_records(Path(tmp) / "records" / "generated", gates, images, sidecar)
        os.environ[APP_DIR_ENV] = tmp
        quiet = logging.getLogger("streamlit")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # "no runtime found" warnings of bare AppTest runs
        try:
            st.cache_data.clear()
            st.cache_resource.clear()
            start = time.perf_counter()
            at = AppTest.from_file(str(app), default_timeout=600).run()
            out["app start (reads the records)"] = time.perf_counter() - start
            if at.exception:
                logger.warning("explorer raised: %s", [e.value for e in at.exception])
                return None
            for page in pages:
                start = time.perf_counter()
                at.switch_page(page).run()
                out[page.removeprefix("views/").removesuffix(".py")] = time.perf_counter() - start
                if at.exception:
                    logger.warning(
                        "explorer page %s raised: %s", page, [e.value for e in at.exception]
                    )
        finally:
            quiet.setLevel(level)
            if previous is None:
                os.environ.pop(APP_DIR_ENV, None)
            else:
                os.environ[APP_DIR_ENV] = previous
            st.cache_data.clear()
            st.cache_resource.clear()
    del settings
    return out
