"""Shared helpers of the explorer's gate-graph pages (issue 27): Gates, Common paths, Cost and
statistics.

Those pages read :attr:`dynviz.record.Records.decisions` (one row per image, gate point and
option) and :attr:`~dynviz.record.Records.graph`, which every records folder has: a gate-graph
recording of any gated network, and a routing-space recording (its cells are the points, its
paths the options, :mod:`dynviz.gates.routing`). The analyses are
:mod:`dynviz.analysis.gates`; here they are cached the way ``_state`` caches the rest (keyed by
the records' path and modification time, small frames as ``st.cache_data``) and drawn.

The decisions are read once per records folder and server, into the dense inputs x options
matrix every analysis computes on (:func:`matrix`, ``st.cache_resource``, shared by the three
pages and every session): the decision rows of 100,000 images of a routing space are 15 M, and
each page reading them again took 1-3 s.

:func:`page_does_not_apply` is the guard ``explorer.py`` asks before running a page: the pages
of the layer x scale routing space say in one line why they do not apply to gate-graph records
instead of failing on them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import _state
import numpy as np
import pandas as pd
import streamlit as st
import yaml

from dynviz.analysis.gates import (
    DecisionMatrix,
    common_plan,
    decision_matrix,
    decisions_vs_statistics,
    input_cost,
    option_usage,
    value_distribution,
)
from dynviz.gates import GateGraph, PointKind, routing_decisions
from dynviz.labels import readable

CORRELATED_INPUTS = 20_000
"""Inputs the page correlates over at most (drawn at random; ``dynviz analyze`` uses all)."""

GATE_PAGES = "Gates, Common paths and Cost and statistics"
"""The pages that apply to any gate graph, as the guard names them."""

ROUTING_ONLY: dict[str, str] = {
    "route_explorer": "Route explorer draws each image's route on the layer x scale routing space",
    "distributions": "Distributions shows the activation probabilities of the routing space's "
    "paths per layer, scale and direction",
    "common_networks": "Common networks extracts a static route of the layer x scale routing space",
    "special_cases": "Special cases draws the paper's static networks as routes of the layer x "
    "scale routing space",
    "routing_vs_scale": "Routing vs scale relates the scales (strides) of each image's paths to "
    "its object sizes",
    "latency": "Latency times the nodes (cells, gates, transforms) of a layer x scale routing "
    "space",
}
"""``{url path: what the page draws}`` of the pages that need a routing-space recording."""

_NOUNS = {
    PointKind.SKIP: ("skip point", "skip points"),
    PointKind.ROUTER: ("router", "routers"),
    PointKind.EXIT: ("early exit", "early exits"),
    PointKind.PATHS: ("cell", "cells"),
}


# ---------------------------------------------------------------------------- the guard
def points_text(graph: GateGraph) -> str:
    """The graph's points counted by kind: ``3 skip points, 1 router``."""
    counts = Counter(p.kind for p in graph)
    return ", ".join(
        f"{n} {_NOUNS[kind][0] if n == 1 else _NOUNS[kind][1]}" for kind, n in counts.items()
    )


def graph_text(records: Any) -> str:
    """``the gate graph 'skipnet' (3 skip points, 1 router)``."""
    return f"the gate graph '{records.graph.name}' ({points_text(records.graph)})"


def page_does_not_apply(url_path: str, ctx: _state.Context) -> str:
    """Why the page at ``url_path`` does not apply to the selected records ("" when it does):
    the routing-space pages (:data:`ROUTING_ONLY`) on gate-graph records."""
    what = ROUTING_ONLY.get(url_path)
    if what is None or ctx.records is None:
        return ""
    mtime = _state.stamp(ctx.records)
    if _state.routing_space(ctx.records, mtime):
        return ""
    records = _state.load_records(ctx.records, mtime)
    return (
        f"{what}; these records (`{ctx.catalog.label(ctx.records)}`) are of "
        f"{graph_text(records)}, not of a routing space: see {GATE_PAGES}."
    )


def routing_records(ctx: _state.Context) -> _state.Context:
    """``ctx`` with only the routing-space records folders among its readable ones: the pages
    that compare several records of the routing space offer no gate-graph records."""
    usable = tuple(p for p in ctx.usable if _state.routing_space(p, _state.stamp(p)))
    return replace(ctx, usable=usable) if usable != ctx.usable else ctx


