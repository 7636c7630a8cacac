"""The demo's steps, as a table: what each step needs, how long it takes, when its outputs are
up to date, and the library call it runs.

:data:`STEPS` lists them in order of priority (the longest first); each row becomes a
:class:`~dynviz.demo.scheduler.Step` of one run with :meth:`StepRow.bind`, reading the run's
:class:`~dynviz.demo.workspace.Chain` (its folders, model files and training arguments). The step
functions (``_train_step``, ...) take plain arguments: they run in worker processes.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from dynviz.demo.scheduler import Step
from dynviz.demo.workspace import RUNS, Chain, Run
from dynviz.model.checkpoint import LATEST, load_checkpoint

__all__ = ["STEPS", "StepRow"]

logger = logging.getLogger(__name__)

StepFunction = tuple[Callable[..., dict[str, Any]], tuple[Any, ...]]


# ------------------------------------------------------------------------------ up to date?
def _newer(target: Path, *sources: Path) -> bool:
    """Whether ``target`` exists and is newer than every existing source."""
    if not target.exists():
        return False
    stamp = target.stat().st_mtime
    return all(not s.exists() or s.stat().st_mtime <= stamp for s in sources)


def _trained_iterations(run_dir: Path) -> int | None:
    """Iterations of the run's last checkpoint, or None when there is none."""
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
    when there is no checkpoint or it trains what ``config`` trains). An argument ``config``
    leaves to the trainer (None: the preset's or the data's value) matches what the trainer
    resolved it to and saved; the model file counts by its name, not its folder."""
    path = run_dir / LATEST
    if not path.is_file():
        return []
    saved = load_checkpoint(path).get("train_args") or {}
    other = {
        key
        for key, value in config.items()
        if key not in _PRESENTATION and value is not None and key in saved and saved[key] != value
    }
    if "model" in saved and Path(saved["model"]).name != Path(config["model"]).name:
        other.add("model")  # another model file (a moved folder keeps the names)
    return sorted(other)


def _recorded_data(records: Path) -> str | None:
    """The data spec a records folder was recorded on (None when unreadable)."""
    try:
        return json.loads((records / "records.json").read_text(encoding="utf-8")).get("data")
    except (OSError, ValueError, AttributeError):
        return None


def _trained(run: Run, chain: Chain) -> bool:
    """Whether the run reached its iterations; a run whose model file changed since, or that
    trained with other arguments, is removed (and trained again)."""
    spec = chain.models[run.name]
    if run.optional and not spec.is_file():
        return True
    run_dir = chain.runs / run.name
    if (run_dir / LATEST).is_file() and not _newer(run_dir / LATEST, spec):
        logger.info("%s changed: training %s again", spec, run_dir)
        shutil.rmtree(run_dir)
    other = _other_training(run_dir, chain.configs[run.name])
    if other:  # another seed, budget or length: not this chain's run
        logger.info("%s trained with other %s: training it again", run_dir, other)
        shutil.rmtree(run_dir)
    done = _trained_iterations(run_dir)
    return done is not None and done >= chain.iterations(run)


def _recorded(run: Run, chain: Chain) -> bool:
    folder = chain.records / run.name
    return (
        _newer(folder / "records.json", chain.runs / run.name / LATEST)
        and _recorded_data(folder) == chain.settings.val_data
    )


def _extracted(chain: Chain) -> bool:
    return _newer(chain.common_path, chain.records / "budget" / "records.json")


def _analyzed(chain: Chain) -> bool:
    return _newer(
        chain.report_dir / "adaptivity.json",
        chain.records / "raw" / "records.json",
        chain.records / "budget" / "records.json",
    )


def _trained_runs(chain: Chain) -> list[Run]:
    return [run for run in RUNS.values() if (chain.runs / run.name / LATEST).is_file()]


def _compared(chain: Chain) -> bool:
    present = [chain.runs / run.name / LATEST for run in _trained_runs(chain)]
    return _newer(chain.compare_dir / "table1.md", *present)


# ------------------------------------------------------------------------------ the calls
# Module-level functions with plain arguments: they run in worker processes.
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


def _train_call(run: Run, chain: Chain, position: int | None) -> StepFunction:
    return _train_step, (chain.configs[run.name], run.label, position)


def _record_call(run: Run, chain: Chain, position: int | None) -> StepFunction:
    s = chain.settings
    folder = str(chain.records / run.name)
    return _record_step, (str(chain.runs / run.name), s.val_data, folder, run.label, chain.progress)


def _extract_call(chain: Chain, position: int | None) -> StepFunction:
    records = str(chain.records / "budget")
    return _extract_step, (records, str(chain.common_path), chain.settings.threshold)


def _analyze_call(chain: Chain, position: int | None) -> StepFunction:
    records = [str(chain.records / "raw"), str(chain.records / "budget")]
    return _analyze_step, (records, str(chain.report_dir), chain.settings.threshold)


def _compare_call(chain: Chain, position: int | None) -> StepFunction:
    present = _trained_runs(chain)
    return _compare_step, (
        [str(chain.runs / run.name) for run in present],
        [run.label for run in present],
        chain.settings.val_data,
        str(chain.compare_dir),
    )


# ------------------------------------------------------------------------------ the table
START_SECONDS = 8.0
"""Estimated seconds each training spends besides its iterations: it starts a process,
evaluates and re-estimates its BatchNorms."""


def _train_weight(run: Run, chain: Chain) -> float:
    """Estimated single-core seconds: a dynamic iteration at 64x64, batch 8, is about 0.17 s."""
    s = chain.settings
    unit = 0.17 * (s.size / 64) ** 2 * s.batch / 8
    return START_SECONDS + chain.iterations(run) * unit * run.cost


def _record_weight(chain: Chain) -> float:
    return 4 + 0.03 * chain.settings.val_count


def _compare_weight(chain: Chain) -> float:
    return 1 + 0.01 * chain.settings.val_count * len(RUNS)


@dataclass(frozen=True)
class StepRow:
    """One step of the chain: its key and title, the keys it needs, its estimated single-core
    seconds, whether its outputs are up to date, and the call a worker runs."""

    key: str
    title: str
    needs: tuple[str, ...]
    weight: Callable[[Chain], float]
    reuse: Callable[[Chain], bool]
    call: Callable[[Chain, int | None], StepFunction]

    def bind(self, chain: Chain) -> Step:
        """This row as a step of ``chain``."""
        return Step(
            self.key,
            self.title,
            self.weight(chain),
            self.needs,
            partial(self.reuse, chain),
            partial(self.call, chain),
        )


def _training(name: str) -> StepRow:
    run = RUNS[name]
    return StepRow(
        f"train:{name}",
        run.title,
        run.needs,
        partial(_train_weight, run),
        partial(_trained, run),
        partial(_train_call, run),
    )


def _recording(name: str) -> StepRow:
    run = RUNS[name]
    return StepRow(
        f"record:{name}",
        f"record {run.label} on the validation scenes",
        (f"train:{name}",),
        _record_weight,
        partial(_recorded, run),
        partial(_record_call, run),
    )


STEPS: tuple[StepRow, ...] = (
    _training("raw"),
    _training("budget"),
    _recording("budget"),
    StepRow(
        "extract",
        "extract the common network of Dynamic-Budget",
        ("record:budget",),
        lambda chain: 3,
        _extracted,
        _extract_call,
    ),
    _training("common"),
    _training("unet-like"),
    _recording("raw"),
    StepRow(
        "analyze",
        "analyze both records (report/)",
        ("record:raw", "record:budget"),
        lambda chain: 40,
        _analyzed,
        _analyze_call,
    ),
    _training("fcn-like"),
    StepRow(
        "compare",
        "compare every network (Table 1)",
        tuple(f"train:{name}" for name in RUNS),
        _compare_weight,
        _compared,
        _compare_call,
    ),
)
"""The chain's steps, in order of priority (the longest first)."""
