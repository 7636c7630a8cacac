"""Any gated network from a Python entry point, with or without its weights.

An entry point is ``module:function`` (``module`` importable: installed, or on ``sys.path``)
or ``path/to/file.py:function``; the function builds the network (``nn.Module``) and, for a
network nobody wrote for dynviz, attaches its gates with :func:`dynviz.gates.watch`::

    # mynets.py
    def skipnet(classes: int = 19) -> nn.Module:
        model = MySkipNet(classes)
        watch(model, {"layer1.0.gate": Sigmoid(macs=2.4e6)}, base_macs=3.1e6)
        return model

    load_entry("mynets:skipnet")                              # untrained
    load_entry("mynets:skipnet", checkpoint="weights.pt")     # a bare state_dict
    save_gated_checkpoint(model, "skipnet.pt", builder="mynets:skipnet", kwargs={"classes": 19})
    load_entry(None, checkpoint="skipnet.pt")                 # a checkpoint with its builder

A checkpoint with its builder is a plain mapping (it loads with ``torch.load(...,
weights_only=True)``; nothing in it runs)::

    format          "dynviz-gated-checkpoint"
    format_version  1
    builder         "module:function"
    kwargs          the builder's keyword arguments (JSON types)
    state_dict      the network's weights
    static          only in a static network's file (``dynviz extract --static-out``): ``{"keep":
                    {point: [options]}}``; :func:`load_entry` builds the gated network, calls its
                    ``static(keep)`` and loads these weights into what that returns

The module of an entry point is imported by name (``pkgutil.resolve_name``) or from its file:
this is the one place dynviz imports code the user names, and the code runs as any import does.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import inspect
import json
import logging
import os
import pkgutil
import re
import sys
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dynviz.gates.collect import gate_graph_of
from dynviz.model import ConfigError
from dynviz.model.checkpoint import FORMAT as ROUTING_FORMAT
from dynviz.model.checkpoint import CheckpointError, atomic_write
from dynviz.model.torchfile import TorchFileError, load_torch_file
from dynviz.version import __version__

__all__ = [
    "GATED_FORMAT",
    "GATED_FORMAT_VERSION",
    "GatedCheckpoint",
    "canonical_spec",
    "class_kwargs",
    "entry_builder",
    "is_entry_spec",
    "is_gated_checkpoint",
    "load_entry",
    "read_gated_checkpoint",
    "save_gated_checkpoint",
]

logger = logging.getLogger(__name__)

GATED_FORMAT = "dynviz-gated-checkpoint"
GATED_FORMAT_VERSION = 1

_NAME = r"[A-Za-z_]\w*"
_SPEC = re.compile(rf"^(?P<module>.+):(?P<attr>{_NAME}(?:\.{_NAME})*)$")
_MODULE = re.compile(rf"^{_NAME}(?:\.{_NAME})*$")


def _split(spec: str) -> tuple[str, str] | None:
    """``(module or file, attribute path)`` of an entry point, or None when ``spec`` is not one."""
    match = _SPEC.match(spec.strip()) if isinstance(spec, str) else None
    if match is None:
        return None
    module = match["module"]
    if module.endswith(".py") or _MODULE.match(module):
        return module, match["attr"]
    return None


def is_entry_spec(text: object) -> bool:
    """Whether ``text`` reads as an entry point (``module:function`` or ``file.py:function``)."""
    return isinstance(text, str) and _split(text) is not None


def _file_module(spec: str, file: Path) -> Any:
    """Import ``file`` once under a name of its own (the same module on every call)."""
    if not file.is_file():
        raise ConfigError(f"{spec}: no such file {file}")
    digest = hashlib.sha256(str(file).encode("utf-8")).hexdigest()[:12]
    name = f"_dynviz_entry_{re.sub(r'[^0-9A-Za-z_]', '_', file.stem)}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    found = importlib.util.spec_from_file_location(name, file)
    if found is None or found.loader is None:
        raise ConfigError(f"{spec}: {file} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(found)
    sys.modules[name] = module
    try:
        found.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        problem = f"{type(err).__name__}: {err}"
        raise ConfigError(f"{spec}: importing {file} failed ({problem})") from None
    return module


def _named_module(spec: str, name: str) -> Any:
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a parent package that is not there
        found = None
    if found is None:
        raise ConfigError(
            f"{spec}: no module named {name!r} (install it, put its folder on PYTHONPATH, or "
            "give a file: path/to/file.py:function)"
        )
    try:
        return pkgutil.resolve_name(name)
    except Exception as err:
        problem = f"{type(err).__name__}: {err}"
        raise ConfigError(f"{spec}: importing {name} failed ({problem})") from None


def class_kwargs(
    spec: str | None, num_classes: int | None, given: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``{"num_classes": num_classes}`` when the builder ``spec`` names takes a ``num_classes``
    argument that ``given`` (a checkpoint's kwargs) does not set, else ``{}``: the convention of
    torchvision's builders and dynviz's own (``dynviz.gates.skipnet:build_skipnet``), so that
    ``dynviz record`` and ``extract`` build the network for the data's classes."""
    if not spec or num_classes is None or "num_classes" in (given or {}):
        return {}
    try:
        parameters = inspect.signature(entry_builder(spec)).parameters
    except (TypeError, ValueError):  # a builtin or a callable without a signature
        return {}
    return {"num_classes": int(num_classes)} if "num_classes" in parameters else {}


