"""BatchNorm folding: every BatchNorm that directly follows a conv becomes the conv's bias and
scale (inference semantics: the running statistics), so a conv-BN pair costs one conv.

Also home of :class:`ExportError`, the error of the whole export path
(:mod:`dynviz.inference.static`, :mod:`dynviz.inference.onnx`).
"""

from __future__ import annotations

import copy
import logging
from typing import TypeVar

import torch
from torch import nn

from dynviz.model.config import ConfigError
from dynviz.model.ops import (
    DownTransform,
    SepConv,
    SepConvBNReLU,
    SoftConditionalGate,
    Stem,
    UpTransform,
)

__all__ = ["ExportError", "count_batchnorm", "fold_batchnorm", "inference_form"]

logger = logging.getLogger(__name__)

# (conv, bn) attribute pairs of the routing space's modules, in forward order.
_PAIRS: dict[type[nn.Module], tuple[tuple[str, str], ...]] = {
    Stem: (("conv1", "bn1"),),
    SepConvBNReLU: (("pw", "bn"),),
    SepConv: (("pw1", "bn1"), ("pw2", "bn2")),
    UpTransform: (("conv", "bn"),),
    DownTransform: (("conv", "bn"),),
    SoftConditionalGate: (("conv1", "bn"),),
}


ModuleT = TypeVar("ModuleT", bound=nn.Module)


class ExportError(ConfigError):
    """A network cannot be made static or exported; the message says why."""


# ------------------------------------------------------------------------------ BN folding
def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with bias computing ``bn(conv(x))`` with the BN's running statistics."""
    if bn.running_mean is None or bn.running_var is None:
        raise ExportError(f"cannot fold a BatchNorm without running statistics ({bn})")
    f64 = torch.float64
    with torch.no_grad():
        std = torch.sqrt(bn.running_var.to(f64) + bn.eps)
        gamma = bn.weight.to(f64) if bn.weight is not None else torch.ones_like(std)
        beta = bn.bias.to(f64) if bn.bias is not None else torch.zeros_like(std)
        scale = gamma / std
        bias = beta - bn.running_mean.to(f64) * scale
        if conv.bias is not None:
            bias = bias + conv.bias.to(f64) * scale
        fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=True,
            padding_mode=conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        fused.weight.copy_((conv.weight.to(f64) * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
        fused.bias.copy_(bias.to(conv.weight.dtype))
    fused.weight = nn.Parameter(
        fused.weight.detach().contiguous(memory_format=_memory_format(conv.weight))
    )
    return fused


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    if (
        t.dim() == 4
        and not t.is_contiguous()
        and t.is_contiguous(memory_format=torch.channels_last)
    ):
        return torch.channels_last
    return torch.contiguous_format


def _sequential_pairs(module: nn.Sequential) -> list[tuple[str, str]]:
    names = list(module._modules)
    return [
        (a, b)
        for a, b in zip(names, names[1:], strict=False)
        if isinstance(module._modules[a], nn.Conv2d)
        and isinstance(module._modules[b], nn.BatchNorm2d)
    ]


def fold_batchnorm(model: ModuleT, *, inplace: bool = False) -> ModuleT:
    """Fold every BatchNorm that directly follows a conv into the conv, for inference.

    ``bn(conv(x)) = conv'(x)`` with ``w' = w * gamma / sqrt(var + eps)`` and
    ``b' = beta + (b - mean) * gamma / sqrt(var + eps)``, computed in float64. The BN module is
    replaced by ``nn.Identity`` and the conv by a conv with bias, so module names stay and the
    network's forward runs unchanged (the BN parameters and buffers disappear from the state dict).

    Args:
        model: a :class:`~dynviz.model.network.RoutingNetwork`, a :class:`StaticNetwork`, or
            any module built from the routing space's blocks (``nn.Sequential`` conv-BN pairs
            are folded too).
        inplace: change ``model`` itself instead of a deep copy.

    Returns:
        The folded model, in eval mode (the fold uses the running statistics; training it
        further would train a different network).
    """
    out = model if inplace else copy.deepcopy(model)
    folded = 0
    for module in list(out.modules()):
        pairs = _PAIRS.get(type(module))
        if pairs is None and isinstance(module, nn.Sequential):
            pairs = tuple(_sequential_pairs(module))
        for conv_name, bn_name in pairs or ():
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            if not isinstance(bn, nn.BatchNorm2d) or not isinstance(conv, nn.Conv2d):
                continue  # already folded
            setattr(module, conv_name, _fold_pair(conv, bn))
            setattr(module, bn_name, nn.Identity())
            folded += 1
    left = count_batchnorm(out)
    logger.debug("folded %d BatchNorm layers into convs (%d left)", folded, left)
    return out.eval()


def inference_form(model: ModuleT) -> ModuleT:
    """The network as inference runs it: a copy with BatchNorm folded, whose blocks then run
    fused kernels (:mod:`dynviz.model.fused`); ``model`` itself when it has no BatchNorm left
    (already folded), so that passing a folded network costs no copy. ``evaluate``, ``record``
    and ``predict`` run this."""
    if count_batchnorm(model) == 0:
        return model
    return fold_batchnorm(model)


def count_batchnorm(model: nn.Module) -> int:
    """Number of BatchNorm layers in ``model`` (0 after :func:`fold_batchnorm`)."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
