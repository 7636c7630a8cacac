"""Checkpoints: atomic saving, safe loading, and rebuilding a network from one.

A checkpoint is a ``dict`` of plain Python types and tensors, so it loads with
``torch.load(path, map_location="cpu", weights_only=True)``; loading never unpickles arbitrary
objects (a file carrying one is refused with a :class:`CheckpointError`, nothing is executed).

Keys::

    format          "dynviz-checkpoint"
    format_version  1
    dynviz_version  the dynviz version that wrote it
    torch_version   the torch version that wrote it
    config          RoutingSpaceConfig.to_dict() of the network
    route           Route.to_dict() with the space inline, or None (dynamic network)
    num_classes     number of output classes
    model           the network's state_dict
    optimizer       the optimiser's state_dict, or None
    iteration       iterations completed
    best_metric     best validation mIoU so far, or None
    rng             RNG states (torch, cuda, numpy, python) as tensors / lists of ints
    train_args      the training arguments (TrainConfig as a dict), or None
    metrics         the last evaluation's figures, or None

Files are written atomically: a temporary file in the same folder, flushed and fsynced, then
``os.replace``-d over the target, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynviz.errors import BadFileError
from dynviz.model.config import RoutingSpaceConfig
from dynviz.model.network import RoutingNetwork
from dynviz.model.route import Route
from dynviz.model.torchfile import TorchFileError, load_torch_file
from dynviz.version import __version__

__all__ = [
    "run_data_spec",
    "BEST",
    "FORMAT",
    "FORMAT_VERSION",
    "LATEST",
    "CheckpointError",
    "atomic_write",
    "capture_rng",
    "find_checkpoint",
    "load_checkpoint",
    "load_model",
    "make_checkpoint",
    "model_from_checkpoint",
    "remove_stale_temporaries",
    "restore_rng",
    "route_to_dict",
    "save_checkpoint",
    "sha256_file",
]

logger = logging.getLogger(__name__)

FORMAT = "dynviz-checkpoint"
FORMAT_VERSION = 1
LATEST = "checkpoint_latest.pt"
BEST = "checkpoint_best.pt"
_REQUIRED = ("format", "format_version", "config", "route", "model")


class CheckpointError(BadFileError):
    """A file is not a usable dynviz checkpoint; the message names it."""


# ------------------------------------------------------------------------------------ hashing
def sha256_file(path: str | os.PathLike[str], *, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# -------------------------------------------------------------------------------------- RNG
def capture_rng() -> dict[str, Any]:
    """The torch, CUDA, numpy and python RNG states as tensors and lists of ints."""
    # the legacy global numpy state is what third-party code draws from: save it as it is
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "state": [int(v) for v in internal],
            "gauss_next": gauss_next,
        },
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Restore the states saved by :func:`capture_rng`."""
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    np_state = state["numpy"]
    legacy = (
        np_state["kind"],
        np_state["keys"].numpy().astype(np.uint32),
        int(np_state["pos"]),
        int(np_state["has_gauss"]),
        float(np_state["cached_gaussian"]),
    )
    np.random.set_state(legacy)  # noqa: NPY002
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"]), py["gauss_next"]))


# ------------------------------------------------------------------------------------ writing
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Any) -> Path:
    """Write a file atomically: ``write(handle)`` into a temporary file beside ``path``, flush,
    fsync, then ``os.replace``.

    Args:
        path: the target file.
        write: a callable taking the open binary handle.

    Returns:
        The target path.

    Raises:
        OSError: the folder is missing, read-only or full; the message names ``path``.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual mode
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        raise OSError(err.errno, f"cannot write {path}: {err.strerror or err}") from err
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files a killed :func:`atomic_write` left behind in ``folder``.

    A SIGKILL between ``mkstemp`` and ``os.replace`` leaves ``.NAME.XXXX.tmp``; it is never
    read as a checkpoint (the target keeps its last whole version), and a resumed run
    removes it here. Returns the paths removed.
    """
    removed = []
    for name in (LATEST, BEST):
        for stale in Path(folder).glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
            removed.append(stale)
    if removed:
        logger.info("removed %d temporary file(s) left by a killed run in %s", len(removed), folder)
    return removed


def route_to_dict(route: Route | None) -> dict[str, Any] | None:
    """``route.to_dict()`` with its space inline (self-contained), or None."""
    if route is None:
        return None
    data = route.to_dict()
    data["space"] = route.space.to_dict()  # self-contained: no dependence on the zoo later
    return data


