from __future__ import annotations

import pytest

from dynviz.model.config import ConfigError, Direction, GateKind, RoutingSpaceConfig
from dynviz.model.zoo import load_spec, preset_names, training_defaults


def test_layer16_topology_matches_official_counts():
    cfg = load_spec("layer16")
    assert cfg.num_cells == 62
    by_scale = [sum(1 for _, s in cfg.cells if s == k) for k in range(4)]
    assert by_scale == [17, 16, 15, 14]
    # triangle start: 1, 2, 3, 4, 4, ...
    assert [len(cfg.scales_in_layer(layer)) for layer in range(5)] == [1, 2, 3, 4, 4]
    assert load_spec("layer33").num_cells == 130


def test_paths_follow_official_flags():
    cfg = load_spec("layer16")
    assert cfg.directions(0, 0) == (Direction.KEEP, Direction.DOWN)  # the initial cell
    assert cfg.directions(1, 1) == (Direction.KEEP, Direction.UP, Direction.DOWN)  # top keeps down
    assert cfg.directions(5, 3) == (Direction.KEEP, Direction.UP)
    assert cfg.directions(16, 2) == (Direction.KEEP,)  # last layer: keep only
    # Gate outputs per scale (official_repo.md section 11): 33, 46, 43, 27.
    totals = [
        sum(len(cfg.directions(layer, s)) for layer, s in cfg.cells if s == scale)
        for scale in range(4)
    ]
    assert totals == [33, 46, 43, 27]
    # Every transform is consumed by exactly one node.
    incoming = {p for cell in cfg.cells for p in cfg.incoming(*cell)}
    outgoing = {p for p in cfg.paths if p[0] < cfg.num_layers}
    assert incoming == outgoing
    # The new top scale of layers 1-2 has no keep input; layer 1 has no up input.
    assert cfg.incoming(2, 2) == ((1, 1, Direction.DOWN),)
    assert cfg.incoming(1, 0) == ((0, 0, Direction.KEEP),)


def test_unknown_key_and_bad_values_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nnum_layers: 4\nwidth: 8\n")
    with pytest.raises(ConfigError, match="unknown key 'width'"):
        RoutingSpaceConfig.from_yaml(bad)
    with pytest.raises(ConfigError, match="base_channels"):
        RoutingSpaceConfig(base_channels=7)
    with pytest.raises(ConfigError, match="gate"):
        RoutingSpaceConfig(gate="huge")
    with pytest.raises(ConfigError, match="budget_mu: 1.5"):
        RoutingSpaceConfig.from_dict({"training": {"budget_mu": 1.5}})
    with pytest.raises(ConfigError, match="training: unknown key 'lr'"):
        RoutingSpaceConfig.from_dict({"training": {"lr": 0.1}})
    with pytest.raises(ConfigError, match="unknown override"):
        RoutingSpaceConfig().replace(layers=3)


def test_presets_load():
    names = preset_names()
    for name in [
        "layer16",
        "layer16-fix",
        "layer33",
        "dynamic-a",
        "dynamic-b",
        "dynamic-c",
        "tiny",
        "fcn32s",
        "deeplabv3",
        "unet",
        "hrnetv2",
        "autodeeplab",
    ]:
        assert name in names
    a = load_spec("dynamic-a")
    assert a.gate is GateKind.SMALL and "budget_lambda" not in a.to_dict()  # architecture only
    # the presets' budgets are training defaults
    assert training_defaults("dynamic-a") == {"budget_lambda": 0.8, "budget_mu": 0.1}
    assert training_defaults("dynamic-c") == {"budget_lambda": 0.5, "budget_mu": 0.2}
    assert training_defaults("layer16") == {}
    assert load_spec("layer16-fix").gate is GateKind.NONE


def test_older_configs_with_budget_keys_still_load(tmp_path):
    """Files and checkpoints written when the budget sat in the model config."""
    old = tmp_path / "old.yaml"
    old.write_text("name: old\nnum_layers: 4\nbase_channels: 8\nbudget_lambda: 0.5\nbudget_mu: 0.2")
    config = RoutingSpaceConfig.from_yaml(old)
    assert (config.name, config.num_layers) == ("old", 4)
    assert training_defaults(old) == {"budget_lambda": 0.5, "budget_mu": 0.2}
    saved = {**config.to_dict(), "budget_lambda": 0.8, "budget_mu": 0.1}
    assert RoutingSpaceConfig.from_dict(saved) == config


def test_unknown_preset_lists_names():
    with pytest.raises(ConfigError, match="not a file and not a preset"):
        load_spec("layer17")


def test_the_active_rule_is_named_once():
    """A path runs at alpha strictly above the active threshold, for numbers, arrays and
    tensors; the network's closing rule and the recorder apply this method."""
    import numpy as np
    import torch

    from dynviz.model.config import RoutingSpaceConfig

    config = RoutingSpaceConfig(name="t", num_layers=2, base_channels=8, active_threshold=0.3)
    assert config.is_active(0.31) and not config.is_active(0.3)
    assert config.is_active(np.array([0.0, 0.3, 0.5])).tolist() == [False, False, True]
    assert config.is_active(torch.tensor([0.3, 0.9])).tolist() == [False, True]
    assert RoutingSpaceConfig(name="p", num_layers=2, base_channels=8).is_active(1e-9)
