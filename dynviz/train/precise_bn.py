"""Precise BatchNorm statistics: re-estimate every BN's running mean and variance with the final
weights (the official recipe's ``TEST.PRECISE_BN``, 200 iterations once at the end of training).
A short run uses fewer batches (:func:`default_precise_bn_batches`: a tenth of its iterations, at
most 200), so that a 20-iteration try spends most of its time training, not re-estimating.

During training a BN's running statistics are an exponential average (momentum 0.1) over the
last few dozen batches, each taken with weights that have since changed. After training they are
recomputed with the weights frozen: the statistics are reset, momentum is set to ``None`` (PyTorch's
cumulative average: the mean of the per-batch means and variances) and the model runs forward
in train mode, without gradients, over ``num_batches`` training batches. Under DDP the result is
averaged over ranks, so every rank ends with the same statistics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from dynviz.support.distributed import all_reduce_sum

__all__ = [
    "OFFICIAL_PRECISE_BN_BATCHES",
    "batchnorms",
    "default_precise_bn_batches",
    "update_bn_stats",
]

logger = logging.getLogger(__name__)

OFFICIAL_PRECISE_BN_BATCHES = 200
PRECISE_BN_SHARE = 0.1  # of the training iterations, for runs shorter than 2000


def default_precise_bn_batches(max_iter: int) -> int:
    """PreciseBN batches for a run of ``max_iter`` iterations: ``min(200, ceil(0.1 * max_iter))``.

    A forward pass without gradients costs about a third of a training step, so PreciseBN takes
    at most about 3% of a run's time (the official 200 batches after 190k iterations; 2 batches
    after a 20-iteration try).
    """
    return min(OFFICIAL_PRECISE_BN_BATCHES, max(1, math.ceil(PRECISE_BN_SHARE * max_iter)))


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


def update_bn_stats(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    num_batches: int,
    forward: Callable[[Any], Any] | None = None,
    world_size: int = 1,
) -> int:
    """Recompute the running statistics of every BatchNorm in ``model``.

    Args:
        model: the network; put in train mode for the passes and restored afterwards.
        batches: inputs (anything ``forward`` takes); the first ``num_batches`` are used.
        num_batches: how many batches to average over (the official recipe: 200).
        forward: how to run one batch (default ``model(batch)``), e.g. with autocast.
        world_size: processes to average over (``all_reduce``); 1 without DDP.

    Returns:
        The number of batches used (fewer when ``batches`` runs out). A BatchNorm that saw no
        sample (a node that no batch reached) keeps its old statistics.
    """
    layers = batchnorms(model)
    if not layers or num_batches < 1:
        return 0
    saved = [
        (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum)
        for m in layers
    ]
    was_training = model.training
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average of the batches' statistics
    model.train()
    run = forward or model
    used = 0
    try:
        with torch.no_grad():
            for batch in batches:
                if used >= num_batches:
                    break
                run(batch)
                used += 1
    finally:
        for bn, (_, _, _, momentum) in zip(layers, saved, strict=True):
            bn.momentum = momentum
        model.train(was_training)
    for bn, (mean, var, count, _) in zip(layers, saved, strict=True):
        if int(bn.num_batches_tracked) == 0:  # saw no sample (a node no batch reached)
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.num_batches_tracked.copy_(count)
    if used == 0:
        return 0
    if world_size > 1:
        for bn in layers:
            all_reduce_sum(bn.running_mean).div_(world_size)
            all_reduce_sum(bn.running_var).div_(world_size)
    logger.info("precise BN: %d BatchNorm layers re-estimated over %d batches", len(layers), used)
    return used
