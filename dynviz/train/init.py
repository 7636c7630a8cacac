"""Starting a network from existing weights (``dynviz train --init``): a dynviz checkpoint or an
official DynamicRouting checkpoint; tensors whose name and shape fit are copied, the others are
skipped and listed, as detectron2 and mmseg do when fine-tuning (e.g. from the official
ImageNet-pretrained Fix backbones: the gates then start fresh)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from dynviz.interop.official import OfficialFormatError, dynviz_key, load_official_state
from dynviz.model import RoutingNetwork
from dynviz.model.checkpoint import FORMAT, CheckpointError, find_checkpoint

__all__ = ["InitReport", "init_from"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InitReport:
    """What :func:`init_from` loaded into a network.

    Attributes:
        source: the file read, and its kind (``dynviz`` or ``official``).
        loaded: the network's tensors taken from the file.
        mismatched: ``(key, file shape, network shape)`` of tensors skipped for their shape
            (another class count's predictor, another width).
        missing: the network's tensors the file lacks (they keep their initialisation).
        unused: the file's tensors the network has no place for.
    """

    source: str
    kind: str
    loaded: tuple[str, ...]
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]
    missing: tuple[str, ...]
    unused: tuple[str, ...]


def init_from(model: RoutingNetwork, path: str | os.PathLike[str]) -> InitReport:
    """Start ``model`` from the weights of a dynviz checkpoint (or run directory) or an official
    DynamicRouting checkpoint: every tensor whose name and shape fit is copied; the others are
    skipped and listed (logged), as detectron2 and mmseg do when fine-tuning.

    Raises:
        CheckpointError: the file is neither, or not one tensor fits.
    """
    file = find_checkpoint(path)
    try:
        data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception:  # the loaders below name the problem
        data = None
    if isinstance(data, dict) and data.get("format") == FORMAT:
        state, kind = data.get("model"), "dynviz"
        if not isinstance(state, dict):
            raise CheckpointError(f"{file}: dynviz checkpoint lacks model")
        unused = [k for k in state if k not in model.state_dict()]
    else:
        try:
            official = load_official_state(file)
        except OfficialFormatError as err:
            raise CheckpointError(
                f"{file}: neither a dynviz nor an official checkpoint ({err})"
            ) from None
        state, unused, kind = {}, [], "official"
        for key, value in official.items():
            ours = dynviz_key(key)
            if ours is None:
                if not key.endswith("gate_weights_beta"):
                    unused.append(key)
            else:
                state[ours] = value
        unused += [k for k in state if k not in model.state_dict()]
    own = model.state_dict()
    take, mismatched = {}, []
    for key, value in state.items():
        if key not in own:
            continue
        if tuple(value.shape) != tuple(own[key].shape):
            mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            take[key] = value.to(own[key].dtype)
    if not take:
        raise CheckpointError(
            f"{file}: no tensor fits {model.config.name!r}; nothing to start from"
        )
    model.load_state_dict(take, strict=False)
    missing = [k for k in own if k not in take and k not in {m[0] for m in mismatched}]
    report = InitReport(
        str(file), kind, tuple(take), tuple(mismatched), tuple(missing), tuple(unused)
    )
    logger.info("initialised %d of %d tensors from %s (%s)", len(take), len(own), file, kind)
    for key, theirs, ours in mismatched:
        logger.info("  skipped %s: shape %s in the file, %s in the network", key, theirs, ours)
    if missing:
        logger.info("  %d tensors start fresh (e.g. %s)", len(missing), ", ".join(missing[:3]))
    if unused:
        logger.info("  %d tensors of the file unused (e.g. %s)", len(unused), ", ".join(unused[:3]))
    return report
