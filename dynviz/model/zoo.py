"""The model zoo: every network dynviz knows by name, and what each one costs.

Three sources, one namespace:

- **presets**, the YAML files of ``models/`` (or ``$DYNVIZ_MODELS``; data, not code): a file with
  a ``space`` key is a route spec (a static network: the paper's special cases carry their Table 1
  numbers), any other a routing-space config. Finding them is :mod:`dynviz.model.presets`, below
  the route module;
- **route builders** (:data:`ROUTE_BUILDERS`): functions that draw a route in any routing space
  (U-Net-like, FCN-like, Common-like), for the demo and the bench; by name they draw in
  :data:`DEFAULT_SPACE`, and ``build_model(space, route=name)`` draws them in another;
- YAML paths.

:func:`list_models` names them (shell-style filter as timm's), :func:`build_model` /
:func:`create_model` build any of them (the latter optionally with a checkpoint's weights),
:func:`load_model` rebuilds a trained run; :func:`model_cost` is a model's analytic cost by
component (:class:`ModelCost`), and :func:`special_cases`, :func:`special_case_routes` and
:func:`routing_spaces` are the catalogue ``dynviz flops``, ``dynviz models`` and the explorer's
special-case and latency pages show. The top level re-exports the model API
(``dynviz.create_model``).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dynviz.model.checkpoint import CheckpointError, find_checkpoint, load_checkpoint
from dynviz.model.checkpoint import load_model as load_checkpoint_model
from dynviz.model.config import ConfigError, RoutingSpaceConfig, _read_yaml_mapping, split_training
from dynviz.model.cost import Counting, cost_table, param_table
from dynviz.model.network import RoutingNetwork
from dynviz.model.presets import (
    is_preset,
    load_space,
    locate,
    models_dir,
    preset_names,
    preset_path,
)
from dynviz.model.route import Route
from dynviz.units import GIGA

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "COMPONENTS",
    "DEFAULT_SPACE",
    "ROUTE_BUILDERS",
    "ModelCost",
    "build_model",
    "build_route",
    "common_like_route",
    "create_model",
    "fcn_like",
    "fcn_like_route",
    "is_preset",
    "list_models",
    "load_model",
    "load_route",
    "load_space",
    "load_spec",
    "model_cost",
    "model_kind",
    "models_dir",
    "preset_names",
    "routing_spaces",
    "special_case_routes",
    "special_case_table",
    "special_cases",
    "training_defaults",
    "unet_like",
    "unet_like_route",
]

COMPONENTS = ("stem", "cell", "gate", "transform", "node", "decoder")

DEFAULT_SPACE = "layer16"
"""The routing space a route builder draws in when it is built by name alone (the paper's)."""


# ---------------------------------------------------------------------------- route builders
def unet_like(config: RoutingSpaceConfig) -> list[list[int]]:
    """U-Net in a space (Fig. 3b): down to the deepest scale, back up to 1/4, and a keep chain at
    each finer scale from the encoder to the decoder (the skip connections); strides per chain."""
    layers = config.num_layers
    depth = min(config.num_scales - 1, layers // 2)
    main = [min(i, depth, layers - i) for i in range(layers + 1)]
    chains = [main] + [[min(i, s, layers - i) for i in range(layers + 1)] for s in range(depth)]
    return [[config.stride(s) for s in chain] for chain in chains]


def fcn_like(config: RoutingSpaceConfig) -> list[list[int]]:
    """FCN-32s in a space (Fig. 3a): one path straight down to the coarsest scale, ending there;
    strides per layer."""
    deepest = config.num_scales - 1
    return [[config.stride(min(i, deepest)) for i in range(config.num_layers + 1)]]


def unet_like_route(config: RoutingSpaceConfig) -> Route:
    """:func:`unet_like` as a route of ``config``."""
    return Route.from_chains(
        config,
        unet_like(config),
        name="unet-like",
        description=f"special case: U-Net-like route (Fig. 3b) in the {config.name} space",
    )


def fcn_like_route(config: RoutingSpaceConfig) -> Route:
    """:func:`fcn_like` as a route of ``config``."""
    return Route.from_chains(
        config,
        fcn_like(config),
        name="fcn-like",
        description=f"special case: FCN-32s-like single path (Fig. 3a) in the {config.name} space",
    )


def common_like_route(config: RoutingSpaceConfig) -> Route:
    """A synthetic stand-in for an extracted Common net (Table 1).

    Three chains share the first 1/4 cells, then split: an encoder-decoder (U) chain goes down
    to 1/32, stays there and comes back up to 1/4 over the last three layers; a 1/8 stream and
    a 1/16 stream keep their scale. Every scale runs and three scales reach the decoder. Needs
    a 4-scale space with at least 7 layers.
    """
    n = config.num_layers + 1
    if config.num_scales != 4 or n < 8:
        raise ConfigError(
            f"common-like: the route needs 4 scales and at least 7 layers; {config.name!r} has "
            f"{config.num_scales} scales and {config.num_layers} layers"
        )
    u = [4, 4, 8, 16] + [32] * (n - 7) + [16, 8, 4]
    eighth = [4, 4] + [8] * (n - 2)
    sixteenth = [4, 4, 8] + [16] * (n - 3)
    return Route.from_chains(
        config,
        [u, eighth, sixteenth],
        name="common-like",
        description="synthetic Common-like net: U chain, 1/8 and 1/16 streams",
    )


ROUTE_BUILDERS: dict[str, Callable[[RoutingSpaceConfig], Route]] = {
    "common-like": common_like_route,
    "fcn-like": fcn_like_route,
    "unet-like": unet_like_route,
}
"""Route builders by model name: each draws its route in the routing space it is given."""


def _builder_name(ref: object) -> str | None:
    """``ref`` when it names a route builder and no preset of that name shadows it."""
    if isinstance(ref, str) and ref in ROUTE_BUILDERS and preset_path(ref) is None:
        return ref
    return None


def build_route(
    name: str, space: RoutingSpaceConfig | str | os.PathLike[str] = DEFAULT_SPACE
) -> Route:
    """The route of builder ``name`` (:data:`ROUTE_BUILDERS`) drawn in ``space``.

    Raises:
        ConfigError: no builder of that name (the message lists them).
    """
    if name not in ROUTE_BUILDERS:
        raise ConfigError(f"no route builder {name!r} (builders: {', '.join(ROUTE_BUILDERS)})")
    config = space if isinstance(space, RoutingSpaceConfig) else load_space(space)
    return ROUTE_BUILDERS[name](config)


# ---------------------------------------------------------------------------- specs by name
def load_spec(ref: str | os.PathLike[str]) -> RoutingSpaceConfig | Route:
    """Load a preset, a route builder's route (in :data:`DEFAULT_SPACE`) or a YAML file: a
    routing-space config or a route spec."""
    builder = _builder_name(ref)
    if builder is not None:
        return build_route(builder)
    path = locate(ref)
    data = _read_yaml_mapping(path)
    if "space" in data:
        return Route.from_dict(data, source=str(path), base_dir=path.parent)
    return RoutingSpaceConfig.from_dict(data, source=str(path))


def load_route(ref: str | os.PathLike[str]) -> Route:
    """Load a route spec (a preset or YAML file with a ``space`` key, or a route builder's
    route); a routing-space config is refused, naming the reference."""
    loaded = load_spec(ref)
    if not isinstance(loaded, Route):
        raise ConfigError(f"{ref}: not a route spec (no 'space' key)")
    return loaded


def training_defaults(ref: str | os.PathLike[str]) -> dict[str, float]:
    """The training defaults a preset or YAML file carries (its ``training:`` section, e.g.
    Dynamic-A's ``budget_lambda: 0.8``, ``budget_mu: 0.1``); empty for a route spec."""
    if _builder_name(ref) is not None:
        return {}
    path = locate(ref)
    data = _read_yaml_mapping(path)
    if "space" in data:
        return {}
    return split_training(data, source=str(path))[1]


def list_models(pattern: str = "*") -> list[str]:
    """The zoo's model names, sorted: the presets of ``models/`` (or ``$DYNVIZ_MODELS``) and the
    route builders; ``pattern`` is a shell-style filter as timm's (``"dynamic-*"``)."""
    names = sorted({*preset_names(), *ROUTE_BUILDERS})
    return [name for name in names if fnmatch.fnmatchcase(name, pattern)]


def build_model(
    spec: str | os.PathLike[str] | RoutingSpaceConfig | Route,
    /,
    *,
    route: Route | str | os.PathLike[str] | None = None,
    **overrides: object,
) -> RoutingNetwork:
    """Build a network from a model name (:func:`list_models`), a YAML path, a config or a route.

    Args:
        spec: ``"layer16"``, ``"unet-like"``, ``"models/fcn32s.yaml"``, a
            :class:`RoutingSpaceConfig` or a :class:`Route`. A route spec gives a static network
            (no gates).
        route: build the static network of this route in the space of ``spec``; a route
            builder's name draws its route in that space.
        **overrides: config fields to change, e.g. ``num_classes=21``.
    """
    if isinstance(spec, (str, os.PathLike)):
        spec = load_spec(spec)
    builder = _builder_name(route)
    if builder is not None:
        route = build_route(builder, spec.space if isinstance(spec, Route) else spec)
    elif isinstance(route, (str, os.PathLike)):
        route = load_route(route)
    if isinstance(spec, Route):
        route, spec = spec, spec.space
    config = spec.replace(**overrides) if overrides else spec
    return RoutingNetwork(config, route=route)


def create_model(
    name: str | os.PathLike[str],
    *,
    num_classes: int | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
) -> RoutingNetwork:
    """The network of a zoo name or YAML path, optionally with a checkpoint's weights.

    Args:
        name: a preset (:func:`list_models`) or a YAML file (routing space or route spec).
        num_classes: output classes (default: the checkpoint's, else the preset's).
        checkpoint: a dynviz checkpoint file or run directory whose weights fit ``name``'s
            network; loaded strictly (every tensor, each of the same shape).

    Returns:
        The network on the CPU: in eval mode with a checkpoint, else freshly initialised in
        train mode (as ``torch.nn`` modules start).

    Raises:
        ConfigError: an unknown name or a bad YAML file (named).
        CheckpointError: the checkpoint is unreadable, or its weights or class count do not fit
            the network (the message names the file and the first tensors that differ).
    """
    if checkpoint is None:
        overrides = {} if num_classes is None else {"num_classes": int(num_classes)}
        return build_model(name, **overrides)
    file = find_checkpoint(checkpoint)
    data = load_checkpoint(file)
    saved = data.get("num_classes")
    if num_classes is not None and saved is not None and int(num_classes) != int(saved):
        raise CheckpointError(
            f"{file}: predicts {saved} classes, not num_classes={num_classes}; leave num_classes "
            "out to take the checkpoint's"
        )
    classes = int(num_classes if num_classes is not None else saved or 0) or None
    model = build_model(name, **({} if classes is None else {"num_classes": classes}))
    own = model.state_dict()
    state = data["model"]
    missing = [k for k in own if k not in state]
    unused = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unused or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} of other shape ({', '.join(shapes[:2])})")
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:2])})")
        if unused:
            parts.append(f"{len(unused)} not in {name} ({', '.join(unused[:2])})")
        raise CheckpointError(
            f"{file}: its weights do not fit {name}: tensors {'; '.join(parts)}; "
            "use dynviz.load_model to rebuild the checkpoint's own network"
        )
    model.load_state_dict(state)
    return model.eval()


