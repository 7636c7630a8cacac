"""``dynviz train MODEL --data SPEC --out RUN_DIR [options] [KEY=VALUE ...]``, or
``dynviz train --config FILE [--out RUN_DIR] [KEY=VALUE ...]``: train a network.

MODEL is a preset name or a YAML path; a route spec trains a static network with the same command.
Under ``torchrun --nproc_per_node N -m dynviz train ...`` the same command runs DDP. ``--resume``
continues the run in RUN_DIR exactly where its ``checkpoint_latest.pt`` left it; only operational
options (workers, logging, evaluation and checkpoint periods, device, progress) may change on
resume. ``--recipe official`` starts from every training value of the official code's released
config for MODEL (:mod:`dynviz.train.recipe`); options and ``KEY=VALUE`` items given as well
win. ``--print-config`` prints the settings as YAML and trains nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
import yaml

from dynviz.commands import guarded, print_json
from dynviz.model import ConfigError, Route, RoutingSpaceConfig, load_spec
from dynviz.model.checkpoint import LATEST, CheckpointError, load_checkpoint
from dynviz.model.zoo import training_defaults
from dynviz.train.optim import default_warmup_iters
from dynviz.train.precise_bn import default_precise_bn_batches
from dynviz.train.recipe import OFFICIAL_COMMIT, Recipe, official_recipe
from dynviz.train.runconfig import (
    RunConfig,
    SettingsError,
    apply_overrides,
    parse_overrides,
    read_run_config,
)
from dynviz.train.trainer import TrainConfig, Trainer

__all__ = [
    "config_from_args",
    "configure_parser",
    "main",
    "recipe_from_args",
    "settings_yaml",
]

logger = logging.getLogger(__name__)

INTERMIXED = True  # KEY=VALUE overrides may follow the options

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _help(text: str, field: str) -> str:
    default = _DEFAULTS[field]
    if isinstance(default, tuple):
        default = " ".join(str(v) for v in default)
    return f"{text} (default: {default})"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dynviz train``. Every training option defaults to ``None`` here so that
    explicit values can be told apart on ``--resume``; :class:`TrainConfig` holds the defaults."""
    parser.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="preset name or YAML path (config or route spec); not needed with --resume",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="settings by their config.yaml names, over --config and the options "
        "(lr=0.01 budget_mu=0.2 crop=64,64 model.base_channels=16)",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="settings file: a run's config.yaml (trains the same network with the same "
        "arguments again) or a YAML mapping of training arguments",
    )
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="the KEY=VALUE settings as mmseg spells them (--cfg-options lr=0.01 crop=64,64)",
    )
    parser.add_argument(
        "--data",
        metavar="SPEC",
        help="training data: synthetic[:...], cityscapes:PATH, voc:PATH or folder:PATH",
    )
    parser.add_argument(
        "--out", metavar="RUN_DIR", help="run directory (required unless --config gives it)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in RUN_DIR from checkpoint_latest.pt",
    )
    parser.add_argument(
        "--val-data", metavar="SPEC", help="validation data (default: --data with split 'val')"
    )
    parser.add_argument(
        "--recipe",
        choices=("official",),
        help="official: every training value of the official code's released config for MODEL "
        "(Dynamic-A/B/C, Layer16 from scratch or, with --init, from ImageNet, Layer33): 190000 "
        "iterations, crop, scales, LR and gate factor, budget with the 26300 normaliser, ...; "
        "options and KEY=VALUE given as well win (default --out: runs/MODEL-official)",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the training settings (YAML, as config.yaml's train section) and exit",
    )
    parser.add_argument(
        "--init",
        metavar="WEIGHTS",
        help="start from these weights: a dynviz checkpoint or run directory, or an official "
        "DynamicRouting checkpoint; tensors whose shapes do not fit are skipped and listed",
    )
    group = parser.add_argument_group("schedule and optimiser")
    group.add_argument("--iters", type=int, metavar="N", help=_help("iterations", "iters"))
    group.add_argument(
        "--batch", type=int, metavar="B", help=_help("total batch over all processes", "batch")
    )
    group.add_argument(
        "--crop", type=int, nargs=2, metavar=("H", "W"), help=_help("training crop", "crop")
    )
    group.add_argument(
        "--scale",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        help=_help("random rescale range", "scale"),
    )
    group.add_argument("--lr", type=float, help=_help("base learning rate", "lr"))
    group.add_argument(
        "--momentum", type=float, metavar="M", help=_help("SGD momentum", "momentum")
    )
    group.add_argument(
        "--weight-decay",
        type=float,
        metavar="WD",
        help=_help("weight decay (0 on BatchNorm)", "weight_decay"),
    )
    group.add_argument(
        "--gate-lr-mult",
        type=float,
        metavar="MULT",
        help=_help(
            "LR multiplier of gate parameters (official 2.5 from ImageNet weights)", "gate_lr_mult"
        ),
    )
    group.add_argument(
        "--gate-warmup",
        type=float,
        metavar="SHARE",
        help=_help(
            "share of training with every path open and the gates idle, before they route "
            "(not in the paper; helps short runs)",
            "gate_warmup",
        ),
    )
    group.add_argument(
        "--close-below",
        type=float,
        metavar="ALPHA",
        help=_help(
            "after training, close for good the paths of a dynamic network whose alpha is at "
            "most ALPHA (its active threshold; the paper: 0; not in the paper)",
            "close_below",
        ),
    )
    group.add_argument(
        "--warmup-iters",
        type=int,
        metavar="N",
        help="linear warm-up length (default: min(1000, 5%% of --iters))",
    )
    group.add_argument(
        "--grad-clip",
        type=float,
        metavar="NORM",
        help=_help("clip the total gradient norm (0: off)", "grad_clip"),
    )
    group.add_argument(
        "--precise-bn",
        type=int,
        metavar="N",
        help="batches re-estimating the BatchNorm statistics with the final weights (official "
        "PreciseBN; 0: off) (default: a tenth of --iters, at most the official 200)",
    )
    group.add_argument(
        "--seed", type=int, metavar="S", help=_help("seed of init, sampling, augmentation", "seed")
    )
    group = parser.add_argument_group("budget constraint (dynamic networks)")
    group.add_argument(
        "--budget-lambda",
        type=float,
        metavar="LAMBDA",
        help="lambda (default: the preset's training default, else 0)",
    )
    group.add_argument(
        "--budget-mu",
        type=float,
        metavar="MU",
        help="mu, target share of the all-open cost (default: the preset's, else 0)",
    )
    group.add_argument(
        "--budget-start",
        type=float,
        metavar="SHARE",
        help=_help("share of training before the budget is on", "budget_start"),
    )
    group.add_argument(
        "--budget-ramp",
        type=float,
        metavar="SHARE",
        help=_help("share of training of its linear ramp", "budget_ramp"),
    )
    group.add_argument(
        "--budget-cost",
        choices=("macs", "latency"),
        help=_help(
            "what the budget constrains: expected MACs (the paper) or expected time from a "
            "per-node latency table measured on this machine at the crop size",
            "budget_cost",
        ),
    )
    group.add_argument(
        "--budget-normaliser",
        choices=("all-open", "official"),
        help=_help(
            "C_all of E / C_all: the all-open expected cost at the crop size, or the official "
            "constant 26300 MFLOPs (to retrain Dynamic-A/B/C with the paper's own mu)",
            "budget_normaliser",
        ),
    )
    group.add_argument(
        "--budget-flops-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="input size at which E (and C_all) are measured (default: the crop; the official "
        "configs ship 1024 2048, where E / 26300 is about 3.6 with every path open)",
    )
    group = parser.add_argument_group("run")
    group.add_argument("--num-classes", type=int, metavar="K", help="classes (default: the data's)")
    group.add_argument(
        "--eval-every",
        type=int,
        metavar="N",
        help="evaluate every N iterations (default: only at the end)",
    )
    group.add_argument(
        "--eval-limit",
        type=int,
        metavar="N",
        help="evaluate on the first N validation images (default: all)",
    )
    group.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="N",
        help=_help("write checkpoint_latest.pt every N iterations", "checkpoint_every"),
    )
    group.add_argument(
        "--log-every",
        type=int,
        metavar="N",
        help=_help("log to metrics.jsonl every N iterations", "log_every"),
    )
    group.add_argument(
        "--workers", type=int, metavar="N", help=_help("data-loading workers", "workers")
    )
    group.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available")
    group.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads per process (default: torch's); on a busy "
        "machine 1 can be many times faster (OpenMP threads spin-wait)",
    )
    group.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast (default: on for CUDA)",
    )
    group.add_argument(
        "--deterministic",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.use_deterministic_algorithms (warn only)",
    )
    group.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tqdm progress bar (default: when stderr is a terminal)",
    )
    group.add_argument(
        "--json", action="store_true", help="print one JSON object at the end (the summary)"
    )
    group.add_argument(
        "--tensorboard",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="TensorBoard events (the tensorboard extra: pip install 'dynviz[tensorboard]'); "
        "default: when it is installed",
    )


