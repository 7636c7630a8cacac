"""``dynviz bench``: the quick run produces well-formed reports and docs (no timing asserted),
and the optimised inference path it measures computes the same function."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from _models import FLOAT64_REL, assert_close_to_scale

import dynviz
from dynviz.bench import (
    BenchSettings,
    benchmark_routes,
    common_like_route,
    update_doc,
)
from dynviz.bench.core import BEGIN_MARK, END_MARK, BenchReport, Figure, Section
from dynviz.bench.figures import bench_analysis, bench_export, bench_recording
from dynviz.cli import main as cli
from dynviz.model.route import Route
from dynviz.model.zoo import load_spec

SMALL = "small"  # L=8, width 16: the quick figures on a model the tests can afford
# One thread: two-thread OpenMP timings collapse when the machine is shared (a waiting thread
# spins while its partner is descheduled), and these tests check the output, not the speed.
THREADS = ["--threads", "1"]


@pytest.fixture
def small_fix(tmp_path) -> str:
    data = {**load_spec(SMALL).to_dict(), "name": "small-fix", "gate": "none"}
    path = tmp_path / "small-fix.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


def _settings(**changes) -> BenchSettings:
    return BenchSettings.quick_settings(model=SMALL, repeats=1, threads=1, **changes).with_size(
        (64, 96)
    )


# --------------------------------------------------------------------------------- routes
def test_benchmark_routes_are_valid_and_named():
    config = load_spec("layer16")
    routes = benchmark_routes(config)
    assert list(routes)[:2] == ["all-open", "fcn32s"]
    assert {"deeplabv3", "unet", "hrnetv2", "autodeeplab", "common-like"} <= set(routes)
    assert all(r.space == config for r in routes.values())
    common = common_like_route(config)
    assert {scale for _, scale in common.cells} == {0, 1, 2, 3}
    # small spaces get the Common-like route only (the special cases are for L=16)
    assert set(benchmark_routes(load_spec(SMALL))) == {"all-open", "common-like"}


# ------------------------------------------------------------------------------- the CLI
def test_quick_bench_cli_writes_json_and_doc(tmp_path, capsys, small_fix):
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\nHand-written notes.\n", encoding="utf-8")
    out = tmp_path / "bench.json"
    args = [
        "bench",
        "--quick",
        "--size",
        "64",
        "96",
        "--repeats",
        "1",
        "--sections",
        "a,b,d,g",
        "--batch",
        "2",
        *THREADS,
        "--model",
        SMALL,
        "--fix-model",
        small_fix,
        "--json",
        "--out",
        str(out),
        "--update-docs",
        str(doc),
    ]
    assert cli(args) == 0
    printed = json.loads(capsys.readouterr().out)
    data = json.loads(out.read_text(encoding="utf-8"))
    assert printed["figures"] == data["figures"]
    assert [s["key"] for s in data["sections"]] == ["a", "b", "d", "g"]
    assert data["machine"]["cores"] >= 1 and data["machine"]["torch"] == torch.__version__
    assert data["settings"]["size"] == [64, 96] and data["settings"]["batch_size"] == [32, 48]
    for section in data["sections"]:
        assert section["measured"] and section["rows"], section["key"]
        assert all(len(row) == len(section["columns"]) for row in section["rows"])
        assert len(section["load"]) == 2
    keys = {f["key"] for f in data["figures"]}
    assert keys == {"a", "b", "d", "g"}
    judged = 0
    for figure in data["figures"]:
        assert figure["value"] is None or figure["value"] > 0
        if figure["value"] is None or figure["target"] is None:
            assert figure["ok"] is None
            continue
        value, target = figure["value"], figure["target"]
        expected = value >= target if figure["compare"] == ">=" else value <= target
        assert figure["ok"] is expected, figure
        judged += 1
    assert judged >= 1  # the quick run measures and judges at least one headline figure
    a = next(s for s in data["sections"] if s["key"] == "a")
    assert [row[0] for row in a["rows"]] == ["all-open", "common-like"]
    columns = a["columns"]
    all_open, common = (dict(zip(columns, row, strict=True)) for row in a["rows"])
    assert all_open["executed ratio"] == 1.0 and all_open["time/executed ratio"] == 1.0
    # the complete counting charges what the paper's leaves out, and every route runs some
    assert common["executed GMACs"] > common["GMACs"] and 0 < common["executed ratio"] < 1
    assert common["time/executed ratio"] == pytest.approx(
        common["time ratio"] / common["executed ratio"]
    )
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# Performance\n\nHand-written notes.")
    assert text.count(BEGIN_MARK) == 1 and text.count(END_MARK) == 1
    assert "dynviz bench --quick --size 64 96" in text and "### (d)" in text


def test_quick_bench_text_output(capsys):
    assert (
        cli(
            [
                "bench",
                "--quick",
                "--size",
                "64",
                "96",
                "--repeats",
                "1",
                "--sections",
                "g",
                "--model",
                SMALL,
                *THREADS,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "[g] Latency per node" in out and "figures" in out


def test_bench_rejects_unknown_sections(capsys):
    assert cli(["bench", "--quick", "--sections", "a,z"]) == 2
    assert "unknown bench sections" in capsys.readouterr().err


# ------------------------------------------------------------------------ other figures
def test_export_figure_compares_static_with_dynamic():
    pytest.importorskip("onnxruntime")
    section, figures = bench_export(_settings())
    variants = {row[1] for row in section.rows}
    assert "dynamic, forced route (skip form)" in variants
    assert "static module, BN folded, fused conv+ReLU (default)" in variants
    assert any("onnxruntime" in v for v in variants)
    assert {f.name for f in figures} >= {"dynamic / static PyTorch (best), common-like"}
    assert any("tolerance 1e-4" in note for note in section.notes)


def test_recording_and_analysis_figures_are_measured():
    for run in (bench_recording, bench_analysis):
        section, figures = run(_settings(records=500, record_images=2))
        assert figures and all(f.target is not None for f in figures)
        assert section.measured  # dynviz.record exists: nothing may be left unmeasured
        assert section.rows and any(f.value is not None for f in figures)
        assert not any("not yet measurable" in n for n in section.notes)


def test_the_recording_figure_pairs_every_image_with_one_plain_pass_beside_it():
    from dynviz.bench.hooks import InMemoryDataset, _PairedDataset

    items = [{"image_id": str(i)} for i in range(3)]
    log: list[str] = []
    paired = _PairedDataset(
        InMemoryDataset(items, num_classes=2), lambda item: log.append(f"plain {item['image_id']}")
    )

    def recorder() -> None:  # what record does with each item it loads
        for i in range(len(paired)):
            log.append(f"record {paired[i]['image_id']}")

    recorder()
    assert log == ["plain 0", "record 0", "plain 1", "record 1", "plain 2", "record 2"]
    log.clear()
    paired.before = False  # the next round: each plain pass right after its recorded one
    recorder()
    paired.run_plain(2)  # the last one, after the call (as measure_recording does)
    assert log == ["record 0", "plain 0", "record 1", "plain 1", "record 2", "plain 2"]
    assert paired.seconds > 0


def test_update_doc_replaces_only_the_generated_block(tmp_path):
    report = BenchReport(
        settings=_settings(),
        machine={
            "cpu": "Some CPU",
            "vendor": "GenuineIntel",
            "cores": 2,
            "simd": [],
            "threads": 2,
            "torch": "x",
            "python": "3",
        },
        command="dynviz bench --quick",
    )
    report.sections.append(Section("a", "A title", ["k", "v"], [["x", 1.5]]))
    report.figures.append(Figure.of("a", "a ratio", [0.8, 0.9, 1.0], 1.15, "<="))
    doc = tmp_path / "perf.md"
    update_doc(doc, report)  # a new file
    first = doc.read_text(encoding="utf-8")
    # the machine beside every figure: figures of two machines are not comparable
    assert (
        "| a | a ratio | 0.900x | 0.850-0.950x | <= 1.15x | yes | Some CPU (GenuineIntel) |"
        in first
    )
    assert report.to_json()["figures"][0]["machine"] == "Some CPU (GenuineIntel)"
    doc.write_text("intro\n\n" + first + "\n## Notes\n\nkept\n", encoding="utf-8")
    report.figures[0].value = 2.0
    update_doc(doc, report)
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("intro") and text.rstrip().endswith("kept")
    assert "| 2.000x | 0.850-0.950x | <= 1.15x | NO |" in text and text.count(BEGIN_MARK) == 1


# ------------------------------------------------- the inference path computes the same
def _randomised(config, seed: int = 1):
    model = dynviz.build_model(config).eval().double()
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    for cell in model.cells.values():
        bias = cell.gate.conv2.bias
        bias.data.copy_(torch.rand(bias.shape, generator=g) * 2.0 - 1.0)  # some paths closed
    return model


def test_inference_mode_path_equals_the_autograd_path(tiny):
    """No autograd: node sums in place, compact per-sample inputs, channels-last layout."""
    model = _randomised(tiny)
    routes = [
        Route.from_chains(tiny, [[4, 8, 16, 32, 32]]),
        Route.all_open(tiny),
        Route.from_chains(tiny, [[4, 4, 4, 4, 4], [4, 8, 8, 8, 8]]),
        Route.from_chains(tiny, [[4, 8, 16, 8, 4]]),
    ]
    x = torch.randn(4, 3, 32, 64, dtype=torch.float64)
    x = x * torch.linspace(0.2, 3.0, 4, dtype=torch.float64).view(4, 1, 1, 1)  # routes differ
    reference = model(x, route=routes)  # autograd on: no in-place sums
    gated = model(x)
    with torch.inference_mode():
        forced = model(x, route=routes)
        free = model(x)
        soft = model(x, skip=False)
        singles = [model(x[i : i + 1]) for i in range(4)]
    # channels-last inside and out: the large upsampling and the prediction's max over the
    # classes are twice as fast in it (Decoder.head)
    assert forced.logits.is_contiguous(memory_format=torch.channels_last)
    assert_close_to_scale(forced.logits, reference.logits, rel=FLOAT64_REL)
    assert_close_to_scale(free.logits, gated.logits, rel=FLOAT64_REL)
    assert_close_to_scale(free.gates, gated.gates, rel=FLOAT64_REL)
    assert_close_to_scale(soft.logits, gated.logits, rel=FLOAT64_REL)
    assert len({tuple(g.flatten().gt(0).tolist()) for g in free.gates}) > 1  # routes differ
    for i, single in enumerate(singles):
        assert_close_to_scale(free.logits[i : i + 1], single.logits, rel=FLOAT64_REL)


def test_channels_last_inference_can_be_switched_off(tiny):
    """The switch changes the layout the layers see (not the result)."""
    model = dynviz.build_model(tiny).eval()
    x = torch.randn(2, 3, 64, 64)
    layouts = []

    def seen(module, args, output):  # noqa: ANN001 - a forward hook
        layouts.append(
            (
                args[0].is_contiguous(memory_format=torch.channels_last),
                output.is_contiguous(memory_format=torch.channels_last),
            )
        )

    handle = model.stem.register_forward_hook(seen)
    try:
        with torch.inference_mode():
            on = model(x).logits
            model.channels_last_inference = False
            off = model(x).logits
        model.channels_last_inference = True
        model(x)  # autograd on (training-style forward): never channels-last
    finally:
        handle.remove()
    assert layouts == [(True, True), (False, False), (False, False)]
    assert on.is_contiguous(memory_format=torch.channels_last) and off.is_contiguous()
    torch.testing.assert_close(on, off, rtol=1e-4, atol=1e-4 * float(off.abs().max()))


def test_docs_performance_has_the_generated_block():
    doc = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
    if not doc.is_file():
        pytest.skip("docs/performance.md not generated yet")
    text = doc.read_text(encoding="utf-8")
    assert text.count(BEGIN_MARK) == 1 and "dynviz bench" in text


def test_update_docs_is_refused_inside_an_installed_package(tmp_path, capsys):
    import dynviz
    from dynviz.commands.bench import doc_target

    inside = Path(dynviz.__file__).resolve().parent / "performance.md"
    with pytest.raises(ValueError, match="installed package"):
        doc_target(inside)
    with pytest.raises(ValueError, match="installed package"):
        doc_target(tmp_path / "lib" / "site-packages" / "docs" / "performance.md")
    with pytest.raises(ValueError, match="Markdown"):
        doc_target(tmp_path / "perf.txt")
    assert doc_target(tmp_path / "docs" / "performance.md").name == "performance.md"
    # refused before anything is measured
    assert cli(["bench", "--quick", "--sections", "g", "--update-docs", str(inside)]) == 2
    assert "installed package" in capsys.readouterr().err


def test_bench_writes_no_doc_unless_asked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    args = ["bench", "--quick", "--size", "64", "96", "--repeats", "1", "--sections", "g"]
    assert cli([*args, "--model", SMALL, *THREADS]) == 0
    assert not (tmp_path / "docs" / "performance.md").exists()
    assert cli([*args, "--model", SMALL, *THREADS, "--update-docs"]) == 0
    assert BEGIN_MARK in (tmp_path / "docs" / "performance.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("value", "target", "compare", "ok"),
    [
        (0.9, 1.15, "<=", True),
        (1.2, 1.15, "<=", False),
        (0.85, 0.8, ">=", True),
        (0.7, 0.8, ">=", False),
        (None, 0.8, ">=", None),
        (0.7, None, ">=", None),
    ],
)
def test_a_figure_is_judged_against_its_target(value, target, compare, ok):
    figure = Figure("a", "ratio", value, target, compare)
    assert figure.ok is ok and figure.to_json()["ok"] is ok


@pytest.mark.parametrize(
    ("rounds", "ok"),
    [
        ([0.2, 0.5, 0.7, 0.9, 1.1], True),  # median 0.7%, quartiles 0.5..0.9
        ([-2.5, -2.4, 0.5, 0.9, 1.0], False),  # median within 1% but a quartile below -2%
        ([0.9, 1.2, 1.4, 1.6, 1.8], False),  # quartiles within 2% but the median above 1%
    ],
)
def test_the_recording_figure_also_bounds_its_quartiles(rounds, ok):
    figure = Figure.of("c", "recording overhead", rounds, 1.0, "<=", "%", spread_limit=2.0)
    assert figure.ok is ok
    assert figure.target_text == "<= 1%, quartiles within +-2%"


def test_a_section_whose_samples_waited_marks_its_figures_untrusted():
    idle = Section("a", "skip", [], waits=[0.001, 0.0, 0.003])
    busy = Section("a", "skip", [], waits=[0.05, 0.04, 0.001])
    contended = Section("a", "skip", [], waits=[0.0], contended=1)
    assert idle.trusted and not busy.trusted and not contended.trusted
    figure = Figure("a", "ratio", 1.0, 1.15, "<=")
    assert figure.met_text == "yes"
    figure.trusted = busy.trusted
    assert figure.met_text.startswith("yes (busy machine")