def load_model(path: str | os.PathLike[str]) -> RoutingNetwork:
    """The trained network of a checkpoint file or run directory (its ``checkpoint_best.pt``,
    else ``checkpoint_latest.pt``), rebuilt from the network the checkpoint records, in eval
    mode on the CPU. :func:`dynviz.model.checkpoint.load_model` also returns the checkpoint's
    metadata.

    Raises:
        CheckpointError: nothing usable at ``path`` (the message names it).
    """
    return load_checkpoint_model(path)[0]


# ---------------------------------------------------------------------------- costs
def model_kind(spec: RoutingSpaceConfig | Route) -> str:
    """``static`` for a route spec (no gates), else ``dynamic`` (gated routing space) or ``fix``
    (every path open, no gates: Network-Fix)."""
    if isinstance(spec, Route):
        return "static"
    return "dynamic" if spec.has_gates else "fix"


@dataclass(frozen=True)
class ModelCost:
    name: str
    kind: str  # dynamic | fix | static
    params: int
    macs: int
    breakdown: dict[str, int]
    params_breakdown: dict[str, int]
    size: tuple[int, int]
    counting: str
    counted_size: tuple[int, int] | None = None  # None: ``size`` (see CostTable.counted_size)
    paper: dict[str, float] | None = None
    notes: str = ""

    @property
    def gmacs(self) -> float:
        return self.macs / GIGA

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "model": self.name,
            "kind": self.kind,
            "params": self.params,
            "gmacs": self.gmacs,
            "macs": self.macs,
            "size": list(self.size),
            "counted_size": list(self.counted_size or self.size),
            "counting": self.counting,
            "unit": "GMACs (1e9 multiply-adds; the paper's GFLOPs)",
            "breakdown_gmacs": {k: v / GIGA for k, v in self.breakdown.items()},
            "params_breakdown": self.params_breakdown,
        }
        if self.paper:
            out["paper"] = self.paper
        return out