def _split_positionals(args: argparse.Namespace) -> list[str]:
    """KEY=VALUE items, then those of ``--cfg-options``; a first one that argparse took for MODEL
    is moved back."""
    overrides = list(getattr(args, "overrides", None) or [])
    if args.model is not None and "=" in args.model and not Path(args.model).exists():
        overrides.insert(0, args.model)
        args.model = None
    for item in ([args.model] if args.model is not None else []) + overrides:
        key = item.partition("=")[0].strip().replace("-", "_")
        if "=" not in item and key in _DEFAULTS and not Path(item).exists():
            raise SettingsError(f"{item!r} is a setting without a value: give {key}=VALUE")
    return overrides + list(getattr(args, "cfg_options", None) or [])


def recipe_from_args(args: argparse.Namespace) -> Recipe | None:
    """The released official config ``--recipe official`` follows for MODEL (None without
    ``--recipe``).

    Raises:
        ConfigError: with ``--config`` or ``--resume``, without MODEL, or for a network no
            released config trains.
    """
    if getattr(args, "recipe", None) is None:
        return None
    if args.resume or args.config:
        given = "--resume" if args.resume else "--config"
        raise ConfigError(f"--recipe sets the settings of a new run; drop {given}")
    if args.model is None:
        raise ConfigError("--recipe official needs MODEL (e.g. dynamic-a)")
    spec = load_spec(args.model)
    if isinstance(spec, Route):
        raise ConfigError(
            f"recipe official: {args.model} is a route spec; the released configs train the "
            "dynamic routing space (layer16, dynamic-a/b/c, layer33)"
        )
    overrides = parse_overrides(getattr(args, "overrides", None) or [])
    pretrained = bool(args.init or overrides.get("init"))
    return official_recipe(spec, budget=training_defaults(args.model), pretrained=pretrained)