def entry_builder(spec: str) -> Callable[..., Any]:
    """The function an entry point names.

    Raises:
        ConfigError: ``spec`` is not ``module:function``; the module cannot be found or
            imported; it has no such attribute (with close names); the attribute is not
            callable. The message starts with ``spec``.
    """
    parts = _split(spec)
    if parts is None:
        raise ConfigError(
            f"{spec!r} is not an entry point: expected module:function (e.g. mynets:skipnet) "
            "or path/to/file.py:function"
        )
    where, attr = parts
    module = (
        _file_module(spec, Path(where).expanduser().resolve())
        if where.endswith(".py")
        else _named_module(spec, where)
    )
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"{spec}: {where} has no {attr!r}{_close(part, target)}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(
            f"{spec}: {attr} is {type(target).__name__}, not a function that builds the model"
        )
    return target


def _close(name: str, owner: object) -> str:
    """`` (did you mean ...?)`` or the first few functions and classes of ``owner``."""
    known = [n for n in dir(owner) if not n.startswith("_") and callable(getattr(owner, n, None))]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if close:
        return f" (did you mean {', '.join(close)}?)"
    if not known:
        return ""
    more = f" and {len(known) - 8} more" if len(known) > 8 else ""
    return f"; it has {', '.join(sorted(known)[:8])}{more}"


def canonical_spec(spec: str) -> str:
    """``spec`` with a file path made absolute (what the sidecar keeps, so that the records
    rebuild the model from any folder)."""
    parts = _split(spec)
    if parts is None or not parts[0].endswith(".py"):
        return spec.strip()
    return f"{Path(parts[0]).expanduser().resolve()}:{parts[1]}"


# ------------------------------------------------------------------------------ checkpoints
@dataclass(frozen=True)
class GatedCheckpoint:
    """A checkpoint file for a gated network (see the module docstring).

    Attributes:
        path: the file.
        state_dict: the weights.
        builder: the entry point that builds the network (None: a bare state_dict).
        kwargs: the builder's keyword arguments.
        static: ``{point: options}`` of a static network's file, else None.
    """

    path: Path
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    builder: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    static: dict[str, tuple[str, ...]] | None = None


def _is_state_dict(data: object) -> bool:
    return (
        isinstance(data, Mapping)
        and bool(data)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items())
    )


