"""The one reachability module: hand-checked cases, and agreement with every user of it (route
validation, pruning, the cost model's batched propagation, what the network computes)."""

from __future__ import annotations

import random

import pytest
import torch

import dynviz
from dynviz.analysis.common import prune_dangling
from dynviz.model import Direction, Route, RouteError
from dynviz.model.cost import propagate
from dynviz.model.topology import dangling, edges, live, reach
from dynviz.model.zoo import load_space

K, U, D = Direction.KEEP, Direction.UP, Direction.DOWN


@pytest.fixture(scope="module")
def tiny():
    return load_space("tiny")  # L = 4, 4 scales


def _random_subsets(config, count: int, seed: int) -> list[frozenset]:
    rng = random.Random(seed)
    paths = list(config.paths)
    return [
        frozenset(p for p in paths if rng.random() < rng.choice([0.3, 0.6, 0.9]))
        for _ in range(count)
    ]


def test_edges_are_in_forward_order(tiny):
    seen = set()
    for edge in edges(tiny):
        assert edge.source == (0, 0) or edge.source in seen  # inputs before outputs
        if edge.target is not None:
            seen.add(edge.target)
    assert len(edges(tiny)) == len(tiny.paths)
    assert sum(e.target is None for e in edges(tiny)) == len(tiny.scales_in_layer(4))


def test_a_chain_with_a_skipped_cell(tiny):
    # 1/4 -> 1/8 (layer 0 down), 1/8 keeps to layer 2, where nothing is open: X passes through
    # to (3, 1), which goes up to (4, 0) and the decoder.
    opened = {(0, 0, D), (1, 1, K), (3, 1, U), (4, 0, K)}
    r = reach(tiny, opened)
    assert r.fed == {(0, 0), (1, 1), (2, 1), (3, 1), (4, 0)}
    assert r.ran == {(0, 0), (1, 1), (3, 1), (4, 0)}
    assert r.passed == {(2, 1)}
    assert r.paths == opened
    assert r.decoder == {0}
    # as a static route the same paths dangle: (2, 1) has no open path onward
    assert live(tiny, opened) == frozenset()
    assert dangling(tiny, opened) == opened
    with pytest.raises(RouteError, match="ends in a dangling cell"):
        Route(tiny, frozenset(opened))
    # opening (2, 1)'s keep makes it a route
    route = Route(tiny, frozenset(opened | {(2, 1, K)}))
    assert live(tiny, route.paths) == route.paths and not dangling(tiny, route.paths)


def test_paths_from_unfed_cells_carry_nothing(tiny):
    opened = {(0, 0, K), (1, 0, K), (2, 0, K), (3, 0, K), (4, 0, K), (2, 1, K), (3, 1, U)}
    r = reach(tiny, opened)
    assert (2, 1) not in r.fed and (2, 1, K) not in r.paths and (3, 1, U) not in r.paths
    assert r.inputs[(4, 0)] == 1
    assert live(tiny, opened) == opened - {(2, 1, K), (3, 1, U)}
    with pytest.raises(RouteError, match="receives no open path from the stem"):
        Route(tiny, frozenset(opened))


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_reach_is_what_the_cost_model_propagates(name):
    config = load_space(name)
    subsets = _random_subsets(config, 64, seed=1)
    mask = torch.zeros(len(subsets), *Route.all_open(config).mask().shape, dtype=torch.bool)
    for i, subset in enumerate(subsets):
        for layer, scale, d in subset:
            mask[i, layer, scale, int(d)] = True
    has, on, count = propagate(config, mask)
    for i, subset in enumerate(subsets):
        r = reach(config, subset)
        fed = {(layer, scale) for layer, scale in config.cells if has[i, layer, scale]}
        ran = {(layer, scale) for layer, scale in config.cells if on[i, layer, scale]}
        assert fed == r.fed and ran == r.ran
        assert {c: int(count[i, c[0], c[1]]) for c in fed} == r.inputs


def _pruned_by_hand(config, paths):
    """The definition: remove paths with an unfed source or a target without a way onward,
    until nothing changes."""
    kept = set(paths)
    while True:
        fed = {(0, 0)}
        for layer, scale, d in sorted(kept, key=lambda p: (p[0], p[1], int(p[2]))):
            if (layer, scale) in fed and config.target(layer, scale, d) is not None:
                fed.add(config.target(layer, scale, d))
        onward = set()
        for layer, scale, d in sorted(kept, key=lambda p: (-p[0], p[1], int(p[2]))):
            t = config.target(layer, scale, d)
            if t is None or t in onward:
                onward.add((layer, scale))
        new = {
            p
            for p in kept
            if (p[0], p[1]) in fed and ((t := config.target(*p)) is None or t in onward)
        }
        if new == kept:
            return frozenset(kept)
        kept = new


def test_live_is_the_pruning_fixpoint_and_the_validation_rule(tiny):
    for subset in _random_subsets(tiny, 200, seed=2):
        kept = live(tiny, subset)
        assert kept == _pruned_by_hand(tiny, subset) == prune_dangling(tiny, subset)
        if kept:
            Route(tiny, kept)  # a live set is always a valid route
        if subset and not dangling(tiny, subset):
            Route(tiny, subset)
        elif subset:
            with pytest.raises(RouteError, match="dangling"):
                Route(tiny, subset)


def test_reach_is_what_the_network_computes(tiny):
    """A forced route that leaves cells without open paths: the skipping forward runs exactly
    ``reach(...).ran`` and carries ``reach(...).paths``."""
    model = dynviz.build_model(tiny).eval()
    opened = {(0, 0, D), (1, 1, K), (3, 1, U), (4, 0, K), (1, 0, K), (2, 0, D)}
    mask = torch.zeros(1, *Route.all_open(tiny).mask().shape, dtype=torch.bool)
    for layer, scale, d in opened:
        mask[0, layer, scale, int(d)] = True
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 64, 64), route=mask.float())
    r = reach(tiny, opened)
    assert r.paths == opened - {(1, 0, K), (2, 0, D)}  # (1, 0) and (2, 0) are never fed
    active = {p for p in tiny.paths if out.active[0, p[0], p[1], int(p[2])]}
    assert active == r.paths


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_the_cpu_walk_on_numpy_equals_the_torch_walk(p):
    """propagate walks numpy arrays on the CPU and torch tensors elsewhere: the same result."""
    from dynviz.model.topology import _walk

    config = load_space("layer16")
    gen = torch.Generator().manual_seed(int(10 * p))
    active = torch.rand(48, config.num_layers + 1, config.num_scales, 3, generator=gen) < p
    fast, reference = propagate(config, active), _walk(config, active, torch)
    for a, b in zip(fast, reference, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert 0 < int(reference[1].sum()) < reference[1].numel()  # some cells ran, not all
