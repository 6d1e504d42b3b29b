"""Drift measurement, the report files, the memory probe, and the export/validate commands."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from conftest import require_toolchain
import torch

import edge_sam
from edge_sam.apps import cli
from edge_sam.data import generate_synthetic
from edge_sam.targets import TorchRunner, dataset_source, image_folder
from edge_sam.eval.metrics import sqnr_db
from edge_sam.targets.validation.drift import cosine, measure_drift
from edge_sam.targets.validation.subprocess_rss import measure_peak_rss
from edge_sam.targets.validation.report import markdown_table, write_report
from edge_sam.transforms import write_image


pytestmark = pytest.mark.torch_threads(1)


@pytest.fixture(scope="module")
def images(tmp_path_factory, dogs):
    folder = tmp_path_factory.mktemp("images")
    write_image(folder / "dogs.png", cv2.resize(dogs, (268, 151), interpolation=cv2.INTER_AREA))
    write_image(folder / "crop.png", dogs[200:300, 500:640])
    return image_folder(folder)


@pytest.fixture(scope="module")
def perturbed_model(make_tiny_model):
    """The same tiny model with 2% noise on every weight: a runner that really drifts."""
    model = make_tiny_model(seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.02 * p.abs().mean())
    return model


def test_cosine_and_sqnr():
    x = np.random.default_rng(0).standard_normal(10_000)
    assert cosine(x, x) == pytest.approx(1.0) and math.isinf(sqnr_db(x, x))
    assert sqnr_db(x, x + 0.1 * x) == pytest.approx(20.0)
    assert cosine(x, -x) == pytest.approx(-1.0)


def test_identical_runner_has_no_drift(make_tiny_model, images):
    model = make_tiny_model(seed=0)
    report = measure_drift(TorchRunner(model), [TorchRunner(model, label="same-model")], images, measure_memory=False)
    row = report.to_dict()["rows"][1]
    assert row["mask_iou_mean"] == 1.0 and row["mask_iou_worst"] == 1.0 and row["top_choice_agreement"] == 1.0
    assert row["embedding_cosine_mean"] == pytest.approx(1.0) and math.isinf(row["embedding_sqnr_db_mean"])
    assert row["n_prompts"] == report.n_prompts == 24


def test_drifting_runner_is_caught_and_its_worst_prompts_rendered(make_tiny_model, perturbed_model, images, tmp_path):
    report = measure_drift(TorchRunner(make_tiny_model(seed=0)), [TorchRunner(perturbed_model, label="noisy")], images,
                           measure_memory=False)
    row = report.to_dict()["rows"][1]
    assert row["mask_iou_worst"] <= row["mask_iou_p5"] <= row["mask_iou_mean"] < 1.0
    assert 0.0 < row["iou_prediction_delta_mean"] and np.isfinite(row["embedding_sqnr_db_mean"])
    worst = report.runners[0].worst_prompts()
    assert len(worst) == 3 and worst[0].mask_iou == row["mask_iou_worst"]
    assert [w.mask_iou for w in worst] == sorted(w.mask_iou for w in worst)
    assert worst[0].overlay_png.startswith(b"\x89PNG")
    assert report.below(1.0) == report.runners and report.below(0.0) == []

    out = write_report(report, tmp_path / "report")
    data = json.loads((out / "report.json").read_text())
    assert [r["label"] for r in data["rows"]] == ["pytorch-fp32", "noisy"]
    assert data["rows"][0]["embedding_sqnr_db_mean"] is None  # the reference row compares with nothing
    markdown = (out / "report.md").read_text()
    assert markdown.count("\n| pytorch-fp32 |") == 1 and markdown.count("\n| noisy |") == 1
    html = (out / "report.html").read_text()
    assert "<svg" in html and html.count("data:image/png;base64,") == 3
    assert sorted(p.name for p in out.glob("worst_*.png")) == ["worst_0_0.png", "worst_0_1.png", "worst_0_2.png"]
    write_report(report, out)  # an earlier report is replaced
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("not a report")
    with pytest.raises(edge_sam.EdgeSamError, match="does not hold an earlier report"):
        write_report(report, tmp_path / "other")


def test_dataset_gives_ground_truth_miou(make_tiny_model, perturbed_model, tmp_path):
    split = generate_synthetic(tmp_path / "synthetic", {"val": 2}, img_size=64, progress=False)["val"]
    source = dataset_source(split)
    report = measure_drift(TorchRunner(make_tiny_model(seed=0)), [TorchRunner(perturbed_model, label="noisy")], source,
                           max_objects=3, measure_memory=False)
    for row in report.to_dict()["rows"]:
        assert set(row["gt_miou"]) == {"box", "1-click"}
        assert all(0.0 <= v <= 1.0 for v in row["gt_miou"].values())
    assert report.n_prompts == sum(2 * min(3, sum(a.mask.any() for a in s.annotations)) for s in source.samples())


def test_memory_probe_measures_a_fresh_process(make_tiny_model, tmp_path, dogs):
    checkpoint = edge_sam.save_model(make_tiny_model(seed=0), tmp_path / "tiny.safetensors")
    memory = measure_peak_rss(dogs, checkpoint=checkpoint)
    assert memory["peak_mb"] >= memory["baseline_mb"] > 50 and memory["runner_mb"] >= 0


# -- the commands ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, make_tiny_model):
    return edge_sam.save_model(make_tiny_model(seed=0), tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def _error_lines(capsys) -> list[str]:
    """What the command said on stderr besides its progress bars (tqdm also writes to stderr)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("edge-sam:")]


