"""The measurements behind ``dynviz bench``: one function per figure (a)-(g).

(a) batch-1 skipping against MACs; (b) batch-N per-sample routes against batch-1 costs;
(c) recording overhead; (d) distance to the machine's SGEMM rate; (e) exported static nets;
(f) analysis at scale; (g) latency per node beside MACs. Each returns a :class:`Section` (the
table) and its :class:`Figure` list (the headline ratios and targets).

The module runs to about 600 lines: seven measurements of one benchmark, each a function of
about 70 lines with its table and targets; the timing harness is :mod:`dynviz.support.timing`.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dynviz.bench.core import BenchReport, BenchSettings, Figure, Section, load_average
from dynviz.inference.allocator import malloc_tuned
from dynviz.inference.export import (
    check_onnx,
    export_onnx,
    fold_batchnorm,
    onnx_session,
    route_in_space,
    static_network,
)
from dynviz.inference.folding import inference_form
from dynviz.inference.latency import (
    Timings,
    latency_rows,
    measure_calls,
    measure_node_latency,
    torch_threads,
)
from dynviz.model import build_model
from dynviz.model.config import RoutingSpaceConfig
from dynviz.model.cost import Counting, cost_table
from dynviz.model.network import RoutingNetwork
from dynviz.model.route import Route
from dynviz.model.zoo import common_like_route, load_spec
from dynviz.units import GIGA, format_macs, mac_unit

__all__ = [
    "SPECIAL_CASES",
    "bench_analysis",
    "bench_batch",
    "bench_export",
    "bench_latency",
    "bench_machine_limit",
    "bench_recording",
    "bench_skip",
    "benchmark_routes",
    "common_like_route",
    "run_bench",
]

logger = logging.getLogger(__name__)

SPECIAL_CASES = ("fcn32s", "deeplabv3", "unet", "hrnetv2", "autodeeplab")
SKIP_TARGET = 1.15  # (a) time ratio at most 1.15x the GMACs ratio
BATCH_TARGET = 0.8  # (b) sum of batch-1 times / batch time
RECORD_TARGET = 0.01  # (c) recording overhead (median of the interleaved rounds)
RECORD_SPREAD = 0.02  # (c) ... with both quartiles within +-2%
LIMIT_TARGET = 0.60  # (d) the inference form's MAC rate / SGEMM rate
INFERENCE_FORM_TARGET = 1.10  # (e) the inference form forced / the best static PyTorch time
ANALYSIS_TARGET = 5.0  # (f) seconds for 100,000 records
PAGE_TARGET = 3.0  # (f) seconds per explorer page

SectionResult = tuple[Section, list[Figure]]


# ---------------------------------------------------------------------------------- routes
def benchmark_routes(config: RoutingSpaceConfig, extra: tuple[str, ...] = ()) -> dict[str, Route]:
    """all-open, the special cases, a Common-like route (the zoo's
    :func:`~dynviz.model.zoo.common_like_route`) and ``extra`` route specs, in ``config``'s space
    (a special case is skipped where its space has another shape)."""
    routes = {"all-open": Route.all_open(config)}
    for name in (*SPECIAL_CASES, *extra):
        spec = load_spec(name)
        if not isinstance(spec, Route):
            raise ValueError(f"{name}: not a route spec")
        if (spec.space.num_layers, spec.space.num_scales) != (config.num_layers, config.num_scales):
            if name in extra:
                raise ValueError(
                    f"{name}: a route for L={spec.space.num_layers}, the bench "
                    f"model has L={config.num_layers}"
                )
            continue
        routes[spec.name or Path(name).stem] = route_in_space(spec, config)
    if config.num_scales == 4 and config.num_layers >= 7:
        routes["common-like"] = common_like_route(config)
    return routes


def _images(batch: int, size: tuple[int, int], *, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size[0], size[1], generator=gen)


def _model(name: str) -> RoutingNetwork:
    torch.manual_seed(0)
    return build_model(name).eval()


def _inference_model(name: str) -> RoutingNetwork:
    """The network as evaluate, record and predict run it: its inference form (BN folded,
    fused kernels; :func:`dynviz.inference.folding.inference_form`)."""
    return inference_form(_model(name))


def measure(
    settings: BenchSettings,
    calls: dict[str, Callable[[], object]],
    *,
    repeats: int | None = None,
    warmup: int = 1,
) -> Timings:
    """Interleaved timings with contention retakes, as every figure takes them."""
    return measure_calls(
        calls,
        repeats=settings.repeats if repeats is None else repeats,
        warmup=warmup,
        max_wait=settings.max_wait,
    )


def _timed(key: str, title: str, run: Callable[[], SectionResult]) -> SectionResult:
    load0, start = load_average(), time.perf_counter()
    logger.info("bench (%s) %s", key, title)
    try:
        section, figures = run()
    except Exception as err:  # one broken figure must not lose the others
        logger.exception("bench (%s) failed", key)
        section = Section(
            key, title, [], measured=False, notes=[f"failed: {type(err).__name__}: {err}"]
        )
        figures = [Figure(key, title, None, note="failed")]
    section.seconds = time.perf_counter() - start
    section.load = (load0, load_average())
    for figure in figures:
        figure.trusted = section.trusted
    return section, figures


# ------------------------------------------------------------------------------- (a) skip
def bench_skip(settings: BenchSettings) -> SectionResult:
    """(a) Batch-1 forced routes: time ratio against the ratio of the MACs they execute, and the
    masked form, both on the inference form (what evaluate, record and predict run).

    The MACs are those of the complete counting (:class:`~dynviz.model.cost.Counting`): every
    multiply-add that runs, including the initial cell's operation, the bilinear upsamplings
    and the node sums, which the paper's counting leaves out and every route pays alike (so
    they made the cheap routes look slower than their work). The paper's ratio is a column.
    """
    model = _inference_model(settings.model)
    config = model.config
    size = settings.size
    routes = benchmark_routes(config, settings.routes)
    x = _images(1, size)
    paper = cost_table(config, size)
    complete = cost_table(config, size, counting=Counting.COMPLETE)
    skip: dict[str, Callable[[], object]] = {}
    masked: dict[str, Callable[[], object]] = {}
    gmacs: dict[str, float] = {}  # paper counting
    executed: dict[str, float] = {}  # complete counting
    with torch.inference_mode():
        for name, route in routes.items():
            out = model(x, route=route)
            gmacs[name] = float(paper.real(out.active, gates_ran=False)[0]) / GIGA
            executed[name] = float(complete.real(out.active, gates_ran=False)[0]) / GIGA
            skip[f"skip:{name}"] = lambda r=route: model(x, route=r)
            masked[f"masked:{name}"] = lambda r=route: model(x, route=r, skip=False)
        # the skip forms in rounds of their own: the figure compares them with each other, and
        # a masked pass (the whole network) between two of them left the next one colder
        # caches (fcn32s read 1.18-1.28 interleaved with the masked passes, 1.12-1.15 without)
        timings = measure(settings, skip, repeats=settings.ratio_repeats)
        masked_timings = measure(settings, masked)
    times = timings.median | masked_timings.median
    base_t = times["skip:all-open"]
    section = Section(
        "a",
        f"Batch-1 skipping: {config.name} forced routes at {size[0]}x{size[1]}",
        [
            "route",
            "GMACs",
            "executed GMACs",
            "executed ratio",
            "skip s",
            "time ratio",
            "time/executed ratio",
            "time/GMACs ratio",
            "masked s",
            "masked/skip",
        ],
    )
    section.add_timings(timings)
    section.add_timings(masked_timings)
    figures = []
    for name in routes:
        e_ratio = executed[name] / executed["all-open"]
        t_ratio = times[f"skip:{name}"] / base_t
        section.rows.append(
            [
                name,
                gmacs[name],
                executed[name],
                e_ratio,
                times[f"skip:{name}"],
                t_ratio,
                t_ratio / e_ratio,
                t_ratio / (gmacs[name] / gmacs["all-open"]),
                times[f"masked:{name}"],
                times[f"masked:{name}"] / times[f"skip:{name}"],
            ]
        )
        if name != "all-open":
            per_round = [r / e_ratio for r in timings.ratios(f"skip:{name}", "skip:all-open")]
            figures.append(
                Figure.of(
                    "a", f"time ratio / executed MACs ratio, {name}", per_round, SKIP_TARGET, "<="
                )
            )
    section.notes += [
        "GMACs: cost_table(config, size).real(out.active, gates_ran=False), the paper's "
        "counting; executed GMACs: the same with counting=complete, every multiply-add that "
        "runs (the initial cell's operation, bilinear upsamplings and node sums included). "
        "The figure divides the time ratio by the executed ratio; time/GMACs ratio is the same "
        "against the paper's counting. Ratios are against the same model forced all-open (skip "
        "form). Both forms run the inference form (BN folded, fused kernels), as evaluate, "
        "record and predict do.",
        "masked: the official behaviour, model(x, route=r, skip=False): every cell and "
        "transform runs and closed paths are multiplied by 0 (gates not even evaluated here, "
        "so the official code costs more); masked/skip is the saving of real skipping. The "
        "masked forms are timed in rounds of their own, after the skip forms' rounds.",
    ]
    return section, figures


# ------------------------------------------------------------------------------ (b) batch
def bench_batch(settings: BenchSettings) -> SectionResult:
    """(b) Batch-N with a different route per sample against the batch-1 times of the routes
    (the inference form)."""
    model = _inference_model(settings.model)
    config = model.config
    size, b = settings.batch_size, settings.batch
    routes = benchmark_routes(config, settings.routes)
    mixes = {
        "mixed with all-open": _fill(list(routes), b),
        "without all-open": _fill([n for n in routes if n != "all-open"], b),
    }
    xb = _images(b, size)
    x1 = xb[:1]
    calls: dict[str, Callable[[], object]] = {}  # the figure's: batch-1 routes and gathers
    others: dict[str, Callable[[], object]] = {}  # the masked and union forms (a column each)
    used = sorted({n for names in mixes.values() for n in names})
    for name in used:
        calls[f"b1:{name}"] = lambda r=routes[name]: model(x1, route=r)
    for mix, names in mixes.items():
        per_sample = [routes[n] for n in names]
        union = Route(config, frozenset().union(*(r.paths for r in per_sample)), name="union")
        calls[f"gather:{mix}"] = lambda rs=per_sample: model(xb, route=rs)
        others[f"masked:{mix}"] = lambda rs=per_sample: model(xb, route=rs, skip=False)
        others[f"union:{mix}"] = lambda u=union: model(xb, route=u)
    with torch.inference_mode():
        # the figure's calls in rounds of their own, as in (a): a whole-network masked batch
        # between them left the next colder caches (one run read 0.77 with quartiles
        # 0.73-0.96 that way)
        timings = measure(settings, calls, repeats=settings.ratio_repeats)
        other_timings = measure(settings, others)
    times = timings.median | other_timings.median
    section = Section(
        "b",
        f"Batch-{b} per-sample routes: {config.name} at {size[0]}x{size[1]}",
        ["batch", "variant", "batch s", "sum of batch-1 s", "(sum batch-1) / batch"],
    )
    section.add_timings(timings)
    section.add_timings(other_timings)
    figures = []
    for mix, names in mixes.items():
        total = sum(times[f"b1:{n}"] for n in names)
        for variant, label in (
            ("gather", "per-sample gather/scatter (dynviz)"),
            ("masked", "masked soft form (official)"),
            ("union", "batch-level union skip"),
        ):
            t = times[f"{variant}:{mix}"]
            section.rows.append([mix, label, t, total, total / t])
            if variant == "gather":
                per_round = [
                    sum(timings.samples[f"b1:{n}"][r] for n in names) / batch_t
                    for r, batch_t in enumerate(timings.samples[f"gather:{mix}"])
                ]
                figures.append(
                    Figure.of(
                        "b", f"(sum of batch-1) / batch-{b}, {mix}", per_round, BATCH_TARGET, ">="
                    )
                )
    section.notes += [
        f"samples: {'; '.join(f'{k}: ' + ', '.join(v) for k, v in mixes.items())}.",
        "batch-1 times: each route alone on one image of the same size, timed in the same "
        "interleaved rounds as the per-sample batch; their sum is what the per-sample costs "
        "allow. The masked and union forms are timed in rounds of their own, after those.",
        "union: every sample runs the union of the batch's routes (what batch-level skipping, "
        "e.g. the official inference drop of a cell closed for the whole batch, achieves).",
    ]
    return section, figures


def _fill(names: list[str], b: int) -> list[str]:
    return [names[i % len(names)] for i in range(b)]


# -------------------------------------------------------------------------- (c) recording
def bench_recording(settings: BenchSettings) -> SectionResult:
    """(c) Time of recording N images against plain inference over the same images.

    Needs ``dynviz.record`` (written separately); until it exists the section says so.
    """
    section = Section("c", "Recording overhead", ["variant", "s", "overhead"])
    if importlib.util.find_spec("dynviz.record") is None:
        section.measured = False
        section.notes.append("not yet measurable: dynviz.record does not exist in this tree.")
        return section, [
            Figure(
                "c",
                "recording overhead",
                None,
                100.0 * RECORD_TARGET,
                "<=",
                "%",
                note="dynviz.record missing",
            )
        ]
    from dynviz.bench.hooks import measure_recording

    return measure_recording(settings, section, RECORD_TARGET, RECORD_SPREAD)


# ---------------------------------------------------------------------------- (d) limit
def sgemm_call(n: int) -> Callable[[], object]:
    """A float32 ``n x n x n`` matmul (``n**3`` MACs)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen)
    b = torch.randn(n, n, generator=gen)
    out = torch.empty(n, n)
    return lambda: torch.mm(a, b, out=out)


