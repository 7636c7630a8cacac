"""Property tests: any route spec or config either builds a network whose forward runs, or is
rejected with a clear error."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dynviz
from dynviz.model.config import ConfigError, RoutingSpaceConfig
from dynviz.model.route import Route, RouteError

SPACE = RoutingSpaceConfig(name="prop", num_layers=3, num_scales=3, base_channels=4, num_classes=2)
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.sets(st.sampled_from(SPACE.paths), max_size=len(SPACE.paths)))
def test_any_path_set_builds_or_is_rejected_clearly(paths):
    try:
        route = Route(SPACE, frozenset(paths))
    except RouteError as err:
        message = str(err)
        assert "dangling" in message or "no open path" in message
        return
    model = dynviz.build_model(SPACE, route=route).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 32, 32))
    assert out.logits.shape == (1, 2, 32, 32) and torch.isfinite(out.logits).all()
    assert torch.equal(out.active[0], route.mask())


@FAST
@given(
    st.lists(
        st.tuples(
            st.integers(-1, 5),
            st.sampled_from([2, 4, 8, 16, 32, 64]),
            st.sampled_from(["keep", "up", "down", "left", 3]),
        ),
        max_size=8,
    )
)
def test_any_yaml_path_list_builds_or_is_rejected_clearly(raw):
    data = {"name": "p", "space": SPACE.to_dict(), "paths": [list(p) for p in raw]}
    try:
        route = Route.from_dict(data)
    except RouteError as err:
        assert str(err).startswith("route: ")
        return
    dynviz.build_model(route)


@FAST
@given(
    layers=st.integers(-1, 4),
    scales=st.integers(0, 4),
    width=st.integers(-2, 9),
    classes=st.integers(0, 3),
    gate=st.sampled_from(["full", "small", "none", "odd"]),
    threshold=st.floats(-0.5, 1.5, allow_nan=False),
)
def test_any_config_builds_or_is_rejected_clearly(layers, scales, width, classes, gate, threshold):
    data = {
        "num_layers": layers,
        "num_scales": scales,
        "base_channels": width,
        "num_classes": classes,
        "gate": gate,
        "active_threshold": threshold,
    }
    try:
        config = RoutingSpaceConfig.from_dict(data)
    except ConfigError as err:
        assert any(key in str(err) for key in data)
        return
    model = dynviz.build_model(config).eval()
    side = config.max_stride
    with torch.inference_mode():
        out = model(torch.randn(2, 3, side, 2 * side))
    assert out.logits.shape == (2, classes, side, 2 * side)
    assert torch.isfinite(out.logits).all()
