"""Evaluation: hand-checkable mIoU, real/expected GMACs, the ``dynviz eval`` command."""

from __future__ import annotations

import json

import pytest
import torch

import dynviz
from dynviz.cli import main as cli_main
from dynviz.inference.evaluate import evaluate
from dynviz.model import ConfigError, Route
from dynviz.model.checkpoint import make_checkpoint, save_checkpoint
from dynviz.model.cost import cost_table


class _Labels:
    """Two 32x32 images with known labels (3 classes, 255 = ignore)."""

    num_classes = 3
    class_names = ["a", "b", "c"]
    ignore_index = 255

    def __init__(self) -> None:
        first = torch.zeros(32, 32, dtype=torch.int64)
        first[16:] = 1  # half class 0, half class 1
        second = torch.zeros(32, 32, dtype=torch.int64)
        second[:8] = 255  # a quarter ignored, the rest class 0
        self.labels = [first, second]

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> dict:
        return {
            "image": torch.randn(3, 32, 32),
            "label": self.labels[index],
            "image_id": str(index),
            "stats": {},
        }


def _static_predicting(klass: int, num_classes: int = 3):
    space = dynviz.build_model("tiny").config
    route = Route.from_chains(space, [[4, 4, 8, 8, 8]], name="chain")
    model = dynviz.build_model(route, num_classes=num_classes)
    with torch.no_grad():  # constant logits: every pixel predicts ``klass``
        model.decoder.predictor.weight.zero_()
        model.decoder.predictor.bias.zero_()
        model.decoder.predictor.bias[klass] = 1.0
    return model


def test_known_prediction_gives_hand_computed_miou():
    result = evaluate(_static_predicting(0), _Labels())
    # class 0: TP = 512 + 768, FP = 512 (the class-1 half), FN = 0 -> 1280 / 1792 = 5/7
    # class 1: TP = 0, FN = 512 -> 0; class 2 absent everywhere -> NaN, left out of the mean
    assert result.per_class_iou[0] == pytest.approx(5 / 7)
    assert result.per_class_iou[1] == 0.0
    assert result.per_class_iou[2] != result.per_class_iou[2]  # NaN
    assert result.miou == pytest.approx(5 / 14)
    assert result.pixel_accuracy == pytest.approx(5 / 7)
    assert result.num_images == 2 and result.sizes == [(32, 32)]
    as_json = result.to_dict()
    assert as_json["per_class_iou"] == {"a": pytest.approx(5 / 7), "b": 0.0, "c": None}
    json.dumps(as_json)  # strict JSON: no NaN


def test_static_real_cost_is_the_cost_table_total():
    model = _static_predicting(1)
    result = evaluate(model, _Labels())
    total = cost_table(model.config, (32, 32), route=model.route).total() / 1e9
    assert result.real_gmacs.mean == pytest.approx(total, rel=1e-12)
    assert result.real_gmacs.max == result.real_gmacs.min == result.real_gmacs.mean
    assert result.expected_gmacs.mean == pytest.approx(total, rel=1e-12)
    assert result.expected_cost_ratio is None
    assert result.params == sum(p.numel() for p in model.parameters())


def test_dynamic_costs_are_bounded_by_the_all_open_network():
    model = dynviz.build_model("tiny", num_classes=3)
    result = evaluate(model, _Labels())
    table = cost_table(model.config, (32, 32))
    assert 0 < result.real_gmacs.min <= result.real_gmacs.max <= table.total() / 1e9 + 1e-12
    assert 0 < result.expected_cost_ratio <= 1.0
    assert not model.training


def test_forced_closed_gates_cost_less():
    model = dynviz.build_model("tiny", num_classes=3)
    full = evaluate(model, _Labels())
    for cell in model.cells.values():  # close every path but keep: bias -> tanh < 0
        if cell.gate is not None:
            with torch.no_grad():
                cell.gate.conv2.bias.fill_(-10.0)
                cell.gate.conv2.bias[0] = 10.0
    keep_only = evaluate(model, _Labels())
    assert keep_only.real_gmacs.mean < full.real_gmacs.mean
    assert keep_only.expected_cost_ratio < full.expected_cost_ratio


def test_more_classes_in_data_than_the_network_is_an_error():
    with pytest.raises(ConfigError, match="3 classes"):
        evaluate(dynviz.build_model("tiny", num_classes=2), _Labels())


def test_eval_command_json_and_table(tmp_path, capsys):
    model = dynviz.build_model("tiny", num_classes=4)
    data = "synthetic:count=3,size=40x40,classes=4"
    save_checkpoint(
        tmp_path / "checkpoint_latest.pt",
        make_checkpoint(model, iteration=5, train_args={"data": data}),
    )
    assert cli_main(["eval", str(tmp_path), "--json", "--limit", "2", "--size", "64", "64"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert 0.0 <= payload["miou"] <= 1.0
    for key in ("per_class_iou", "pixel_accuracy", "params", "sha256"):
        assert key in payload
    assert set(payload["real_gmacs"]) == {"mean", "max", "min"}
    assert set(payload["expected_gmacs"]) == {"mean", "max", "min"}
    assert payload["num_images"] == 2 and payload["sizes"] == [[64, 64]]
    assert payload["iteration"] == 5 and payload["data"] == data
    assert cli_main(["eval", str(tmp_path / "checkpoint_latest.pt"), "--data", data]) == 0
    text = capsys.readouterr().out
    assert "mIoU" in text and "expected" in text and "per-class IoU" in text


def test_eval_command_user_errors(tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert cli_main(["eval", str(tmp_path / "junk.pt"), "--data", "synthetic"]) == 3
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'junk.pt'}")
    save_checkpoint(tmp_path / "c.pt", make_checkpoint(dynviz.build_model("tiny")))
    assert cli_main(["eval", str(tmp_path / "c.pt"), "--data", "voc:/nonexistent"]) == 3
    assert "/nonexistent" in capsys.readouterr().err
    assert cli_main(["eval", str(tmp_path / "c.pt")]) == 2
    assert "--data" in capsys.readouterr().err
