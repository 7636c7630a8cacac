"""The records sidecar (``records.json``) as one typed object.

Every reader of records asks :class:`Sidecar` (``records.sidecar``) for what the recording was:
the model config, the static route of the network and the route forced onto it, the checkpoint,
the data set and split, the input sizes, the test-time augmentation, the cost counting of the
GMACs columns, the image count and versions. Unknown keys (written by
a newer dynviz, or added by hand) are kept in :attr:`Sidecar.extra` and written back unchanged.

The JSON layout is the one :func:`dynviz.record.record` has always written::

    {"format": "dynviz-records", "format_version": 1, "name": ..., "config": {...},
     "route": {...} | null, "forced_route": {...} | null, "dynamic": true, "params": ...,
     "checkpoint": {"path": ..., "sha256": ..., "iteration": ...} | null, "data": ...,
     "split": ..., "num_classes": ..., "class_names": [...], "threshold": ...,
     "counting": "paper" | "official",
     "input_sizes": [[H, W], ...], "num_images": ..., "world_size": ..., ...}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

from dynviz.errors import BadFileError
from dynviz.gates import GateGraph, routing_graph
from dynviz.model import ConfigError, RoutingSpaceConfig
from dynviz.model.cost import Counting
from dynviz.model.route import Route

__all__ = ["CheckpointRef", "RecordError", "Sidecar", "SidecarError"]


class RecordError(BadFileError):
    """Records are missing, malformed, or do not belong to a model; the message names the file
    or the key."""


class SidecarError(RecordError):
    """A sidecar value has the wrong type or does not parse; the message names the file and
    key."""


@dataclass(frozen=True)
class CheckpointRef:
    """The checkpoint a recording ran (as ``dynviz record`` found it)."""

    path: str | None = None
    sha256: str | None = None
    iteration: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "iteration": self.iteration, **self.extra}


def _typed(data: Mapping[str, Any], key: str, kinds: tuple[type, ...], where: str) -> Any:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in kinds:
        raise SidecarError(f"{where}: {key!r} must be {kinds[0].__name__}, not {value!r}")
    if not isinstance(value, kinds):
        raise SidecarError(f"{where}: {key!r} must be {kinds[0].__name__}, not {value!r}")
    return value


@dataclass(frozen=True)
class Sidecar:
    """What a records folder says about its recording.

    Routes and the config are kept as written (``route_dict``...) and parsed on first use
    (:attr:`config`, :attr:`route`, :attr:`forced_route`), so a folder whose route no longer
    resolves can still be listed.
    """

    name: str | None = None
    config_dict: dict[str, Any] | None = None
    route_dict: dict[str, Any] | None = None
    forced_route_dict: dict[str, Any] | None = None
    dynamic: bool = False
    params: int | None = None
    checkpoint: CheckpointRef | None = None
    data: str | None = None
    split: str | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] = ()
    threshold: float | None = None
    counting: Counting = Counting.PAPER  # of real_gmacs / expected_gmacs; older records: paper
    input_sizes: tuple[tuple[int, int], ...] = ()
    num_images: int | None = None
    world_size: int | None = None
    dynviz_version: str | None = None
    torch_version: str | None = None
    created: str | None = None
    updated: str | None = None
    aug_dict: dict[str, Any] | None = None
    graph_dict: dict[str, Any] | None = None  # a gate-graph recording's GateGraph (key "graph")
    builder: str | None = None  # the entry point ``module:function`` that built the model
    format: str | None = None
    format_version: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    where: str = field(default="records", compare=False)

    # ------------------------------------------------------------------------- reading
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "records") -> Sidecar:
        """Parse a sidecar mapping; ``where`` (the file) prefixes error messages.

        Raises:
            SidecarError: a value of the wrong type (naming the key).
        """
        if not isinstance(data, Mapping):
            raise SidecarError(f"{where}: the sidecar is not a JSON object")

        def mapping(key: str) -> dict[str, Any] | None:
            value = _typed(data, key, (dict,), where)
            return dict(value) if value is not None else None

        checkpoint = mapping("checkpoint")
        ref = None
        if checkpoint:
            iteration = _typed(checkpoint, "iteration", (int,), f"{where}: checkpoint")
            path = checkpoint.get("path")
            ref = CheckpointRef(
                path=str(path) if path is not None else None,
                sha256=_typed(checkpoint, "sha256", (str,), f"{where}: checkpoint"),
                iteration=iteration,
                extra={
                    k: v for k, v in checkpoint.items() if k not in ("path", "sha256", "iteration")
                },
            )
        sizes = data.get("input_sizes") or []
        try:
            input_sizes = tuple((int(h), int(w)) for h, w in sizes)
        except (TypeError, ValueError):
            raise SidecarError(
                f"{where}: 'input_sizes' must be a list of [height, width], not {sizes!r}"
            ) from None
        names = data.get("class_names") or []
        if not isinstance(names, list):
            raise SidecarError(f"{where}: 'class_names' must be a list, not {names!r}")
        threshold = _typed(data, "threshold", (float, int), where)
        counting = _typed(data, "counting", (str,), where)
        try:
            counting = Counting(counting) if counting is not None else Counting.PAPER
        except ValueError:
            raise SidecarError(
                f"{where}: 'counting' must be one of "
                f"{', '.join(c.value for c in Counting)}, not {counting!r}"
            ) from None
        known = {f.name for f in fields(cls)} - {
            "config_dict",
            "route_dict",
            "forced_route_dict",
            "aug_dict",
            "graph_dict",
        }
        known |= {"config", "route", "forced_route", "checkpoint_sha256", "aug", "graph"}
        return cls(
            name=_str_or_none(data.get("name")),
            config_dict=mapping("config"),
            route_dict=mapping("route"),
            forced_route_dict=mapping("forced_route"),
            dynamic=_dynamic(data, where),
            params=_typed(data, "params", (int,), where),
            checkpoint=ref,
            data=_str_or_none(data.get("data")),
            split=_str_or_none(data.get("split")),
            num_classes=_typed(data, "num_classes", (int,), where),
            class_names=tuple(str(n) for n in names),
            threshold=float(threshold) if threshold is not None else None,
            counting=counting,
            input_sizes=input_sizes,
            num_images=_typed(data, "num_images", (int,), where),
            world_size=_typed(data, "world_size", (int,), where),
            dynviz_version=_str_or_none(data.get("dynviz_version")),
            torch_version=_str_or_none(data.get("torch_version")),
            created=_str_or_none(data.get("created")),
            updated=_str_or_none(data.get("updated")),
            aug_dict=mapping("aug"),
            graph_dict=mapping("graph"),
            builder=_typed(data, "builder", (str,), where),
            format=_str_or_none(data.get("format")),
            format_version=_typed(data, "format_version", (int,), where),
            extra={k: v for k, v in data.items() if k not in known},
            where=where,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON mapping (the layout of the module docstring; :attr:`extra` included)."""
        out: dict[str, Any] = {
            "format": self.format,
            "format_version": self.format_version,
            "name": self.name,
            "config": self.config_dict,
            "route": self.route_dict,
            "forced_route": self.forced_route_dict,
            "dynamic": self.dynamic,
            "params": self.params,
            "checkpoint": self.checkpoint.to_dict() if self.checkpoint else None,
            "checkpoint_sha256": self.checkpoint.sha256 if self.checkpoint else None,
            "data": self.data,
            "split": self.split,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "threshold": self.threshold,
            "counting": self.counting.value,
            "input_sizes": [list(s) for s in self.input_sizes],
            "num_images": self.num_images,
            "world_size": self.world_size,
            "dynviz_version": self.dynviz_version,
            "torch_version": self.torch_version,
            "created": self.created,
        }
        if self.updated is not None:
            out["updated"] = self.updated
        if self.aug_dict is not None:
            out["aug"] = self.aug_dict
        if self.graph_dict is not None:  # gate-graph recordings only: routing-space sidecars
            out["graph"] = self.graph_dict  # keep their layout
            out["builder"] = self.builder
        out.update(self.extra)
        return out

    def identity(self) -> dict[str, Any]:
        """What identifies the experiment, by sidecar key: records of another identity must not
        be appended to these (they would mix two experiments)."""
        return {
            "config": self.config_dict,
            "route": self.route_dict,
            "forced_route": self.forced_route_dict,
            "checkpoint_sha256": self.checkpoint.sha256 if self.checkpoint else None,
            "data": self.data,
            "split": self.split,
            "aug": self.aug_dict,
            "counting": self.counting.value,
            **({"graph": self.graph_dict} if self.graph_dict else {}),
        }

    # ------------------------------------------------------------------ parsed values
    @property
    def kind(self) -> str:
        """``"gate-graph"`` for a recording of any gated network (:mod:`dynviz.gates`),
        ``"routing-space"`` for this paper's networks."""
        return "gate-graph" if self.graph_dict is not None else "routing-space"

    @cached_property
    def graph(self) -> GateGraph:
        """The recorded network's :class:`dynviz.gates.GateGraph`: the sidecar's ``graph`` for
        a gate-graph recording, the routing space's graph (:func:`dynviz.gates.routing_graph`)
        otherwise."""
        if self.graph_dict is None:
            return routing_graph(self.config, name=self.name)
        try:
            return GateGraph.from_dict(self.graph_dict, where=f"{self.where}: graph")
        except ConfigError as err:
            raise SidecarError(str(err)) from None

    @cached_property
    def config(self) -> RoutingSpaceConfig:
        """The routing space of the recorded model."""
        if self.config_dict is None:
            if self.graph_dict is not None:
                raise SidecarError(
                    f"{self.where}: a gate-graph recording ({self.name or 'a gated network'}) "
                    "has no routing space; this reading applies to routing-space records only"
                )
            raise SidecarError(f"{self.where}: the sidecar has no model config")
        try:
            return RoutingSpaceConfig.from_dict(self.config_dict, source=f"{self.where}: config")
        except ConfigError as err:
            raise SidecarError(str(err)) from None

    @cached_property
    def route(self) -> Route | None:
        """The static route of the recorded network (None for a network with gates)."""
        return self._route(self.route_dict, "route")

    @cached_property
    def forced_route(self) -> Route | None:
        """The route forced onto the network while recording (None when none was)."""
        return self._route(self.forced_route_dict, "forced route")

    def _route(self, data: dict[str, Any] | None, what: str) -> Route | None:
        if not data:
            return None
        try:
            return Route.from_dict(data, source=f"{self.where}: {what}")
        except ConfigError as err:
            raise SidecarError(str(err)) from None

    @cached_property
    def aug(self) -> Any:
        """The test-time augmentation of the recording (:class:`dynviz.inference.tta.Augment`), or
        None (one row per image)."""
        if not self.aug_dict:
            return None
        from dynviz.inference.tta import Augment, AugmentError

        try:
            return Augment(
                scales=tuple(self.aug_dict.get("scales", (1.0,))),
                flip=bool(self.aug_dict.get("flip", False)),
            )
        except (AugmentError, TypeError) as err:
            raise SidecarError(f"{self.where}: aug: {err}") from None

    @property
    def ran_route(self) -> Route | None:
        """The route that ran: the forced route if one was given, else the static network's,
        else None (the gates chose)."""
        return self.forced_route if self.forced_route_dict else self.route

    @property
    def route_name(self) -> str | None:
        """The name of the route that ran (None when the gates chose or it has none)."""
        data = self.forced_route_dict or self.route_dict or {}
        return str(data["name"]) if data.get("name") else None

    @property
    def routing(self) -> str:
        """``"forced"``, ``"static"`` or ``"dynamic"``: how the routes were chosen."""
        if self.forced_route_dict:
            return "forced"
        return "static" if self.route_dict else "dynamic"

    @property
    def input_size(self) -> tuple[int, int] | None:
        """The first input size recorded (None before any image)."""
        return self.input_sizes[0] if self.input_sizes else None

    @property
    def trained(self) -> bool:
        """Whether the recorded model came from a checkpoint."""
        return self.checkpoint is not None

    @property
    def data_label(self) -> str:
        """``"<data> [<split>]"`` for tables and captions."""
        return f"{self.data} [{self.split}]"


def _dynamic(data: Mapping[str, Any], where: str) -> bool:
    """Whether the gates chose the routes; a sidecar without the key (written by hand) says so
    when it names no route."""
    if "dynamic" not in data:
        return not data.get("route") and not data.get("forced_route")
    return bool(_typed(data, "dynamic", (bool,), where))


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