def bench_machine_limit(settings: BenchSettings) -> SectionResult:
    """(d) Achieved MAC rate of the Fix forward / SGEMM MAC rate, over inference variants."""
    fix = _model(settings.fix_model)
    config = fix.config
    size = settings.size
    macs = cost_table(config, size).total()
    x = _images(1, size)
    nchw = copy.deepcopy(fix)
    nchw.channels_last_inference = False
    folded = fold_batchnorm(fix)
    static = static_network(fix, Route.all_open(config))
    unfused = copy.deepcopy(static)
    unfused.fuse = False

    def no_grad() -> object:
        with torch.inference_mode(False), torch.no_grad():
            return nchw(x)

    def untuned() -> object:
        with malloc_tuned(False):
            return fix(x)

    variants: dict[str, Callable[[], object]] = {
        "no_grad, NCHW": no_grad,
        "inference_mode, NCHW": lambda: nchw(x),
        "inference_mode, channels_last (default)": lambda: fix(x),
        "default, glibc malloc thresholds at 128 KiB": untuned,
        _INFERENCE_FORM: lambda: folded(x),
        "static net, BN folded": lambda: unfused(x),
        "static net, BN folded, fused oneDNN conv+ReLU": lambda: static(x),
    }
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        session = _ort_session(static, Path(tmp) / "fix.onnx", size, settings.threads, notes)
        if session is not None:
            feed = {"images": x.numpy()}
            variants["onnxruntime (static, BN folded)"] = lambda: session.run(["logits"], feed)
        calls = dict(variants)
        calls["sgemm"] = sgemm_call(settings.sgemm_n)
        with torch.inference_mode():
            timings = measure(settings, calls)
    times = timings.median
    sgemm_rate = settings.sgemm_n**3 / times["sgemm"]
    section = Section(
        "d",
        f"Distance to the machine's limit: {config.name} at {size[0]}x{size[1]}",
        ["variant", "s", "GMAC/s", "ratio to SGEMM"],
    )
    section.add_timings(timings)
    section.rows.append(
        [f"SGEMM {settings.sgemm_n}^3 float32", times["sgemm"], sgemm_rate / GIGA, 1.0]
    )
    ratios = {}
    for name in variants:
        rate = macs / times[name]
        ratios[name] = rate / sgemm_rate
        section.rows.append([name, times[name], rate / GIGA, ratios[name]])
    best = max(ratios, key=lambda k: ratios[k])
    section.notes += [
        f"MACs: {format_macs(macs / GIGA)} (cost_table(...).total(), paper counting); the ratio is "
        "(MACs / time) / (SGEMM MACs / time), both timed in the same interleaved rounds.",
        "default: RoutingNetwork in eval mode under inference_mode (channels-last inside), "
        "the process's malloc thresholds raised (dynviz.bench.tune_malloc); the 128 KiB row "
        "sets them back to glibc's initial values around each of its calls.",
        *notes,
    ]
    mac_ratio = macs / settings.sgemm_n**3  # rate ratio = (macs / t) / (sgemm / t_sgemm)
    figures = [
        Figure.of(
            "d",
            f"MAC rate / SGEMM rate, {label}",
            [mac_ratio / r for r in timings.ratios(name, "sgemm")],
            LIMIT_TARGET if name == _INFERENCE_FORM else None,
            ">=",
        )
        for label, name in (
            ("default", _DEFAULT),
            ("inference form", _INFERENCE_FORM),
            (f"best ({best})", best),
        )
    ]
    return section, figures


