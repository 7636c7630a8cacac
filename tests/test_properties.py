"""Property tests: any route spec or config either builds a network whose forward runs, or is
rejected with a clear error.

The strategies draw valid inputs (unions of random stem-to-decoder chains, in-range config
values) and break a minority of them (a path removed or mangled, one config value out of range),
so that both branches are exercised; each test counts its examples and asserts that most of them
reached the network's assertions and some reached the error's.
"""

from __future__ import annotations

from collections import Counter

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dynviz
from dynviz.model.config import ConfigError, RoutingSpaceConfig
from dynviz.model.route import Route, RouteError

SPACE = RoutingSpaceConfig(name="prop", num_layers=3, num_scales=3, base_channels=4, num_classes=2)
EXAMPLES = 40
FAST = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
    derandomize=True,  # the same examples every run: the counts below cannot flake
)


@st.composite
def chains(draw, config: RoutingSpaceConfig = SPACE) -> list[list[int]]:
    """1-3 random walks from the initial cell to the last layer (one stride per layer)."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        scale, chain = 0, [config.stride(0)]
        for layer in range(1, config.num_layers + 1):
            allowed = [
                s for s in (scale - 1, scale, scale + 1) if s in config.scales_in_layer(layer)
            ]
            scale = draw(st.sampled_from(allowed))
            chain.append(config.stride(scale))
        out.append(chain)
    return out


def _check_counts(seen: Counter, built: str, rejected: str) -> None:
    total = seen[built] + seen[rejected]
    assert total >= EXAMPLES // 2, seen  # hypothesis ran the examples
    assert seen[built] >= 0.5 * total, seen  # most reached the network's assertions
    assert seen[rejected] >= 1, seen  # and the error branch was exercised


def test_any_path_set_builds_or_is_rejected_clearly():
    seen: Counter = Counter()

    @FAST
    @given(chains(), st.integers(0, 3), st.integers(0, 3), st.data())
    def check(walks, drop, add, data):
        paths = set(Route.from_chains(SPACE, walks).paths)
        if drop == 3:  # removing a path may leave a dangling cell, or an empty route
            paths.discard(data.draw(st.sampled_from(sorted(paths, key=str))))
        if add == 3:  # a path of the space that may lead nowhere
            paths.add(data.draw(st.sampled_from(SPACE.paths)))
        try:
            route = Route(SPACE, frozenset(paths))
        except RouteError as err:
            message = str(err)
            assert "dangling" in message or "no open path" in message
            seen["rejected"] += 1
            return
        model = dynviz.build_model(SPACE, route=route).eval()
        with torch.inference_mode():
            out = model(torch.randn(1, 3, 32, 32))
        assert out.logits.shape == (1, 2, 32, 32) and torch.isfinite(out.logits).all()
        assert torch.equal(out.active[0], route.mask())
        seen["built"] += 1

    check()
    _check_counts(seen, "built", "rejected")


BAD_ENTRIES = st.sampled_from(
    [[-1, 4, "keep"], [9, 4, "keep"], [1, 6, "keep"], [1, 4, "left"], [1, 4, 3], [1, 4], "1-4"]
)


def test_any_yaml_path_list_builds_or_is_rejected_clearly():
    seen: Counter = Counter()

    @FAST
    @given(chains(), st.integers(0, 3), BAD_ENTRIES, st.data())
    def check(walks, corrupt, bad, data):
        route = Route.from_chains(SPACE, walks)
        entries = [list(p) for p in route.to_dict()["paths"]]
        if corrupt == 3:  # one entry mangled: a bad layer, stride, direction or shape
            entries[data.draw(st.integers(0, len(entries) - 1))] = bad
        spec = {"name": "p", "space": SPACE.to_dict(), "paths": entries}
        try:
            parsed = Route.from_dict(spec)
        except RouteError as err:
            assert str(err).startswith("route: ")
            assert corrupt == 3  # a valid spec is never refused
            seen["rejected"] += 1
            return
        assert parsed.paths == route.paths  # the YAML form round-trips
        model = dynviz.build_model(parsed)
        assert torch.equal(model.route_mask, route.mask())
        seen["built"] += 1

    check()
    _check_counts(seen, "built", "rejected")


VALID = {
    "num_layers": st.integers(1, 4),
    "num_scales": st.integers(2, 4),
    "base_channels": st.sampled_from([2, 4, 6, 8]),
    "num_classes": st.integers(1, 3),
    "gate": st.sampled_from(["full", "small", "none"]),
    "active_threshold": st.floats(0.0, 0.99, allow_nan=False),
}
INVALID = {
    "num_layers": st.sampled_from([-1, 0, True, 2.5]),
    "num_scales": st.sampled_from([0, 1, 7]),
    "base_channels": st.sampled_from([-2, 0, 3, 9]),
    "num_classes": st.sampled_from([0, -1]),
    "gate": st.sampled_from(["odd", ""]),
    "active_threshold": st.sampled_from([-0.5, 1.0, 1.5]),
}


def test_any_config_builds_or_is_rejected_clearly():
    seen: Counter = Counter()

    @FAST
    @given(
        st.fixed_dictionaries(VALID), st.integers(0, 3), st.sampled_from(list(INVALID)), st.data()
    )
    def check(data, corrupt, key, draw):
        broken = key if corrupt == 3 else None  # one value of four configs out of range
        if broken is not None:
            data = {**data, broken: draw.draw(INVALID[broken])}
        try:
            config = RoutingSpaceConfig.from_dict(data)
        except ConfigError as err:
            assert broken is not None and broken in str(err)
            seen["rejected"] += 1
            return
        assert broken is None
        model = dynviz.build_model(config).eval()
        side = config.max_stride
        with torch.inference_mode():
            out = model(torch.randn(2, 3, side, 2 * side))
        assert out.logits.shape == (2, config.num_classes, side, 2 * side)
        assert torch.isfinite(out.logits).all()
        seen["built"] += 1

    check()
    _check_counts(seen, "built", "rejected")
