"""Training arguments: :class:`TrainConfig` (separate from the model's routing-space config),
validated on construction, saved resolved with every run, compared on resume."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dynviz.model import ConfigError

__all__ = ["RESUMABLE_FIELDS", "TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """Training arguments (separate from the model's :class:`RoutingSpaceConfig`).

    ``None`` means "resolved at start": from the preset's ``training:`` defaults (budget), the
    dataset (classes),
    the run length (warm-up) or the device (AMP). Resolved values are what runs save.
    """

    model: str  # preset name or YAML path (route specs give static networks)
    data: str  # training data spec
    out: str  # run directory
    val_data: str | None = None  # default: ``data`` with split "val"
    iters: int = 1000  # official: 190000
    batch: int = 8  # total over all processes (official IMS_PER_BATCH = 8)
    crop: tuple[int, int] = (768, 768)  # training crop (official 768x768)
    scale: tuple[float, float] = (0.5, 2.0)  # random rescale range
    lr: float = 0.05  # base LR (official from scratch)
    momentum: float = 0.9
    weight_decay: float = 1e-4  # 0 on BatchNorm weights and biases
    gate_lr_mult: float = 1.0  # official 2.5 when starting from ImageNet weights
    warmup_iters: int | None = None  # default min(1000, 5% of iters)
    warmup_factor: float = 0.001
    poly_power: float = 0.9
    grad_clip: float = 5.0  # total L2 norm; 0 disables
    precise_bn: int | None = None  # batches re-estimating BN statistics at the end; 0: off;
    # default min(200 (official), 10% of iters), see precise_bn.default_precise_bn_batches
    budget_lambda: float | None = None  # default: the preset's training default, else 0
    budget_mu: float | None = None  # default: the preset's training default, else 0
    gate_warmup: float = 0.0  # share of training with every path open (alpha = 1) and the
    # gates idle, before they route; not in the paper (see dynviz.train.trainer)
    close_below: float = 0.0  # after the last iteration and PreciseBN, a dynamic network's
    # paths with alpha <= this are closed for good (its active_threshold; the paper: 0)
    budget_start: float = 0.4  # budget loss off before this share of training
    budget_ramp: float = 0.02  # then a linear ramp over this share
    budget_cost: str = "macs"  # macs: expected MACs (the paper); latency: expected measured time
    budget_normaliser: str = "all-open"  # C_all: all-open cost at the crop, or official 26300 M
    budget_flops_size: tuple[int, int] | None = None  # (H, W) at which E (and C_all) are
    # measured; None: the crop. The official trainer measures at FIX_SIZE_FOR_FLOPS, 1024x2048
    # in every released config (E / 26300 near 3.6 all open); its README says to train at 768x768
    init: str | None = None  # start from these weights (dynviz or official checkpoint)
    num_classes: int | None = None  # default: the training data's
    seed: int = 0
    eval_every: int = 0  # 0: evaluate only at the end
    eval_limit: int | None = None  # evaluate on the first N validation images
    checkpoint_every: int = 100
    log_every: int = 10
    workers: int = 2
    device: str | None = None  # cpu | cuda; default cuda when available
    amp: bool | None = None  # bf16 autocast; default on for CUDA
    deterministic: bool = False  # torch.use_deterministic_algorithms (warn only)
    progress: bool | None = None  # tqdm bar; default when stderr is a terminal
    tensorboard: bool | None = None  # None: when installed; True: required; False: off

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop", tuple(int(v) for v in self.crop))
        object.__setattr__(self, "scale", tuple(float(v) for v in self.scale))
        if self.budget_flops_size is not None:
            size = tuple(int(v) for v in self.budget_flops_size)
            if len(size) != 2 or min(size) < 1:
                raise ConfigError(
                    f"budget_flops_size: {self.budget_flops_size} must be two positive sizes (H W)"
                )
            object.__setattr__(self, "budget_flops_size", size)
        positive = ("iters", "batch", "checkpoint_every", "log_every")
        for key in positive:
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"{key}: {getattr(self, key)} must be >= 1")
        if len(self.crop) != 2 or min(self.crop) < 1:
            raise ConfigError(f"crop: {self.crop} must be two positive sizes (H W)")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ConfigError(f"scale: {self.scale} must be 0 < min <= max")
        for key in (
            "lr",
            "momentum",
            "weight_decay",
            "gate_lr_mult",
            "grad_clip",
            "warmup_factor",
            "poly_power",
            "budget_start",
            "budget_ramp",
        ):
            if float(getattr(self, key)) < 0:
                raise ConfigError(f"{key}: {getattr(self, key)} must be >= 0")
        for key in ("eval_every", "workers", "seed", "warmup_iters", "precise_bn"):
            value = getattr(self, key)
            if value is not None and int(value) < 0:
                raise ConfigError(f"{key}: {value} must be >= 0")
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
        if self.budget_cost not in ("macs", "latency"):
            raise ConfigError(f"budget_cost: {self.budget_cost!r} must be macs or latency")
        if self.budget_normaliser not in ("all-open", "official"):
            raise ConfigError(
                f"budget_normaliser: {self.budget_normaliser!r} must be all-open or official"
            )
        if self.budget_normaliser == "official" and self.budget_cost != "macs":
            raise ConfigError("budget_normaliser: official (26300 MFLOPs) needs budget_cost macs")
        if self.budget_flops_size is not None and self.budget_cost != "macs":
            raise ConfigError(
                "budget_flops_size needs budget_cost macs (the latency table is timed at the crop)"
            )
        if self.device not in (None, "cpu", "cuda"):
            raise ConfigError(f"device: {self.device!r} must be cpu or cuda")

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