_DEFAULT = "inference_mode, channels_last (default)"
_INFERENCE_FORM = "inference form: default + BN folded, fused kernels (eval, record, predict)"


def _ort_session(
    net: torch.nn.Module, path: Path, size: tuple[int, int], threads: int, notes: list[str]
) -> object | None:
    for package in ("onnxruntime", "onnxscript"):
        if importlib.util.find_spec(package) is None:
            notes.append(f"{package} is not installed: no ONNX row.")
            return None
    export_onnx(net, path, size)
    return onnx_session(path, threads=threads)


# --------------------------------------------------------------------------- (e) export
def bench_export(settings: BenchSettings) -> SectionResult:
    """(e) The exported static net (BN folded, no gates) against the dynamic net forced to
    the same route, in PyTorch and onnxruntime."""
    model = _model(settings.model)
    config = model.config
    size = settings.size
    routes = benchmark_routes(config, settings.routes)
    chosen = ["hrnetv2", "common-like", *[r for r in routes if r in _names(settings.routes)]]
    chosen = [n for n in dict.fromkeys(chosen) if n in routes]
    x = _images(1, size)
    calls: dict[str, Callable[[], object]] = {}
    notes: list[str] = []
    checks: dict[str, float] = {}
    inference_model = fold_batchnorm(model)  # the inference form: BN folded, fused kernels
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            route = routes[name]
            static = static_network(model, route)
            unfused = copy.deepcopy(static)
            unfused.fuse = False
            unfolded = static_network(model, route, fold=False)
            calls[f"dynamic:{name}"] = lambda r=route: model(x, route=r)
            calls[f"folded:{name}"] = lambda r=route: inference_model(x, route=r)
            calls[f"static:{name}"] = lambda s=static: s(x)
            calls[f"unfused:{name}"] = lambda s=unfused: s(x)
            calls[f"unfolded:{name}"] = lambda s=unfolded: s(x)
            session = _ort_session(
                static, Path(tmp) / f"{name}.onnx", size, settings.threads, notes
            )
            if session is not None:
                feed = {"images": x.numpy()}
                calls[f"ort:{name}"] = lambda s=session, f=feed: s.run(["logits"], f)
                checks[name] = check_onnx(
                    Path(tmp) / f"{name}.onnx", static, x, threads=settings.threads
                ).relative
        with torch.inference_mode():
            timings = measure(settings, calls)
    times = timings.median
    section = Section(
        "e",
        f"Exported static nets against the dynamic net forced to the route, "
        f"{config.name} at {size[0]}x{size[1]}",
        ["route", "variant", "s", "speed-up over dynamic"],
    )
    section.add_timings(timings)
    figures = []
    for name in chosen:
        dyn = times[f"dynamic:{name}"]
        section.rows.append([name, "dynamic, forced route (skip form)", dyn, 1.0])
        folded = times[f"folded:{name}"]
        section.rows.append(
            [name, "dynamic, inference form (BN folded, fused)", folded, dyn / folded]
        )
        best, best_key = 0.0, "static"
        for key, label in (
            ("unfolded", "static module, BN kept"),
            ("unfused", "static module, BN folded"),
            ("static", "static module, BN folded, fused conv+ReLU (default)"),
            ("ort", "onnxruntime (the exported ONNX)"),
        ):
            if f"{key}:{name}" in times:
                t = times[f"{key}:{name}"]
                section.rows.append([name, label, t, dyn / t])
                if key != "ort" and dyn / t > best:
                    best, best_key = dyn / t, key
        figures.append(
            Figure.of(
                "e",
                f"dynamic / static PyTorch (best), {name}",
                timings.ratios(f"dynamic:{name}", f"{best_key}:{name}"),
                note=f"best static variant: {best_key}; the unfolded network, no target",
            )
        )
        figures.append(
            Figure.of(
                "e",
                f"dynamic inference form / static PyTorch (best), {name}",
                timings.ratios(f"folded:{name}", f"{best_key}:{name}"),
                INFERENCE_FORM_TARGET,
                "<=",
                note="issue 26: the dynamic network at the speed of its route",
            )
        )
        if f"ort:{name}" in times:
            figures.append(
                Figure.of(
                    "e",
                    f"dynamic / onnxruntime, {name}",
                    timings.ratios(f"dynamic:{name}", f"ort:{name}"),
                )
            )
    if checks:
        notes.append(
            "onnxruntime against PyTorch (static net): max |diff| / max |logit| = "
            + ", ".join(f"{k} {v:.1e}" for k, v in checks.items())
            + " (tolerance 1e-4)."
        )
    section.notes += notes
    return section, figures


