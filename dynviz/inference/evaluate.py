"""Evaluation: dataset-level mIoU and the real and expected cost of each image (Table 1 columns).

Every image runs alone (batch 1) in eval mode, so closed paths and cells are really skipped.
Per image, with the cost table of that image's (padded) input size:

* *real* MACs: what was executed, ``table.real(out.active, gates_ran=model.is_dynamic)``
  (static networks and forced routes run no gates);
* *expected* MACs: Eq. 7-8 with the image's alphas plus what ran besides the backbone,
  ``table.expected(out.gates, gates_ran=model.is_dynamic)``;
* for dynamic networks, the backbone expected-cost ratio ``E / C_all`` that the budget loss
  constrains (what ``mu`` targets).

Both follow ``counting`` (:class:`dynviz.model.cost.Counting`): ``paper`` (the default) or
``official``, what the official code's counters report (docs/official.md: square decoder,
every gate, the 1e-4 rules on the alphas, ``table.real(out.gates)``).

mIoU, per-class IoU and pixel accuracy come from one confusion matrix over the whole data set
(ignore 255). Under torchrun each rank evaluates every ``world_size``-th image; the confusion
matrices are summed and the per-image costs gathered.

The command line is ``dynviz eval`` (:mod:`dynviz.commands.eval`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from dynviz.inference.folding import inference_form
from dynviz.inference.metrics import ConfusionMatrix
from dynviz.inference.tta import Augment, TableCache, forward_costs, infer
from dynviz.model import ConfigError, RoutingNetwork
from dynviz.model.cost import Counting
from dynviz.support.distributed import (
    all_gather_objects,
    all_reduce_sum,
)
from dynviz.support.progress import Progress
from dynviz.units import GIGA

__all__ = ["CostStats", "EvalResult", "evaluate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CostStats:
    """Mean, max and min over images, in GMACs."""

    mean: float
    max: float
    min: float

    @classmethod
    def of(cls, values: Sequence[float]) -> CostStats:
        """Statistics of per-image MACs (not GMACs); NaN for no images."""
        if not values:
            return cls(math.nan, math.nan, math.nan)
        array = np.asarray(values, dtype=np.float64) / GIGA
        return cls(float(array.mean()), float(array.max()), float(array.min()))

    def to_dict(self) -> dict[str, float | None]:
        return {
            k: _finite_or_none(v)
            for k, v in (("mean", self.mean), ("max", self.max), ("min", self.min))
        }


@dataclass
class EvalResult:
    """What :func:`evaluate` measures.

    Attributes:
        miou: mean IoU over classes with a defined IoU, in [0, 1].
        per_class_iou: IoU per class (NaN for classes absent from targets and predictions).
        class_names: the class names, in class order.
        pixel_accuracy: share of non-ignored pixels predicted correctly.
        real_gmacs: executed GMACs per image (mean, max, min).
        expected_gmacs: expected GMACs per image (mean, max, min).
        expected_cost_ratio: mean backbone ``E / C_all`` per image (dynamic networks only).
        params: number of parameters of the network.
        num_images: images evaluated.
        sizes: the distinct input sizes ``(H, W)`` seen.
        seconds: wall time of the evaluation.
        aug: the test-time augmentation (None: none); the GMACs above are then the sum over
            an image's forward passes.
        aug_real_gmacs: real GMACs per image of each augmentation variant (``"0.75"``,
            ``"0.75+flip"``), when augmented.
        counting: the cost counting of the GMACs (``"paper"`` or ``"official"``).
    """

    miou: float
    per_class_iou: list[float]
    class_names: list[str]
    pixel_accuracy: float
    real_gmacs: CostStats
    expected_gmacs: CostStats
    expected_cost_ratio: float | None
    params: int
    num_images: int
    sizes: list[tuple[int, int]] = field(default_factory=list)
    seconds: float = 0.0
    aug: Augment | None = None
    aug_real_gmacs: dict[str, CostStats] = field(default_factory=dict)
    counting: str = Counting.PAPER.value

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes ``None``); ``aug`` and ``aug_real_gmacs`` only when
        augmented."""
        out = {
            "miou": _finite_or_none(self.miou),
            "per_class_iou": {
                name: _finite_or_none(v)
                for name, v in zip(self.class_names, self.per_class_iou, strict=True)
            },
            "pixel_accuracy": _finite_or_none(self.pixel_accuracy),
            "real_gmacs": self.real_gmacs.to_dict(),
            "expected_gmacs": self.expected_gmacs.to_dict(),
            "expected_cost_ratio": self.expected_cost_ratio,
            "counting": self.counting,
            "params": self.params,
            "num_images": self.num_images,
            "sizes": [list(s) for s in self.sizes],
            "seconds": round(self.seconds, 3),
        }
        if self.aug is not None:
            out["aug"] = self.aug.to_dict()
            out["aug_real_gmacs"] = {k: v.to_dict() for k, v in self.aug_real_gmacs.items()}
        return out


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _single(batch: list[dict[str, Any]]) -> dict[str, Any]:
    return batch[0]


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@dataclass(frozen=True)
class _Costs:
    """Per-image MACs collected by one rank (the lists grow as images are evaluated)."""

    real: list[float] = field(default_factory=list)
    expected: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # backbone E / C_all (dynamic only)
    variants: dict[str, list[float]] = field(default_factory=dict)  # real MACs per variant


