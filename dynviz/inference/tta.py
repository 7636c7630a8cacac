"""Test-time augmentation and sliding-window inference, with the cost of every forward pass.

``--aug flip`` and ``--aug scales=0.5,0.75,1,1.25,1.5,1.75`` (combinable, as mmseg's
``--aug-test``): the image is resized to each scale (bilinear), run as it is and, with ``flip``,
mirrored; the logits of every variant are resized back to the image, turned into class
probabilities (softmax) and averaged. In a dynamic network each variant takes its own route and
costs what its route and size cost, so every forward pass is reported (:class:`Forward`): its
scale, flip, window, gates and input size, from which the real and expected MACs follow with the
cost model (:func:`forward_costs`).

Sliding windows (``window=(h, w)``): an image (at each scale) larger than the window is covered
by windows of that size with the given stride (default: two thirds of the window); the
probabilities of overlapping windows are averaged, as mmseg's ``slide`` inference does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dynviz.errors import UserError
from dynviz.model import RoutingNetwork
from dynviz.model.cost import CostTable, Counting, cost_table
from dynviz.model.route import Route

__all__ = [
    "Augment",
    "AugmentError",
    "Forward",
    "TableCache",
    "forward_costs",
    "infer",
    "scaled_size",
    "variant_label",
    "window_boxes",
]


class AugmentError(UserError):
    """A bad ``--aug`` or ``--window`` value; the message names it."""


@dataclass(frozen=True)
class Augment:
    """Test-time augmentation: the input scales and whether each is also run mirrored.

    Attributes:
        scales: resize factors of the image (1.0: as it is).
        flip: also run every scale mirrored left-right.
    """

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    def __post_init__(self) -> None:
        scales = tuple(float(s) for s in self.scales)
        if not scales or any(not math.isfinite(s) or s <= 0 for s in scales):
            raise AugmentError(f"scales {list(self.scales)} must be positive numbers")
        if len(set(scales)) != len(scales):
            raise AugmentError(f"scales {list(scales)} repeat a value")
        object.__setattr__(self, "scales", scales)

    @classmethod
    def parse(cls, items: Sequence[str] | str | None) -> Augment | None:
        """``["flip", "scales=0.5,1,1.5"]`` (or one comma-free string) as an :class:`Augment`;
        None for no items.

        Raises:
            AugmentError: an unknown item or a bad scale, named.
        """
        if items is None:
            return None
        if isinstance(items, str):
            items = [items]
        if not items:
            return None
        scales: tuple[float, ...] = (1.0,)
        flip = False
        for item in items:
            text = str(item).strip()
            key, sep, value = text.partition("=")
            key = key.strip().lower()
            if key == "flip" and not sep:
                flip = True
            elif key in ("scales", "scale") and sep:
                try:
                    scales = tuple(float(v) for v in value.replace(" ", "").split(",") if v)
                except ValueError:
                    raise AugmentError(
                        f"--aug {text!r}: scales must be numbers, e.g. scales=0.5,1,1.5"
                    ) from None
            else:
                raise AugmentError(
                    f"unknown --aug {text!r}; expected flip or scales=S1,S2,... "
                    "(e.g. --aug flip scales=0.5,0.75,1,1.25,1.5,1.75)"
                )
        return cls(scales=scales, flip=flip)

    @property
    def variants(self) -> list[tuple[float, bool]]:
        """``(scale, flip)`` of every forward pass, scale by scale, unmirrored first."""
        flips = (False, True) if self.flip else (False,)
        return [(scale, flip) for scale in self.scales for flip in flips]

    def to_dict(self) -> dict[str, object]:
        return {"scales": list(self.scales), "flip": self.flip}

    def __str__(self) -> str:
        parts = ["scales=" + ",".join(f"{s:g}" for s in self.scales)]
        if self.flip:
            parts.append("flip")
        return " ".join(parts)


def variant_label(scale: float, flip: bool) -> str:
    """``"0.75"`` or ``"0.75+flip"``."""
    return f"{scale:g}+flip" if flip else f"{scale:g}"


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The input size at ``scale`` (rounded, at least 1)."""
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def window_boxes(
    height: int, width: int, window: tuple[int, int], stride: tuple[int, int] | None = None
) -> list[tuple[int, int, int, int]]:
    """``(top, left, bottom, right)`` windows covering an image (one box when it fits).

    Windows are ``window`` large (clipped to the image), ``stride`` apart (default: two thirds
    of the window), the last ones flush with the bottom and right edges.
    """
    wh, ww = int(window[0]), int(window[1])
    if wh < 1 or ww < 1:
        raise AugmentError(f"--window {wh} {ww} must be positive")
    sh, sw = stride if stride is not None else (max(1, wh * 2 // 3), max(1, ww * 2 // 3))
    if sh < 1 or sw < 1:
        raise AugmentError(f"--window-stride {sh} {sw} must be positive")

    def starts(size: int, win: int, step: int) -> list[int]:
        if size <= win:
            return [0]
        out = list(range(0, size - win, step))
        return out + [size - win]

    return [
        (top, left, min(top + wh, height), min(left + ww, width))
        for top in starts(height, wh, sh)
        for left in starts(width, ww, sw)
    ]


@dataclass(frozen=True)
class Forward:
    """One forward pass of an inference.

    Attributes:
        scale: the resize factor of the image.
        flip: whether the input was mirrored.
        box: ``(top, left, bottom, right)`` of the window in the scaled image.
        size: ``(H, W)`` of the network input.
        gates: ``(B, L + 1, S, 3)`` float32 alphas (CPU).
        active: ``(B, L + 1, S, 3)`` bool, the paths computed (CPU).
        gate_alpha: ``(B, L + 1, S, 3)`` float32, the gates' own alphas before the closing
            rule (CPU), or None.
    """

    scale: float
    flip: bool
    box: tuple[int, int, int, int]
    size: tuple[int, int]
    gates: torch.Tensor
    active: torch.Tensor
    gate_alpha: torch.Tensor | None = None

    @property
    def label(self) -> str:
        return variant_label(self.scale, self.flip)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def infer(
    model: RoutingNetwork,
    images: torch.Tensor,
    *,
    aug: Augment | None = None,
    window: tuple[int, int] | None = None,
    stride: tuple[int, int] | None = None,
    route: Route | None = None,
) -> tuple[torch.Tensor, list[Forward]]:
    """Class probabilities of ``images`` averaged over the augmentations and windows.

    Args:
        model: the network, in eval mode (call under ``torch.inference_mode()``).
        images: ``(B, 3, H, W)`` normalised images of one size.
        aug: the augmentation (None: the image as it is).
        window: slide windows of this size over larger (scaled) images.
        stride: the windows' stride (default: two thirds of the window).
        route: force this route instead of the gates.

    Returns:
        ``(probs (B, K, H, W) float32, forwards)``: the softmax averaged over every variant,
        and one :class:`Forward` per pass, in the order run.
    """
    aug = aug or Augment()
    height, width = int(images.shape[-2]), int(images.shape[-1])
    total: torch.Tensor | None = None
    forwards: list[Forward] = []
    for scale, flip in aug.variants:
        size = scaled_size(height, width, scale)
        x = _resize(images, size)
        if flip:
            x = x.flip(-1)
        boxes = window_boxes(*size, window, stride) if window else [(0, 0, *size)]
        probs: torch.Tensor | None = None
        counts = torch.zeros((1, 1, *size), device=images.device)
        for top, left, bottom, right in boxes:
            out = model(x[..., top:bottom, left:right], route=route)
            p = torch.softmax(out.logits.float(), dim=1)  # (B, K, h, w)
            if probs is None:
                probs = torch.zeros((p.shape[0], p.shape[1], *size), device=images.device)
            probs[..., top:bottom, left:right] += p
            counts[..., top:bottom, left:right] += 1
            forwards.append(
                Forward(
                    scale=scale,
                    flip=flip,
                    box=(top, left, bottom, right),
                    size=(bottom - top, right - left),
                    gates=out.gates.float().cpu(),
                    active=out.active.cpu(),
                    gate_alpha=None if out.gate_alpha is None else out.gate_alpha.float().cpu(),
                )
            )
        assert probs is not None
        probs = probs / counts
        if flip:
            probs = probs.flip(-1)
        probs = _resize(probs, (height, width))
        total = probs if total is None else total + probs
    assert total is not None
    return total / len(aug.variants), forwards


class TableCache:
    """Cost tables of a network by padded input size (one per distinct size), in one
    counting (:class:`dynviz.model.cost.Counting`, default paper)."""

    def __init__(self, model: RoutingNetwork, counting: Counting | str = Counting.PAPER) -> None:
        self.model = model
        self.counting = Counting(counting)
        self.tables: dict[tuple[int, int], CostTable] = {}

    def __call__(self, height: int, width: int) -> CostTable:
        stride = self.model.config.max_stride
        key = (-(-height // stride) * stride, -(-width // stride) * stride)
        if key not in self.tables:
            self.tables[key] = cost_table(
                self.model.config, key, counting=self.counting, route=self.model.route
            )
        return self.tables[key]


def forward_costs(
    model: RoutingNetwork, forward: Forward, tables: TableCache, *, gates_ran: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(real, expected)`` MACs per sample of one forward pass (float64 tensors ``(B,)``), in
    the counting of ``tables``."""
    table = tables(*forward.size)
    real = table.real_from(forward.gates, forward.active, gates_ran=gates_ran).double()
    expected = table.expected(forward.gates, gates_ran=gates_ran).double()
    return real, expected
