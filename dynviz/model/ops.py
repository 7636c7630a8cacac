"""Building blocks of the routing space: stem, cell operation, scale transforms, gate, decoder.

Shapes in comments use ``(B, C, h, w)``; ``H`` is reserved for the paper's hidden state.
Module and parameter names are part of the API: the cost model (``dynviz.model.cost``) names the
same modules, and static networks share them with the dynamic network so weights transfer.

Once BatchNorm is folded (:func:`dynviz.inference.folding.fold_batchnorm`), each block runs its
convs as fused oneDNN kernels in CPU inference (:mod:`dynviz.model.fused`); ``fused_kernels =
False`` on a block keeps the plain ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dynviz.model import fused

__all__ = [
    "ConvBNReLU",
    "DownTransform",
    "RoutedBatchNorm2d",
    "SepConv",
    "SepConvBNReLU",
    "SoftConditionalGate",
    "Stem",
    "UpTransform",
    "gate_activation",
    "init_weights",
    "small_gate_input",
    "small_gate_size",
]


def gate_activation(z: torch.Tensor) -> torch.Tensor:
    """delta(z) = max(0, tanh(z)) (Eq. 3): exact zeros close a path."""
    return torch.relu(torch.tanh(z))


def small_gate_size(height: int, width: int) -> tuple[int, int]:
    """Spatial size a small gate reads: X resized by 0.25 (at least 1x1)."""
    return max(1, height // 4), max(1, width // 4)


def small_gate_input(x: torch.Tensor, *, official: bool = False) -> torch.Tensor:
    """X bilinearly resized by 0.25 for a small gate ``(B, C, h // 4, w // 4)``.

    ``official`` resizes as the official code does, with ``scale_factor=0.25`` (the sampling
    grid then follows the factor, not the sizes: the two differ when h or w is not a multiple
    of 4). Where that would give an empty map (the official code fails there), the map is
    resized to 1 pixel as in the paper mode.
    """
    h, w = x.shape[-2], x.shape[-1]
    if official and h >= 4 and w >= 4:
        return F.interpolate(x, scale_factor=0.25, mode="bilinear", align_corners=False)
    return F.interpolate(x, size=small_gate_size(h, w), mode="bilinear", align_corners=False)


class RoutedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm of the routing space's blocks, for nodes that only some samples reach.

    Trained with ``skip`` (``TrainConfig.bn_samples`` ``routed``), a node runs on the samples
    routed through it, and one sample at a 1x1 map gives one value per channel: no variance to
    normalise by (``nn.BatchNorm2d`` fails there). Such a batch is normalised by the running
    statistics, which it leaves as they are. Any other input: ``nn.BatchNorm2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        one_value = x.numel() == x.shape[1]  # one per channel: one sample at 1x1
        if self.training and one_value and self.running_var is not None:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class ConvBNReLU(nn.Sequential):
    """1x1 conv (no bias), BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
        self.bn = RoutedBatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.fused_kernels = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fused.ready(self, self.bn, x):
            return fused.conv(self.conv, x, "relu")
        return super().forward(x)


class SepConvBNReLU(nn.Module):
    """Depthwise 3x3 (stride s), pointwise 1x1, BN, ReLU: the stem's separable convs."""

    def __init__(self, channels: int, *, stride: int = 1) -> None:
        super().__init__()
        self.dw = nn.Conv2d(
            channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False
        )
        self.pw = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = RoutedBatchNorm2d(channels)
        self.fused_kernels = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fused.ready(self, self.bn, x):
            return fused.conv(self.pw, fused.conv(self.dw, x), "relu")
        return self.bn(self.pw(self.dw(x))).relu_()  # in place: BN backward needs no output


class Stem(nn.Module):
    """3x3 s2 conv + BN + ReLU, then two separable convs (the second with stride 2): to 1/4.

    The official code gives the first conv no padding (1024 -> 511; ``padding=0``, official
    semantics); by default we pad by 1 so every feature map has exactly the size the paper's
    counting assumes (512, then 256). Both reach 1/4 at the same size (256).
    """

    def __init__(self, channels: int, *, padding: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels, 3, stride=2, padding=padding, bias=False)
        self.bn1 = RoutedBatchNorm2d(channels)
        self.sep1 = SepConvBNReLU(channels, stride=1)
        self.sep2 = SepConvBNReLU(channels, stride=2)
        self.fused_kernels = True

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if fused.ready(self, self.bn1, images):
            x = fused.conv(self.conv1, images, "relu")  # (B, C, H/2, W/2)
        else:
            x = self.bn1(self.conv1(images)).relu_()  # (B, C, H/2, W/2)
        return self.sep2(self.sep1(x))  # (B, C, H/4, W/4)


class SepConv(nn.Module):
    """The cell operation O: two stacked separable 3x3 convs, BN after each pointwise conv,
    ReLU only in the middle (no leading ReLU, unlike DARTS). The cell adds the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels
        self.dw1 = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.pw1 = nn.Conv2d(c, c, 1, bias=False)
        self.bn1 = RoutedBatchNorm2d(c)
        self.dw2 = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.pw2 = nn.Conv2d(c, c, 1, bias=False)
        self.bn2 = RoutedBatchNorm2d(c)
        self.fused_kernels = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.pw1(self.dw1(x))).relu_()
        return self.bn2(self.pw2(self.dw2(x)))

    def runs_fused(self, x: torch.Tensor) -> bool:
        """Whether :meth:`hidden_fused` applies: BN folded, CPU float32 inference."""
        return fused.ready(self, self.bn2, x)

    def hidden_fused(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU(O(X) + X) of a folded op in fused kernels: the ReLU rides on the first
        pointwise conv, the residual add and ReLU on the last."""
        t = fused.conv(self.pw1, fused.conv(self.dw1, x), "relu")
        return fused.conv_add_relu(self.pw2, fused.conv(self.dw2, t), x)


class UpTransform(nn.Module):
    """s -> s/2 (finer): 1x1 conv C -> C/2, BN, ReLU at the input resolution, bilinear x2.
    Its input is ReLU(H), computed once per cell."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels // 2, 1, bias=False)
        self.bn = RoutedBatchNorm2d(channels // 2)
        self.fused_kernels = True

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        if fused.ready(self, self.bn, r):
            y = fused.conv(self.conv, r, "relu")  # (B, C/2, h, w)
        else:
            y = self.bn(self.conv(r)).relu_()  # (B, C/2, h, w)
        return F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)


class DownTransform(nn.Module):
    """s -> 2s (coarser): 1x1 stride-2 conv C -> 2C, BN, ReLU. Input ReLU(H)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * 2, 1, stride=2, bias=False)
        self.bn = RoutedBatchNorm2d(channels * 2)
        self.fused_kernels = True

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        if fused.ready(self, self.bn, r):
            return fused.conv(self.conv, r, "relu")  # (B, 2C, h/2, w/2)
        return self.bn(self.conv(r)).relu_()  # (B, 2C, h/2, w/2)