# ------------------------------------------------------------------------ cached frames
@dataclass(frozen=True)
class GraphFacts:
    """What the pages say about a records folder's gate graph."""

    name: str
    kind: str  # "gate-graph" or "routing-space"
    points: pd.DataFrame  # point, kind, options, k, option MACs
    text: str  # points by kind
    inputs: int
    has_costs: bool
    base_macs: float | None
    all_run_gmacs: float | None  # every option of every point running
    missing_costs: tuple[str, ...]  # "point/option" without a cost (and "base" when unknown)


@st.cache_data(show_spinner=False, max_entries=64)
def graph_facts(path: str, mtime: float) -> GraphFacts:
    """The gate graph of a records folder, as a table and a few facts."""
    records = _state.load_records(path, mtime)
    graph = records.graph
    rows = [
        {
            "point": p.name,
            "kind": p.kind.value,
            "options": ", ".join(p.option_names),
            "k": p.k,
            "option MACs": ", ".join("?" if o.macs is None else f"{o.macs:.4g}" for o in p.options),
        }
        for p in graph
    ]
    missing = [f"{p.name}/{o.name}" for p in graph for o in p.options if o.macs is None]
    if graph.base_macs is None:
        missing.insert(0, "base")
    everything = graph.all_run_macs
    return GraphFacts(
        name=graph.name,
        kind=records.kind,
        points=pd.DataFrame(rows, columns=["point", "kind", "options", "k", "option MACs"]),
        text=points_text(graph),
        inputs=int(records.images["image_id"].nunique()),
        has_costs=graph.has_costs,
        base_macs=graph.base_macs,
        all_run_gmacs=None if everything is None else everything / 1e9,
        missing_costs=tuple(missing),
    )


def _order(graph: GateGraph) -> pd.DataFrame:
    """Every (point, option) of ``graph`` in its order, with the point's kind and the option's
    cost in GMACs (NaN when unknown)."""
    return pd.DataFrame(
        [
            (p.name, o.name, p.kind.value, np.nan if o.macs is None else o.macs / 1e9)
            for p in graph
            for o in p.options
        ],
        columns=["point", "option", "kind", "gmacs"],
    )


@st.cache_resource(show_spinner="Reading the decisions...", max_entries=4)
def matrix(path: str, mtime: float) -> DecisionMatrix:
    """``dynviz.analysis.gates.decision_matrix`` of the records' decisions, shared and
    read-only (100,000 images x 149 paths of a routing space: about 135 MB, no copy per call).

    A routing-space recording's gate rows are read as decisions here rather than through
    ``Records.decisions``, which would keep its 15 M-row frame on the shared records for as
    long as they are cached: the pages read only the matrix."""
    records = _state.load_records(path, mtime)
    if records.decision_frame is not None:
        return decision_matrix(records.decisions)
    return decision_matrix(routing_decisions(records.gates))


@st.cache_data(show_spinner="Counting the decisions...", max_entries=32)
def usage(path: str, mtime: float) -> pd.DataFrame:
    """``dynviz.analysis.gates.option_usage`` in the graph's order, with each point's kind and
    each option's cost (``gmacs``); an option no input reached has usage 0."""
    records = _state.load_records(path, mtime)
    found = option_usage(matrix(path, mtime))
    found = found.assign(point=found["point"].astype(str), option=found["option"].astype(str))
    out = _order(records.graph).merge(found, on=["point", "option"], how="left")
    out["usage"] = out["usage"].fillna(0.0)
    out["inputs"] = out["inputs"].fillna(0).astype(int)
    return out


@st.cache_data(show_spinner=False, max_entries=32)
def distribution(path: str, mtime: float, bins: int) -> pd.DataFrame:
    """``dynviz.analysis.gates.value_distribution`` with string point and option names."""
    frame = value_distribution(matrix(path, mtime), bins=bins)
    return frame.assign(point=frame["point"].astype(str), option=frame["option"].astype(str))


