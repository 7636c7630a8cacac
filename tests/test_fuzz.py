"""Fuzzed input (issue 25, item 6): model YAML, route specs, ``KEY=VALUE`` overrides and data
specs drawn at random, valid and broken. Every input is either accepted or refused with a
one-line error of the project's own type (:class:`dynviz.errors.UserError`), never another
exception and never a traceback-sized message.

Each property runs a few dozen examples in the default suite and thousands in the slow one
(``make test-all``); the examples are derandomized, so a run repeats the last one exactly.
"""

from __future__ import annotations

import string
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynviz.data.spec import DatasetSpec, parse_spec
from dynviz.errors import UserError
from dynviz.model import Route, RoutingSpaceConfig, load_spec
from dynviz.model.presets import models_dir
from dynviz.train.runconfig import RunConfig, apply_overrides, parse_overrides

EXAMPLES = [
    pytest.param(60, id="60"),
    pytest.param(2000, id="2000", marks=pytest.mark.slow),
]


def _settings(examples: int):
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,
    )


def _refused_clearly(err: BaseException, seen: Counter) -> None:
    """A refusal: the project's own error type, one line of readable length."""
    assert isinstance(err, UserError), f"{type(err).__name__}: {err}"
    message = str(err)
    assert message and "\n" not in message and len(message) < 1500, message
    assert "Traceback" not in message, message
    seen["refused"] += 1


# -------------------------------------------------------------------------------- values
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(string.printable, max_size=12),
    st.sampled_from(["full", "small", "none", "sum", "1e9", "-0", "nan", "inf", "64x64"]),
)
"""What a YAML value or an override may hold: every scalar type YAML writes, extremes included."""

VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.text(string.ascii_lowercase, min_size=1, max_size=6), SCALARS, max_size=2),
)

PRESETS = sorted(p.name for p in models_dir().glob("*.yaml"))


# ---------------------------------------------------------------------------- model YAML
@st.composite
def model_yaml(draw) -> str:
    """A shipped preset with some keys dropped, changed to any value, or added; sometimes the
    text itself is cut or not YAML at all."""
    data = yaml.safe_load((models_dir() / draw(st.sampled_from(PRESETS))).read_text())
    keys = sorted(data)
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["drop", "change", "add"]))
        key = draw(st.sampled_from(keys))
        if action == "drop":
            data.pop(key, None)
        elif action == "change":
            data[key] = draw(VALUES)
        else:
            data[draw(st.text(string.ascii_lowercase + "_", min_size=1, max_size=10))] = draw(
                VALUES
            )
    text = yaml.safe_dump(data, sort_keys=False)
    damage = draw(st.integers(0, 9))
    if damage == 0:  # cut anywhere
        text = text[: draw(st.integers(0, len(text)))]
    elif damage == 1:  # not a mapping, or not YAML
        text = draw(st.sampled_from(["[1, 2", "- a\n- b\n", "just text", "{a: [}", ":", "\t\x00"]))
    return text


@pytest.mark.parametrize("examples", EXAMPLES)
def test_any_model_yaml_loads_or_is_refused_in_one_line(tmp_path: Path, examples: int):
    seen: Counter = Counter()
    path = tmp_path / "model.yaml"

    @_settings(examples)
    @given(model_yaml())
    def check(text):
        path.write_text(text, encoding="utf-8")
        try:
            spec = load_spec(path)
        except Exception as err:  # noqa: BLE001 - the property is about what is raised
            _refused_clearly(err, seen)
            assert str(path) in str(err) or "model" in str(err), str(err)  # names the file
            return
        assert isinstance(spec, (RoutingSpaceConfig, Route))
        # what was accepted round-trips through its own YAML form
        again = type(spec).from_dict(spec.to_dict())
        assert again == spec
        seen["loaded"] += 1

    check()
    assert seen["loaded"] >= 1 and seen["refused"] >= 1, seen


# ---------------------------------------------------------------------------- route specs
SPACE = RoutingSpaceConfig(name="fuzz", num_layers=3, num_scales=3, base_channels=4, num_classes=2)


@st.composite
def chains(draw) -> list[list[int]]:
    """A random walk from the initial cell to the last layer, as strides."""
    scale, chain = 0, [SPACE.stride(0)]
    for layer in range(1, SPACE.num_layers + 1):
        allowed = [s for s in (scale - 1, scale, scale + 1) if s in SPACE.scales_in_layer(layer)]
        scale = draw(st.sampled_from(allowed))
        chain.append(SPACE.stride(scale))
    return [chain]