class SoftConditionalGate(nn.Module):
    """G = F(w2, GAP(ReLU(BN(F(w1, X))))) + beta (Eq. 2), alpha = max(0, tanh(G)) (Eq. 3).

    Reads the node input X. With ``small=True`` X is bilinearly resized by 0.25 first (as the
    official code does with ``official_resize``, see :func:`small_gate_input`).
    Returns alpha of shape ``(B, num_paths)`` in gate order (keep, up, down).
    """

    def __init__(
        self,
        channels: int,
        num_paths: int,
        *,
        small: bool = False,
        bias_init: float = 1.5,
        official_resize: bool = False,
    ) -> None:
        super().__init__()
        self.small = small
        self.official_resize = official_resize
        self.conv1 = nn.Conv2d(channels, channels // 2, 1, bias=False)
        self.bn = RoutedBatchNorm2d(channels // 2)
        self.conv2 = nn.Conv2d(channels // 2, num_paths, 1, bias=True)
        self.bias_init = bias_init
        self.fused_kernels = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gate_activation(self.logits(self.features(x)))  # (B, num_paths)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU(BN(F(w1, X))) before pooling (X resized first by a small gate): ``(B, C/2, h, w)``.

        ``dynviz.model.attribution`` splits the logits over these locations."""
        if self.small:
            x = small_gate_input(x, official=self.official_resize)  # (B, C, h/4, w/4)
        if fused.ready(self, self.bn, x):
            return fused.conv(self.conv1, x, "relu")  # (B, C/2, h, w)
        return self.bn(self.conv1(x)).relu_()  # (B, C/2, h, w)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """G = F(w2, GAP(z)) + beta before tanh: ``(B, num_paths)``."""
        z = F.adaptive_avg_pool2d(z, 1)  # (B, C/2, 1, 1)
        return self.conv2(z).flatten(1)  # (B, num_paths)


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal (fan_in, ReLU) convs, BN weight 1 / bias 0, gate bias ``bias_init``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, SoftConditionalGate):
            nn.init.constant_(m.conv2.bias, m.bias_init)
