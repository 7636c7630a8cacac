"""The whole dynviz chain on synthetic data: train, record, analyze, extract, retrain, compare.

Steps (each one a library call: :func:`dynviz.train.train`, :func:`dynviz.record.record`,
:func:`dynviz.analysis.report.analyze`, :func:`dynviz.analysis.common.write_common`,
:func:`dynviz.analysis.compare.compare`):

1. train a dynamic model without budget (Dynamic-Raw) and one with a budget (Dynamic-Budget);
2. train the special cases modeled in the same space (U-Net-like and FCN-like routes) as static
   networks;
3. record both dynamic models on the validation scenes;
4. analyze both records (Fig. 5, heatmaps, costs, routing versus scale, ``report/report.md``);
5. extract the common network of Dynamic-Budget (paths active in more than 95% of images) and
   retrain it as a static network;
6. compare everything in a Table-1-style table;
7. write ``OUT/report.md`` with the table, the routing figures and the figures.

Steps that do not depend on each other run side by side, ``jobs`` at a time (2 by default: one
process per core, one torch thread each), so a 2-core machine is kept busy. The chain logs
"step k of n" with the elapsed time and an estimate of the time left, each training shows its own
progress bar (on a terminal), and every step's wall time goes to ``OUT/demo.log`` and
``OUT/demo.json``.

A re-run reuses finished steps: a run whose last checkpoint reached its iterations is not trained
again (an interrupted one resumes), and records, the report, the common network and the
comparison are kept when their inputs did not change. ``demo.json`` keeps the wall time of the
runs that made the outputs, so a re-run that only reuses reports the time it took to make them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dynviz.model.config import RoutingSpaceConfig
from dynviz.model.route import Route
from dynviz.rules import COMMON_THRESHOLD
from dynviz.support.processes import spawn_pool

__all__ = [
    "DEMO",
    "idle_estimate",
    "FULL",
    "QUICK",
    "ChainResult",
    "ChainSettings",
    "fcn_like",
    "run_chain",
    "unet_like",
]

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(processName)s %(name)s: %(message)s"


@dataclass(frozen=True)
class ChainSettings:
    """Sizes of one chain run."""

    space: str = "small"  # preset of the dynamic models
    size: int = 64  # square synthetic scenes and training crops
    train_count: int = 128
    val_count: int = 48
    iters: int = 150  # per dynamic model
    static_iters: int = 150  # per retrained static network
    batch: int = 8
    scale: tuple[float, float] = (1.0, 1.0)  # training rescale (1: scenes keep their scale)
    budget_lambda: float = 4.0
    budget_mu: float = 0.15
    budget_start: float = 0.3  # share of training before the budget loss starts
    budget_ramp: float = 0.1
    gate_lr_mult: float = 4.0
    gate_warmup: float = 0.0  # share of a dynamic training with every path open, gates idle
    close_below: float = 0.0  # after training, the dynamic models close paths with alpha <= this
    threshold: float = COMMON_THRESHOLD
    active_threshold: float = 0.0  # a path is open when alpha > this (the paper: 0)
    gate_bias_init: float | None = None  # the gates' initial bias (None: the space's, 1.5)
    seed: int = 0
    threads: int = 1  # torch threads per step; several threads on shared cores can stall
    jobs: int = 2  # steps run side by side (processes); 2 keeps a 2-core machine busy
    workers: int = 0  # data-loading workers per training (0: scenes made in the training process)
    eval_limit: int = 16

    @property
    def train_data(self) -> str:
        return f"synthetic:count={self.train_count},size={self.size}x{self.size},seed={self.seed}"

    @property
    def val_data(self) -> str:
        return f"synthetic:count={self.val_count},size={self.size}x{self.size},seed={self.seed}"


# A few minutes on two idle cores; what the slow test and `analysis/run_chain.py --quick` run.
QUICK = ChainSettings()
# The demo (`make demo`): within 10 minutes on two idle cores. The dynamic models first train
# with every path open for 10% of their iterations (gate warm-up: the gates idle, no budget);
# then the gates, starting half open (bias 0.5 instead of the official 1.5, which opens every
# path for every image and saturates tanh), route at the network's rate under the budget (mu
# 0.4). Without the warm-up, gates at bias 0.5 scale every path by about 0.46 and a short run
# learns slowly; gates that start open settle on one route for every image. Routes that follow
# the image need both many scenes (2048; with 256 every image costs about the same) and 2400
# iterations (with 1600 they do not form); after training, paths with alpha <= 0.3 are closed:
# the soft gates leave many paths barely open, which cost full MACs, change little and hide
# the regimes' different routes in a common cost (docs/demo.md lists the runs).
DEMO = ChainSettings(
    size=64,
    train_count=2048,
    val_count=96,
    iters=2400,
    static_iters=1200,
    gate_bias_init=0.5,
    gate_warmup=0.1,
    budget_mu=0.4,
    budget_start=0.1,
    budget_ramp=0.05,
    gate_lr_mult=1.0,
    close_below=0.3,
)
# Longer runs for nicer figures.
FULL = ChainSettings(size=96, train_count=512, val_count=128, iters=2000, static_iters=1000)


@dataclass
class ChainResult:
    out: Path
    report: Path
    table: Path
    figures: dict[str, Path] = field(default_factory=dict)
    common: Route | None = None
    seconds: float = 0.0  # wall time of this call
    made_seconds: float = 0.0  # wall time of the runs that made the outputs
    adaptivity: dict[str, Any] | None = None


def unet_like(config: RoutingSpaceConfig) -> list[list[int]]:
    """U-Net in a space (Fig. 3b): down to the deepest scale, back up to 1/4, and a keep chain at
    each finer scale from the encoder to the decoder (the skip connections)."""
    layers = config.num_layers
    depth = min(config.num_scales - 1, layers // 2)
    main = [min(i, depth, layers - i) for i in range(layers + 1)]
    chains = [main] + [[min(i, s, layers - i) for i in range(layers + 1)] for s in range(depth)]
    return [[config.stride(s) for s in chain] for chain in chains]


def fcn_like(config: RoutingSpaceConfig) -> list[list[int]]:
    """FCN-32s in a space (Fig. 3a): one path straight down to the coarsest scale, ending there."""
    deepest = config.num_scales - 1
    return [[config.stride(min(i, deepest)) for i in range(config.num_layers + 1)]]


def _write_special(
    config: RoutingSpaceConfig, name: str, chains: list[list[int]], description: str, path: Path
) -> Path:
    """A self-contained special-case route spec (the space inline)."""
    route = Route.from_chains(config, chains, name=name, description=description)
    data = route.to_dict()
    data["space"] = config.to_dict()
    data.pop("paths")
    data["chains"] = chains
    text = f"# {description}\n# Written by dynviz.demo.chain.\n" + yaml.safe_dump(
        data, sort_keys=False, default_flow_style=None
    )
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def _write_space(config: RoutingSpaceConfig, path: Path) -> Path:
    """The routing space of the dynamic models as a YAML config (rewritten only on change, so
    its time stamp says when the space last changed)."""
    text = "# The routing space of the demo's dynamic models. Written by dynviz.demo.chain.\n"
    text += yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=False)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def _newer(target: Path, *sources: Path) -> bool:
    """Whether ``target`` exists and is newer than every existing source."""
    if not target.exists():
        return False
    stamp = target.stat().st_mtime
    return all(not s.exists() or s.stat().st_mtime <= stamp for s in sources)


def _trained_iterations(run_dir: Path) -> int | None:
    """Iterations of the run's last checkpoint, or None when there is none."""
    from dynviz.model.checkpoint import LATEST, load_checkpoint

    path = run_dir / LATEST
    if not path.is_file():
        return None
    return int(load_checkpoint(path).get("iteration", 0))


