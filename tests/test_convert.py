"""Official checkpoints to and from dynviz (dynviz.interop.official, ``dynviz convert``), on
official-format files made by renaming a dynviz network's tensors."""

from __future__ import annotations

import argparse
import pickle
import warnings
import zipfile

import pytest
import torch
import yaml
from _models import randomise

import dynviz
from dynviz.cli import main as cli
from dynviz.interop.official import (
    OfficialFormatError,
    convert_official,
    convert_to_official,
    dynviz_key,
    guess_model,
    official_key,
    official_state_dict,
)
from dynviz.model.checkpoint import CheckpointError, load_model
from dynviz.model.config import ConfigError, GateKind, Semantics


def _official_file(tmp_path, network, *, prefix="module.", name="official.pth", **extra):
    state = {prefix + k: v for k, v in official_state_dict(network).items()}
    path = tmp_path / name
    torch.save({"model": state, "iteration": 12, "optimizer": {"state": {}}, **extra}, path)
    return path


def test_keys_follow_the_rules_and_invert():
    pairs = {
        "backbone.stem.stem_1.weight": "stem.conv1.weight",
        "backbone.stem.stem_1.norm.running_var": "stem.bn1.running_var",
        "backbone.stem.stem_2.0.weight": "stem.sep1.dw.weight",
        "backbone.stem.stem_3.1.norm.bias": "stem.sep2.bn.bias",
        "backbone.init_layer.res_down.1.weight": "cells.0_0.down.conv.weight",
        "backbone.all_cell_list.0.1.cell_ops._ops.0.op.3.norm.weight": "cells.1_1.op.bn2.weight",
        "backbone.all_cell_list.15.3.gate_conv_beta.2.bias": "cells.16_3.gate.conv2.bias",
        "backbone.all_cell_list.4.2.res_up.1.norm.num_batches_tracked": (
            "cells.5_2.up.bn.num_batches_tracked"
        ),
        "sem_seg_head.layer_decoder_list.3.weight": "decoder.lateral.3.conv.weight",
        "sem_seg_head.layer_decoder_list.0.norm.running_mean": "decoder.lateral.0.bn.running_mean",
        "sem_seg_head.predictor.bias": "decoder.predictor.bias",
    }
    for official, ours in pairs.items():
        assert dynviz_key(official) == ours
        assert official_key(ours) == official
    assert dynviz_key("backbone.init_layer.gate_weights_beta") is None
    assert dynviz_key("backbone.fpn.weight") is None


def test_round_trip_through_the_official_format_keeps_every_tensor(tmp_path, tiny):
    network = randomise(dynviz.build_model(tiny), gate_bias=(-1.0, 1.0)).eval()
    path = _official_file(tmp_path, network)
    converted, out = convert_official(path, tmp_path / "model.pt", model=tiny)
    assert converted.config.semantics is Semantics.OFFICIAL
    original = network.state_dict()
    assert converted.state_dict().keys() == original.keys()
    for key, value in converted.state_dict().items():
        assert torch.equal(value, original[key]), key
    loaded, meta = load_model(out)  # a normal dynviz checkpoint, semantics travel with it
    assert loaded.config.official and meta["source"]["format"] == "official"
    assert loaded.stem.conv1.padding == (0, 0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, converted(x).logits)
    back = convert_to_official(out, tmp_path / "back.pth")
    data = torch.load(back, weights_only=True)
    assert data["model"].keys() == official_state_dict(network).keys()
    for key, value in official_state_dict(network).items():
        assert torch.equal(data["model"][key], value)


def test_bare_state_dict_without_prefix_converts(tmp_path, tiny):
    network = dynviz.build_model(tiny)
    path = tmp_path / "bare.pth"
    torch.save(official_state_dict(network), path)
    converted, _ = convert_official(path, tmp_path / "m.pt", model=tiny)
    assert torch.equal(converted.stem.conv1.weight, network.stem.conv1.weight)