def make_checkpoint(
    model: RoutingNetwork,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    iteration: int = 0,
    best_metric: float | None = None,
    train_args: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    rng: bool = True,
) -> dict[str, Any]:
    """Assemble the checkpoint dict of ``model`` (unwrapped from DDP).

    Args:
        model: the network.
        optimizer: its optimiser, whose state is saved.
        iteration: iterations completed.
        best_metric: best validation mIoU so far.
        train_args: training arguments (plain types).
        metrics: the last evaluation's figures (plain types).
        rng: whether to save the RNG states.
    """
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dynviz_version": __version__,
        "torch_version": str(torch.__version__),
        "config": model.config.to_dict(),
        "route": route_to_dict(model.route),
        "num_classes": model.config.num_classes,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "iteration": int(iteration),
        "best_metric": None if best_metric is None else float(best_metric),
        "rng": capture_rng() if rng else None,
        "train_args": train_args,
        "metrics": metrics,
    }


def save_checkpoint(path: str | os.PathLike[str], checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` atomically to ``path`` (see :func:`atomic_write`)."""
    out = atomic_write(path, lambda handle: torch.save(checkpoint, handle))
    logger.debug("wrote %s (iteration %s)", out, checkpoint.get("iteration"))
    return out


# ------------------------------------------------------------------------------------ loading
def find_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The checkpoint file of ``path``: the file itself, or in a run directory
    ``checkpoint_best.pt`` if present, else ``checkpoint_latest.pt``.

    Raises:
        CheckpointError: nothing usable at ``path``.
    """
    path = Path(path)
    if path.is_dir():
        for name in (BEST, LATEST):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path}: run directory holds no {BEST} or {LATEST}")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or run directory")
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and check a checkpoint file with ``weights_only=True`` (on the CPU).

    Raises:
        CheckpointError: unreadable, pickled objects, not a dynviz checkpoint, or a newer format;
            the message names the file.
    """
    path = Path(path)
    try:
        data = load_torch_file(path)
    except TorchFileError as err:
        if err.needs_code is None:
            raise CheckpointError(str(err)) from None
        raise CheckpointError(
            f"{path}: refused to load: not a plain-tensor checkpoint (its pickle needs code to "
            f"load: {err.needs_code})"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a dynviz checkpoint (no format tag {FORMAT!r})")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise CheckpointError(f"{path}: dynviz checkpoint lacks {', '.join(missing)}")
    version = data["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is newer than this dynviz "
            f"understands ({FORMAT_VERSION}); upgrade dynviz"
        )
    return data


def model_from_checkpoint(data: dict[str, Any], *, source: str = "checkpoint") -> RoutingNetwork:
    """Rebuild the network of a loaded checkpoint dict and load its weights.

    Raises:
        CheckpointError: the config, route or weights do not fit (the message names ``source``).
    """
    try:
        config = RoutingSpaceConfig.from_dict(data["config"], source=f"{source}: config")
        route = None
        if data["route"] is not None:
            route = Route.from_dict(data["route"], source=f"{source}: route")
        model = RoutingNetwork(config, route=route)
        model.load_state_dict(data["model"])
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{source}: cannot rebuild the network: {err}") from None
    return model


def load_model(
    path: str | os.PathLike[str],
) -> tuple[RoutingNetwork, dict[str, Any]]:
    """Rebuild a network from a checkpoint file or a run directory.

    Args:
        path: a ``.pt`` checkpoint, or a run directory (its ``checkpoint_best.pt`` if present,
            else ``checkpoint_latest.pt``).

    Returns:
        ``(model, meta)``: the network in eval mode on the CPU, and the checkpoint's metadata
        (everything but the weights, optimiser and RNG states) plus ``path`` and ``sha256``.

    Raises:
        CheckpointError: see :func:`load_checkpoint`.
    """
    file = find_checkpoint(path)
    data = load_checkpoint(file)
    model = model_from_checkpoint(data, source=str(file))
    model.eval()
    meta = {k: v for k, v in data.items() if k not in ("model", "optimizer", "rng")}
    meta["path"] = str(file)
    meta["sha256"] = sha256_file(file)
    return model, meta


def run_data_spec(meta: dict[str, Any]) -> str | None:
    """The data spec a run was validated (else trained) on, from its checkpoint meta."""
    args = meta.get("train_args") or {}
    return args.get("val_data") or args.get("data")