def _predict_plain(
    net: RoutingNetwork, image: torch.Tensor, tables: TableCache, costs: _Costs
) -> torch.Tensor:
    """One forward of ``image`` ``(1, 3, H, W)``; its costs appended to ``costs``.

    Returns:
        ``(H, W)`` class map.
    """
    dynamic = net.is_dynamic
    height, width = image.shape[-2:]
    out = net(image)
    pred = out.logits.argmax(1)[0]  # (H, W)
    table = tables(height, width)
    gates = out.gates.float().cpu()
    active = out.active.cpu()
    costs.real.append(float(table.real_from(gates, active, gates_ran=dynamic)[0]))
    costs.expected.append(float(table.expected(gates, gates_ran=dynamic)[0]))
    if dynamic:
        costs.ratios.append(float(table.backbone_expected(gates)[0]) / table.backbone_all_open())
    return pred


def _predict_augmented(
    net: RoutingNetwork, image: torch.Tensor, tables: TableCache, aug: Augment, costs: _Costs
) -> torch.Tensor:
    """The augmented forwards of ``image``; their summed costs appended to ``costs``.

    Returns:
        ``(H, W)`` class map of the averaged softmax.
    """
    dynamic = net.is_dynamic
    probs, forwards = infer(net, image, aug=aug)
    pred = probs.argmax(1)[0]
    image_real = image_expected = backbone = backbone_all = 0.0
    for forward in forwards:
        r, e = forward_costs(net, forward, tables, gates_ran=dynamic)
        image_real += float(r[0])
        image_expected += float(e[0])
        costs.variants.setdefault(forward.label, []).append(float(r[0]))
        if dynamic:
            table = tables(*forward.size)
            backbone += float(table.backbone_expected(forward.gates)[0])
            backbone_all += table.backbone_all_open()
    costs.real.append(image_real)
    costs.expected.append(image_expected)
    if dynamic:
        costs.ratios.append(backbone / backbone_all)
    return pred


def _gather(costs: _Costs, sizes: set[tuple[int, int]]) -> tuple[_Costs, set[tuple[int, int]]]:
    """Every rank's costs and input sizes, merged in rank order."""
    gathered = all_gather_objects(
        (costs.real, costs.expected, costs.ratios, sorted(sizes), costs.variants)
    )
    merged: dict[str, list[float]] = {}
    for part in gathered:
        for key, values in part[4].items():
            merged.setdefault(key, []).extend(values)
    everyone = _Costs(
        real=[v for part in gathered for v in part[0]],
        expected=[v for part in gathered for v in part[1]],
        ratios=[v for part in gathered for v in part[2]],
        variants=merged,
    )
    return everyone, {tuple(s) for part in gathered for s in part[3]}


