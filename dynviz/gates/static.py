"""What the two reference networks (:mod:`dynviz.gates.skipnet`, :mod:`dynviz.gates.moe`) share:
the MAC arithmetic they count their gate graphs with, and the check of a static plan against a
graph.

MACs are counted as :class:`torch.utils.flop_counter.FlopCounterMode` counts them (its FLOPs are
two per MAC): convolutions ``H_out * W_out * C_in * C_out * k_h * k_w / groups`` and linear
layers ``in * out`` per input; biases, ReLUs, additions, pooling, softmax and the bilinear
upsampling are not counted.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from torch import nn

from dynviz.gates.graph import GateGraph
from dynviz.model import ConfigError

__all__ = ["check_keep", "conv2d_macs", "linear_macs"]


def conv2d_macs(conv: nn.Conv2d, size: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    """The MACs of ``conv`` on one input of spatial ``size`` and its output size.

    Returns:
        ``(H_out * W_out * C_in * C_out * k_h * k_w / groups, (H_out, W_out))``.
    """
    if isinstance(conv.padding, str):
        raise ConfigError(f"conv2d_macs counts numeric padding, not {conv.padding!r}")
    out = []
    for i, length in enumerate(size):
        pad = conv.padding[i]
        span = conv.dilation[i] * (conv.kernel_size[i] - 1) + 1
        out.append((length + 2 * pad - span) // conv.stride[i] + 1)
    k_h, k_w = conv.kernel_size
    macs = out[0] * out[1] * conv.in_channels * conv.out_channels * k_h * k_w // conv.groups
    return macs, (out[0], out[1])


def linear_macs(fc: nn.Linear) -> int:
    """The MACs of ``fc`` for one input: ``in_features * out_features``."""
    return fc.in_features * fc.out_features


def check_keep(graph: GateGraph, keep: Mapping[str, Collection[str]]) -> dict[str, set[str]]:
    """``keep`` (``{point: options}``, :meth:`dynviz.analysis.gates.CommonPlan.keep`) as sets,
    checked against ``graph``.

    Raises:
        ConfigError: a point the graph does not name, a point of the graph ``keep`` leaves out,
            or an option the point does not have.
    """
    unknown = sorted(set(keep) - set(graph.point_names))
    if unknown:
        raise ConfigError(
            f"the plan names points {unknown} that gate graph {graph.name!r} does not have "
            f"(it has {list(graph.point_names)})"
        )
    missing = [p for p in graph.point_names if p not in keep]
    if missing:
        raise ConfigError(
            f"the plan says nothing about points {missing} of gate graph {graph.name!r} "
            "(give each point its kept options, () for none)"
        )
    out = {}
    for point in graph:
        kept = set(keep[point.name])
        extra = sorted(kept - set(point.option_names))
        if extra:
            raise ConfigError(
                f"point {point.name!r} has no options {extra} (it has {list(point.option_names)})"
            )
        out[point.name] = kept
    return out