def read_gated_checkpoint(path: str | os.PathLike[str]) -> GatedCheckpoint:
    """Read a checkpoint with its builder, or a bare state_dict (``weights_only``).

    Raises:
        CheckpointError: unreadable, not a torch file, a routing network's checkpoint, or
            neither form; the message names the file.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        data = load_torch_file(path)
    except TorchFileError as err:
        raise CheckpointError(str(err)) from None
    if isinstance(data, Mapping) and data.get("format") == ROUTING_FORMAT:
        raise CheckpointError(
            f"{path}: a routing network's checkpoint (record it without a builder: "
            f"dynviz record {path} ...)"
        )
    if isinstance(data, Mapping) and "state_dict" in data and "builder" in data:
        version = data.get("format_version", 1)
        if not isinstance(version, int) or version > GATED_FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: gated checkpoint format version {version!r} is newer than this dynviz "
                f"understands ({GATED_FORMAT_VERSION}); upgrade dynviz"
            )
        builder, kwargs, weights = data["builder"], data.get("kwargs") or {}, data["state_dict"]
        if not isinstance(builder, str) or not is_entry_spec(builder):
            raise CheckpointError(f"{path}: 'builder' must be module:function, not {builder!r}")
        if not isinstance(kwargs, Mapping):
            raise CheckpointError(f"{path}: 'kwargs' must be a mapping, not {kwargs!r}")
        if not (_is_state_dict(weights) or weights == {}):
            raise CheckpointError(f"{path}: 'state_dict' is not a mapping of names to tensors")
        static = data.get("static")
        keep = None
        if static is not None:
            if not isinstance(static, Mapping) or not isinstance(static.get("keep"), Mapping):
                raise CheckpointError(f"{path}: 'static' must be a mapping with 'keep'")
            keep = {str(p): tuple(str(o) for o in opts) for p, opts in static["keep"].items()}
        return GatedCheckpoint(path, dict(weights), builder, dict(kwargs), keep)
    if _is_state_dict(data):
        return GatedCheckpoint(path, dict(data))
    keys = list(data)[:5] if isinstance(data, Mapping) else None
    what = f"a mapping with keys {keys}" if keys is not None else type(data).__name__
    raise CheckpointError(
        f"{path}: neither a state_dict nor a checkpoint with its builder ({what}); write one "
        "with dynviz.gates.entry.save_gated_checkpoint"
    )


def _pickle_of(path: Path) -> bytes | None:
    """The pickle of a torch zip archive (its ``data.pkl``, without the tensors), or None
    when ``path`` is not one."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.rpartition("/")[2] == "data.pkl"]
            return archive.read(names[0]) if names else None
    except (OSError, zipfile.BadZipFile, KeyError):
        return None