def test_incomplete_mapping_is_refused_naming_keys_and_preset(tmp_path, tiny):
    network = dynviz.build_model(tiny)
    state = official_state_dict(network)
    del state["backbone.all_cell_list.1.0.res_down.1.weight"]
    state["backbone.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save({"model": state}, path)
    with pytest.raises(OfficialFormatError) as err:
        convert_official(path, tmp_path / "m.pt", model=tiny)
    message = str(err.value)
    assert "tiny-test" in message and str(path) in message
    assert "missing (first: backbone.all_cell_list.1.0.res_down.1.weight)" in message
    assert "unexpected (first: backbone.extra.weight)" in message
    assert not (tmp_path / "m.pt").exists()


def test_shape_mismatch_is_refused(tmp_path, tiny):
    state = official_state_dict(dynviz.build_model(tiny.replace(base_channels=16)))
    path = tmp_path / "wide.pth"
    torch.save({"model": state}, path)
    with pytest.raises(OfficialFormatError, match="has shape"):
        convert_official(path, tmp_path / "m.pt", model=tiny)


def test_preset_is_guessed_from_layers_and_gates():
    fix = official_state_dict(dynviz.build_model("layer16-fix"))
    assert "backbone.init_layer.gate_weights_beta" in fix
    assert guess_model(fix) == "layer16-fix"
    gated = {k: torch.empty(0) for k in official_state_dict(dynviz.build_model("layer16"))}
    with pytest.raises(ConfigError, match="layer16.*dynamic-a, dynamic-b or dynamic-c"):
        guess_model(gated)
    deep = {k.replace("all_cell_list.15.", "all_cell_list.32."): v for k, v in gated.items()}
    assert guess_model(deep) == "layer33"


def test_gate_free_network_round_trips_with_its_ones_buffers(tmp_path, tiny):
    config = tiny.replace(gate=GateKind.NONE)
    network = randomise(dynviz.build_model(config))
    path = _official_file(tmp_path, network, prefix="")
    converted, _ = convert_official(path, tmp_path / "m.pt", model=config)
    assert not converted.config.has_gates
    assert torch.equal(converted.decoder.predictor.bias, network.decoder.predictor.bias)


def test_files_needing_unpickling_are_refused_unless_trusted(tmp_path, tiny):
    network = dynviz.build_model(tiny)
    path = _official_file(tmp_path, network, cfg=argparse.Namespace(lr=0.05))
    with pytest.raises(OfficialFormatError, match="--trust-pickle"):
        convert_official(path, tmp_path / "m.pt", model=tiny)
    converted, _ = convert_official(path, tmp_path / "m.pt", model=tiny, trust_pickle=True)
    assert converted.config.official


def test_round_trip_keeps_the_iteration(tmp_path, tiny):
    network = dynviz.build_model(tiny)
    path = _official_file(tmp_path, network)
    data = torch.load(path, weights_only=True)
    torch.save({**data, "iteration": 12345}, path)
    convert_official(path, tmp_path / "model.pt", model=tiny)
    assert load_model(tmp_path / "model.pt")[1]["iteration"] == 12345
    back = convert_to_official(tmp_path / "model.pt", tmp_path / "back.pth")
    assert torch.load(back, weights_only=True)["iteration"] == 12345
    torch.save(official_state_dict(network), tmp_path / "bare.pth")  # records no iteration
    convert_official(tmp_path / "bare.pth", tmp_path / "bare.pt", model=tiny)
    assert load_model(tmp_path / "bare.pt")[1]["iteration"] == 0


def _bad_files(tmp_path):
    """(file, what the refusal says it is) for files that are not torch checkpoints."""
    code = tmp_path / "code.pkl"  # a plain pickle whose loading runs code
    code.write_bytes(pickle.dumps({"model": {}, "cfg": argparse.Namespace(lr=0.05)}, protocol=4))
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"model": {"a": 1}}, protocol=4))
    text = tmp_path / "notes.pth"
    text.write_text("model: dynamic-a\nlr: 0.05\n", encoding="utf-8")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    archive = tmp_path / "bundle.pth"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("weights/readme.txt", "not a torch archive")
    return [
        (
            code,
            "a plain Python pickle that needs code to load (argparse.Namespace), not a torch file",
        ),
        (plain, "a plain Python pickle, not a torch checkpoint"),
        (text, "a text file, not a torch checkpoint (it starts 'model: dynamic-a')"),
        (empty, "an empty file, not a torch checkpoint"),
        (archive, "a zip archive that is not a torch checkpoint (it holds weights/readme.txt)"),
    ]


def test_bad_files_are_refused_in_one_line_naming_what_they_are(tmp_path, tiny, capsys):
    for path, what in _bad_files(tmp_path):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(OfficialFormatError) as err:
                convert_official(path, tmp_path / "m.pt", model=tiny)
            with pytest.raises(CheckpointError) as dynviz_err:
                convert_to_official(path, tmp_path / "back.pth")
        assert not caught, [str(w.message) for w in caught]  # torch's pickle notes: silenced
        assert str(err.value) == f"{path}: {what}"
        assert str(dynviz_err.value) == f"{path}: {what}"
        assert cli(["convert", "official", str(path), "--model", "tiny", "--out", "x.pt"]) == 3
        captured = capsys.readouterr()
        assert captured.err == f"error: {path}: {what}\n" and not captured.out
        assert cli(["convert", "to-official", str(path), "--out", "x.pth"]) == 3
        assert capsys.readouterr().err == f"error: {path}: {what}\n"