def _names(specs: tuple[str, ...]) -> set[str]:
    out = set()
    for spec in specs:
        loaded = load_spec(spec)
        out.add(getattr(loaded, "name", "") or Path(spec).stem)
    return out


# ------------------------------------------------------------------------- (f) analysis
def bench_analysis(settings: BenchSettings) -> SectionResult:
    """(f) Analyses on generated records and explorer page renders.

    Needs ``dynviz.record`` and ``dynviz.analysis`` (written separately).
    """
    section = Section(
        "f", f"Analysis at scale ({settings.records:,} generated records)", ["step", "s"]
    )
    missing = [
        m for m in ("dynviz.record", "dynviz.analysis") if importlib.util.find_spec(m) is None
    ]
    if missing:
        section.measured = False
        section.notes.append(f"not yet measurable: {', '.join(missing)} not in this tree.")
        return section, [
            Figure(
                "f",
                f"analyses on {settings.records:,} records",
                None,
                ANALYSIS_TARGET,
                "<=",
                "s",
                note="analysis code missing",
            )
        ]
    from dynviz.bench.hooks import measure_analysis

    return measure_analysis(settings, section, ANALYSIS_TARGET, PAGE_TARGET)


# -------------------------------------------------------------------------- (g) latency
def bench_latency(settings: BenchSettings) -> SectionResult:
    """(g) Time per node at each scale beside its MACs."""
    spec = load_spec(settings.model)
    config = spec.space if isinstance(spec, Route) else spec
    size = settings.size
    latency = measure_node_latency(
        config, size, repeats=settings.repeats, threads=settings.threads, max_wait=settings.max_wait
    )
    table = cost_table(config, size)
    rows = latency_rows(latency, table)
    unit = mac_unit(r.macs / GIGA for r in rows)  # one prefix for the column
    section = Section(
        "g",
        f"Latency per node beside MACs: {config.name} at {size[0]}x{size[1]}",
        ["scale", "component", unit.label, "ms", "GMAC/s"],
    )
    section.rows += [
        [f"1/{r.stride}", r.component, unit(r.macs / GIGA), r.seconds * 1e3, r.gmacs_per_s]
        for r in rows
    ]
    ops = [r for r in rows if r.component == "op"]
    spread = max(r.seconds for r in ops) / max(min(r.seconds for r in ops), 1e-12)
    mac_spread = max(r.macs for r in ops) / max(min(r.macs for r in ops), 1.0)
    section.notes += [
        f"stem {latency.stem * 1e3:.1f} ms ({format_macs(table.stem / GIGA)}); predictor and final "
        f"upsampling {latency.decoder_fixed * 1e3:.1f} ms.",
        f"op = ReLU(SepConv(X) + X): the slowest scale's op takes {spread:.1f}x the fastest's "
        f"time while their MACs differ by {mac_spread:.2f}x.",
        "`dynviz flops MODEL --time` prints this table; "
        "dynviz.inference.latency.latency_cost_table gives "
        "it as a CostTable in seconds.",
    ]
    return section, [Figure("g", "cell op time, slowest / fastest scale", spread, None, ">=")]