def config_from_args(
    args: argparse.Namespace,
) -> tuple[TrainConfig, RoutingSpaceConfig | Route | None]:
    """The :class:`TrainConfig` of parsed arguments and the network to build (None: the one
    ``config.model`` names). Settings come from ``--config FILE``, then the options given,
    then ``KEY=VALUE`` overrides (:mod:`dynviz.train.runconfig`). With ``--resume``, the saved run's
    arguments with the explicitly given ones on top (the trainer rejects changed ones)."""
    overrides = parse_overrides(_split_positionals(args))
    given: dict[str, Any] = {
        key: value for key, value in vars(args).items() if key in _DEFAULTS and value is not None
    }
    if args.resume and args.config:
        raise ConfigError("--resume takes its settings from the checkpoint; drop --config")
    recipe = recipe_from_args(args)
    printing = bool(getattr(args, "print_config", False))
    if not args.resume:
        if args.config:
            run = read_run_config(args.config)
        else:
            run = RunConfig(train=dict(recipe.settings) if recipe else {}, source="")
        if recipe is not None and args.out is None and "out" not in overrides:
            run = apply_overrides(run, {"out": f"runs/{Path(args.model).stem}-official"})
        run = apply_overrides(run, given)
        run = apply_overrides(run, overrides)
        if not args.config:
            missing = [
                flag
                for flag, key in (("MODEL", "model"), ("--data", "data"), ("--out", "out"))
                if run.train.get(key) is None and not (printing and key != "model")
            ]
            if missing:
                raise ConfigError(f"dynviz train needs {' and '.join(missing)}")
        return run.train_config(require_paths=not printing), run.network()
    if args.out is None:
        raise ConfigError("--resume needs --out RUN_DIR")
    given.update(apply_overrides(RunConfig(train={}), overrides).typed())
    path = Path(args.out) / LATEST
    if not path.is_file():
        raise CheckpointError(f"{path}: nothing to resume (no checkpoint in {args.out})")
    saved = load_checkpoint(path).get("train_args")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: records no training arguments; cannot resume")
    saved = {**saved, "progress": None}  # re-decided for this terminal
    return TrainConfig.from_dict(saved).replace(**given), None


