"""``edge_sam.targets.validate``: the library call behind ``edge-sam validate`` and
``edge-sam export --validate``, its report, its gate and its one-line errors."""

from __future__ import annotations

import json

import cv2
import pytest
from conftest import require_toolchain
import torch

import edge_sam
from edge_sam.apps import cli
from edge_sam.errors import EdgeSamError
from edge_sam.targets import FidelityGateError, get_target, image_folder, validate
from edge_sam.targets.validation.drift import DriftReport
from edge_sam.transforms import write_image

require_toolchain("onnxruntime")


pytestmark = pytest.mark.torch_threads(1)


MODEL_SEED = 0  # the tiny weights of conftest's module-scoped `model` fixture


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, model):
    return edge_sam.save_model(model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def images(tmp_path_factory, dogs):
    """Two held-out views of the photo: downscaled whole, and a crop."""
    folder = tmp_path_factory.mktemp("val")
    write_image(folder / "dogs.png", cv2.resize(dogs, (268, 151), interpolation=cv2.INTER_AREA))
    write_image(folder / "crop.png", dogs[200:300, 500:640])
    return folder


@pytest.fixture(scope="module")
def fp32(tmp_path_factory, model):
    return get_target("onnx").export(model, "fp32", None, tmp_path_factory.mktemp("art") / "onnx-fp32")


FAST = {"measure_memory": False, "layers": False}


def test_validate_returns_the_report_and_writes_it(fp32, checkpoint, images, tmp_path):
    report = validate([fp32], checkpoint=checkpoint, images=images, report_dir=tmp_path / "r", max_images=1,
                      runtime_options={"onnx": {"threads": 1}}, **FAST)
    assert isinstance(report, DriftReport) and report.n_images == 1
    rows = json.loads((tmp_path / "r" / "report.json").read_text())["rows"]
    assert [r["label"] for r in rows] == [r.info["label"] for r in report.rows()]
    assert rows[1]["artifact_dir"] == str(fp32) and rows[1]["mask_iou_mean"] >= 0.999
    assert (tmp_path / "r" / "report.html").is_file()


def test_gate_raises_after_the_report_is_written(fp32, checkpoint, images, tmp_path):
    with pytest.raises(FidelityGateError, match=r"mask IoU vs fp32 below 1\.01: onnx") as info:
        validate([fp32], checkpoint=checkpoint, images=images, report_dir=tmp_path / "r", max_images=1,
                 fail_under_mask_iou=1.01, **FAST)  # a mean IoU is at most 1: every artifact fails this gate
    assert "\n" not in str(info.value) and [r.artifact_dir for r in info.value.failing] == [str(fp32)]
    assert info.value.report.n_images == 1 and (tmp_path / "r" / "report.json").is_file()


def test_bad_requests_are_one_line_before_any_work(fp32, checkpoint, images, model, tmp_path):
    other_size = get_target("onnx").export(model, "fp32", None, tmp_path / "onnx-128", img_size=128)
    other_weights = get_target("onnx").export(_perturbed(model), "fp32", None, tmp_path / "other")
    cases = [
        (dict(artifacts=[fp32]), "exactly one of images, dataset"),
        (dict(artifacts=[fp32], images=images, dataset=images), "exactly one of images, dataset"),
        (dict(artifacts=[], images=images), "at least one artifact"),
        (dict(artifacts=[fp32], images=images, max_images=0), "max_images must be at least 1"),
        (dict(artifacts=[fp32, other_size], images=images), "one img_size per run"),
        (dict(artifacts=[other_weights], images=images), "exported from different weights"),
        (dict(artifacts=[fp32], images=tmp_path / "nowhere"), "image folder not found"),
        (dict(artifacts=[fp32], images=images, runtime_options={"onnx": {"bogus": 1}}), "bogus"),
    ]
    for kwargs, message in cases:
        with pytest.raises(EdgeSamError, match=message) as info:
            validate(kwargs.pop("artifacts"), checkpoint=checkpoint, report_dir=tmp_path / "r", **kwargs, **FAST)
        assert "\n" not in str(info.value)
    assert not (tmp_path / "r").exists()


def _perturbed(model):
    other = type(model)(model.config).eval()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    return other


def test_validating_on_the_calibration_images_warns(model, checkpoint, images, tmp_path):
    int8 = get_target("onnx").export(model, "int8", "static-conv-linear", tmp_path / "int8",
                                     calibration=image_folder(images))
    with pytest.warns(UserWarning, match="was calibrated on .* the images it is validated on"):
        validate([int8], checkpoint=checkpoint, images=images, max_images=1, **FAST)


# -- edge-sam export --validate ---------------------------------------------------------------------

def test_export_validate_writes_the_report_beside_the_artifact(checkpoint, images, tmp_path, capsys):
    out = tmp_path / "onnx-fp32"
    assert cli.main(["export", "--target", "onnx", "--checkpoint", str(checkpoint), "--out", str(out),
                     "--validate", "--images", str(images)]) == 0
    stdout = capsys.readouterr().out
    report = json.loads((tmp_path / "onnx-fp32-validation" / "report.json").read_text())
    assert report["n_images"] == 2 and report["rows"][1]["mask_iou_mean"] >= 0.999
    assert report["rows"][1]["memory"]["peak_mb"] > 0  # the full validation, memory probes included
    assert "| pytorch-fp32 |" in stdout and str(tmp_path / "onnx-fp32-validation" / "report.html") in stdout
    assert not (out / "report.json").exists()  # the artifact folder holds the artifact only


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--validate"], "--validate and --images go together"), (["--images", "val"], "--validate and --images go together"),
     (["--validate", "--images", "nowhere"], "image folder not found")],
)
def test_export_validate_errors_come_before_the_export(checkpoint, tmp_path, capsys, extra, message):
    code = cli.main(["export", "--target", "onnx", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "a"), *extra])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("edge-sam:")]
    assert code == 2 and len(err) == 1 and message in err[0]
    assert not (tmp_path / "a").exists()
