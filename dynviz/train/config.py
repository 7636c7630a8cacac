"""Training arguments: :class:`TrainConfig` (separate from the model's routing-space config),
validated on construction, saved resolved with every run, compared on resume. Each field is
declared with :func:`setting`, which holds its help text, metavar, ``--help`` group and allowed
values: ``dynviz train`` makes one option per field from them (a new setting is written once)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dynviz.model import ConfigError

__all__ = ["BUDGET", "RESUMABLE_FIELDS", "RUN", "SCHEDULE", "TrainConfig", "setting"]


# The option groups of ``dynviz train --help`` (None: the command's own options).
SCHEDULE = "schedule and optimiser"
BUDGET = "budget constraint (dynamic networks)"
RUN = "run"


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,  # noqa: A002 (the argparse word)
    metavar: str | tuple[str, ...] | None = None,
    group: str | None = RUN,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A :class:`TrainConfig` field with what ``dynviz train`` needs to offer it as an option:
    its help text (without the default, which the command adds unless the text says it), the
    metavar, the ``--help`` group and the allowed values (checked here too)."""
    metadata = {"help": help, "metavar": metavar, "group": group, "choices": choices}
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class TrainConfig:
    """Training arguments (separate from the model's :class:`RoutingSpaceConfig`).

    ``None`` means "resolved at start": from the preset's ``training:`` defaults (budget), the
    dataset (classes), the run length (warm-up) or the device (AMP). Resolved values are what
    runs save. Each field's help text is written once, in :func:`setting`; ``dynviz train``
    makes its options from the fields (:mod:`dynviz.commands.train`).
    """

    model: str = setting(help="preset name or YAML path (route specs give static networks)")
    data: str = setting(
        help="training data: synthetic[:...], cityscapes:PATH, voc:PATH or folder:PATH",
        metavar="SPEC",
        group=None,
    )
    out: str = setting(
        help="run directory (required unless --config gives it)", metavar="RUN_DIR", group=None
    )
    val_data: str | None = setting(
        None, help="validation data (default: --data with split 'val')", metavar="SPEC", group=None
    )
    iters: int = setting(1000, help="iterations", metavar="N", group=SCHEDULE)  # official 190000
    batch: int = setting(  # official IMS_PER_BATCH = 8
        8, help="total batch over all processes", metavar="B", group=SCHEDULE
    )
    crop: tuple[int, int] = setting(  # official 768x768
        (768, 768), help="training crop", metavar=("H", "W"), group=SCHEDULE
    )
    scale: tuple[float, float] = setting(
        (0.5, 2.0), help="random rescale range", metavar=("MIN", "MAX"), group=SCHEDULE
    )
    lr: float = setting(0.05, help="base learning rate", group=SCHEDULE)  # official from scratch
    momentum: float = setting(0.9, help="SGD momentum", metavar="M", group=SCHEDULE)
    weight_decay: float = setting(
        1e-4, help="weight decay (0 on BatchNorm weights and biases)", metavar="WD", group=SCHEDULE
    )
    gate_lr_mult: float = setting(
        1.0,
        help="LR multiplier of gate parameters (official 2.5 from ImageNet weights)",
        metavar="MULT",
        group=SCHEDULE,
    )
    warmup_iters: int | None = setting(
        None,
        help="linear warm-up length (default: min(1000, 5% of --iters))",
        metavar="N",
        group=SCHEDULE,
    )
    warmup_factor: float = setting(
        0.001, help="LR factor the linear warm-up starts from", metavar="F", group=SCHEDULE
    )
    poly_power: float = setting(
        0.9, help="power of the poly LR decay after the warm-up", metavar="P", group=SCHEDULE
    )
    grad_clip: float = setting(
        5.0, help="clip the total gradient norm (0: off)", metavar="NORM", group=SCHEDULE
    )
    precise_bn: int | None = setting(  # see precise_bn.default_precise_bn_batches
        None,
        help="batches re-estimating the BatchNorm statistics with the final weights (official "
        "PreciseBN; 0: off) (default: a tenth of --iters, at most the official 200)",
        metavar="N",
        group=SCHEDULE,
    )
    budget_lambda: float | None = setting(
        None,
        help="lambda (default: the preset's training default, else 0)",
        metavar="LAMBDA",
        group=BUDGET,
    )
    budget_mu: float | None = setting(
        None,
        help="mu, target share of the all-open cost (default: the preset's, else 0)",
        metavar="MU",
        group=BUDGET,
    )
    gate_warmup: float = setting(  # see dynviz.train.trainer
        0.0,
        help="share of training with every path open and the gates idle, before they route "
        "(not in the paper; helps short runs)",
        metavar="SHARE",
        group=SCHEDULE,
    )
    close_below: float = setting(  # after the last iteration and PreciseBN
        0.0,
        help="after training, close for good the paths of a dynamic network whose alpha is at "
        "most ALPHA (its active threshold; the paper: 0; not in the paper)",
        metavar="ALPHA",
        group=SCHEDULE,
    )
    bn_samples: str = setting(
        "batch",
        help="the samples a routing node's BatchNorm takes its training statistics over: the "
        "whole batch, zeros for the samples the node does not reach (the official code), or "
        "only the samples routed through it (closed paths and cells skipped in training as in "
        "inference; not in the paper)",
        group=SCHEDULE,
        choices=("batch", "routed"),
    )
    budget_start: float = setting(
        0.4, help="share of training before the budget is on", metavar="SHARE", group=BUDGET
    )
    budget_ramp: float = setting(
        0.02, help="share of training of its linear ramp", metavar="SHARE", group=BUDGET
    )
    budget_cost: str = setting(
        "macs",
        help="what the budget constrains: expected MACs (the paper) or expected time from a "
        "per-node latency table measured on this machine at the crop size",
        group=BUDGET,
        choices=("macs", "latency"),
    )
    budget_normaliser: str = setting(
        "all-open",
        help="C_all of E / C_all: the all-open expected cost at the crop size, or the official "
        "constant 26300 MFLOPs (to retrain Dynamic-A/B/C with the paper's own mu)",
        group=BUDGET,
        choices=("all-open", "official"),
    )
    # The official trainer measures at FIX_SIZE_FOR_FLOPS, 1024x2048 in every released config;
    # its README says to train at 768x768.
    budget_flops_size: tuple[int, int] | None = setting(
        None,
        help="input size at which E (and C_all) are measured (default: the crop; the official "
        "configs ship 1024 2048, where E / 26300 is about 3.6 with every path open)",
        metavar=("H", "W"),
        group=BUDGET,
    )
    init: str | None = setting(
        None,
        help="start from these weights: a dynviz checkpoint or run directory, or an official "
        "DynamicRouting checkpoint; tensors whose shapes do not fit are skipped and listed",
        metavar="WEIGHTS",
        group=None,
    )
    num_classes: int | None = setting(None, help="classes (default: the data's)", metavar="K")
    seed: int = setting(0, help="seed of init, sampling, augmentation", metavar="S", group=SCHEDULE)
    eval_every: int = setting(
        0, help="evaluate every N iterations (default: only at the end)", metavar="N"
    )
    eval_limit: int | None = setting(
        None, help="evaluate on the first N validation images (default: all)", metavar="N"
    )
    checkpoint_every: int = setting(
        100, help="write checkpoint_latest.pt every N iterations", metavar="N"
    )
    log_every: int = setting(10, help="log to metrics.jsonl every N iterations", metavar="N")
    workers: int = setting(2, help="data-loading workers", metavar="N")
    device: str | None = setting(None, help="default: cuda if available", choices=("cpu", "cuda"))
    amp: bool | None = setting(None, help="bf16 autocast (default: on for CUDA)")
    deterministic: bool = setting(False, help="torch.use_deterministic_algorithms (warn only)")
    progress: bool | None = setting(
        None, help="tqdm progress bar (default: when stderr is a terminal)"
    )
    tensorboard: bool | None = setting(  # None: when installed; True: required; False: off
        None,
        help="TensorBoard events (the tensorboard extra: pip install 'dynviz[tensorboard]'); "
        "default: when it is installed",
    )

    def __post_init__(self) -> None:
        self._normalise_sizes()
        self._check_counts()
        self._check_sizes()
        self._check_non_negative()
        self._check_shares()
        self._check_choices()
        self._check_budget_cost()

    def _normalise_sizes(self) -> None:
        """Sizes and ranges as tuples of numbers (YAML and the CLI give lists)."""
        object.__setattr__(self, "crop", tuple(int(v) for v in self.crop))
        object.__setattr__(self, "scale", tuple(float(v) for v in self.scale))
        if self.budget_flops_size is not None:
            size = tuple(int(v) for v in self.budget_flops_size)
            if len(size) != 2 or min(size) < 1:
                raise ConfigError(
                    f"budget_flops_size: {self.budget_flops_size} must be two positive sizes (H W)"
                )
            object.__setattr__(self, "budget_flops_size", size)

    def _check_counts(self) -> None:
        """Counts and periods: at least 1 (those that can be off or unset: at least 0)."""
        for key in ("iters", "batch", "checkpoint_every", "log_every"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"{key}: {getattr(self, key)} must be >= 1")

    def _check_sizes(self) -> None:
        if len(self.crop) != 2 or min(self.crop) < 1:
            raise ConfigError(f"crop: {self.crop} must be two positive sizes (H W)")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ConfigError(f"scale: {self.scale} must be 0 < min <= max")

    def _check_non_negative(self) -> None:
        rates = ("lr", "momentum", "weight_decay", "gate_lr_mult", "grad_clip", "warmup_factor")
        for key in (*rates, "poly_power", "budget_start", "budget_ramp"):
            if float(getattr(self, key)) < 0:
                raise ConfigError(f"{key}: {getattr(self, key)} must be >= 0")
        for key in ("eval_every", "workers", "seed", "warmup_iters", "precise_bn"):
            value = getattr(self, key)
            if value is not None and int(value) < 0:
                raise ConfigError(f"{key}: {value} must be >= 0")

    def _check_shares(self) -> None:
        """Shares of training, thresholds, the budget's weight and target, optional counts."""
        if not 0.0 <= self.gate_warmup < 1.0:
            raise ConfigError(f"gate_warmup: {self.gate_warmup} must be in [0, 1)")
        if not 0.0 <= self.close_below < 1.0:
            raise ConfigError(f"close_below: {self.close_below} must be in [0, 1)")
        if self.budget_lambda is not None and self.budget_lambda < 0:
            raise ConfigError(f"budget_lambda: {self.budget_lambda} must be >= 0")
        if self.budget_mu is not None and not 0.0 <= self.budget_mu <= 1.0:
            raise ConfigError(f"budget_mu: {self.budget_mu} must be in [0, 1]")
        if self.num_classes is not None and self.num_classes < 1:
            raise ConfigError(f"num_classes: {self.num_classes} must be >= 1")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ConfigError(f"eval_limit: {self.eval_limit} must be >= 1")

    def _check_choices(self) -> None:
        """The fields with ``choices`` (None too where it is the default)."""
        for f in dataclasses.fields(self):
            choices, value = f.metadata.get("choices"), getattr(self, f.name)
            if choices is None or (value is None and f.default is None):
                continue
            if value not in choices:
                raise ConfigError(f"{f.name}: {value!r} must be {' or '.join(choices)}")

    def _check_budget_cost(self) -> None:
        """The official normaliser and a measuring size only go with a budget on MACs."""
        if self.budget_normaliser == "official" and self.budget_cost != "macs":
            raise ConfigError("budget_normaliser: official (26300 MFLOPs) needs budget_cost macs")
        if self.budget_flops_size is not None and self.budget_cost != "macs":
            raise ConfigError(
                "budget_flops_size needs budget_cost macs (the latency table is timed at the crop)"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain types (tuples become lists), for YAML and checkpoints."""
        out = dataclasses.asdict(self)
        out["crop"], out["scale"] = list(self.crop), list(self.scale)
        if self.budget_flops_size is not None:
            out["budget_flops_size"] = list(self.budget_flops_size)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are rejected."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training arguments: {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


RESUMABLE_FIELDS = frozenset(
    {
        "model",
        "data",
        "val_data",
        "out",
        "eval_every",
        "eval_limit",
        "checkpoint_every",
        "log_every",
        "workers",
        "device",
        "amp",
        "deterministic",
        "progress",
        "tensorboard",
        "init",
    }
)
"""Arguments that may change when resuming; all others must equal the saved run's."""
