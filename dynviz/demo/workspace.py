"""The folder of one demo run: the trainings (:data:`RUNS`), the model files they train (the
routing space of the dynamic models and the special cases, drawn by the zoo's route builders) and
their training arguments, all in one :class:`Chain` that the step table
(:mod:`dynviz.demo.steps`) reads."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from dynviz.demo.settings import ChainSettings
from dynviz.model.config import GateKind, RoutingSpaceConfig
from dynviz.model.route import Route
from dynviz.model.zoo import fcn_like, fcn_like_route, load_space, unet_like, unet_like_route

__all__ = ["RUNS", "Chain", "Run", "prepare"]


@dataclass(frozen=True)
class Run:
    """One training of the chain and its method in the comparison."""

    name: str  # folder under runs/, and the model file's stem for a static network
    label: str  # the method in Table 1
    title: str  # the step's title
    dynamic: bool  # a dynamic model (the chain's routing space) or a static network
    budget: bool = False
    cost: float = 1.0  # seconds per iteration relative to a dynamic model's
    needs: tuple[str, ...] = ()
    optional: bool = False  # its model file may be missing (nothing to train then)


RUNS: dict[str, Run] = {
    run.name: run
    for run in (
        Run("raw", "Dynamic-Raw", "train Dynamic-Raw", dynamic=True),
        Run("budget", "Dynamic-Budget", "train Dynamic-Budget", dynamic=True, budget=True),
        Run(
            "common",
            "Common-Budget",
            "retrain Common-Budget as a static network",
            dynamic=False,
            cost=0.5,
            needs=("extract",),
            optional=True,
        ),
        Run("unet-like", "U-Net-like", "train the U-Net-like special case", False, cost=0.6),
        Run("fcn-like", "FCN-like", "train the FCN-like special case", False, cost=0.35),
    )
}
"""The trainings, in the order of the comparison's rows."""


@dataclass(frozen=True)
class Chain:
    """Where one chain run writes and what it trains (made by :func:`prepare`)."""

    settings: ChainSettings
    out: Path
    space: RoutingSpaceConfig  # of the dynamic models (the settings' preset, the data's classes)
    models: dict[str, Path]  # run name -> the model file it trains
    configs: dict[str, dict[str, Any]]  # run name -> its training arguments
    progress: bool  # progress bars (trainings and recordings)

    @property
    def runs(self) -> Path:
        return self.out / "runs"

    @property
    def records(self) -> Path:
        return self.out / "records"

    @property
    def report_dir(self) -> Path:
        return self.out / "report"

    @property
    def compare_dir(self) -> Path:
        return self.out / "compare"

    @property
    def common_path(self) -> Path:
        return self.out / "models" / "common-budget.yaml"

    def iterations(self, run: Run) -> int:
        return self.settings.iters if run.dynamic else self.settings.static_iters


# ------------------------------------------------------------------------------ model files
def _write_special(route: Route, chains: list[list[int]], path: Path) -> Path:
    """A self-contained special-case route spec (the space inline)."""
    data = route.to_dict()
    data["space"] = route.space.to_dict()
    data.pop("paths")
    data["chains"] = chains
    text = f"# {route.description}\n# Written by dynviz.demo.chain.\n" + yaml.safe_dump(
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


def _budget_space(s: ChainSettings, config: RoutingSpaceConfig) -> RoutingSpaceConfig:
    """Dynamic-Budget's space: the dynamic models' one, with the settings' budget gate (the
    paper's budgeted networks use small gates, its Dynamic-Raw full ones)."""
    if s.budget_gate is None or s.budget_gate == config.gate.value:
        return config
    description = (
        f"{config.description}; {s.budget_gate} gates instead of {config.gate.value}, "
        "for Dynamic-Budget"
    )
    return replace(
        config, gate=GateKind(s.budget_gate), name=f"{config.name}-budget", description=description
    )


def _space(s: ChainSettings) -> RoutingSpaceConfig:
    """The dynamic models' routing space: the preset with the data set's classes and the
    settings' active threshold and gate bias."""
    from dynviz.data import build_dataset

    config = load_space(s.space)
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
    return RoutingSpaceConfig.from_dict({**config.to_dict(), **changes})


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
        bn_samples=s.bn_samples if dynamic else "batch",
    )
    return config.to_dict()


def prepare(out: Path, s: ChainSettings, *, progress: bool) -> Chain:
    """Write the model files of a run into ``out/models`` (the space of the dynamic models, the
    U-Net-like and FCN-like special cases) and return the run's :class:`Chain`."""
    models = out / "models"
    config = _space(s)
    space = _write_space(config, models / f"{config.name}.yaml")
    budget = _budget_space(s, config)
    files = {
        "raw": space,
        "budget": space
        if budget is config
        else _write_space(budget, models / f"{budget.name}.yaml"),
        "common": models / "common-budget.yaml",
        "unet-like": _write_special(
            unet_like_route(config), unet_like(config), models / "unet-like.yaml"
        ),
        "fcn-like": _write_special(
            fcn_like_route(config), fcn_like(config), models / "fcn-like.yaml"
        ),
    }
    configs = {}
    for run in RUNS.values():
        configs[run.name] = _train_config(
            s,
            str(files[run.name]),
            out / "runs" / run.name,
            s.iters if run.dynamic else s.static_iters,
            budget=run.budget,
            dynamic=run.dynamic,
            progress=progress,
        )
    return Chain(s, out, config, files, configs, progress)
