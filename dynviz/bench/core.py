"""Settings, results and reporting of ``dynviz bench``.

Every figure is a ratio of two timings taken in the same process, interleaved, so that machine
noise (other jobs, frequency changes) hits both sides alike; the load average is recorded
beside each section because a loaded 2-core machine can still distort ratios, and a section
whose samples waited for a CPU marks its figures as not trustworthy. It runs over 500 lines: the
report's three forms (text, markdown, JSON) sit with the objects they print.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "BEGIN_MARK",
    "END_MARK",
    "SECTIONS",
    "BenchReport",
    "BenchSettings",
    "Figure",
    "Section",
    "load_average",
    "machine_info",
    "update_doc",
]

logger = logging.getLogger(__name__)

SECTIONS = ("a", "b", "c", "d", "e", "f", "g")
BEGIN_MARK = "<!-- dynviz bench: begin (generated; edit outside these marks) -->"
END_MARK = "<!-- dynviz bench: end -->"


@dataclass(frozen=True)
class BenchSettings:
    """What to measure and at which sizes.

    Attributes:
        size: input (H, W) of the batch-1 figures (a, d, e, g).
        batch_size: input (H, W) of the batch-N figure (b).
        batch: samples per batch in (b).
        repeats: timed repeats per variant (medians are kept), after one warm-up round.
        ratio_repeats: repeats of the figures whose targets sit within the round-to-round
            noise of their values, (a) skipping, (b) per-sample batches and (c) recording
            overhead; their medians over this many interleaved rounds are what the verdicts
            read.
        threads: ``torch.set_num_threads`` (default: the machine's cores).
        model: the dynamic model whose routes are forced (a, b, e).
        fix_model: the all-open static model of the machine-limit figure (d).
        routes: extra route specs (preset names or YAML paths), e.g. extracted Common nets.
        sections: which figures to measure, of ``SECTIONS``.
        records: generated records (images) for the analysis-at-scale figure (f).
        record_images: images recorded in the recording-overhead figure (c).
        record_threads: torch threads of figure (c). One: with two threads on two shared cores
            the OpenMP spin-waits made single rounds vary by -8% to +15%, which hides an
            overhead of 1-2%; at one thread its rounds' quartiles were 3 points apart.
        max_wait: a timed sample whose threads waited for a CPU longer than this share of its
            wall time (another job took the core) is taken again, up to 3 times (None: never).
        pages: also time the explorer's pages on the generated records (f).
        tune_malloc: raise glibc's malloc thresholds for the run
        (:mod:`dynviz.inference.allocator`). quick: the small settings (:meth:`quick_settings`).
    """

    size: tuple[int, int] = (512, 1024)
    batch_size: tuple[int, int] = (256, 512)
    batch: int = 8
    repeats: int = 5
    ratio_repeats: int = 11
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    model: str = "layer16"
    fix_model: str = "layer16-fix"
    routes: tuple[str, ...] = ()
    sections: tuple[str, ...] = SECTIONS
    sgemm_n: int = 2048
    max_wait: float | None = 0.05  # retake a sample whose threads waited this share for a CPU
    records: int = 100_000
    record_images: int = 64
    record_threads: int = 1
    tune_malloc: bool = True
    pages: bool = True  # time the explorer's pages in (f)
    quick: bool = False

    @classmethod
    def quick_settings(cls, **changes: Any) -> BenchSettings:
        """Small sizes and few repeats, no contention retakes and no explorer page renders:
        about a minute on 2 idle cores (a smoke check of every figure, not a measurement)."""
        base = cls(
            size=(128, 256),
            batch_size=(64, 128),
            repeats=2,
            ratio_repeats=2,
            sgemm_n=1024,
            records=10_000,
            record_images=4,
            max_wait=None,
            pages=False,
            quick=True,
        )
        return replace(base, **changes) if changes else base

    def with_size(self, size: tuple[int, int]) -> BenchSettings:
        """Use ``size`` for the batch-1 figures and half of it (per side) for batch N."""
        half = (max(32, size[0] // 2), max(32, size[1] // 2))
        return replace(self, size=size, batch_size=half)

    def __post_init__(self) -> None:
        unknown = [s for s in self.sections if s not in SECTIONS]
        if unknown:
            raise ValueError(f"unknown bench sections {unknown}; known: {', '.join(SECTIONS)}")
        if min(self.repeats, self.ratio_repeats, self.batch, self.threads, self.record_threads) < 1:
            raise ValueError("repeats, ratio_repeats, batch and threads must be >= 1")


BUSY_WAIT = 0.02  # a section whose median sample waited longer for a CPU is not trustworthy


@dataclass
class Figure:
    """One headline ratio and its target.

    ``value`` is the median over the interleaved rounds of the ratio taken within each round
    (both sides timed in the same round); ``low`` and ``high`` are its first and third
    quartiles, the spread of the repeats.
    """

    key: str  # section letter
    name: str
    value: float | None
    target: float | None = None
    compare: str = ">="  # value compare target
    unit: str = "x"
    note: str = ""
    low: float | None = None  # first quartile over the rounds
    high: float | None = None  # third quartile
    rounds: int = 0
    spread_limit: float | None = None  # both quartiles within +-this (same unit), if set
    trusted: bool = True  # False where its section's samples were contended (a busy machine)

    @classmethod
    def of(
        cls,
        key: str,
        name: str,
        values: Sequence[float],
        target: float | None = None,
        compare: str = ">=",
        unit: str = "x",
        note: str = "",
        spread_limit: float | None = None,
    ) -> Figure:
        """The figure of per-round values: their median, with their quartiles.

        With ``spread_limit``, the target also asks both quartiles to lie within
        ``+-spread_limit`` (the recording overhead's "quartiles within +-2%").
        """
        from dynviz.support.timing import quartiles

        finite = [float(v) for v in values if v == v]  # drop NaN
        if not finite:
            return cls(key, name, None, target, compare, unit, note, spread_limit=spread_limit)
        low, mid, high = quartiles(finite)
        return cls(
            key, name, mid, target, compare, unit, note, low, high, len(finite), spread_limit
        )

    @property
    def spread(self) -> str:
        """``low-high`` in the figure's unit, ``-`` without repeats."""
        if self.low is None or self.high is None or self.rounds < 2:
            return "-"
        digits = {"%": 1, "s": 2}.get(self.unit, 3)
        return f"{self.low:.{digits}f}-{self.high:.{digits}f}{self.unit}"

    @property
    def ok(self) -> bool | None:
        if self.value is None or self.target is None:
            return None
        met = self.value >= self.target if self.compare == ">=" else self.value <= self.target
        if self.spread_limit is not None:
            low = self.value if self.low is None else self.low
            high = self.value if self.high is None else self.high
            met = met and -self.spread_limit <= low and high <= self.spread_limit
        return met

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "-"
        text = f"{self.compare} {self.target:g}{self.unit}"
        if self.spread_limit is not None:
            text += f", quartiles within +-{self.spread_limit:g}{self.unit}"
        return text

    @property
    def met_text(self) -> str:
        """``yes`` / ``NO`` / ``-``, with ``(busy machine)`` where the figure is not
        trustworthy: its section's samples waited for a CPU (another job ran)."""
        met = {True: "yes", False: "NO", None: "-"}[self.ok]
        return met if self.trusted else f"{met} (busy machine: not trustworthy)"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out


@dataclass
class Section:
    """A table of measurements behind one or more figures."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    load: tuple[float, float] | None = None  # 1-minute load average before and after
    seconds: float = 0.0
    measured: bool = True
    waits: list[float] = field(default_factory=list)  # CPU-wait share of each kept sample
    samples: int = 0
    retaken: int = 0
    contended: int = 0

    def add_timings(self, timings: Any) -> None:
        """Account for a :class:`dynviz.support.timing.Timings` measured for this section."""
        self.waits += [w for ws in timings.waits.values() for w in ws if w is not None]
        self.samples += timings.count
        self.retaken += timings.retaken
        self.contended += timings.contended

    @property
    def median_wait(self) -> float | None:
        return statistics.median(self.waits) if self.waits else None

    @property
    def trusted(self) -> bool:
        """False where another job took the CPU during this section: samples still waited
        after their retakes, or the median sample waited more than 2% of its time (a loaded
        2-core machine read skipping ratios of 1.17-1.23 where idle ones read 0.89-1.04)."""
        wait = self.median_wait
        return self.contended == 0 and (wait is None or wait <= BUSY_WAIT)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "measured": self.measured,
            "columns": self.columns,
            "rows": self.rows,
            "notes": self.notes,
            "load": list(self.load) if self.load else None,
            "seconds": self.seconds,
            "samples": self.samples,
            "median_cpu_wait": self.median_wait,
            "retaken": self.retaken,
            "contended": self.contended,
        }


def load_average() -> float:
    """The 1-minute load average (0.0 where the OS has none)."""
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return 0.0


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
        match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_vendor() -> str:
    """``GenuineIntel``, ``AuthenticAMD``, ... (``unknown`` where the OS does not say)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return "unknown"
    match = re.search(r"^vendor_id\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else "unknown"


def _cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return []
    match = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    flags = set(match.group(1).split()) if match else set()
    return sorted(f for f in flags if f in {"avx2", "fma", "avx512f", "avx512_bf16", "amx_tile"})


def machine_info(threads: int) -> dict[str, Any]:
    """CPU model and vendor, cores, SIMD flags, torch and Python versions, threads."""
    return {
        "cpu": _cpu_model(),
        "vendor": _cpu_vendor(),
        "cores": os.cpu_count(),
        "simd": _cpu_flags(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


@dataclass
class BenchReport:
    """Everything one ``dynviz bench`` run measured."""

    settings: BenchSettings
    machine: dict[str, Any]
    command: str
    sections: list[Section] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S"))
    seconds: float = 0.0

    @property
    def max_rss_mb(self) -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return usage / 1024 if sys.platform != "darwin" else usage / 2**20

    def to_json(self) -> dict[str, Any]:
        settings = asdict(self.settings)
        return {
            "command": self.command,
            "started": self.started,
            "seconds": self.seconds,
            "machine": self.machine,
            "settings": settings,
            "max_rss_mb": round(self.max_rss_mb, 1),
            "figures": [{**f.to_json(), "machine": self.machine_label} for f in self.figures],
            "sections": [s.to_json() for s in self.sections],
        }

    @property
    def machine_label(self) -> str:
        """The CPU model and vendor, printed beside every figure (figures of two machines are
        not comparable: issue 26)."""
        return f"{self.machine['cpu']} ({self.machine.get('vendor', 'unknown')})"

    # ---------------------------------------------------------------------------- text
    def summary_rows(self) -> list[list[str]]:
        rows = [["fig", "figure", "median", "quartiles", "target", "met", "machine"]]
        for f in self.figures:
            digits = {"%": 1, "s": 2}.get(f.unit, 3)
            value = "-" if f.value is None else f"{f.value:.{digits}f}{f.unit}"
            rows.append(
                [f.key, f.name, value, f.spread, f.target_text, f.met_text, self.machine_label]
            )
        return rows

    def to_text(self) -> str:
        lines = [
            f"dynviz bench ({'quick' if self.settings.quick else 'full'}): "
            f"{self.machine['cpu']}, {self.machine['cores']} cores, "
            f"{self.machine['threads']} threads, torch {self.machine['torch']}",
            "",
        ]
        for s in self.sections:
            lines.append(f"[{s.key}] {s.title}{_load_text(s)}")
            if s.rows:
                lines.append(_plain_table([s.columns, *[[_fmt(v) for v in r] for r in s.rows]]))
            lines += [f"  {n}" for n in s.notes]
            lines.append("")
        lines.append("figures")
        lines.append(_plain_table(self.summary_rows()))
        lines.append(f"\n{self.seconds:.0f} s in all; peak RSS {self.max_rss_mb:.0f} MB")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        m = self.machine
        lines = [
            f"Measured {self.started} on {m['cpu']} ({m['cores']} cores; "
            f"{', '.join(m['simd']) or 'no AVX flags'}), {m['threads']} threads, torch "
            f"{m['torch']}, Python {m['python']}; {'quick' if self.settings.quick else 'full'} "
            f"run, {self.seconds:.0f} s, peak RSS {self.max_rss_mb:.0f} MB; malloc thresholds "
            f"{'raised' if m.get('malloc_tuned') else 'untouched'}.",
            "",
            "Regenerate with:",
            "",
            "```",
            self.command,
            "```",
            "",
            "### Figures",
            "",
            _md_table(self.summary_rows()),
        ]
        for s in self.sections:
            lines += ["", f"### ({s.key}) {s.title}", ""]
            load = _load_text(s).strip()
            if load:
                lines += [load.strip("()").capitalize() + ".", ""]
            if s.rows:
                lines.append(_md_table([s.columns, *[[_fmt(v) for v in r] for r in s.rows]]))
            if s.notes:
                lines.append("")
                lines += [f"- {n}" for n in s.notes]
        return "\n".join(lines) + "\n"


def _load_text(s: Section) -> str:
    if not s.measured:
        return " (not measured)"
    if s.load is None:
        return ""
    text = f"load average {s.load[0]:.2f} -> {s.load[1]:.2f}, {s.seconds:.0f} s"
    wait = s.median_wait
    if wait is not None:
        text += (
            f"; CPU wait {100 * wait:.1f}% of a sample (median), {s.retaken} of "
            f"{s.samples} samples retaken, {s.contended} still contended"
        )
    return f" ({text})"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3f}"
    return str(v)


def _plain_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join("  " + line for line in lines)


def _numeric(cell: str) -> bool:
    try:
        float(cell.rstrip("x%s").replace(",", ""))
    except ValueError:
        return cell in ("-", "")
    return True


def _md_table(rows: Sequence[Sequence[str]]) -> str:
    head = "| " + " | ".join(rows[0]) + " |"
    right = [i > 0 and all(_numeric(str(r[i])) for r in rows[1:]) for i in range(len(rows[0]))]
    rule = "| " + " | ".join("---:" if r else "---" for r in right) + " |"
    body = ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows[1:]]
    return "\n".join([head, rule, *body])


def update_doc(path: str | os.PathLike[str], report: BenchReport) -> Path:
    """Replace the generated block of ``path`` (between the bench marks) with ``report``.

    A missing file, or one without the marks, gets the block appended; text outside the marks
    (the hand-written notes) is kept.
    """
    path = Path(path)
    block = f"{BEGIN_MARK}\n{report.to_markdown()}{END_MARK}"
    text = (
        path.read_text(encoding="utf-8")
        if path.is_file()
        else ("# Performance\n\nMeasured figures of `dynviz bench`.\n\n## Results\n\n")
    )
    if BEGIN_MARK in text and END_MARK in text:
        head, rest = text.split(BEGIN_MARK, 1)
        _, tail = rest.split(END_MARK, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    logger.info("updated %s", path)
    return path