# Training arguments that say where a run is and how it is shown, not what it trains: a run that
# differs from the chain's only in these is the chain's run (the space's file, "model", is the
# chain's own and is checked by its time stamp).
_PRESENTATION = frozenset(
    {"model", "out", "progress", "workers", "log_every", "tensorboard", "device"}
)


def _other_training(run_dir: Path, config: dict[str, Any]) -> list[str]:
    """The training arguments of the run's last checkpoint that differ from ``config`` (empty
    when there is no checkpoint or it trains what ``config`` trains)."""
    from dynviz.model.checkpoint import LATEST, load_checkpoint

    path = run_dir / LATEST
    if not path.is_file():
        return []
    saved = load_checkpoint(path).get("train_args") or {}
    return sorted(
        key
        for key, value in config.items()
        if key not in _PRESENTATION and key in saved and saved[key] != value
    )


def _recorded_data(records: Path) -> str | None:
    """The data spec a records folder was recorded on (None when unreadable)."""
    try:
        return json.loads((records / "records.json").read_text(encoding="utf-8")).get("data")
    except (OSError, ValueError, AttributeError):
        return None


# ------------------------------------------------------------------------------ the steps
# Module-level functions with plain arguments: they run in worker processes.


def _init_worker(threads: int, log_path: str) -> None:
    """A worker process: torch threads, and its log lines into the chain's log file."""
    import torch

    torch.set_num_threads(threads)
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name in ("PIL", "matplotlib", "fontTools"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _train_step(config: dict[str, Any], label: str, position: int | None) -> dict[str, Any]:
    from dynviz.train import TrainConfig, train

    cfg = TrainConfig.from_dict(config)
    done = _trained_iterations(Path(cfg.out))
    result = train(cfg, resume=done is not None, label=label, position=position)
    last = result.last_eval
    return {"miou": None if last is None else last.miou, "iterations": result.iteration}


def _record_step(run_dir: str, data: str, out: str, name: str, progress: bool) -> dict[str, Any]:
    from dynviz.data import build_dataset
    from dynviz.record import load_records_model, record

    model, meta = load_records_model(run_dir)
    dataset = build_dataset(data, split="val")
    checkpoint = {
        "path": str(meta["path"]),
        "sha256": meta["sha256"],
        "iteration": meta["iteration"],
    }
    result = record(
        model,
        dataset,
        out,
        name=name,
        checkpoint=checkpoint,
        data_spec=data,
        split="val",
        progress=progress,
    )
    return {"images": getattr(result, "images", None)}


def _analyze_step(records: list[str], out: str, threshold: float) -> dict[str, Any]:
    from dynviz.analysis.report import analyze
    from dynviz.record import read_records

    report = analyze([read_records(path) for path in records], out, threshold=threshold)
    return {"adaptivity": report.summary.get("adaptivity")}


def _extract_step(records: str, out: str, threshold: float) -> dict[str, Any]:
    from dynviz.analysis.common import CommonNetError, write_common

    while True:
        try:
            route = write_common(records, out, threshold=threshold)
        except CommonNetError as err:  # a barely trained model: lower the threshold a little
            if threshold <= 0.5:
                logger.warning("no common network (%s); the comparison goes on without it", err)
                Path(out).unlink(missing_ok=True)
                return {"threshold": None, "paths": 0}
            threshold = round(threshold - 0.05, 2)
            logger.warning("%s; trying %.2f", err, threshold)
            continue
        logger.info("common network: %d paths in %d cells", len(route), len(route.cells))
        return {"threshold": threshold, "paths": len(route)}


def _compare_step(runs: list[str], names: list[str], data: str, out: str) -> dict[str, Any]:
    from dynviz.analysis.compare import compare, write_table

    rows = compare(runs, data, names=names)
    write_table(rows, out, data=data, split="val")
    return {"methods": names}


def _timed(function: Callable[..., dict[str, Any] | None], *args: Any) -> tuple[dict, float]:
    """Run a step; its result and the CPU seconds it took (all threads of this process)."""
    start = time.process_time()
    result = function(*args) or {}
    return result, time.process_time() - start


def idle_estimate(steps: dict[str, tuple[float, tuple[str, ...]]], lanes: int) -> float:
    """Wall seconds of the steps on ``lanes`` idle cores: list scheduling in the given order of
    ``{key: (cpu seconds, needs)}``, each step on the first free lane once its inputs are done
    (how :func:`run_chain` schedules them), one core per step."""
    free = [0.0] * max(1, lanes)
    done: dict[str, float] = {}
    pending = dict(steps)
    while pending:
        for key, (cpu, needs) in list(pending.items()):
            if all(n in done or n not in steps for n in needs):
                lane = min(range(len(free)), key=free.__getitem__)
                start = max([free[lane], *(done.get(n, 0.0) for n in needs)])
                free[lane] = done[key] = start + cpu
                del pending[key]
                break
        else:
            raise ValueError(f"steps wait on each other: {sorted(pending)}")
    return max(done.values(), default=0.0)


# ------------------------------------------------------------------------------ scheduling
@dataclass
class _Step:
    key: str
    title: str
    weight: float  # estimated seconds on one idle core (for the ETA)
    needs: tuple[str, ...]
    reuse: Callable[[], bool]  # True: the outputs are up to date, skip
    call: Callable[[int | None], tuple[Callable[..., dict[str, Any]], tuple[Any, ...]]]
    # position of the progress bar -> (function, args), built when the step is due
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # CPU time of the process that ran it
    reused: bool = False
    result: dict[str, Any] = field(default_factory=dict)


class _Progress:
    """Step k of n, the elapsed time and an estimate of the time left, from the steps' weights
    (estimated single-core seconds) scaled by the speed measured so far."""

    def __init__(self, steps: list[_Step], jobs: int) -> None:
        self.total = len(steps)
        self.weights = {s.key: s.weight for s in steps}
        self.jobs = max(1, jobs)
        self.started = time.perf_counter()
        self.done: set[str] = set()
        self.measured = 0.0  # weight of the steps computed (not reused) so far
        self.reused = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        remaining = sum(w for k, w in self.weights.items() if k not in self.done)
        if self.measured > 0 and self.elapsed() > 5:
            return remaining * self.elapsed() / self.measured
        return remaining / self.jobs  # no measurement yet: the estimate itself

    def line(self, step: _Step, what: str) -> str:
        return (
            f"[step {len(self.done)} of {self.total} done] {what} {step.title}; elapsed "
            f"{_clock(self.elapsed())}, about {_clock(self.left())} left"
        )

    def finish(self, step: _Step) -> None:
        self.done.add(step.key)
        if step.reused:
            self.reused += step.weight
        else:
            self.measured += step.weight


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _schedule(steps: list[_Step], jobs: int, log_path: Path, threads: int) -> _Progress:
    """Run the steps as their inputs become ready, ``jobs`` at a time."""
    if jobs > 1:
        with spawn_pool(jobs, initializer=_init_worker, initargs=(threads, str(log_path))) as pool:
            return _run_steps(steps, jobs, pool)
    return _run_steps(steps, jobs, None)


def _run_steps(steps: list[_Step], jobs: int, pool: ProcessPoolExecutor | None) -> _Progress:
    progress = _Progress(steps, jobs)
    pending = {s.key: s for s in steps}
    running: dict[Future[dict[str, Any]], tuple[_Step, int, float]] = {}
    free = list(range(jobs))
    while pending or running:
        ready = [
            s for s in pending.values() if all(n in progress.done for n in s.needs)
        ]  # in the steps' order: the longest first
        for step in ready:
            if step.reuse():
                step.reused = True
                del pending[step.key]
                progress.finish(step)
                logger.info(progress.line(step, "reusing"))
                continue
            if not free:
                break
            lane = free.pop(0)
            del pending[step.key]
            logger.info(progress.line(step, "starting"))
            function, args = step.call(lane if pool is not None else None)
            started = time.perf_counter()
            if pool is None:
                step.result, step.cpu_seconds = _timed(function, *args)
                step.seconds = time.perf_counter() - started
                free.append(lane)
                progress.finish(step)
                logger.info(progress.line(step, f"finished in {step.seconds:.0f} s:"))
                break  # re-evaluate what is ready
            running[pool.submit(_timed, function, *args)] = (step, lane, started)
        if pool is None or not running:
            if (
                pending
                and not running
                and not any(all(n in progress.done for n in s.needs) for s in pending.values())
            ):
                raise RuntimeError(f"chain steps cannot start: {sorted(pending)}")
            continue
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in finished:
            step, lane, started = running.pop(future)
            step.result, step.cpu_seconds = future.result()  # a failed step raises here
            step.seconds = time.perf_counter() - started
            free.append(lane)
            free.sort()
            progress.finish(step)
            logger.info(progress.line(step, f"finished in {step.seconds:.0f} s:"))
    return progress


# ------------------------------------------------------------------------------ the chain
def _train_config(
    s: ChainSettings,
    model: str,
    out: Path,
    iters: int,
    *,
    budget: bool,
    dynamic: bool,
    progress: bool,
) -> dict[str, Any]:
    from dynviz.train import TrainConfig

    config = TrainConfig(
        model=model,
        data=s.train_data,
        val_data=s.val_data,
        out=str(out),
        iters=iters,
        batch=s.batch,
        crop=(s.size, s.size),
        scale=s.scale,
        seed=s.seed,
        eval_limit=s.eval_limit,
        log_every=50,
        workers=s.workers,
        tensorboard=False,
        progress=progress,
        budget_lambda=s.budget_lambda if budget else (0.0 if dynamic else None),
        budget_mu=s.budget_mu if budget else None,
        budget_start=s.budget_start,
        budget_ramp=s.budget_ramp,
        gate_lr_mult=s.gate_lr_mult if budget else 1.0,
        gate_warmup=s.gate_warmup if dynamic else 0.0,
        close_below=s.close_below if dynamic else 0.0,
    )
    return config.to_dict()


def run_chain(
    out: str | Path,
    settings: ChainSettings = QUICK,
    *,
    progress: bool = True,
    on_step: Callable[[str], None] | None = None,
) -> ChainResult:
    """Run the chain into ``out`` and return where its report, table and figures are.

    Args:
        out: the output folder (created; a re-run reuses what is up to date in it).
        settings: sizes and training settings.
        progress: progress bars (trainings and recordings).
        on_step: called with each step's title as it starts (default: logged).

    Raises:
        RuntimeError: a step failed (its error names it).
    """
    from dynviz.data import build_dataset
    from dynviz.model.checkpoint import LATEST
    from dynviz.model.zoo import load_space

    started = time.perf_counter()
    s = settings
    out = Path(out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    log_path = out / "demo.log"
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(logging.INFO)
    package = logging.getLogger("dynviz")
    package.addHandler(handler)
    level = package.level
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    try:
        previous = _read_state(out / "demo.json", s)
        logger.info("dynviz chain into %s: %s", out, json.dumps(asdict(s)))
        config = load_space(s.space)
        runs, records, models = out / "runs", out / "records", out / "models"
        report_dir, compare_dir = out / "report", out / "compare"
        classes = build_dataset(s.train_data, split="train").num_classes
        changes: dict[str, Any] = {"num_classes": classes}
        notes = []
        if s.active_threshold:
            changes["active_threshold"] = s.active_threshold
            notes.append(f"a path opens when alpha > {s.active_threshold:g}")
        if s.gate_bias_init is not None:
            changes["gate_bias_init"] = s.gate_bias_init
            notes.append(f"gate bias initialised to {s.gate_bias_init:g}")
        if notes:
            changes["description"] = f"{config.description}; " + ", ".join(notes)
        config = RoutingSpaceConfig.from_dict({**config.to_dict(), **changes})
        space = _write_space(config, models / f"{config.name}.yaml")
        unet = _write_special(
            config,
            "unet-like",
            unet_like(config),
            f"special case: U-Net-like route (Fig. 3b) in the {config.name} space",
            models / "unet-like.yaml",
        )
        fcn = _write_special(
            config,
            "fcn-like",
            fcn_like(config),
            f"special case: FCN-32s-like single path (Fig. 3a) in the {config.name} space",
            models / "fcn-like.yaml",
        )
        common_path = models / "common-budget.yaml"
        methods = [
            ("raw", "Dynamic-Raw"),
            ("budget", "Dynamic-Budget"),
            ("common", "Common-Budget"),
            ("unet-like", "U-Net-like"),
            ("fcn-like", "FCN-like"),
        ]
        # estimated single-core seconds: a dynamic iteration at 64x64, batch 8, is about 0.17 s;
        # each training also starts a process, evaluates and re-estimates its BatchNorms
        unit = 0.17 * (s.size / 64) ** 2 * s.batch / 8
        start = 8.0
        statics = {"unet-like": (unet, 0.6), "fcn-like": (fcn, 0.35), "common": (common_path, 0.5)}

        def configure(name: str, model: str, iters: int, budget: bool) -> dict[str, Any]:
            return _train_config(
                s,
                model,
                runs / name,
                iters,
                budget=budget,
                dynamic=model == str(space),
                progress=progress,
            )

        configs = {
            "raw": configure("raw", str(space), s.iters, False),
            "budget": configure("budget", str(space), s.iters, True),
            "common": configure("common", str(common_path), s.static_iters, False),
            "unet-like": configure("unet-like", str(unet), s.static_iters, False),
            "fcn-like": configure("fcn-like", str(fcn), s.static_iters, False),
        }

        def trained(name: str, iters: int, spec: Path | None = None) -> Callable[[], bool]:
            def check() -> bool:
                run_dir = runs / name
                if (
                    spec is not None
                    and (run_dir / LATEST).is_file()
                    and not _newer(run_dir / LATEST, spec)
                ):
                    logger.info("%s changed: training %s again", spec, run_dir)
                    shutil.rmtree(run_dir)
                other = _other_training(run_dir, configs[name])
                if other:  # another seed, budget or length: not this chain's run
                    logger.info("%s trained with other %s: training it again", run_dir, other)
                    shutil.rmtree(run_dir)
                done = _trained_iterations(run_dir)
                return done is not None and done >= iters

            return check

        def train_call(name: str, label: str):
            def call(position: int | None):
                return _train_step, (configs[name], label, position)

            return call

        def recorded(name: str) -> Callable[[], bool]:
            folder = records / name
            return lambda: (
                _newer(folder / "records.json", runs / name / LATEST)
                and _recorded_data(folder) == s.val_data
            )

        def record_call(name: str, label: str):
            return lambda position: (
                _record_step,
                (str(runs / name), s.val_data, str(records / name), label, progress),
            )

        steps = [
            _Step(
                "train:raw",
                "train Dynamic-Raw",
                start + s.iters * unit,
                (),
                trained("raw", s.iters, space),
                train_call("raw", "Dynamic-Raw"),
            ),
            _Step(
                "train:budget",
                "train Dynamic-Budget",
                start + s.iters * unit,
                (),
                trained("budget", s.iters, space),
                train_call("budget", "Dynamic-Budget"),
            ),
            _Step(
                "record:budget",
                "record Dynamic-Budget on the validation scenes",
                4 + 0.03 * s.val_count,
                ("train:budget",),
                recorded("budget"),
                record_call("budget", "Dynamic-Budget"),
            ),
            _Step(
                "extract",
                "extract the common network of Dynamic-Budget",
                3,
                ("record:budget",),
                lambda: _newer(common_path, records / "budget" / "records.json"),
                lambda position: (
                    _extract_step,
                    (str(records / "budget"), str(common_path), s.threshold),
                ),
            ),
            _Step(
                "train:common",
                "retrain Common-Budget as a static network",
                start + s.static_iters * unit * statics["common"][1],
                ("extract",),
                lambda: (
                    not common_path.is_file() or trained("common", s.static_iters, common_path)()
                ),
                train_call("common", "Common-Budget"),
            ),
            _Step(
                "train:unet-like",
                "train the U-Net-like special case",
                start + s.static_iters * unit * statics["unet-like"][1],
                (),
                trained("unet-like", s.static_iters, unet),
                train_call("unet-like", "U-Net-like"),
            ),
            _Step(
                "record:raw",
                "record Dynamic-Raw on the validation scenes",
                4 + 0.03 * s.val_count,
                ("train:raw",),
                recorded("raw"),
                record_call("raw", "Dynamic-Raw"),
            ),
            _Step(
                "analyze",
                "analyze both records (report/)",
                40,
                ("record:raw", "record:budget"),
                lambda: _newer(
                    report_dir / "adaptivity.json",
                    records / "raw" / "records.json",
                    records / "budget" / "records.json",
                ),
                lambda position: (
                    _analyze_step,
                    ([str(records / "raw"), str(records / "budget")], str(report_dir), s.threshold),
                ),
            ),
            _Step(
                "train:fcn-like",
                "train the FCN-like special case",
                start + s.static_iters * unit * statics["fcn-like"][1],
                (),
                trained("fcn-like", s.static_iters, fcn),
                train_call("fcn-like", "FCN-like"),
            ),
        ]
        trainings = tuple(f"train:{name}" for name, _ in methods)

        def compared() -> bool:
            present = [runs / n / LATEST for n, _ in methods if (runs / n / LATEST).is_file()]
            return _newer(compare_dir / "table1.md", *present)

        def compare_call(position: int | None):
            present = [(n, label) for n, label in methods if (runs / n / LATEST).is_file()]
            return _compare_step, (
                [str(runs / n) for n, _ in present],
                [label for _, label in present],
                s.val_data,
                str(compare_dir),
            )

        steps.append(
            _Step(
                "compare",
                "compare every network (Table 1)",
                1 + 0.01 * s.val_count * len(methods),
                trainings,
                compared,
                compare_call,
            )
        )
        if on_step is not None:
            for step in steps:
                original = step.call

                def announced(position, step=step, original=original):
                    on_step(step.title)
                    return original(position)

                step.call = announced
        jobs = max(1, min(s.jobs, os.cpu_count() or 1))
        state = _schedule(steps, jobs, log_path, s.threads)
        seconds = time.perf_counter() - started
        worked = [step for step in steps if not step.reused]
        made = (previous.get("made_seconds", 0.0) if previous else 0.0) + (
            seconds if worked else 0.0
        )
        step_seconds = dict(previous.get("steps", {})) if previous else {}
        step_seconds.update({step.key: round(step.seconds, 1) for step in worked})
        step_cpu = dict(previous.get("cpu_seconds", {})) if previous else {}
        step_cpu.update({step.key: round(step.cpu_seconds, 1) for step in worked})
        idle = None
        if all(step.key in step_cpu for step in steps):
            idle = idle_estimate(
                {step.key: (step_cpu[step.key], step.needs) for step in steps}, jobs
            )
            logger.info(
                "CPU time of the steps: %.0f s in all; on %d idle cores the chain would take "
                "about %s (steps one core each, scheduled as above)",
                sum(step_cpu.values()),
                jobs,
                _clock(idle),
            )
        common = Route.from_yaml(common_path) if common_path.is_file() else None
        adaptivity_file = report_dir / "adaptivity.json"
        adaptivity = (
            json.loads(adaptivity_file.read_text(encoding="utf-8"))
            if adaptivity_file.is_file()
            else None
        )
        extract = next(step for step in steps if step.key == "extract")
        threshold = extract.result.get("threshold") or (previous or {}).get("threshold")
        threshold = threshold or s.threshold
        figures = {
            "Fig. 5: distribution of path activation probability": report_dir
            / "fig5_probability.png",
            "Routing versus object scale": report_dir / "routing_vs_scale.png",
        }
        state_doc = {
            "settings": asdict(s),
            "made_seconds": made,
            "last_run_seconds": seconds,
            "steps": step_seconds,
            "cpu_seconds": step_cpu,
            "idle_estimate_seconds": idle,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "reused": [step.key for step in steps if step.reused],
            "threshold": threshold,
            "cpu_count": os.cpu_count(),
        }
        (out / "demo.json").write_text(json.dumps(state_doc, indent=2) + "\n", encoding="utf-8")
        report = _write_report(
            out,
            s,
            config,
            compare_dir / "table1.md",
            figures,
            common,
            threshold,
            adaptivity,
            made=made,
            seconds=seconds,
            cpu=sum(step_cpu.values()),
            idle=idle,
            reused=len(steps) - len(worked),
            total=len(steps),
        )
        logger.info(
            "chain finished in %s (%d of %d steps reused); made in %s",
            _clock(seconds),
            len(steps) - len(worked),
            len(steps),
            _clock(made),
        )
        del state
        return ChainResult(
            out,
            report,
            compare_dir / "table1.md",
            figures,
            common,
            seconds,
            made,
            None if adaptivity is None else adaptivity.get("Dynamic-Budget"),
        )
    finally:
        package.removeHandler(handler)
        package.setLevel(level)
        handler.close()


def _read_state(path: Path, settings: ChainSettings) -> dict[str, Any] | None:
    """The previous run's ``demo.json`` when it used the same settings."""
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    saved = state.get("settings", {})
    current = json.loads(json.dumps(asdict(settings)))
    if saved != current:
        logger.info("%s: other settings than this run; its times are not carried over", path)
        return None
    return state


def _adaptivity_lines(figures: dict[str, Any]) -> list[str]:
    from dynviz.analysis.adaptivity import RouteAdaptivity

    return RouteAdaptivity(**figures).sentences()


def _comparison_lines(folder: Path, report: Path) -> list[str]:
    """The report's comparison of Dynamic-Budget with every other network of the comparison
    folder (its common network, the special cases, Dynamic-Raw): a table with paired bootstrap
    intervals on the mIoU differences, the claims they support, and the cost-accuracy figure
    (``report/cost_accuracy.png``)."""
    from dynviz.analysis.compare import (
        against_each,
        comparison_markdown,
        cost_accuracy_frame,
        read_rows,
    )

    if not (folder / "table1.csv").is_file():
        return []
    rows = read_rows(folder)
    others = against_each(rows, "Dynamic-Budget")  # the bootstrap, once
    lines = comparison_markdown(rows, "Dynamic-Budget", others=others)
    if not lines:
        return []
    from dynviz.plots.mpl import cost_accuracy

    ax = cost_accuracy(
        cost_accuracy_frame(rows, "Dynamic-Budget", others=others),
        reference="Dynamic-Budget",
        title="Every network of the demo on the validation scenes",
    )
    report.mkdir(parents=True, exist_ok=True)
    ax.figure.savefig(report / "cost_accuracy.png", dpi=120, bbox_inches="tight")
    own = next(r for r in rows if r.method == "Dynamic-Budget")
    statics = [o for o in others if o.kind != "dynamic"]
    cheaper = [o for o in statics if o.gmacs <= own.gmacs_avg]
    aims = [
        (
            "better than every static network that costs no more (its common network and the "
            "special cases), by the intervals",
            all(o.verdict == "better" for o in cheaper),
        ),
        (
            "better than a static network that costs more, by the intervals",
            any(o.verdict == "better" for o in statics if o not in cheaper),
        ),
    ]
    return [
        "## Dynamic against every other network",
        "",
        *lines,
        "",
        "![mIoU against cost](report/cost_accuracy.png)",
        "",
        "Dynamic-Budget is "
        + "; ".join(f"{aim}: {'yes' if ok else 'no'}" for aim, ok in aims)
        + ".",
        "",
    ]


def _write_report(
    out: Path,
    s: ChainSettings,
    config: RoutingSpaceConfig,
    table: Path,
    figures: dict[str, Path],
    common: Route | None,
    threshold: float,
    adaptivity: dict[str, Any] | None,
    *,
    made: float,
    seconds: float,
    reused: int,
    total: int,
    cpu: float = 0.0,
    idle: float | None = None,
) -> Path:
    lines = [
        "# dynviz demo report",
        "",
        f"The `{config.name}` routing space (L={config.num_layers}, base width "
        f"{config.base_channels}, {config.num_scales} scales) trained on synthetic scenes of "
        f"{s.size}x{s.size} ({s.train_count} training, {s.val_count} validation images): "
        f"{s.iters} iterations per dynamic model, {s.static_iters} per static network. "
        f"Dynamic-Budget uses lambda={s.budget_lambda:g}, mu={s.budget_mu:g}."
        + (
            f" The dynamic models train with every path open for the first {s.gate_warmup:.0%} "
            "of their iterations (gate warm-up)."
            if s.gate_warmup
            else ""
        )
        + (
            f" After training, their paths with alpha <= {s.close_below:g} are closed (the "
            "paper closes only alpha = 0)."
            if s.close_below
            else ""
        )
        + " These numbers show the chain at work on a laptop CPU; they are not the paper's "
        "Cityscapes results.",
        "",
        "## Table 1 on synthetic data",
        "",
        table.read_text(encoding="utf-8").strip() if table.is_file() else "(no table)",
        "",
    ]
    special = _comparison_lines(table.parent, out / "report")
    if special and s.static_iters < s.iters:
        special[-1:-1] = [
            "",
            f"The static networks trained for {s.static_iters} iterations and the dynamic ones "
            f"for {s.iters}, which favours the dynamic ones.",
        ]
    lines += special
    if adaptivity:
        lines += [
            "## Do the routes adapt to the image?",
            "",
            "In these scenes a small object shows its class by its fine texture (plain or "
            "checkered) and a large one, always plain, by its brightness (the second class of "
            "each pair is drawn at half the brightness of the first): which cue applies depends "
            "on the object's size.",
            "",
        ]
        for label, figures_of in adaptivity.items():
            lines += [f"**{label}**", ""]
            lines += [f"- {line}" for line in _adaptivity_lines(figures_of)]
            lines.append("")
        budget = adaptivity.get("Dynamic-Budget")
        if budget:
            aims = [
                ("cost spread of at least 1.5x", budget["cost_spread"] >= 1.5),
                ("regime means at least 20% apart", budget["regime_difference"] >= 0.2),
                (
                    "regime told from the route clearly above chance (+15 points)",
                    budget["classifier_accuracy"] >= budget["chance"] + 0.15,
                ),
            ]
            lines += [
                "Aims for Dynamic-Budget: "
                + "; ".join(f"{aim}: {'met' if ok else 'not met'}" for aim, ok in aims)
                + ".",
                "",
            ]
    if common is not None:
        lines += [
            "## The common network",
            "",
            f"Common-Budget keeps the paths of Dynamic-Budget active in more than "
            f"{100 * threshold:g}% of the validation images: {len(common)} paths in "
            f"{len(common.cells)} cells (`models/common-budget.yaml`).",
            "",
        ]
    for title, path in figures.items():
        if path.is_file():
            lines += [f"## {title}", "", f"![{title}]({path.relative_to(out).as_posix()})", ""]
    lines += [
        "## More",
        "",
        "- The full analysis: `report/report.md` (CSV tables, PDF and interactive HTML figures).",
        "- Records: `records/raw`, `records/budget` (Parquet, one row per image and path).",
        "- Timings of every step: `demo.log` and `demo.json`.",
        f"- Open the route explorer on this folder: `dynviz app {out}`",
        "",
        f"Made in {made / 60:.1f} minutes on {os.cpu_count()} cores"
        + (
            f" (this re-run took {seconds / 60:.1f} minutes and reused {reused} of {total} steps)."
            if reused
            else "."
        ),
    ]
    if idle is not None:
        lines.append(
            f"The steps took {cpu / 60:.1f} minutes of CPU time; on {s.jobs} idle cores, two "
            f"steps side by side, that is about {idle / 60:.1f} minutes (the load average was "
            f"{os.getloadavg()[0]:.1f} when this report was written)."
        )
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report