def evaluate(
    model: nn.Module,
    dataset: Any,
    *,
    device: torch.device | str | None = None,
    limit: int | None = None,
    workers: int = 0,
    amp: bool = False,
    progress: bool | None = False,
    aug: Augment | None = None,
    on_prediction: Callable[[dict[str, Any], np.ndarray], None] | None = None,
    counting: Counting | str = Counting.PAPER,
) -> EvalResult:
    """Evaluate ``model`` on ``dataset``, one image at a time in eval mode.

    Under an initialised process group every rank must call this; each evaluates its share and
    every rank returns the same result.

    Args:
        model: a :class:`RoutingNetwork` (a DDP wrapper is unwrapped). Left in eval mode.
        dataset: a segmentation dataset (items with ``image`` and ``label``; ``num_classes``,
            ``class_names`` and ``ignore_index`` attributes).
        device: where to run (default: where the model's parameters are).
        limit: evaluate only the first ``limit`` images.
        workers: data-loading worker processes.
        amp: bf16 autocast (CUDA only).
        progress: ``True`` a tqdm bar, ``None`` a bar on a terminal and else a log line every
            half minute (:class:`dynviz.support.progress.Progress`), ``False`` nothing (rank 0
            only).
        aug: test-time augmentation (:mod:`dynviz.inference.tta`): softmax averaged over the
        variants;
            an image's GMACs are the sum over its forward passes.
        on_prediction: called with each item (``image_id``, ...) and its ``(H, W)`` uint8 class
            map (e.g. to write benchmark files).
        counting: the cost counting of the real and expected GMACs (``paper`` or
            ``official``; :class:`dynviz.model.cost.Counting`).

    Returns:
        The :class:`EvalResult`.

    Raises:
        ConfigError: the dataset has more classes than the network predicts.
    """
    net: RoutingNetwork = getattr(model, "module", model)
    if device is None:
        device = next(net.parameters()).device
    device = torch.device(device)
    num_classes = net.config.num_classes
    if dataset.num_classes > num_classes:
        raise ConfigError(
            f"the data set has {dataset.num_classes} classes but the network predicts {num_classes}"
        )
    names = list(dataset.class_names)[:num_classes]
    names += [str(k) for k in range(len(names), num_classes)]
    rank, world = _world()
    count = len(dataset) if limit is None else min(int(limit), len(dataset))
    shard = Subset(dataset, range(rank, count, world))
    loader = DataLoader(shard, batch_size=1, num_workers=workers, collate_fn=_single)
    matrix = ConfusionMatrix(num_classes, dataset.ignore_index)
    counting = Counting(counting)
    tables = TableCache(net, counting)
    costs = _Costs()
    sizes: set[tuple[int, int]] = set()
    start = time.perf_counter()
    net.eval()
    runner = inference_form(net)  # BN folded (a copy): fused kernels
    bar = Progress(total=len(shard), desc="eval", show=progress if rank == 0 else False)
    autocast = torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"
    )
    with torch.inference_mode(), autocast:
        for item in loader:
            image = item["image"].unsqueeze(0).to(device)  # (1, 3, H, W)
            height, width = image.shape[-2:]
            if aug is None:
                pred = _predict_plain(runner, image, tables, costs)
            else:
                pred = _predict_augmented(runner, image, tables, aug, costs)
            matrix.update(pred, item["label"].to(device))
            if on_prediction is not None:
                on_prediction(item, pred.to(torch.uint8).cpu().numpy())
            sizes.add((int(height), int(width)))
            bar.update(1)
    bar.close()
    counts = all_reduce_sum(torch.from_numpy(matrix.matrix.copy()))
    matrix.matrix = counts.numpy()
    if world > 1:
        costs, sizes = _gather(costs, sizes)
    return EvalResult(
        miou=matrix.miou(),
        per_class_iou=[float(v) for v in matrix.iou()],
        class_names=names,
        pixel_accuracy=matrix.pixel_accuracy(),
        real_gmacs=CostStats.of(costs.real),
        expected_gmacs=CostStats.of(costs.expected),
        expected_cost_ratio=float(np.mean(costs.ratios)) if costs.ratios else None,
        params=sum(p.numel() for p in net.parameters()),
        num_images=len(costs.real),
        sizes=sorted(sizes),
        seconds=time.perf_counter() - start,
        aug=aug,
        aug_real_gmacs={key: CostStats.of(values) for key, values in costs.variants.items()},
        counting=counting.value,
    )
