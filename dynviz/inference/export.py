"""Static export: BN folding, a route as a plain straight-line module, and ONNX.

The three ideas live in their own modules; this one gathers their public names for
``dynviz export`` and for users who import them from here:

* :mod:`dynviz.inference.folding`: :func:`fold_batchnorm` folds every BatchNorm that directly
  follows a conv into that conv (inference semantics: the running statistics);
* :mod:`dynviz.inference.static`: :class:`StaticNetwork` re-expresses a route as a straight-line
  module graph that shares the network's weights, with the helpers that build one;
* :mod:`dynviz.inference.onnx`: :func:`export_onnx` writes it to ONNX with torch's current
  exporter (``dynamo=True``), and :func:`check_onnx` runs onnxruntime on it and compares logits.
"""

from __future__ import annotations

from dynviz.inference.folding import ExportError, count_batchnorm, fold_batchnorm
from dynviz.inference.onnx import (
    DEFAULT_OPSET,
    DEFAULT_TOLERANCE,
    OnnxCheck,
    check_onnx,
    export_onnx,
    onnx_session,
)
from dynviz.inference.static import (
    StaticNetwork,
    load_for_export,
    route_in_space,
    static_network,
    transfer_to_route,
)

__all__ = [
    "DEFAULT_OPSET",
    "DEFAULT_TOLERANCE",
    "ExportError",
    "OnnxCheck",
    "StaticNetwork",
    "check_onnx",
    "count_batchnorm",
    "export_onnx",
    "fold_batchnorm",
    "load_for_export",
    "onnx_session",
    "route_in_space",
    "static_network",
    "transfer_to_route",
]
