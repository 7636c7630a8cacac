"""The official DynamicRouting checkpoints (Megvii-BaseDetection/DynamicRouting, dl_lib) in dynviz.

An official checkpoint is a dict whose ``"model"`` holds the state dict (optimizer, scheduler and
iteration may be present), keys optionally prefixed by DDP's ``module.``. Every tensor maps one to
one onto a dynviz network (docs/official.md has the table):

(official key -> dynviz key; ``*`` is a BN tensor: weight, bias, running_mean, running_var,
num_batches_tracked)::

    backbone.stem.stem_1.weight, .norm.*              stem.conv1.weight, stem.bn1.*
    backbone.stem.stem_2.0.weight, .1.weight, .1.norm.*  stem.sep1.dw.weight, .pw.weight, .bn.*
    backbone.stem.stem_3.*                            stem.sep2.*
    backbone.init_layer.REST                          cells.0_0.REST
    backbone.all_cell_list.I.J.REST                   cells.{I+1}_{J}.REST
    REST cell_ops._ops.0.op.{0,1,1.norm,2,3,3.norm}   op.{dw1,pw1,bn1,dw2,pw2,bn2}
    REST res_up.1.weight, res_up.1.norm.*             up.conv.weight, up.bn.*
    REST res_down.1.weight, res_down.1.norm.*         down.conv.weight, down.bn.*
    REST gate_conv_beta.{0,0.norm,2}                  gate.{conv1,bn,conv2}
    REST gate_weights_beta (gate-free: all ones)      (nothing)
    sem_seg_head.layer_decoder_list.S.weight, .norm.*  decoder.lateral.S.conv.weight, .bn.*
    sem_seg_head.predictor.{weight,bias}              decoder.predictor.{weight,bias}

A converted network carries ``semantics: official`` in its config, so it computes the official
code's function everywhere (``dynviz.model.config.Semantics``).

Files load with ``weights_only=True``; one that needs arbitrary unpickling is refused unless the
caller passes ``trust_pickle=True``, which runs whatever code the file carries.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dynviz.errors import BadFileError
from dynviz.model import RoutingNetwork, RoutingSpaceConfig, build_model, load_spec
from dynviz.model.checkpoint import load_model, make_checkpoint, save_checkpoint, sha256_file
from dynviz.model.config import ConfigError, GateKind, Semantics
from dynviz.model.route import Route
from dynviz.model.torchfile import TorchFileError, load_torch_file

__all__ = [
    "OFFICIAL_BUDGET_NORMALISER",
    "OfficialFormatError",
    "convert_official",
    "convert_to_official",
    "dynviz_key",
    "guess_model",
    "is_official_state",
    "load_official_state",
    "official_key",
    "official_network",
    "official_state_dict",
]

logger = logging.getLogger(__name__)

OFFICIAL_BUDGET_NORMALISER = 26_300e6  # FLOPS_ALL = 26300 MFLOPs of every official config (MACs)

# (official, dynviz) pairs; a pair ending in "." maps a prefix (the BN tensors follow it)
_STEM_DECODER = (
    ("backbone.stem.stem_1.weight", "stem.conv1.weight"),
    ("backbone.stem.stem_1.norm.", "stem.bn1."),
    ("backbone.stem.stem_2.0.weight", "stem.sep1.dw.weight"),
    ("backbone.stem.stem_2.1.weight", "stem.sep1.pw.weight"),
    ("backbone.stem.stem_2.1.norm.", "stem.sep1.bn."),
    ("backbone.stem.stem_3.0.weight", "stem.sep2.dw.weight"),
    ("backbone.stem.stem_3.1.weight", "stem.sep2.pw.weight"),
    ("backbone.stem.stem_3.1.norm.", "stem.sep2.bn."),
    ("sem_seg_head.predictor.weight", "decoder.predictor.weight"),
    ("sem_seg_head.predictor.bias", "decoder.predictor.bias"),
)
_CELL = (
    ("cell_ops._ops.0.op.0.weight", "op.dw1.weight"),
    ("cell_ops._ops.0.op.1.weight", "op.pw1.weight"),
    ("cell_ops._ops.0.op.1.norm.", "op.bn1."),
    ("cell_ops._ops.0.op.2.weight", "op.dw2.weight"),
    ("cell_ops._ops.0.op.3.weight", "op.pw2.weight"),
    ("cell_ops._ops.0.op.3.norm.", "op.bn2."),
    ("res_up.1.weight", "up.conv.weight"),
    ("res_up.1.norm.", "up.bn."),
    ("res_down.1.weight", "down.conv.weight"),
    ("res_down.1.norm.", "down.bn."),
    ("gate_conv_beta.0.weight", "gate.conv1.weight"),
    ("gate_conv_beta.0.norm.", "gate.bn."),
    ("gate_conv_beta.2.weight", "gate.conv2.weight"),
    ("gate_conv_beta.2.bias", "gate.conv2.bias"),
)
_GATE_FREE = "gate_weights_beta"  # the all-ones buffer of an official cell without a gate
_OFFICIAL_CELL = re.compile(r"^backbone\.(?:init_layer|all_cell_list\.(\d+)\.(\d+))\.(.+)$")
_DYNVIZ_CELL = re.compile(r"^cells\.(\d+)_(\d+)\.(.+)$")
_OFFICIAL_LATERAL = re.compile(r"^sem_seg_head\.layer_decoder_list\.(\d+)\.(weight|norm\.(.+))$")
_DYNVIZ_LATERAL = re.compile(r"^decoder\.lateral\.(\d+)\.(conv\.weight|bn\.(.+))$")


class OfficialFormatError(BadFileError):
    """A file is not an official checkpoint that maps completely; the message names it."""


def _translate(key: str, pairs: tuple[tuple[str, str], ...], *, reverse: bool) -> str | None:
    for official, ours in pairs:
        src, dst = (ours, official) if reverse else (official, ours)
        if src.endswith(".") and key.startswith(src):
            return dst + key[len(src) :]
        if key == src:
            return dst
    return None


def dynviz_key(key: str) -> str | None:
    """The dynviz key of an official state-dict key (``module.`` already stripped); None for a
    key that carries no weight (the all-ones gate buffer of a gate-free network) or maps to
    nothing."""
    if m := _OFFICIAL_CELL.match(key):
        rest = m.group(3)
        if rest == _GATE_FREE:
            return None
        layer, scale = (0, 0) if m.group(1) is None else (int(m.group(1)) + 1, int(m.group(2)))
        mapped = _translate(rest, _CELL, reverse=False)
        return None if mapped is None else f"cells.{layer}_{scale}.{mapped}"
    if m := _OFFICIAL_LATERAL.match(key):
        tail = "conv.weight" if m.group(2) == "weight" else f"bn.{m.group(3)}"
        return f"decoder.lateral.{m.group(1)}.{tail}"
    return _translate(key, _STEM_DECODER, reverse=False)


def official_key(key: str) -> str:
    """The official state-dict key of a dynviz key (inverse of :func:`dynviz_key`).

    Raises:
        OfficialFormatError: the key has no official counterpart.
    """
    if m := _DYNVIZ_CELL.match(key):
        layer, scale = int(m.group(1)), int(m.group(2))
        rest = _translate(m.group(3), _CELL, reverse=True)
        if rest is not None:
            if layer == 0:
                return f"backbone.init_layer.{rest}"
            return f"backbone.all_cell_list.{layer - 1}.{scale}.{rest}"
    elif m := _DYNVIZ_LATERAL.match(key):
        tail = "weight" if m.group(2) == "conv.weight" else f"norm.{m.group(3)}"
        return f"sem_seg_head.layer_decoder_list.{m.group(1)}.{tail}"
    else:
        mapped = _translate(key, _STEM_DECODER, reverse=True)
        if mapped is not None:
            return mapped
    raise OfficialFormatError(f"dynviz tensor {key!r} has no counterpart in the official network")


# ------------------------------------------------------------------------------------- reading
def is_official_state(state: Mapping[str, Any]) -> bool:
    """Whether a state dict has official keys (``backbone.`` / ``sem_seg_head.``)."""
    return any(
        str(k).removeprefix("module.").startswith(("backbone.", "sem_seg_head.")) for k in state
    )


def _read_official(path: Path, *, trust_pickle: bool) -> Any:
    try:
        return load_torch_file(path, weights_only=not trust_pickle)
    except TorchFileError as err:
        if err.needs_code is None:
            raise OfficialFormatError(str(err)) from None
        raise OfficialFormatError(
            f"{path}: refused to load: a torch checkpoint whose pickle needs code to load "
            f"({err.needs_code}), which could run anything it carries; if you trust its source, "
            "pass --trust-pickle (trust_pickle=True), which runs that code"
        ) from None


def _official_state(path: Path, data: Any) -> dict[str, torch.Tensor]:
    if isinstance(data, dict) and data.get("format") == "dynviz-checkpoint":
        raise OfficialFormatError(f"{path}: already a dynviz checkpoint, not an official one")
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, Mapping) or not is_official_state(state):
        raise OfficialFormatError(
            f"{path}: not an official DynamicRouting checkpoint (expected a dict whose 'model' "
            "holds keys starting with backbone. and sem_seg_head.)"
        )
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            try:
                value = torch.as_tensor(value)  # numpy arrays (pickled files only)
            except (TypeError, ValueError, RuntimeError):
                raise OfficialFormatError(f"{path}: {key!r} is not a tensor") from None
        out[str(key).removeprefix("module.")] = value
    return out


def _iteration(data: Any) -> int:
    """The iteration a dl_lib checkpoint records (0 when it records none)."""
    value = data.get("iteration") if isinstance(data, dict) else None
    try:
        return max(0, int(value)) if value is not None else 0
    except (TypeError, ValueError):
        return 0


def load_official_state(
    path: str | os.PathLike[str], *, trust_pickle: bool = False
) -> dict[str, torch.Tensor]:
    """The official-key state dict of an official checkpoint, ``module.`` prefixes stripped.

    Args:
        path: a dl_lib checkpoint (a dict with ``"model"``) or a bare official state dict.
        trust_pickle: load with ``weights_only=False``: RUNS ANY CODE THE FILE CARRIES. Only for
            a file from a source you trust, and only when the safe load refuses it.

    Raises:
        OfficialFormatError: unreadable, refused by the safe loader, or not official; one line
            naming the file and what it is (:mod:`dynviz.model.torchfile`).
    """
    path = Path(path)
    return _official_state(path, _read_official(path, trust_pickle=trust_pickle))


def _layers(state: Mapping[str, torch.Tensor]) -> int:
    layers = [int(m.group(1)) for k in state if (m := _OFFICIAL_CELL.match(k)) and m.group(1)]
    return max(layers) + 1 if layers else 0


def _has_gates(state: Mapping[str, torch.Tensor]) -> bool:
    return any(".gate_conv_beta." in k for k in state)


def guess_model(state: Mapping[str, torch.Tensor]) -> str:
    """The preset of an official state dict, from its keys (Layer16 vs Layer33, gates or not).

    Raises:
        ConfigError: the weights cannot tell (full and small gates have the same tensors): the
            message names the choices for ``--model``.
    """
    layers = _layers(state)
    gates = _has_gates(state)
    if layers == 16 and not gates:
        return "layer16-fix"
    if layers == 16:
        raise ConfigError(
            "a Layer16 network with gates: full gates (Dynamic-Raw) and small gates "
            "(Dynamic-A/B/C) have the same tensors; choose with --model: layer16 (full gates), "
            "dynamic-a, dynamic-b or dynamic-c (small gates)"
        )
    if layers == 33 and gates:
        logger.info("33 layers with gates: Layer33 with full gates (the official release)")
        return "layer33"
    if layers == 33:
        return "layer33-fix"
    raise ConfigError(
        f"{layers} routing layers: no preset matches; choose with --model (a preset or YAML "
        "with that many layers)"
    )


def _config(model: str | os.PathLike[str] | RoutingSpaceConfig) -> RoutingSpaceConfig:
    if isinstance(model, RoutingSpaceConfig):
        return model
    if str(model) == "layer33-fix":  # no preset: Layer33 without gates
        return load_spec("layer33").replace(name="layer33-fix", gate=GateKind.NONE)  # type: ignore[union-attr]
    spec = load_spec(model)
    if isinstance(spec, Route):
        raise OfficialFormatError(f"{model}: a route spec; official networks are dynamic")
    return spec


def official_network(
    state: Mapping[str, torch.Tensor],
    *,
    model: str | os.PathLike[str] | RoutingSpaceConfig | None = None,
    source: str = "official checkpoint",
) -> RoutingNetwork:
    """A dynviz network (official semantics) holding the tensors of an official state dict.

    Args:
        state: official keys (see :func:`load_official_state`).
        model: the preset, YAML or config to map onto (default: :func:`guess_model`); its class
            count follows the predictor's.
        source: names the file in errors.

    Raises:
        OfficialFormatError: the keys do not map completely or a shape differs; the message
            names the first missing and unexpected keys and the preset tried.
    """
    name = model if model is not None else guess_model(state)
    config = _config(name)
    predictor = state.get("sem_seg_head.predictor.weight")
    classes = int(predictor.shape[0]) if predictor is not None else config.num_classes
    config = config.replace(semantics=Semantics.OFFICIAL, num_classes=classes)
    network = build_model(config)
    expected = network.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, value in state.items():
        ours = dynviz_key(key)
        if ours is None and key.endswith(_GATE_FREE) and not config.has_gates:
            continue  # gate-free official cells carry an all-ones buffer: no weight
        if ours is None or ours not in expected:
            unexpected.append(key)
        else:
            mapped[ours] = value
    missing = [official_key(k) for k in expected if k not in mapped]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
        raise OfficialFormatError(
            f"{source}: the tensors do not map completely onto {config.name!r} "
            f"(L={config.num_layers}, gate {config.gate.value}): {'; '.join(parts)}"
        )
    for key, value in mapped.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise OfficialFormatError(
                f"{source}: {official_key(key)} has shape {tuple(value.shape)}, "
                f"{config.name!r} expects {tuple(expected[key].shape)}"
            )
    network.load_state_dict({k: v.to(expected[k].dtype) for k, v in mapped.items()})
    return network.eval()


def convert_official(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | None = None,
    trust_pickle: bool = False,
) -> tuple[RoutingNetwork, Path]:
    """Convert an official checkpoint into a dynviz checkpoint (official semantics).

    The checkpoint records the official file's ``iteration`` (0 when it has none), which
    :func:`convert_to_official` writes back.

    Returns:
        ``(network, path)``: the network and the checkpoint written (atomically).
    """
    raw = _read_official(Path(checkpoint), trust_pickle=trust_pickle)
    state = _official_state(Path(checkpoint), raw)
    network = official_network(state, model=model, source=str(checkpoint))
    data = make_checkpoint(network, iteration=_iteration(raw), rng=False)
    data["source"] = {
        "format": "official",
        "path": str(checkpoint),
        "sha256": sha256_file(checkpoint),
    }
    path = save_checkpoint(out, data)
    name = network.config.name
    logger.info("converted %s -> %s (%s, official semantics)", checkpoint, path, name)
    return network, path


# ------------------------------------------------------------------------------------- writing
def official_state_dict(network: RoutingNetwork) -> dict[str, torch.Tensor]:
    """The official-key state dict of a dynamic dynviz network.

    Raises:
        OfficialFormatError: the network has no official counterpart (a static route, or a
            space the official code cannot build).
    """
    config = network.config
    if network.route is not None:
        raise OfficialFormatError(
            f"{config.name!r} is a static network (a route): the official code builds only "
            "the full routing space"
        )
    if config.num_scales != 4:
        raise OfficialFormatError(
            f"{config.name!r} has {config.num_scales} scales; the official code has 4"
        )
    if not config.official:
        logger.warning(
            "%s computes the paper semantics; the official code will compute its own function "
            "on these weights (unpadded stem conv and more: docs/official.md)",
            config.name,
        )
    out = {official_key(k): v.detach().cpu() for k, v in network.state_dict().items()}
    if not config.has_gates:
        for layer, scale in config.cells:
            g = len(config.directions(layer, scale))
            prefix = (
                "backbone.init_layer"
                if layer == 0
                else f"backbone.all_cell_list.{layer - 1}.{scale}"
            )
            out[f"{prefix}.{_GATE_FREE}"] = torch.ones(1, g, 1, 1)
    return out


def convert_to_official(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write a dynviz checkpoint as an official dl_lib checkpoint
    (``{"model": ..., "iteration": N}``, N the iterations the checkpoint records)."""
    from dynviz.model.checkpoint import atomic_write

    network, meta = load_model(checkpoint)
    data = {"model": official_state_dict(network), "iteration": int(meta.get("iteration") or 0)}
    path = atomic_write(out, lambda handle: torch.save(data, handle))
    logger.info("wrote %s (official keys, %d tensors)", path, len(data["model"]))
    return path
