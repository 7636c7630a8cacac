"""ONNX export of a :class:`~dynviz.inference.static.StaticNetwork` with torch's current
exporter (``dynamo=True``), and an onnxruntime check that compares logits with PyTorch.

The ONNX graph has dynamic batch, height and width axes (the padding to a multiple of the largest
stride is part of the graph), or a fixed height and width when a size is given.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dynviz.errors import require

__all__ = [
    "DEFAULT_OPSET",
    "DEFAULT_TOLERANCE",
    "OnnxCheck",
    "check_onnx",
    "export_onnx",
    "onnx_session",
]

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 1e-4  # max |onnx - torch| / max |torch logits|
DEFAULT_OPSET = 18  # the oldest opset the dynamo exporter writes without converting


def export_onnx(
    net: nn.Module,
    path: str | os.PathLike[str],
    size: tuple[int, int] | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
) -> Path:
    """Write ``net`` (a :class:`StaticNetwork`) to ONNX for ``(B, 3, H, W)`` images.

    Uses torch's current exporter (``torch.onnx.export(..., dynamo=True)``: ``torch.export``
    and onnxscript), which needs ``onnx`` and ``onnxscript`` (the ``export`` extra;
    :class:`~dynviz.errors.MissingExtraError` without them). The graph's input is ``images`` and
    its output ``logits``. Without ``size`` the height and width are dynamic (any size; the
    padding to a multiple of the largest stride is part of the graph); with ``size`` the graph
    takes that size only. The batch axis is dynamic when ``dynamic_batch``.
    """
    require("onnx", extra="export", purpose="ONNX export")
    require("onnxscript", extra="export", purpose="ONNX export")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    param = next(net.parameters())
    stride = int(getattr(getattr(net, "config", None), "max_stride", 32))
    # an example of neither size 1 nor the stride itself (torch.export specialises 0/1 sizes)
    example_size = size if size is not None else (2 * stride, 2 * stride)
    example = torch.zeros(2, 3, *example_size, dtype=param.dtype, device=param.device)
    axes: dict[int, Any] = {}
    if dynamic_batch:
        axes[0] = torch.export.Dim("batch")
    if size is None:
        axes[2], axes[3] = torch.export.Dim("height"), torch.export.Dim("width")
    net = net.eval()
    quiet = _DropTorchvisionNotes()
    registry = logging.getLogger(_ONNX_REGISTRY_LOGGER)
    registry.addFilter(quiet)
    # onnxscript's graph passes log each rewrite at INFO; they show only with dynviz at DEBUG
    passes = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript")]
    levels = [pass_logger.level for pass_logger in passes]
    if not logger.isEnabledFor(logging.DEBUG):
        for pass_logger in passes:
            if pass_logger.level == logging.NOTSET:
                pass_logger.setLevel(logging.WARNING)
    try:
        with torch.no_grad():
            torch.onnx.export(
                net,
                (example,),
                str(path),
                input_names=["images"],
                output_names=["logits"],
                opset_version=opset,
                dynamo=True,
                dynamic_shapes={"images": axes} if axes else None,
                external_data=False,
                verbose=False,
            )
    finally:
        registry.removeFilter(quiet)
        for pass_logger, level in zip(passes, levels, strict=True):
            pass_logger.setLevel(level)
    logger.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


_ONNX_REGISTRY_LOGGER = "torch.onnx._internal.exporter._registration"


class _DropTorchvisionNotes(logging.Filter):
    """The exporter notes at WARNING, once per op, that torchvision (which dynviz never uses) is
    not installed; only those records are dropped, nothing else of torch's."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "torchvision is not installed" not in record.getMessage()


@dataclass(frozen=True)
class OnnxCheck:
    """onnxruntime against PyTorch on the same images."""

    max_abs_diff: float
    logit_scale: float  # max |logit| of the PyTorch output
    tolerance: float
    provider: str

    @property
    def relative(self) -> float:
        return self.max_abs_diff / max(self.logit_scale, 1e-12)

    @property
    def ok(self) -> bool:
        return self.relative < self.tolerance


def onnx_session(path: str | os.PathLike[str], *, threads: int | None = None) -> Any:
    """An onnxruntime CPU session (:class:`~dynviz.errors.MissingExtraError`, an ImportError,
    when onnxruntime is missing)."""
    ort = require("onnxruntime", extra="export", purpose="running ONNX files")

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_onnx(
    path: str | os.PathLike[str],
    net: nn.Module,
    images: torch.Tensor,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    threads: int | None = None,
) -> OnnxCheck:
    """Run the ONNX file with onnxruntime and compare with ``net(images)`` in PyTorch.

    Passes when ``max |onnx - torch| / max |torch logits| < tolerance`` (float32 kernels that
    sum in a different order agree to about 1e-6 of the logit scale).
    """
    session = onnx_session(path, threads=threads)
    with torch.inference_mode():
        expected = net(images).float()
    got = session.run(["logits"], {"images": images.detach().cpu().float().numpy()})[0]
    diff = (torch.from_numpy(got) - expected.cpu()).abs().max().item()
    return OnnxCheck(
        max_abs_diff=float(diff),
        logit_scale=float(expected.abs().max()),
        tolerance=tolerance,
        provider=session.get_providers()[0],
    )