def model_cost(
    spec: RoutingSpaceConfig | Route,
    *,
    size: tuple[int, int] = (1024, 2048),
    counting: Counting | str = Counting.PAPER,
) -> ModelCost:
    """Cost of a dynamic model with every path open, or of a static route network."""
    route = spec if isinstance(spec, Route) else None
    config = spec.space if isinstance(spec, Route) else spec
    table = cost_table(config, size, counting=counting, route=route)
    params = param_table(config, route=route)
    breakdown = {k: v for k, v in table.by_component().items()}
    return ModelCost(
        name=route.name if route is not None else config.name,
        kind=model_kind(spec),
        params=params.total,
        macs=table.total(),
        breakdown={k: breakdown[k] for k in COMPONENTS if k in breakdown},
        params_breakdown=params.as_dict(),
        size=size,
        counting=Counting(counting).value,
        counted_size=table.counted_size,
        paper=dict(route.meta.get("paper", {})) if route is not None else None,
        notes=str(route.meta.get("notes", "")) if route is not None else "",
    )


def special_cases(
    *, size: tuple[int, int] = (1024, 2048), counting: Counting | str = Counting.PAPER
) -> list[ModelCost]:
    """Every route spec in the zoo that carries the paper's Table 1 numbers."""
    out = []
    for name in preset_names():
        spec = load_spec(name)
        if isinstance(spec, Route) and "paper" in spec.meta:
            out.append(model_cost(spec, size=size, counting=counting))
    return out