_PRETRAINED = (
    "that config fine-tunes the official ImageNet-pretrained Fix backbone: give it with --init"
)


def settings_yaml(config: TrainConfig, *, recipe: Recipe | None = None) -> str:
    """The training settings as ``--print-config`` shows them: YAML, with the defaults that do
    not need the data or the device resolved (budget, warm-up, PreciseBN) and comments."""
    values = config.to_dict()
    defaults = {}
    if config.budget_lambda is None or config.budget_mu is None:
        try:
            defaults = training_defaults(config.model)
        except ConfigError:
            defaults = {}  # a saved network (--config): resolved from it at start
    for key in ("budget_lambda", "budget_mu"):
        if values[key] is None:
            values[key] = defaults.get(key, 0.0)
    if values["warmup_iters"] is None:
        values["warmup_iters"] = default_warmup_iters(config.iters)
    if values["precise_bn"] is None:
        values["precise_bn"] = default_precise_bn_batches(config.iters)
    lines = ["# dynviz train: training settings (the train section of the run's config.yaml)"]
    if recipe is not None:
        lines.append(
            f"# recipe official: {recipe.source} (Megvii-BaseDetection/DynamicRouting "
            f"{OFFICIAL_COMMIT})"
        )
        if recipe.pretrained and config.init is None:
            lines.append(f"# {_PRETRAINED}")
    lines.append(
        "# always: horizontal flip p=0.5, SGD, no weight decay on BatchNorm weights and biases"
    )
    crop = "x".join(str(v) for v in config.crop)
    notes = {
        "budget_flops_size": f"the crop ({crop}); the official configs ship 1024 2048",
        "num_classes": "the training data's",
        "device": "cuda when available",
        "amp": "on for CUDA",
        "progress": "when stderr is a terminal",
        "tensorboard": "when installed",
        "val_data": "--data, split val",
    }
    for line in yaml.safe_dump(values, sort_keys=False, default_flow_style=None).splitlines():
        key = line.partition(":")[0]
        if line.endswith(": null") and key in notes:
            line = f"{line}  # {notes[key]}"
        lines.append(line)
    return "\n".join(lines)


def _main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    config, network = config_from_args(args)
    recipe = recipe_from_args(args)
    if args.print_config:
        print(settings_yaml(config, recipe=recipe))
        return 0
    if recipe is not None:
        logger.info("recipe official: the settings of %s", recipe.source)
        if recipe.pretrained and config.init is None:
            logger.warning("recipe official (%s): %s", recipe.name, _PRETRAINED)
    trainer = Trainer(config, resume=args.resume, network=network)
    result = trainer.run()
    if trainer.info.is_main and args.json:
        last = result.last_eval
        summary = {
            "run_dir": str(result.run_dir),
            "iterations": result.iteration,
            "seconds": result.seconds,
            "last_loss": result.last_loss,
            "best_miou": result.best_miou,
            "expected_cost_ratio": None if last is None else last.expected_cost_ratio,
            "last_eval": None if last is None else last.to_dict(),
        }
        print_json(summary)
    elif trainer.info.is_main:
        best = "n/a" if result.best_miou is None else f"{result.best_miou:.4f}"
        line = (
            f"trained {result.iteration} iterations in {result.seconds:.1f} s; best val mIoU {best}"
        )
        if result.last_eval is not None and result.last_eval.expected_cost_ratio is not None:
            line += f"; final E/C_all {result.last_eval.expected_cost_ratio:.4f}"
        print(f"{line}; run directory {result.run_dir}")
    return 0


def main(args: argparse.Namespace) -> int:
    """``dynviz train``."""
    return guarded(_main, args)
