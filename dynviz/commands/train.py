"""``dynviz train MODEL --data SPEC --out RUN_DIR [options] [KEY=VALUE ...]``, or
``dynviz train --config FILE [--out RUN_DIR] [KEY=VALUE ...]``: train a network.

MODEL is a preset name or a YAML path; a route spec trains a static network with the same command.
Under ``torchrun --nproc_per_node N -m dynviz train ...`` the same command runs DDP. ``--resume``
continues the run in RUN_DIR exactly where its ``checkpoint_latest.pt`` left it; only operational
options (workers, logging, evaluation and checkpoint periods, device, progress) may change on
resume. ``--recipe official`` starts from every training value of the official code's released
config for MODEL (:mod:`dynviz.train.recipe`); options and ``KEY=VALUE`` items given as well
win. ``--print-config`` prints the settings as YAML and trains nothing.

The training options are made from :class:`~dynviz.train.config.TrainConfig`'s fields
(:func:`add_config_options`): ``--name-with-dashes`` per field, with the field's type, choices,
metavar and help text; only the command's own options are written here.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import types
import typing
from pathlib import Path
from typing import Any

import torch
import yaml

from dynviz.commands import guarded, print_json
from dynviz.model import ConfigError, Route, RoutingSpaceConfig, load_spec
from dynviz.model.checkpoint import LATEST, CheckpointError, load_checkpoint
from dynviz.model.zoo import training_defaults
from dynviz.train.config import RUN
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
    "add_config_options",
    "config_from_args",
    "configure_parser",
    "main",
    "recipe_from_args",
    "settings_yaml",
]

logger = logging.getLogger(__name__)

INTERMIXED = True  # KEY=VALUE overrides may follow the options

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _default_text(field: dataclasses.Field) -> str:
    """`` (default: X)`` after a help text that does not say its default itself."""
    default = field.default
    text = field.metadata["help"]
    if "default" in text or default in (None, dataclasses.MISSING) or isinstance(default, bool):
        return ""
    if isinstance(default, tuple):
        default = " ".join(str(v) for v in default)
    return f" (default: {default})"


def _option(field: dataclasses.Field, hint: Any) -> dict[str, Any]:
    """The ``add_argument`` keywords of a :class:`TrainConfig` field, from its type and
    metadata (:func:`dynviz.train.config.setting`). Defaults are None: see
    :func:`configure_parser`."""
    meta = field.metadata
    kwargs: dict[str, Any] = {
        "help": (meta["help"] + _default_text(field)).replace("%", "%%"),
        "dest": field.name,
    }
    kind = hint
    if isinstance(hint, types.UnionType):  # X | None
        (kind,) = (t for t in typing.get_args(hint) if t is not type(None))
    if kind is bool:
        return {**kwargs, "action": argparse.BooleanOptionalAction, "default": None}
    if typing.get_origin(kind) is tuple:
        items = typing.get_args(kind)
        kwargs.update(nargs=len(items))
        kind = items[0]
    if kind is not str:
        kwargs["type"] = kind
    if meta.get("metavar") is not None:
        kwargs["metavar"] = meta["metavar"]
    if meta.get("choices") is not None:
        kwargs["choices"] = meta["choices"]
    return kwargs


def add_config_options(
    parser: argparse.ArgumentParser,
    *,
    exclude: tuple[str, ...] = ("model",),
    config_class: type[TrainConfig] = TrainConfig,
) -> dict[str | None, Any]:
    """One ``--name-with-dashes`` option per :class:`TrainConfig` field (but ``exclude``), its
    type, choices and help taken from the field, in the ``--help`` group the field names; a
    field added to ``config_class`` with :func:`dynviz.train.config.setting` is an option.

    Returns:
        The groups by title (None: ``parser``), for the command's other options.
    """
    hints = typing.get_type_hints(config_class)
    groups: dict[str | None, Any] = {None: parser}
    for field in dataclasses.fields(config_class):
        if field.name in exclude:
            continue
        title = field.metadata.get("group")
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        flag = "--" + field.name.replace("_", "-")
        groups[title].add_argument(flag, **_option(field, hints[field.name]))
    return groups


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
        "--resume",
        action="store_true",
        help="continue the run in RUN_DIR from checkpoint_latest.pt",
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
    group = add_config_options(parser)[RUN]
    group.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads per process (default: torch's); on a busy "
        "machine 1 can be many times faster (OpenMP threads spin-wait)",
    )
    group.add_argument(
        "--json", action="store_true", help="print one JSON object at the end (the summary)"
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
