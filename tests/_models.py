"""Helpers shared by the model tests."""

from __future__ import annotations

import torch


def randomise(
    model: torch.nn.Module,
    *,
    seed: int = 1,
    spread: float = 0.1,
    gate_bias: tuple[float, float] | None = None,
) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters (BN folding and the
    skip/soft equivalences must use all four), and optionally draw the gates' output biases
    from ``gate_bias`` (a range that closes some paths). Returns ``model``."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * spread)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * spread)
    if gate_bias is not None:
        lo, hi = gate_bias
        for cell in model.cells.values():
            bias = cell.gate.conv2.bias
            bias.data.copy_(torch.rand(bias.shape, generator=g) * (hi - lo) + lo)
    return model


# Float32 tolerance for one network's output computed two ways (another batch size, the skipping
# engine against the masked form, a static module against the forced route, a padded input).
# The arithmetic is the same but the kernels are not: oneDNN and MKL pick blockings and
# summation orders by shape and by CPU (AVX-512 on Intel, AVX2 on AMD EPYC), so each sum of K
# products is rounded differently, by about eps * sqrt(K) of the largest terms, and the errors
# grow through the network's depth. Such an error scales with the size of the activations, not
# of each output element: an element near 0 can differ by 100% relative while the map as a
# whole agrees to 1e-7. So the bound is relative to max|logit|. Measured on the tiny test
# networks, batch 1 against batch 2 (issue 28): 0 with AVX-512 kernels, 6e-7 and 9e-7 of
# max|logit| with oneDNN held to AVX2 and to SSE4.1; one cell dropped for a sample that should
# keep it moved that sample's logits by 0.1 of max|logit|, 10,000 times the bound.
FLOAT32_REL = 1e-5
# The same in float64 (eps 2.2e-16 against float32's 1.2e-7).
FLOAT64_REL = 1e-10


def assert_close_to_scale(
    actual: torch.Tensor, expected: torch.Tensor, *, rel: float = FLOAT32_REL
) -> None:
    """``max|actual - expected| <= rel * max|expected|``: equal up to the rounding of kernels
    that sum in another order (see ``FLOAT32_REL``)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = float(expected.abs().max())
    diff = float((actual - expected).abs().max())
    assert diff <= rel * scale, f"max difference {diff:.3g} > {rel:g} of max|expected| {scale:.3g}"
