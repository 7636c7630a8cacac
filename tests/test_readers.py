"""What a reader sees (issue 23) outside the browser: the Special cases table takes a run's cost
from its metrics, and the attribution grid labels every row a path reaches."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from dynviz.analysis.runs import measured_accuracy
from dynviz.plots.attribution import attribution_grid_figure


def test_a_runs_cost_comes_from_its_last_evaluation(tmp_path):
    run = tmp_path / "unet-like"
    run.mkdir()
    route = {"name": "unet-like", "description": "special case: U-Net-like route"}
    (run / "config.yaml").write_text(yaml.safe_dump({"route": route, "train": {}}))
    lines = [
        {"kind": "train", "iter": 10, "loss": 1.0},
        {"kind": "eval", "iter": 600, "val_miou": 0.5, "real_gmacs": 0.006},
        {"kind": "eval", "iter": 1200, "val_miou": 0.8, "real_gmacs": 0.0059},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (row,) = measured_accuracy([], [run]).to_dict("records")
    assert row["model"] == "unet-like" and row["kind"] == "special case"
    assert row["mIoU"] == pytest.approx(0.8) and row["real GMACs"] == pytest.approx(0.0059)


def test_the_attribution_grid_labels_a_row_only_a_down_path_reaches():
    frame = pd.DataFrame(
        {
            "layer": [0, 1, 1],
            "scale": [4, 8, 8],
            "scale_index": [0, 1, 1],
            "direction": ["down", "keep", "down"],
            "logit": [0.5, -0.2, 0.3],
            "alpha": [0.6, 0.0, 0.4],
            "active": [True, False, True],
        }
    )
    fig = attribution_grid_figure(frame)
    assert list(fig.layout.yaxis.ticktext) == ["1/4", "1/8", "1/16"]
    assert list(fig.layout.yaxis.tickvals) == [0, 1, 2]