@dataclass(frozen=True)
class Plan:
    """The common plan at one threshold (``dynviz.analysis.gates.common_plan``) as the Common
    paths page shows it."""

    threshold: float
    table: pd.DataFrame  # point, kind, always, sometimes, never (option names joined)
    counts: dict[str, int]  # {"always": n, "sometimes": n, "never": n} options
    yaml: str
    keep_gmacs: float | None  # base + the always-used options (None without costs)
    lossless_gmacs: float | None  # base + every option some input used


def _joined(options: tuple[str, ...]) -> str:
    return ", ".join(options) if options else "-"


@st.cache_data(show_spinner=False, max_entries=64)
def plan(path: str, mtime: float, threshold: float) -> Plan:
    """The options used by more than ``threshold`` of the inputs (always), by none (never) and
    the rest; the plan as YAML; the cost of the kept options where the graph gives costs."""
    records = _state.load_records(path, mtime)
    graph = records.graph
    common = common_plan(matrix(path, mtime), graph, threshold=threshold)
    table = pd.DataFrame(
        [
            {
                "point": p.name,
                "kind": p.kind.value,
                "always": _joined(common.always[p.name]),
                "sometimes": _joined(common.sometimes[p.name]),
                "never": _joined(common.never[p.name]),
            }
            for p in graph
        ]
    )
    counts = {
        group: sum(len(v) for v in getattr(common, group).values())
        for group in ("always", "sometimes", "never")
    }
    doc = {"graph": graph.name, "records": records.label, **common.to_dict()}
    doc["keep"] = {p: list(o) for p, o in common.keep().items()}

    def cost(kept: dict[str, tuple[str, ...]]) -> float | None:
        if not graph.has_costs:
            return None
        macs = graph.option_macs()
        return (
            float(graph.base_macs) + sum(macs[(p, o)] for p, opts in kept.items() for o in opts)
        ) / 1e9

    return Plan(
        threshold=threshold,
        table=table,
        counts=counts,
        yaml=yaml.safe_dump(doc, sort_keys=False),
        keep_gmacs=cost(common.keep()),
        lossless_gmacs=cost(common.keep(lossless=True)),
    )


@st.cache_data(show_spinner=False, max_entries=32)
def costs(path: str, mtime: float) -> pd.DataFrame:
    """``dynviz.analysis.gates.input_cost``: per input, real and expected cost (GMACs) and the
    share of the cost with every option running."""
    records = _state.load_records(path, mtime)
    return input_cost(records.images, records.graph)


@st.cache_data(show_spinner="Correlating decisions with the input statistics...", max_entries=16)
def correlations(path: str, mtime: float) -> pd.DataFrame:
    """``dynviz.analysis.gates.decisions_vs_statistics``: Spearman's rho of every (point,
    option)'s value with every input statistic, largest ``|rho|`` first."""
    records = _state.load_records(path, mtime)
    frame = decisions_vs_statistics(
        matrix(path, mtime), records.images, graph=records.graph, max_inputs=CORRELATED_INPUTS
    )
    return frame.assign(point=frame["point"].astype(str), option=frame["option"].astype(str))


def statistics(path: str, mtime: float) -> list[str]:
    """The input statistics of the records (``stat_*`` columns, without the prefix)."""
    columns = _state.load_records(path, mtime).images.columns
    return [c.removeprefix("stat_") for c in columns if c.startswith("stat_")]


@st.cache_data(show_spinner=False, max_entries=64)
def decision_points(
    path: str, mtime: float, point: str, option: str, statistic: str
) -> pd.DataFrame:
    """Per input: ``image_id``, the option's ``value``, whether it ``ran`` (as text, the scatter's
    colour) and the statistic (``stat_<statistic>``)."""
    records = _state.load_records(path, mtime)
    rows = matrix(path, mtime).option_values(point, option)  # a column of the matrix
    column = "stat_" + statistic
    stats = records.images[["image_id", column]].assign(
        image_id=lambda f: f["image_id"].astype(str)
    )
    out = rows.assign(image_id=rows["image_id"].astype(str))
    out = out.merge(stats, on="image_id", how="inner")
    out["ran"] = np.where(out["ran"].astype(bool), "ran", "did not run")
    return out.dropna(subset=["value", column]).reset_index(drop=True)


def stat_label(statistic: str) -> str:
    """A statistic's readable name (``object_count`` -> ``objects``)."""
    return readable("stat_" + statistic)