def is_gated_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a checkpoint with its builder (False for anything else, unreadable
    files included: the caller's own reading reports those). A torch archive whose pickle names
    no ``builder`` and ``state_dict`` (a routing network's checkpoint) is told apart without
    loading its tensors."""
    path = Path(path)
    if not path.is_file():
        return False
    pickled = _pickle_of(path)
    if pickled is not None and not (b"builder" in pickled and b"state_dict" in pickled):
        return False
    try:
        return read_gated_checkpoint(path).builder is not None
    except (CheckpointError, OSError):
        return False


def _load_weights(model: nn.Module, weights: Mapping[str, torch.Tensor], where: str) -> None:
    """``model.load_state_dict(weights)``, refused with the keys that do not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [
        f"{k} {tuple(weights[k].shape)} in the file, {tuple(own[k].shape)} in the model"
        for k in own
        if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected {_few(unexpected)}")
    if shapes:
        problems.append(f"shape of {_few(shapes)}")
    if problems:
        raise CheckpointError(f"{where}: {'; '.join(problems)}")
    model.load_state_dict(weights)


def _few(items: list[str], shown: int = 4) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


def _build(spec: str, kwargs: Mapping[str, Any]) -> nn.Module:
    builder = entry_builder(spec)
    try:
        model = builder(**dict(kwargs))
    except (TypeError, ValueError) as err:
        problem = f"{type(err).__name__}: {err}"
        raise ConfigError(f"{spec}: building the model failed ({problem})") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{spec}: returned {type(model).__name__}, not a torch nn.Module")
    return model


def load_entry(
    spec: str | None,
    *,
    checkpoint: str | os.PathLike[str] | GatedCheckpoint | None = None,
    kwargs: Mapping[str, Any] | None = None,
    require_gates: bool = True,
) -> nn.Module:
    """Build a network from its entry point and load its weights.

    Args:
        spec: ``module:function`` or ``file.py:function``; None takes the checkpoint's builder.
        checkpoint: a ``.pt`` holding a bare state_dict, or a checkpoint with its builder
            (:func:`save_gated_checkpoint`; a static network's file gives the static network).
        kwargs: keyword arguments of the builder (over the checkpoint's own).
        require_gates: refuse a network that reports no gate graph (a static network's file
            is never refused).

    Returns:
        The network in eval mode, on the CPU.

    Raises:
        ConfigError: a bad entry point (see :func:`entry_builder`), a builder that does not
            return an ``nn.Module``, or a network without a gate graph.
        CheckpointError: an unreadable checkpoint, or weights that do not fit (naming the keys).
    """
    ckpt = (
        checkpoint
        if isinstance(checkpoint, GatedCheckpoint) or checkpoint is None
        else read_gated_checkpoint(checkpoint)
    )
    spec = spec or (ckpt.builder if ckpt is not None else None)
    if not spec:
        if ckpt is None:
            raise ConfigError("load_entry needs an entry point (module:function) or a checkpoint")
        raise ConfigError(
            f"{ckpt.path}: a bare state_dict names no builder; give the entry point "
            "(module:function) that builds the model"
        )
    merged = {**(ckpt.kwargs if ckpt is not None else {}), **dict(kwargs or {})}
    model = _build(spec, merged)
    if ckpt is not None and ckpt.static is not None:
        static = getattr(model, "static", None)
        if not callable(static):
            raise ConfigError(f"{spec}: {type(model).__name__} has no static(keep) method")
        model = static(ckpt.static)
        if not isinstance(model, nn.Module):
            raise ConfigError(f"{spec}: static(keep) returned {type(model).__name__}")
    elif require_gates:
        try:
            gate_graph_of(model)
        except ConfigError as err:
            raise ConfigError(f"{spec}: {err}") from None
    if ckpt is not None:
        _load_weights(model, ckpt.state_dict, f"{ckpt.path}: the weights do not fit {spec}")
    return model.eval()


def save_gated_checkpoint(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    builder: str,
    kwargs: Mapping[str, Any] | None = None,
    static: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights with the entry point that builds it, atomically (a temporary
    file renamed into place: never half a file).

    Args:
        model: the network (its ``state_dict`` is saved, on the CPU).
        path: the ``.pt`` file.
        builder: its entry point, ``module:function`` (a file path is made absolute).
        kwargs: the builder's keyword arguments (JSON types: they load without unpickling code).
        static: ``{point: options}`` when ``model`` is the static network a gated network's
            ``static(keep)`` returned (``dynviz extract --static-out``).

    Returns:
        The file written.

    Raises:
        ConfigError: ``builder`` is not an entry point, or ``kwargs`` are not JSON types.
        OSError: the file cannot be written (the message names it).
    """
    if not is_entry_spec(builder):
        raise ConfigError(f"builder {builder!r} is not an entry point (module:function)")
    kwargs = dict(kwargs or {})
    try:
        plain = json.loads(json.dumps(kwargs))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"builder kwargs must be JSON types (numbers, strings): {err}") from None
    data: dict[str, Any] = {
        "format": GATED_FORMAT,
        "format_version": GATED_FORMAT_VERSION,
        "dynviz_version": __version__,
        "torch_version": str(torch.__version__),
        "builder": canonical_spec(builder),
        "kwargs": plain,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    if static is not None:
        data["static"] = {"keep": {str(p): [str(o) for o in opts] for p, opts in static.items()}}
    path = Path(path)
    atomic_write(path, lambda handle: torch.save(data, handle))
    logger.debug("wrote %s (builder %s)", path, data["builder"])
    return path
