"""Fused oneDNN kernels for CPU inference of a folded network: conv + bias with its ReLU, or with a
residual add and ReLU, in one pass over memory.

Once :func:`dynviz.inference.folding.fold_batchnorm` has turned every conv-BN pair into a conv
with bias (the BN becomes ``nn.Identity``), the blocks of :mod:`dynviz.model.ops` run their
convs through these kernels by themselves. They do so only in float32 CPU inference without
autograd, outside tracing, and when this torch has the kernels. The dynamic network and the
static one (:class:`dynviz.inference.static.StaticNetwork`) then run the same code. A block
whose ``fused_kernels`` is False keeps the plain ops, for comparison. The outputs are those of
the plain ops up to float rounding.
"""

from __future__ import annotations

from functools import cache

import torch
from torch import nn

__all__ = ["applies", "available", "conv", "conv_add_relu", "folded", "ready", "tracing"]


def tracing() -> bool:
    """Whether the forward is being recorded (``torch.export``/the ONNX exporter, ``torch.compile``
    or ``torch.jit.trace``): the graph must then hold plain ops on symbolic sizes."""
    return bool(torch.compiler.is_compiling() or torch.jit.is_tracing())


@cache
def available() -> bool:
    """Whether this torch has oneDNN's fused pointwise convolutions."""
    try:
        return bool(
            torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
        )
    except (AttributeError, RuntimeError):
        return False


def applies(x: torch.Tensor) -> bool:
    """Whether a fused kernel may run on ``x``: float32 on CPU, no autograd, not tracing."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not tracing()
        and available()
    )


def folded(bn: nn.Module) -> bool:
    """Whether the BatchNorm slot ``bn`` of a block has been folded into its conv."""
    return isinstance(bn, nn.Identity)


def ready(block: nn.Module, bn: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``block`` runs its fused kernels on ``x``: it allows them (``fused_kernels``),
    its BatchNorm slot ``bn`` is folded, and :func:`applies` holds."""
    return bool(getattr(block, "fused_kernels", False)) and folded(bn) and applies(x)


def conv(layer: nn.Conv2d, x: torch.Tensor, unary: str = "none") -> torch.Tensor:
    """``layer(x)``, followed by ``unary`` (``"relu"`` or ``"none"``) in the same kernel."""
    return torch.ops.mkldnn._convolution_pointwise(
        x,
        layer.weight,
        layer.bias,
        list(layer.padding),
        list(layer.stride),
        list(layer.dilation),
        layer.groups,
        unary,
        [],
        "",
    )


def conv_add_relu(layer: nn.Conv2d, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``relu(layer(x) + other)`` in one kernel."""
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x,
        other,
        layer.weight,
        layer.bias,
        list(layer.padding),
        list(layer.stride),
        list(layer.dilation),
        layer.groups,
        "add",
        1.0,
        "relu",
        [],
        "",
    )
