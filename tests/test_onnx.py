"""ONNX target: fp32 parity (both interfaces), the official interface's contract, fp16/INT8 drift,
and one clear error for a missing runtime or a bad option; the refusals every target shares (a
file tampered with or missing, a manifest that disagrees) are in test_target_conformance.py."""

from __future__ import annotations

import builtins
import json
import sys

import cv2
import numpy as np
import pytest
from conftest import require_toolchain
import torch

import edge_sam
from edge_sam.errors import EdgeSamError, MissingToolchainError
from edge_sam.eval.metrics import mask_iou
from edge_sam.targets import TorchRunner, get_target, image_folder, load_runner
from edge_sam.targets.validation.drift import cosine, full_size_masks, measure_drift
from edge_sam.fixed_prompts import grid_prompts
from edge_sam.transforms import write_image

onnx = require_toolchain("onnx")
ort = require_toolchain("onnxruntime")


pytestmark = pytest.mark.torch_threads(1)


def _write_calibration_images(folder, image: np.ndarray, count: int = 4):
    """Overlapping crops of the sample photo, a quarter of its size (small keeps tests fast)."""
    folder.mkdir()
    h, w = image.shape[:2]
    for i in range(count):
        y, x = (h // 8) * i // 2, (w // 8) * i
        crop = image[y : y + h // 2 + 40, x : x + w // 2 + 60]
        write_image(folder / f"calib_{i}.png", cv2.resize(crop, (crop.shape[1] // 2, crop.shape[0] // 2)))
    return folder


MODEL_SEED = 3  # the tiny weights of conftest's module-scoped `model` fixture


@pytest.fixture(scope="module")
def calibration(tmp_path_factory, dogs):
    return image_folder(_write_calibration_images(tmp_path_factory.mktemp("calib") / "images", dogs))


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, model, calibration):
    """One export per precision/interface/recipe the tests need (the slow part, done once)."""
    root = tmp_path_factory.mktemp("artifacts")
    target = get_target("onnx")
    plans = {
        "deploy-fp32": ("fp32", None, "deploy"),
        "official-fp32": ("fp32", None, "official"),
        "deploy-fp16": ("fp16", None, "deploy"),
        "deploy-int8": ("int8", "static-conv-linear", "deploy"),
        "official-int8-dynamic": ("int8", "dynamic-linear", "official"),
    }
    # Official decoders upsample bicubic here, as predict_masks does: they are compared with it below.
    return {
        name: target.export(model, precision, recipe, root / name, calibration=calibration, interface=interface,
                            **({"upsample": "bicubic"} if interface == "official" else {}))
        for name, (precision, recipe, interface) in plans.items()
    }


def _one_line(exc: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(exc.value)
    return str(exc.value)


@pytest.mark.parametrize("name", ["deploy-fp32", "official-fp32"])
def test_fp32_matches_pytorch(artifacts, model, dogs, name):
    reference, runner = TorchRunner(model), load_runner(artifacts[name])
    ref_embedding, embedding = reference.encode(dogs), runner.encode(dogs)
    assert cosine(ref_embedding, embedding) >= 0.9999
    ious = []
    for prompt in grid_prompts(dogs.shape[:2]):
        ref_masks = full_size_masks(reference.decode(ref_embedding, prompt.points, prompt.labels, dogs.shape[:2])[0], dogs.shape[:2])
        low_res, iou = runner.decode(embedding, prompt.points, prompt.labels, dogs.shape[:2])
        masks = full_size_masks(low_res, dogs.shape[:2])
        ious += [mask_iou(masks[k], ref_masks[k]) for k in range(3)]
    assert np.mean(ious) >= 0.999 and min(ious) >= 0.99


def test_every_graph_passes_checker_with_full_shape_inference(artifacts):
    for artifact in artifacts.values():
        for name in ("encoder.onnx", "decoder.onnx"):
            onnx.checker.check_model(str(artifact / name), full_check=True)
            assert not any(n.op_type == "Tile" for n in onnx.load(str(artifact / name)).graph.node)


def test_official_interface_names_shapes_and_dtypes(artifacts):
    manifest = edge_sam.targets.read_manifest(artifacts["official-fp32"])
    encoder, decoder = manifest.graph("encoder"), manifest.graph("decoder")
    assert [(t.name, t.shape, t.dtype) for t in encoder.inputs] == [("batched_images", ("batch", 3, "height", "width"), "float32")]
    assert [(t.name, t.shape) for t in encoder.outputs] == [("image_embeddings", ("batch", 32, 4, 4))]
    assert [(t.name, t.shape, t.dtype) for t in decoder.inputs] == [
        ("image_embeddings", ("batch", 32, 4, 4), "float32"),
        ("batched_point_coords", ("batch", "num_queries", "num_points", 2), "float32"),
        ("batched_point_labels", ("batch", "num_queries", "num_points"), "float32"),
        ("orig_im_size", (2,), "int64"),
    ]
    assert [(t.name, t.shape) for t in decoder.outputs] == [
        ("output_masks", ("batch", "num_queries", 3, "image_height", "image_width")),
        ("iou_predictions", ("batch", "num_queries", 3)),
        ("low_res_masks", ("batch", "num_queries", 3, 16, 16)),
    ]


@pytest.mark.parametrize(("b", "q", "n", "hw"), [(1, 1, 2, (603, 1072)), (2, 3, 7, (100, 37)), (3, 2, 1, (10, 12))])
def test_official_decoder_matches_predict_masks(artifacts, model, b, q, n, hw):
    """Dynamic batch, queries and points (7 > 6 slots truncates), up- and downsampling to the image."""
    session = ort.InferenceSession(str(artifacts["official-fp32"] / "decoder.onnx"))
    generator = torch.Generator().manual_seed(b * 100 + q * 10 + n)
    embeddings = torch.randn(b, 32, 4, 4, generator=generator)
    coords = torch.rand(b, q, n, 2, generator=generator) * torch.tensor([hw[1], hw[0]])
    labels = torch.randint(1, 4, (b, q, n), generator=generator).float()
    masks, iou, low_res = session.run(None, {
        "image_embeddings": embeddings.numpy(), "batched_point_coords": coords.numpy(),
        "batched_point_labels": labels.numpy(), "orig_im_size": np.array(hw, np.int64),
    })
    with torch.inference_mode():
        expected_masks, expected_iou = model.predict_masks(embeddings, coords, labels, True, *hw, *hw)
        expected_low_res, _ = model.predict_masks(embeddings, coords, labels, True, *hw)
    assert masks.shape == (b, q, 3, *hw) and low_res.shape == (b, q, 3, 16, 16)
    scale = np.abs(expected_masks.numpy()).max()
    assert np.abs(masks - expected_masks.numpy()).max() <= 1e-5 * scale
    assert np.abs(low_res - expected_low_res.numpy()).max() <= 1e-5 * scale
    np.testing.assert_allclose(iou, expected_iou.numpy(), atol=1e-5)


def test_official_encoder_takes_any_batch_and_size(artifacts, model):
    session = ort.InferenceSession(str(artifacts["official-fp32"] / "encoder.onnx"))
    images = torch.rand(2, 3, 75, 131, generator=torch.Generator().manual_seed(0))
    (embeddings,) = session.run(None, {"batched_images": images.numpy()})
    with torch.inference_mode():
        expected = model.get_image_embeddings(images).numpy()
    assert embeddings.shape == (2, 32, 4, 4)
    assert np.abs(embeddings - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.slow
def test_official_interface_reproduces_reference_outputs(parity_errors, parity_model, parity_outputs, dogs, tmp_path):
    """The full 1024 Ti through onnxruntime against the reference implementation's own outputs
    (benchmarks/parity_errors.py --target onnx measures; this bounds it)."""
    errors = parity_errors.measure_onnx(parity_model, parity_outputs, dogs, tmp_path / "ti")
    assert errors["image_embeddings_rel_max"] <= 1e-4
    assert errors["low_res_logits_rel_max"] <= 1e-3
    assert errors["iou_predictions_abs_max"] <= 1e-3
    assert errors["full_res_mask_agreement"] >= 0.999


def test_int8_recipe_quantizes_weights_and_keeps_the_rest_float(artifacts):
    graph = onnx.load(str(artifacts["deploy-int8"] / "encoder.onnx")).graph
    produced_by = {out: node.op_type for node in graph.node for out in node.output}
    constants = {t.name for t in graph.initializer}
    dequantized = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    assert dequantized, "no QDQ pairs: nothing was quantized"
    for node in graph.node:
        sources = [produced_by.get(i) for i in node.input]
        if node.op_type in ("Conv",) or (node.op_type == "MatMul" and _is_weight(node.input[1], produced_by, constants, graph)):
            assert sources[:2] == ["DequantizeLinear", "DequantizeLinear"], node.name
        elif node.op_type in ("MatMul", "Softmax", "LayerNormalization", "Erf", "Add"):
            assert "DequantizeLinear" not in sources, f"{node.op_type} {node.name} was quantized"
    decoder = onnx.load(str(artifacts["deploy-int8"] / "decoder.onnx")).graph
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in decoder.node)  # decoder stays float


def _is_weight(name, produced_by, constants, graph) -> bool:
    """A MatMul operand that is a (dequantized) constant rather than an activation."""
    if name in constants:
        return True
    node = next((n for n in graph.node if name in n.output), None)
    return node is not None and node.op_type == "DequantizeLinear" and node.input[0] in constants


def test_fp16_and_int8_run_and_their_drift_is_reported(artifacts, model, calibration, tmp_path):
    from edge_sam.targets.validation.report import write_report

    names = ["deploy-fp16", "deploy-int8", "official-int8-dynamic"]
    runners = [load_runner(artifacts[n]) for n in names]
    target = get_target("onnx")
    report = measure_drift(
        TorchRunner(model), runners, calibration.limited(2), artifact_dirs=[str(artifacts[n]) for n in names],
        measure_memory=False, layer_drift=lambda i, runner, images: target.layer_drift(artifacts[names[i]], runner, model, images),
    )
    rows = {row["label"]: row for row in report.to_dict()["rows"]}
    assert len(rows) == 4
    for runner in runners:
        row = rows[runner.label]
        assert row["n_prompts"] == 24 and len(runner.describe()) and row["bytes"] > 0
        assert 0.99 <= row["embedding_cosine_mean"] <= 1.0 + 1e-6
        assert row["mask_iou_mean"] >= 0.9 and row["encoder_p50_s"] > 0
    assert rows[runners[0].label]["embedding_sqnr_db_mean"] > rows[runners[1].label]["embedding_sqnr_db_mean"]  # fp16 beats int8
    layers = report.to_dict()["layers"]
    assert set(layers) == {r.label for r in runners}
    int8_layers = layers[runners[1].label]
    assert {row["op_type"] for row in int8_layers} >= {"Conv", "MatMul", "LayerNormalization"}
    assert all(np.isfinite(row["sqnr_db"]) for row in int8_layers)
    out = write_report(report, tmp_path / "report")
    assert json.loads((out / "report.json").read_text())["rows"][1]["label"] == runners[0].label
    assert "Per-layer drift" in (out / "report.md").read_text()


# -- one clear error for a missing runtime or a bad option (a broken artifact: test_target_conformance.py)

def test_missing_onnxruntime_names_the_extra(artifacts, monkeypatch):
    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    for module in [m for m in sys.modules if m == "onnxruntime" or m.startswith("onnxruntime.")]:
        monkeypatch.delitem(sys.modules, module)
    with pytest.raises(MissingToolchainError) as exc:
        load_runner(artifacts["deploy-fp32"])
    assert "pip install 'edge-sam[onnx]'" in _one_line(exc)


def test_failed_export_leaves_nothing(model, tmp_path):
    with pytest.raises(EdgeSamError, match="target onnx takes no export option opset"):
        get_target("onnx").export(model, "fp32", None, tmp_path / "art", opset=11)
    assert list(tmp_path.iterdir()) == []


def test_static_int8_linear_layers_run_integer_kernels(artifacts, tmp_path):
    """The runner's session options for an 8-bit static graph let onnxruntime turn each linear
    layer's Q/DQ group into MatMulIntegerToFloat; with its default MatMul + Add -> Gemm fusion
    they ran as dequantize + float Gemm (slower than fp32)."""
    import onnxruntime as ort

    from edge_sam.quantize.recipe_file import get_recipe
    from edge_sam.targets.onnx.runtime import disabled_optimizers, session_options

    def optimized_ops(disabled: list[str]) -> set[str]:
        options = session_options(threads=1)
        options.optimized_model_filepath = str(tmp_path / f"optimized-{len(disabled)}.onnx")
        ort.InferenceSession(str(artifacts["deploy-int8"] / "encoder.onnx"), options,
                             providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
        return {node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node}

    disabled = disabled_optimizers(get_recipe("static-conv-linear"), "encoder")
    assert disabled == ["MatMulAddFusion"]
    ours, default = optimized_ops(disabled), optimized_ops([])
    assert "MatMulIntegerToFloat" in ours and "Gemm" not in ours
    assert "MatMulIntegerToFloat" not in default  # what the option is for: fails if onnxruntime changes


def test_static_int8_without_calibration_is_refused(model, tmp_path):
    with pytest.raises(EdgeSamError, match="needs calibration images"):
        get_target("onnx").export(model, "int8", None, tmp_path / "art")
    assert list(tmp_path.iterdir()) == []


def test_streamed_minmax_ranges_equal_onnxruntimes_calibrator(artifacts, model, calibration, tmp_path, monkeypatch):
    """Static INT8 takes its MinMax ranges from minmax_ranges (only the quantized nodes' tensors,
    one image at a time: bounded memory at 1024); onnxruntime's own calibrator, on the same images,
    gives every quantize/dequantize pair the same scale and zero point."""
    import functools

    from edge_sam.targets.onnx import quantize

    monkeypatch.setattr(quantize, "quantize_int8", functools.partial(quantize.quantize_int8, stream_minmax=False))
    reference = get_target("onnx").export(model, "int8", "static-conv-linear", tmp_path / "ort", calibration=calibration)

    def qparams(artifact):
        graph = onnx.load(str(artifact / "encoder.onnx")).graph
        values = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
        return [(node.op_type, *(values[i].tolist() for i in node.input[1:3] if i in values))
                for node in graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")]

    streamed, calibrated = qparams(artifacts["deploy-int8"]), qparams(reference)
    assert len(streamed) > 10 and len(streamed) == len(calibrated)
    for ours, theirs in zip(streamed, calibrated):
        assert ours[0] == theirs[0] and np.allclose(np.asarray(ours[1], float), np.asarray(theirs[1], float), rtol=1e-6)
        assert ours[2:] == theirs[2:]


def test_the_profile_times_every_encoder_layer_in_fp32_and_int8(artifacts, model, dogs):
    """The mixed search's prune order reads these: every layer must be found in both profiles
    (fused, renamed and Q/DQ nodes included), or its INT8 saving would read as zero."""
    from edge_sam.quantize.layers import quantizable_layers
    from edge_sam.targets.onnx.profile import profiled_layer_ms

    layers = quantizable_layers(model.config)
    for name in ("deploy-fp32", "deploy-int8"):
        times = profiled_layer_ms(artifacts[name], layers, dogs)
        assert sorted(times) == sorted(layers) and all(ms > 0 for ms in times.values()), name
