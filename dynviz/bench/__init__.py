"""``dynviz bench``: speed figures measured on the machine it runs on (docs/performance.md)."""

from __future__ import annotations

from dynviz.bench.core import (
    SECTIONS,
    BenchReport,
    BenchSettings,
    Figure,
    Section,
    machine_info,
    update_doc,
)
from dynviz.bench.figures import (
    SPECIAL_CASES,
    bench_analysis,
    bench_batch,
    bench_export,
    bench_latency,
    bench_machine_limit,
    bench_recording,
    bench_skip,
    benchmark_routes,
    common_like_route,
    run_bench,
)
from dynviz.inference.allocator import malloc_tuned, tune_malloc

__all__ = [
    "SECTIONS",
    "SPECIAL_CASES",
    "BenchReport",
    "BenchSettings",
    "Figure",
    "Section",
    "bench_analysis",
    "bench_batch",
    "bench_export",
    "bench_latency",
    "bench_machine_limit",
    "bench_recording",
    "bench_skip",
    "benchmark_routes",
    "common_like_route",
    "machine_info",
    "malloc_tuned",
    "run_bench",
    "tune_malloc",
    "update_doc",
]
