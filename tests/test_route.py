from __future__ import annotations

import pytest
import torch

from dynviz.model.config import Direction
from dynviz.model.route import Route, RouteError
from dynviz.model.zoo import load_spec

K, U, D = Direction.KEEP, Direction.UP, Direction.DOWN


def chain(*strides):
    return [list(strides)]


def test_single_chain_route(tiny):
    r = Route.from_chains(tiny, chain(4, 8, 8, 16, 16))
    assert r.paths == {(0, 0, D), (1, 1, K), (2, 1, D), (3, 2, K), (4, 2, K)}
    assert r.cells == {(0, 0), (1, 1), (2, 1), (3, 2), (4, 2)}
    assert r.directions(2, 1) == (D,)


def test_dangling_cell_without_input_is_rejected(tiny):
    good = Route.from_chains(tiny, chain(4, 4, 4, 4, 4))
    # (2, 1) receives nothing: the path leaving it is dangling
    with pytest.raises(RouteError, match=r"\(layer 2, 1/8, up\).*receives no open path"):
        Route(tiny, good.paths | {(2, 1, U)})


def test_dangling_cell_without_way_to_decoder_is_rejected(tiny):
    good = Route.from_chains(tiny, chain(4, 4, 4, 4, 4))
    # (1, 1) gets input but has no open path onward
    with pytest.raises(RouteError, match=r"\(layer 0, 1/4, down\).*no open way to the decoder"):
        Route(tiny, good.paths | {(0, 0, D)})


def test_path_outside_space_is_rejected(tiny):
    with pytest.raises(RouteError, match=r"\(layer 0, 1/4, up\) is outside the space"):
        Route(tiny, {(0, 0, U), (0, 0, K)})
    with pytest.raises(RouteError, match="layer 4, 1/4, down"):
        Route(tiny, {(4, 0, D)})
    with pytest.raises(RouteError, match="jumps"):
        Route.from_chains(tiny, chain(4, 16, 16, 16, 16))
    with pytest.raises(RouteError, match="no open path"):
        Route(tiny, set())


def test_yaml_round_trip_and_errors_name_the_file(tmp_path, tiny):
    r = Route.from_chains(tiny, [[4, 8, 16, 8, 4], [4, 4, 4, 4, 4]], name="two")
    path = tmp_path / "two.yaml"
    r.to_yaml(path)
    again = Route.from_yaml(path)
    assert again == r and again.name == "two"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\nspace: tiny\npaths:\n  - [0, 4, keep]\n  - [1, 4, sideways]\n")
    with pytest.raises(RouteError, match=r"bad\.yaml.*sideways"):
        Route.from_yaml(bad)
    bad.write_text("name: b\nspace: tiny\npaths:\n  - [0, 4, keep]\n  - [1, 4, keep]\n")
    with pytest.raises(RouteError, match=r"bad\.yaml.*\(layer 0, 1/4, keep\).*no open way"):
        Route.from_yaml(bad)
    bad.write_text("name: b\nspace: tiny\ncolour: red\npaths: []\n")
    with pytest.raises(RouteError, match="unknown key 'colour'"):
        Route.from_yaml(bad)


def test_mask_round_trip(tiny):
    r = Route.from_chains(tiny, [[4, 8, 8, 8, 4]])
    m = r.mask()
    assert m.shape == (5, 4, 3) and m.sum() == len(r)
    assert Route.from_mask(tiny, m) == r
    assert Route.all_open(tiny).mask().sum() == len(tiny.paths)


def test_special_cases_are_valid_routes():
    for name in ["fcn32s", "deeplabv3", "unet", "hrnetv2", "autodeeplab"]:
        route = load_spec(name)
        assert isinstance(route, Route) and route.space.num_layers == 16
    adl = load_spec("autodeeplab")
    # the searched path [0,0,0,1,2,1,2,2,3,3,2,1] on layers 1..12
    scales = [next(s for layer, s, _ in adl.paths if layer == i) for i in range(1, 13)]
    assert scales == [0, 0, 0, 1, 2, 1, 2, 2, 3, 3, 2, 1]
    assert torch.equal(load_spec("fcn32s").mask()[16].any(-1), torch.tensor([0, 0, 0, 1]).bool())