@st.composite
def route_spec(draw) -> dict:
    """A route spec dict: random path entries over the space (in range or not), a space that
    may be broken, entries of the wrong shape."""
    entry = st.one_of(
        st.tuples(
            st.integers(-1, SPACE.num_layers + 1),
            st.sampled_from([1, 2, 4, 8, 16, 32, 3]),
            st.sampled_from(["keep", "up", "down", "left", ""]),
        ).map(list),
        VALUES,
    )
    walks = draw(st.lists(chains(), min_size=1, max_size=3))
    valid = Route.from_chains(SPACE, [w for walk in walks for w in walk]).to_dict()["paths"]
    paths = [list(p) for p in valid]
    if draw(st.integers(0, 2)) == 0:  # one entry dropped, one of any shape added
        paths = paths[1:] + draw(st.lists(entry, max_size=2))
    spec = {"name": draw(st.text(max_size=5)), "space": SPACE.to_dict(), "paths": paths}
    if draw(st.integers(0, 4)) == 0:
        spec["space"] = {
            **SPACE.to_dict(),
            draw(st.sampled_from(sorted(SPACE.to_dict()))): draw(VALUES),
        }
    if draw(st.integers(0, 6)) == 0:
        spec[draw(st.sampled_from(["paths", "space", "name", "extra"]))] = draw(VALUES)
    return spec


@pytest.mark.parametrize("examples", EXAMPLES)
def test_any_route_spec_builds_or_is_refused_in_one_line(examples: int):
    seen: Counter = Counter()

    @_settings(examples)
    @given(route_spec())
    def check(spec):
        try:
            route = Route.from_dict(spec)
        except Exception as err:  # noqa: BLE001
            _refused_clearly(err, seen)
            return
        assert Route.from_dict(route.to_dict()) == route
        assert route.mask().any()
        seen["built"] += 1

    check()
    assert seen["built"] >= 1 and seen["refused"] >= 1, seen


# -------------------------------------------------------------------- KEY=VALUE overrides
TRAIN_KEYS = ["lr", "batch_size", "budget_mu", "crop_size", "iterations", "seed", "progress"]
MODEL_KEYS = ["model.num_layers", "model.gate", "model.base_channels", "model.active_threshold"]


@st.composite
def override_items(draw) -> list[str]:
    key = st.one_of(
        st.sampled_from(TRAIN_KEYS + MODEL_KEYS + ["train.lr", "other.lr", "model.nope"]),
        st.text(string.ascii_letters + "_.-= ", max_size=10),
    )
    value = st.one_of(
        VALUES.map(
            lambda v: yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()
        ),
        st.text(string.printable, max_size=10),
    )
    items = [f"{k}={v}" for k, v in draw(st.lists(st.tuples(key, value), max_size=4))]
    if draw(st.integers(0, 5)) == 0:
        items.append(draw(st.text(string.printable, max_size=8)))  # maybe no '='
    return items


@pytest.mark.parametrize("examples", EXAMPLES)
def test_any_overrides_apply_or_are_refused_in_one_line(examples: int):
    seen: Counter = Counter()
    base = RunConfig(train={"model": "tiny"}, source="fuzz.yaml")

    @_settings(examples)
    @given(override_items())
    def check(items):
        try:
            config = apply_overrides(base, parse_overrides(items))
            network = config.network()
            train = config.train_config(require_paths=False)
        except Exception as err:  # noqa: BLE001
            _refused_clearly(err, seen)
            return
        assert train.model == config.train["model"]
        assert network is None or isinstance(network, (RoutingSpaceConfig, Route))
        seen["applied"] += 1

    check()
    assert seen["applied"] >= 1 and seen["refused"] >= 1, seen


# ------------------------------------------------------------------------------ data specs
@st.composite
def data_spec(draw) -> str:
    kind = draw(
        st.sampled_from(["synthetic", "cityscapes", "voc", "folder", "SYNTHETIC", "nope", ""])
    )
    option = st.tuples(
        st.sampled_from(["count", "size", "seed", "regime", "classes", "ignore", "bogus", ""]),
        st.one_of(
            st.sampled_from(["0", "1", "64", "64x64", "8x", "x", "-3", "mixed", "tiny", "1e3", ""]),
            st.text(string.printable.replace(",", ""), max_size=6),
        ),
    )
    options = ",".join(f"{k}={v}" for k, v in draw(st.lists(option, max_size=4)))
    path = draw(st.sampled_from(["", "/data/x", "rel/dir", "a,b", "~/d"]))
    head = f"{kind}:" if draw(st.booleans()) else kind
    return (
        head + ",".join(part for part in (path, options) if part)
        if kind != "synthetic"
        else (f"{head}{options}" if options else head)
    )


@pytest.mark.parametrize("examples", EXAMPLES)
def test_any_data_spec_parses_or_is_refused_in_one_line(examples: int):
    seen: Counter = Counter()

    @_settings(examples)
    @given(st.one_of(data_spec(), st.text(string.printable, max_size=30)))
    def check(spec):
        try:
            parsed = parse_spec(spec)
        except Exception as err:  # noqa: BLE001
            _refused_clearly(err, seen)
            return
        assert isinstance(parsed, DatasetSpec)
        if parsed.kind == "synthetic":
            assert parse_spec(str(parsed)) == parsed  # the canonical form parses back
        seen["parsed"] += 1

    check()
    assert seen["parsed"] >= 1 and seen["refused"] >= 1, seen
