"""The ONNX files written for TensorRT (``export --target onnx --for-runtime tensorrt``): static
shapes, no run-time int64 shape arithmetic, fp16 with the unsafe ops kept fp32, INT8 as symmetric
Q/DQ on weighted-op inputs. TensorRT itself is not installed here (no GPU is lent to this project's
CPU machines): every file is checked by onnx.checker with full shape inference, by the rules in
edge_sam.targets.onnx.tensorrt, and by running it in the CPU onnxruntime against PyTorch."""

from __future__ import annotations

import gc
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import require_toolchain

onnx = require_toolchain("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import edge_sam
from edge_sam.apps import cli
from edge_sam.data.synthetic import generate_synthetic
from edge_sam.errors import EdgeSamError
from edge_sam.runner import TorchRunner
from edge_sam.targets import get_target, image_folder, load_runner
from edge_sam.image_sources import dataset_source
from edge_sam.targets.onnx import tensorrt
from edge_sam.targets.validation.drift import measure_drift
from edge_sam.transforms import write_image

ort = require_toolchain("onnxruntime")


@pytest.fixture(scope="module")
def held_out(tmp_path_factory, dogs):
    """Crops of the real photo, never used for calibration."""
    folder = tmp_path_factory.mktemp("held-out")
    write_image(folder / "dogs_left.png", dogs[50:450, 100:600])
    write_image(folder / "dogs_right.png", dogs[200:, 550:])
    return image_folder(folder)


def _graph(path):
    return onnx.load(str(path))


def test_shape_arithmetic_is_folded_to_constants():
    """Shape -> Gather -> Concat -> Reshape on a static input becomes one Reshape by a constant."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 16])
    nodes = [helper.make_node("Shape", ["x"], ["shape"], name="shape"),
             helper.make_node("Gather", ["shape", "first_two"], ["head"], name="gather", axis=0),
             helper.make_node("Concat", ["head", "minus_one"], ["target"], name="concat", axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape")]
    constants = [numpy_helper.from_array(np.array([0, 1], np.int64), "first_two"),
                 numpy_helper.from_array(np.array([-1], np.int64), "minus_one")]
    model = helper.make_model(helper.make_graph(nodes, "chain", [x], [y], initializer=constants),
                              opset_imports=[helper.make_opsetid("", 18)])
    assert tensorrt.runtime_int64_nodes(model) == ["Shape shape", "Gather gather", "Concat concat"]
    assert tensorrt.fold_shape_computations(model) == 3
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Reshape"] and tensorrt.tensorrt_problems(model) == []
    value = np.random.default_rng(0).random((1, 3, 4, 4), np.float32)
    assert np.array_equal(ort.InferenceSession(model.SerializeToString()).run(None, {"x": value})[0], value.reshape(1, 3, 16))


@pytest.fixture(scope="module")
def tiny_forms(tmp_path_factory, make_tiny_model):
    model = make_tiny_model(seed=2)
    root = tmp_path_factory.mktemp("trt-tiny")
    target = get_target("onnx")
    forms = {precision: target.export(model, precision, None, root / precision, for_runtime="tensorrt")
             for precision in ("fp32", "fp16")}
    return model, forms


def test_fp32_and_fp16_forms_follow_tensorrt_rules_and_match_pytorch(tiny_forms, held_out):
    model, forms = tiny_forms
    for precision, artifact in forms.items():
        manifest = json.loads((artifact / "manifest.json").read_text())
        assert manifest["export_options"] == {"for_runtime": "tensorrt"}
        for file in ("encoder.onnx", "context.onnx", "decoder.onnx"):
            assert tensorrt.tensorrt_problems(_graph(artifact / file)) == [], (precision, file)
    runners = [load_runner(forms["fp32"]), load_runner(forms["fp16"])]
    assert runners[0].label.startswith("onnx-tensorrt-fp32")
    report = measure_drift(TorchRunner(model), runners, held_out, measure_memory=False)
    fp32, fp16 = (r.summary() for r in report.runners)
    assert fp32["mask_iou_mean"] >= 0.999
    assert fp16["mask_iou_mean"] >= 0.99 and fp16["embedding_cosine_mean"] > 0.999


def test_fp16_form_keeps_norms_softmax_and_fourier_encoding_in_fp32(tiny_forms):
    _, forms = tiny_forms
    for file in ("encoder.onnx", "decoder.onnx"):
        model = onnx.shape_inference.infer_shapes(_graph(forms["fp16"] / file))
        graph = model.graph
        types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info, *graph.output]}
        types.update({t.name: t.data_type for t in graph.initializer})
        kept = [n for n in graph.node if n.op_type in tensorrt.FP32_OPS]
        assert kept and all(types[n.input[0]] == TensorProto.FLOAT for n in kept)
        matmuls = [n for n in graph.node if n.op_type in ("MatMul", "Conv", "Gemm")
                   and n.name not in tensorrt.fourier_encoding_nodes(_graph(forms["fp32"] / file))]
        assert matmuls and all(types[n.input[0]] == TensorProto.FLOAT16 for n in matmuls)
    decoder = _graph(forms["fp16"] / "decoder.onnx")
    assert {"Sin", "Cos"} <= {n.op_type for n in decoder.graph.node}


def test_placement_says_which_provider_ran_the_nodes(tiny_forms, dogs):
    _, forms = tiny_forms
    runner = load_runner(forms["fp32"], providers=["cpu"])
    info = runner.describe()
    assert info["device"] == "CPUExecutionProvider"
    assert info["node_providers"]["encoder"]["CPUExecutionProvider"] > 10
    assert set(info["node_providers"]) == {"encoder", "context", "decoder"}
    runner.encode(dogs[:64, :64].copy())  # profiling ended with the first run: later runs are not profiled
    unused = load_runner(forms["fp32"])  # never run: its profile is not left behind
    del unused
    gc.collect()
    assert not list(Path(tempfile.gettempdir()).glob(f"edge-sam-ort-placement-{os.getpid()}-*"))
    if "TensorrtExecutionProvider" not in ort.get_available_providers():  # the CPU onnxruntime: one clear line
        with pytest.raises(EdgeSamError, match="TensorrtExecutionProvider.* not installed"):
            load_runner(forms["fp32"], providers=["tensorrt", "cuda", "cpu"])


def test_requests_tensorrt_cannot_take_are_one_line(make_tiny_model, tmp_path):
    model = make_tiny_model()
    target = get_target("onnx")
    with pytest.raises(EdgeSamError, match="exports the deploy interface"):
        target.export(model, "fp32", None, tmp_path / "a", interface="official", for_runtime="tensorrt")
    with pytest.raises(EdgeSamError, match="'dynamic-linear' is dynamic"):
        target.export(model, "int8", "dynamic-linear", tmp_path / "b", for_runtime="tensorrt")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_export_command_has_the_flag(capsys):
    with pytest.raises(SystemExit):
        cli.main(["export", "--help"])
    assert "--for-runtime {onnxruntime,tensorrt}" in capsys.readouterr().out


@pytest.mark.slow
def test_qdq_int8_form_drifts_like_the_regular_int8_artifact(tmp_path, held_out):
    """The reference model at 256 px, calibrated on synthetic images, validated on crops of the
    real photo and on other synthetic images: the TensorRT Q/DQ form (symmetric activations,
    float biases) drifts as much as onnxruntime's own INT8 artifact (the fp32 form's IoU >= 0.999
    is checked above; docs/jetson.md has it for this model)."""
    model = edge_sam.load_model("reference")
    splits = generate_synthetic(tmp_path / "synthetic", {"calib": 6, "val": 2}, img_size=256, seed=11, progress=False)
    calibration = dataset_source(splits["calib"])
    target = get_target("onnx")
    regular = target.export(model, "int8", None, tmp_path / "int8", calibration=calibration)
    qdq = target.export(model, "int8", None, tmp_path / "trt-int8", calibration=calibration, for_runtime="tensorrt")
    assert tensorrt.tensorrt_problems(_graph(qdq / "encoder.onnx")) == []
    problems = tensorrt.tensorrt_problems(_graph(regular / "encoder.onnx"))  # asymmetric, int32 biases
    assert any("zero point" in p for p in problems) and any("INT32" in p for p in problems)
    quantized = [n for n in _graph(qdq / "encoder.onnx").graph.node if n.op_type == "QuantizeLinear"]
    assert len(quantized) >= 12 * 4  # every block's qkv, proj and MLP inputs at least
    runners = [load_runner(path) for path in (regular, qdq)]
    for source in (held_out, dataset_source(splits["val"])):
        report = measure_drift(TorchRunner(model), runners, source, measure_memory=False)
        regular_row, qdq_row = (r.summary() for r in report.runners)
        assert qdq_row["mask_iou_mean"] == pytest.approx(regular_row["mask_iou_mean"], abs=0.02)
        assert qdq_row["embedding_sqnr_db_mean"] == pytest.approx(regular_row["embedding_sqnr_db_mean"], abs=3.0)