def test_a_torch_file_needing_code_names_the_code_and_the_trust_option(tmp_path, tiny, capsys):
    path = _official_file(tmp_path, dynviz.build_model(tiny), cfg=argparse.Namespace(lr=0.05))
    assert cli(["convert", "official", str(path), "--model", "tiny", "--out", "x.pt"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err  # one line, no terminal colour codes
    assert "needs code to load (argparse.Namespace)" in err and "--trust-pickle" in err


def test_not_an_official_file_is_refused(tmp_path, tiny):
    path = tmp_path / "other.pth"
    torch.save({"model": {"layer1.weight": torch.zeros(1)}}, path)
    with pytest.raises(OfficialFormatError, match="not an official DynamicRouting checkpoint"):
        convert_official(path, tmp_path / "m.pt", model=tiny)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(OfficialFormatError, match="garbage.pth"):
        convert_official(garbage, tmp_path / "m.pt", model=tiny)


def test_cli_converts_both_ways(tmp_path, tiny, capsys):
    network = dynviz.build_model(tiny)
    spec = tmp_path / "space.yaml"
    spec.write_text(yaml.safe_dump(tiny.to_dict()), encoding="utf-8")
    path = _official_file(tmp_path, network)
    out = tmp_path / "model.pt"
    assert cli(["convert", "official", str(path), "--model", str(spec), "--out", str(out)]) == 0
    assert "official semantics" in capsys.readouterr().out
    back = tmp_path / "back.pth"
    assert cli(["convert", "to-official", str(out), "--out", str(back)]) == 0
    assert torch.load(back, weights_only=True)["model"].keys() == (
        official_state_dict(network).keys()
    )
    assert cli(["convert", "official", str(path), "--out", str(tmp_path / "x.pt")]) == 2
    assert "no preset matches" in capsys.readouterr().err


def test_init_from_loads_fitting_tensors_and_lists_the_rest(tmp_path, tiny):
    from dynviz.model.checkpoint import make_checkpoint, save_checkpoint
    from dynviz.train.init import init_from

    source = randomise(dynviz.build_model(tiny.replace(num_classes=7)))
    save_checkpoint(tmp_path / "src.pt", make_checkpoint(source, rng=False))
    target = dynviz.build_model(tiny)  # 4 classes: another predictor
    report = init_from(target, tmp_path / "src.pt")
    assert report.kind == "dynviz"
    assert {m[0] for m in report.mismatched} == {
        "decoder.predictor.weight",
        "decoder.predictor.bias",
    }
    assert torch.equal(target.cells["2_1"].op.pw1.weight, source.cells["2_1"].op.pw1.weight)
    assert torch.equal(target.stem.bn1.running_var, source.stem.bn1.running_var)
    assert not report.missing and not report.unused
    # an official file directly: a gate-free (Fix) backbone starts a gated network, gates fresh
    fix = randomise(dynviz.build_model(tiny.replace(gate=GateKind.NONE)), seed=3)
    path = _official_file(tmp_path, fix, name="fix.pth")
    gated = dynviz.build_model(tiny)
    report = init_from(gated, path)
    assert report.kind == "official" and not report.mismatched
    assert report.missing and all(".gate." in k for k in report.missing)
    assert torch.equal(gated.cells["3_2"].down.conv.weight, fix.cells["3_2"].down.conv.weight)


def test_train_init_starts_from_the_weights(tmp_path, tiny):
    from dynviz.model.checkpoint import make_checkpoint, save_checkpoint
    from dynviz.train.config import TrainConfig
    from dynviz.train.trainer import Trainer

    source = randomise(dynviz.build_model("tiny", num_classes=9))
    save_checkpoint(tmp_path / "src.pt", make_checkpoint(source, rng=False))
    config = TrainConfig(
        model="tiny",
        data="synthetic:count=4,size=32x32,classes=4",
        out=str(tmp_path / "run"),
        iters=1,
        batch=2,
        crop=(32, 32),
        workers=0,
        tensorboard=False,
        progress=False,
        init=str(tmp_path / "src.pt"),
    )
    trainer = Trainer(config)
    assert trainer.model.config.num_classes == 4
    assert torch.equal(trainer.model.cells["1_0"].op.dw1.weight, source.cells["1_0"].op.dw1.weight)
    assert trainer.config.init == str(tmp_path / "src.pt")


def test_converted_checkpoint_runs_in_eval_record_and_export(tmp_path, tiny, capsys):
    import json

    network = randomise(dynviz.build_model(tiny), gate_bias=(-0.5, 1.5))
    path = _official_file(tmp_path, network)
    out = tmp_path / "model.pt"
    convert_official(path, out, model=tiny)
    data = "synthetic:count=2,size=64x64,classes=4"
    assert cli(["eval", str(out), "--data", data, "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the command scores what the converted network scores in the library on the same images
    # (the conversion's own exactness is tested above, on logits)
    from dynviz.data import build_dataset
    from dynviz.inference.evaluate import evaluate
    from dynviz.record import read_records

    converted, _ = load_model(out)
    expected = evaluate(converted, build_dataset(data, split="val"))
    assert result["miou"] == pytest.approx(expected.miou, abs=1e-6)
    records = tmp_path / "records"
    try:
        assert cli(["record", str(out), "--data", data, "--out", str(records)]) == 0
    finally:
        torch.set_flush_denormal(False)  # the record command sets it for its process
    recorded = read_records(records)
    assert len(recorded.images) == 2
    assert recorded.images["real_gmacs"].mean() == pytest.approx(expected.real_gmacs.mean)
    route = dynviz.Route.from_chains(tiny, [[4, 4, 4, 4, 4]])
    from dynviz.inference.export import transfer_to_route

    static = transfer_to_route(load_model(out)[0], route)
    assert static.config.official and static.stem.conv1.padding == (0, 0)