def special_case_table(
    *, size: tuple[int, int] = (1024, 2048), counting: Counting | str = Counting.PAPER
) -> pd.DataFrame:
    """:func:`special_cases` as a frame: each case's parameters (M) and GMACs at ``size`` beside
    the paper's Table 1 numbers, and its notes."""
    import pandas as pd  # here: ``import dynviz.model`` loads torch only

    rows = []
    for cost in special_cases(size=size, counting=counting):
        paper = cost.paper or {}
        rows.append(
            {
                "model": cost.name,
                "params (M)": cost.params / 1e6,
                "GMACs": cost.gmacs,
                "paper params (M)": paper.get("params_m"),
                "paper GFLOPs": paper.get("gflops"),
                "paper mIoU": paper.get("miou"),
                "notes": " ".join(cost.notes.split()),
            }
        )
    return pd.DataFrame(rows)


def special_case_routes(space: RoutingSpaceConfig | None = None) -> dict[str, Route]:
    """``{preset name: route}`` of the zoo's special cases (route specs with the paper's
    numbers), only those drawn in ``space`` when given."""
    out = {}
    for name in preset_names():
        spec = load_spec(name)
        if isinstance(spec, Route) and "paper" in spec.meta:
            if space is None or spec.space == space:
                out[name] = spec
    return out


def routing_spaces() -> dict[str, RoutingSpaceConfig]:
    """``{preset name: config}`` of the zoo's routing spaces (route specs left out)."""
    out = {}
    for name in preset_names():
        spec = load_spec(name)
        if isinstance(spec, RoutingSpaceConfig):
            out[name] = spec
    return out
