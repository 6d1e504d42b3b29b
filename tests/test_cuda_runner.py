"""TorchRunner on a torch device and precision (fp32 / tf32 / fp16 / bf16, optionally compiled):
the code path a CUDA GPU takes runs here on the CPU (fp16 and bf16 autocast exist there too); the
CUDA-only checks skip where torch sees no GPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import edge_sam
from edge_sam.apps import cli
from edge_sam.errors import EdgeSamError
from edge_sam.everything import EverythingConfig, EverythingGenerator
from edge_sam.predictor import Predictor
from edge_sam.runner import TorchRunner
from edge_sam.image_sources import image_folder
from edge_sam.targets.validation.drift import measure_drift
from edge_sam.targets.validation.report import COLUMNS, markdown_table
from edge_sam.transforms import write_image

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none here)")


@pytest.fixture(scope="module")
def images(tmp_path_factory, dogs):
    """A crop of the real photo and a downscale of it."""
    folder = tmp_path_factory.mktemp("images")
    write_image(folder / "crop.png", dogs[150:350, 450:750])
    write_image(folder / "small.png", dogs[::4, ::4])
    return image_folder(folder)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, make_tiny_model):
    return edge_sam.save_model(make_tiny_model(seed=3), tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.mark.slow
def test_report_columns_name_device_precision_and_peak_memory(make_tiny_model, images, checkpoint):
    model = edge_sam.load_model(checkpoint)
    report = measure_drift(TorchRunner(model), [TorchRunner(model, device="cpu", precision="bf16")], images,
                           checkpoint=str(checkpoint))
    titles = [title for title, _ in COLUMNS]
    assert {"device", "precision", "peak RSS MB", "GPU peak MB"} <= set(titles)
    rows = report.to_dict()["rows"]
    assert rows[1]["memory"]["peak_mb"] > rows[1]["memory"]["baseline_mb"] > 50  # probed with bf16 in a child
    table = markdown_table(report).splitlines()
    assert "| pytorch-bf16-cpu | bf16 | - | cpu |" in table[3]


def test_predictor_and_everything_take_the_device_runner(make_tiny_model, dogs):
    model = make_tiny_model(seed=3)
    image = dogs[::4, ::4].copy()
    predictor = Predictor(TorchRunner(model, device="cpu", precision="bf16"))
    predictor.set_image(image)
    masks, iou, _ = predictor.predict(point_coords=[[100, 60]], point_labels=[1])
    reference = Predictor(model)
    reference.set_image(image)
    expected, _, _ = reference.predict(point_coords=[[100, 60]], point_labels=[1])
    assert masks.shape == expected.shape and iou.dtype == np.float32
    generated = EverythingGenerator(predictor, EverythingConfig(points_per_side=4)).generate(progress=False)
    assert isinstance(generated, list)


def test_unavailable_device_or_precision_is_one_line(make_tiny_model):
    model = make_tiny_model()
    if not torch.cuda.is_available():
        with pytest.raises(EdgeSamError, match=r"^device 'cuda' asked, but (this torch build has no CUDA|no CUDA GPU)"):
            TorchRunner(model, device="cuda", precision="fp16")
    with pytest.raises(EdgeSamError, match="tf32 is a CUDA precision"):
        TorchRunner(model, device="cpu", precision="tf32")
    with pytest.raises(EdgeSamError, match="unknown torch precision 'int4'"):
        TorchRunner(model, device="cpu", precision="int4")
    with pytest.raises(EdgeSamError, match="unknown torch device"):
        TorchRunner(model, device="gpu0")


def test_validate_command_adds_torch_rows(make_tiny_model, checkpoint, images, tmp_path, capsys):
    """fp16 and bf16 autocast on the CPU: the path a GPU takes, with the same report columns."""
    assert cli.main(["validate", "--checkpoint", str(checkpoint), "--images", str(images.path), "--report",
                     str(tmp_path / "r"), "--no-memory", "--torch-device", "cpu", "--torch-precision", "fp16,bf16"]) == 0
    rows = json.loads((tmp_path / "r" / "report.json").read_text())["rows"]
    assert [(r["label"], r["precision"], r["device"]) for r in rows] == [
        ("pytorch-fp32", "fp32", "cpu"), ("pytorch-fp16-cpu", "fp16", "cpu"), ("pytorch-bf16-cpu", "bf16", "cpu")]
    for row, floor in zip(rows[1:], (0.97, 0.9)):
        assert floor <= row["mask_iou_mean"] < 1.0  # it really computed in 16 bits, and stayed close
        assert row["embedding_cosine_mean"] > 0.999 and row["memory"] is None
    if not torch.cuda.is_available():
        capsys.readouterr()
        assert cli.main(["validate", "--checkpoint", str(checkpoint), "--images", str(images.path), "--report",
                         str(tmp_path / "r2"), "--torch-device", "cuda"]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("edge-sam:")]
        assert len(errors) == 1 and ("has no CUDA" in errors[0] or "no CUDA GPU" in errors[0])
        assert not (tmp_path / "r2").exists()


@pytest.mark.slow
def test_compiled_runner_matches_eager(make_tiny_model, dogs):
    """torch.compile's graph capture with the eager backend (inductor's C++ build takes minutes
    on this CPU; the backend is the same argument)."""
    model = make_tiny_model(seed=3)
    image = dogs[::4, ::4].copy()
    eager, compiled = TorchRunner(model), TorchRunner(model, device="cpu", compile="eager")
    assert compiled.label == "pytorch-fp32-cpu-compiled" and compiled.describe()["interface"] == "compiled (eager)"
    assert not hasattr(model.image_encoder, "_orig_mod")  # the caller's model is not wrapped
    np.testing.assert_allclose(compiled.encode(image), eager.encode(image), atol=1e-5)
    embedding = eager.encode(image)
    for a, b in zip(compiled.decode(embedding, [[100, 60]], [1], image.shape[:2]),
                    eager.decode(embedding, [[100, 60]], [1], image.shape[:2])):
        np.testing.assert_allclose(a, b, atol=1e-5)


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16", "bf16"])
def test_cuda_rows_against_the_cpu_reference(make_tiny_model, images, precision):
    model = make_tiny_model(seed=3)
    if precision == "tf32" and torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("tf32 needs compute capability 8.0")
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    runner = TorchRunner(model, device="cuda", precision=precision)
    report = measure_drift(TorchRunner(model), [runner], images, measure_memory=True)
    row = report.to_dict()["rows"][1]
    assert row["device"].startswith("cuda:0 (") and row["memory"]["gpu_peak_mb"] > 0
    assert row["mask_iou_mean"] >= (0.99 if precision in ("fp32", "tf32") else 0.9)
    assert next(model.parameters()).device.type == "cpu"
