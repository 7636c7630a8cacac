"""The released training configs of the official code, as dynviz training settings:
``dynviz train MODEL --recipe official``.

The official repository (Megvii-BaseDetection/DynamicRouting at commit 2ad0a95) trains each
released network from one ``playground/Dynamic/<name>/config.py`` on top of
``dl_lib/configs/base_config.py`` (``segm_config.py`` nests its ``SOLVER`` and ``TEST`` under
``MODEL`` by mistake, so the base values apply). :func:`official_recipe` picks the config that
trains a network and returns every training value it sets, as :class:`TrainConfig` fields:

=================  ===============================================================
``iters``          ``SOLVER.LR_SCHEDULER.MAX_ITER`` (190000)
``batch``          ``SOLVER.IMS_PER_BATCH`` (8, the total over all GPUs)
``crop``           ``INPUT.CROP_PAD.SIZE`` (768x768)
``scale``          ``INPUT.MIN_SIZE_TRAIN`` 512..2048 over Cityscapes' 1024 short side
``lr``             ``SOLVER.OPTIMIZER.BASE_LR`` (0.05 from scratch, 0.02 from ImageNet)
``gate_lr_mult``   ``SOLVER.OPTIMIZER.GATE_LR_MULTI`` (2.5 in the ImageNet configs, else 1)
``momentum``,      base ``SOLVER.OPTIMIZER`` (0.9, 1e-4; ``WEIGHT_DECAY_NORM = 0``: no
``weight_decay``   decay on BatchNorm, which dynviz always applies)
``warmup_*``       base ``SOLVER.LR_SCHEDULER`` (1000 iterations, linear from 0.001)
``poly_power``     ``SOLVER.LR_SCHEDULER.POLY_POWER`` (0.9)
``grad_clip``      ``SOLVER.GRAD_CLIP`` (5.0, the total L2 norm)
``precise_bn``     ``TEST.PRECISE_BN``: 200 batches where a config enables it; Dynamic_A/B/C
                   have no ``TEST`` section, so the base ``ENABLED=False`` applies (0)
``budget_*``       ``MODEL.BUDGET``: ``LOSS_WEIGHT``, ``LOSS_MU``, ``UNUPDATE_RATE`` (0.4), the
                   2% ramp of ``dynamic4seg.py`` and ``FLOPS_ALL = 26300`` (normaliser
                   ``official``)
``checkpoint_..``  ``SOLVER.CHECKPOINT_PERIOD`` (5000)
``amp``            off: dl_lib's train loop runs in float32
=================  ===============================================================

Where E is measured (``budget_flops_size``) stays the crop: the official README says to set
``FIX_SIZE_FOR_FLOPS = [768, 768]`` for training, while every shipped config has
``[1024, 2048]`` active, where all-open E / 26300 is about 3.6 (``--budget-flops-size 1024
2048`` reproduces that literally). The horizontal flip (p = 0.5, ``RandomFlip`` of the base
pipeline) is what dynviz always does. The one difference left: the official resize picks the
short side from six values (a scale of 0.5, 0.75, 1, 1.25, 1.5 or 2 on Cityscapes), dynviz
draws the scale uniformly from [0.5, 2].
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dynviz.model.config import ConfigError, GateKind, RoutingSpaceConfig

__all__ = [
    "DYNAMIC_A",
    "DYNAMIC_B",
    "DYNAMIC_C",
    "OFFICIAL_COMMIT",
    "RELEASED_CONFIGS",
    "SEG_LAYER16",
    "SEG_LAYER16_IMAGENET",
    "SEG_LAYER33_IMAGENET",
    "Recipe",
    "official_recipe",
]

logger = logging.getLogger(__name__)

OFFICIAL_COMMIT = "2ad0a95"
"""The commit of Megvii-BaseDetection/DynamicRouting whose configs the recipes follow."""

_COMMON: dict[str, Any] = {
    "iters": 190_000,
    "batch": 8,
    "crop": (768, 768),
    "scale": (0.5, 2.0),
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "warmup_iters": 1000,
    "warmup_factor": 0.001,
    "poly_power": 0.9,
    "grad_clip": 5.0,
    "budget_start": 0.4,
    "budget_ramp": 0.02,
    "budget_cost": "macs",
    "budget_normaliser": "official",
    "budget_flops_size": None,
    "gate_warmup": 0.0,
    "close_below": 0.0,
    "eval_every": 0,
    "checkpoint_every": 5000,
    "amp": False,
}


@dataclass(frozen=True)
class Recipe:
    """The training values of one released official config.

    Attributes:
        name: the config's folder in ``playground/Dynamic/`` (e.g. ``Seg.Layer16``).
        settings: :class:`~dynviz.train.config.TrainConfig` fields.
        pretrained: whether the config starts from ImageNet weights (``MODEL.WEIGHTS``).
    """

    name: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    pretrained: bool = False

    @property
    def source(self) -> str:
        """The config file in the official repository."""
        return f"playground/Dynamic/{self.name}/config.py"


def _released(
    name: str,
    *,
    lr: float,
    gate_lr_mult: float = 1.0,
    budget: tuple[float, float] = (0.0, 0.0),
    precise_bn: int,
    pretrained: bool = False,
) -> Recipe:
    settings = {
        **_COMMON,
        "lr": lr,
        "gate_lr_mult": gate_lr_mult,
        "budget_lambda": budget[0],
        "budget_mu": budget[1],
        "precise_bn": precise_bn,
    }
    return Recipe(name=name, settings=settings, pretrained=pretrained)


SEG_LAYER16 = _released("Seg.Layer16", lr=0.05, precise_bn=200)
SEG_LAYER16_IMAGENET = _released(
    "Seg.Layer16.ImageNet", lr=0.02, gate_lr_mult=2.5, precise_bn=200, pretrained=True
)
SEG_LAYER33_IMAGENET = _released(
    "Seg.Layer33.ImageNet", lr=0.02, gate_lr_mult=2.5, precise_bn=200, pretrained=True
)
DYNAMIC_A = _released("Seg.Layer16.SmallGate.Dynamic_A", lr=0.05, budget=(0.8, 0.1), precise_bn=0)
DYNAMIC_B = _released("Seg.Layer16.SmallGate.Dynamic_B", lr=0.05, budget=(0.5, 0.1), precise_bn=0)
DYNAMIC_C = _released("Seg.Layer16.SmallGate.Dynamic_C", lr=0.05, budget=(0.5, 0.2), precise_bn=0)
RELEASED_CONFIGS = (
    SEG_LAYER16,
    SEG_LAYER16_IMAGENET,
    DYNAMIC_A,
    DYNAMIC_B,
    DYNAMIC_C,
    SEG_LAYER33_IMAGENET,
)
"""Every released config a recipe follows (not the 560k scheduled-drop-path run, whose drop path
dynviz does not implement)."""


def official_recipe(
    network: RoutingSpaceConfig,
    *,
    budget: Mapping[str, float] | None = None,
    pretrained: bool = False,
) -> Recipe:
    """The released config that trains ``network``, as training settings.

    Layer16 with small gates is Dynamic-A, B or C, told apart by the network's budget (its
    preset's ``training:`` section); Layer16 with full gates or none (Network-Fix is
    ``Seg.Layer16`` with the gates off, official issue #12) is ``Seg.Layer16``, or
    ``Seg.Layer16.ImageNet`` when it starts from ImageNet weights; Layer33 is
    ``Seg.Layer33.ImageNet`` (the only Layer33 config).

    Args:
        network: the routing space to train.
        budget: its training defaults (``budget_lambda``, ``budget_mu``; default none).
        pretrained: whether training starts from other weights (``--init``).

    Raises:
        ConfigError: no released config trains this network; the message says which ones exist.
    """
    budget = dict(budget or {})
    lam, mu = float(budget.get("budget_lambda", 0.0)), float(budget.get("budget_mu", 0.0))
    layers, gate = network.num_layers, network.gate
    if network.num_scales != 4 or network.base_channels != 64 or layers not in (16, 33):
        raise ConfigError(
            f"recipe official: no released config trains {network.name!r} (L={layers}, "
            f"{network.num_scales} scales, {network.base_channels} channels); the official "
            "configs train Layer16 (layer16, layer16-fix, dynamic-a/b/c) and Layer33 (layer33)"
        )
    if gate is GateKind.SMALL:
        if layers == 16:
            for recipe in (DYNAMIC_A, DYNAMIC_B, DYNAMIC_C):
                s = recipe.settings
                if (s["budget_lambda"], s["budget_mu"]) == (lam, mu):
                    return recipe
        raise ConfigError(
            f"recipe official: {network.name!r} has small gates with budget lambda {lam:g}, mu "
            f"{mu:g}; the released small-gate configs are Dynamic-A (0.8, 0.1), B (0.5, 0.1) "
            "and C (0.5, 0.2) on Layer16"
        )
    if lam > 0:
        raise ConfigError(
            f"recipe official: {network.name!r} has {gate.value} gates and a budget (lambda "
            f"{lam:g}); the released budgeted configs (Dynamic-A/B/C) use small gates"
        )
    if layers == 33:
        return SEG_LAYER33_IMAGENET
    return SEG_LAYER16_IMAGENET if pretrained else SEG_LAYER16