# ------------------------------------------------------------------------------- driver
RUNNERS: dict[str, tuple[str, Callable[[BenchSettings], SectionResult]]] = {
    "a": ("batch-1 skipping", bench_skip),
    "b": ("batch-N per-sample routes", bench_batch),
    "c": ("recording overhead", bench_recording),
    "d": ("distance to the machine's limit", bench_machine_limit),
    "e": ("exported static net", bench_export),
    "f": ("analysis at scale", bench_analysis),
    "g": ("latency per node", bench_latency),
}


def run_bench(settings: BenchSettings, *, command: str = "dynviz bench") -> BenchReport:
    """Measure the sections of ``settings`` in order (a-g) and collect the report."""
    from dynviz.bench.core import machine_info

    machine = machine_info(settings.threads)
    report = BenchReport(settings=settings, machine=machine, command=command)
    start = time.perf_counter()
    with torch_threads(settings.threads), malloc_tuned(settings.tune_malloc) as tuned:
        machine["malloc_tuned"] = bool(tuned and settings.tune_malloc)
        for key in settings.sections:
            title, runner = RUNNERS[key]
            section, figures = _timed(key, title, lambda r=runner: r(settings))
            report.sections.append(section)
            report.figures += figures
    report.seconds = time.perf_counter() - start
    return report