def test_export_then_validate_fails_under_threshold(checkpoint, images, tmp_path, capsys):
    require_toolchain("onnxruntime")
    calibration = images.path
    assert cli.main(["export", "--target", "onnx", "--precision", "fp32", "--checkpoint", str(checkpoint),
                     "--out", str(tmp_path / "fp32")]) == 0
    assert cli.main(["export", "--target", "onnx", "--precision", "int8", "--calibration", str(calibration),
                     "--checkpoint", str(checkpoint), "--out", str(tmp_path / "int8")]) == 0
    assert "wrote" in capsys.readouterr().out

    common = ["--checkpoint", str(checkpoint), "--images", str(calibration), "--max-images", "1", "--no-memory"]
    assert cli.main(["validate", str(tmp_path / "fp32"), *common, "--report", str(tmp_path / "r1"),
                     "--fail-under-mask-iou", "0.999"]) == 0
    code = cli.main(["validate", str(tmp_path / "fp32"), str(tmp_path / "int8"), *common, "--no-layers",
                     "--report", str(tmp_path / "r2"), "--fail-under-mask-iou", "0.99999"])
    rows = json.loads((tmp_path / "r2" / "report.json").read_text())["rows"]
    int8_iou = rows[2]["mask_iou_mean"]
    assert rows[1]["mask_iou_mean"] >= 0.999 and int8_iou < 0.99999
    assert code == 1
    err = _error_lines(capsys)
    assert len(err) == 1 and "below 0.99999" in err[0] and "int8" in err[0]


def test_export_errors_are_one_line(checkpoint, tmp_path, capsys):
    require_toolchain("onnxruntime")
    code = cli.main(["export", "--target", "onnx", "--precision", "int8", "--checkpoint", str(checkpoint),
                     "--out", str(tmp_path / "int8")])
    err = _error_lines(capsys)
    assert code == 2 and len(err) == 1 and "needs calibration images" in err[0]
    assert not (tmp_path / "int8").exists()


def test_validate_refuses_an_artifact_from_other_weights(checkpoint, make_tiny_model, images, tmp_path, capsys):
    require_toolchain("onnxruntime")
    other = edge_sam.save_model(make_tiny_model(seed=5), tmp_path / "other.safetensors")
    assert cli.main(["export", "--target", "onnx", "--checkpoint", str(other), "--out", str(tmp_path / "other")]) == 0
    code = cli.main(["validate", str(tmp_path / "other"), "--checkpoint", str(checkpoint), "--images", str(images.path),
                     "--report", str(tmp_path / "r")])
    err = _error_lines(capsys)
    assert code == 2 and len(err) == 1 and "exported from different weights" in err[0]


def test_markdown_table_has_one_row_per_runner(make_tiny_model, images):
    model = make_tiny_model(seed=0)
    report = measure_drift(TorchRunner(model), [TorchRunner(model, label="a"), TorchRunner(model, label="b")],
                           images.limited(1), measure_memory=False)
    lines = markdown_table(report).splitlines()
    assert len(lines) == 2 + 3 and lines[2].startswith("| pytorch-fp32 |")
