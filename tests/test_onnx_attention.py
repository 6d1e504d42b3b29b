"""``--attention fused``: every exported attention becomes one com.microsoft.MultiHeadAttention
node, with the same outputs in onnxruntime, for every precision; where it cannot run it is refused."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from conftest import ort_int8_saturates

from edge_sam.errors import EdgeSamError
from edge_sam.runner import TorchRunner

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from edge_sam.targets import get_target, load_runner  # noqa: E402
from edge_sam.targets.onnx.attention import FUSED_OP, fuse_attention, max_abs_diff  # noqa: E402
from edge_sam.targets.onnx.graphs import export_deploy_decoder, export_deploy_encoder  # noqa: E402


def _ops(path) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


@pytest.fixture(scope="module")
def plain_graphs(tmp_path_factory, make_tiny_model):
    model = make_tiny_model()
    folder = tmp_path_factory.mktemp("plain")
    export_deploy_encoder(model, model.config.img_size, folder / "encoder.onnx")
    export_deploy_decoder(model, model.config.img_size, folder / "decoder.onnx")
    return model, folder


@pytest.mark.parametrize(("role", "expected"), [("encoder", 2), ("decoder", 7)])
def test_every_attention_is_fused_with_the_same_outputs(plain_graphs, role, expected):
    """tiny: 2 encoder blocks; decoder: 2 layers x 3 attentions + the final one."""
    _, folder = plain_graphs
    original = onnx.load(str(folder / f"{role}.onnx"))
    fused = onnx.load(str(folder / f"{role}.onnx"))
    assert fuse_attention(fused) == expected
    counts = Counter(node.op_type for node in fused.graph.node)
    assert counts[FUSED_OP] == expected and counts["Softmax"] == 0
    onnx.checker.check_model(fused, full_check=True)
    diff = max_abs_diff(original, fused)
    assert diff["ok"] and diff["max_abs_diff"] <= 1e-5 * max(1.0, diff["range"])
    assert fuse_attention(fused) == 0  # nothing left to fuse: the pass is idempotent


def test_a_graph_without_the_pattern_is_left_alone():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], "g", [x], [y])
    model = helper.make_model(graph)
    assert fuse_attention(model) == 0 and [n.op_type for n in model.graph.node] == ["Softmax"]


@pytest.mark.slow  # three tiny ONNX exports and a calibration: 20-60 s on a shared 2-core CPU
def test_fused_artifacts_match_the_model_in_every_precision(make_tiny_model, dogs, tmp_path):
    model = make_tiny_model()
    reference = TorchRunner(model)
    h, w = dogs.shape[:2]
    point, label = np.array([[w * 0.5, h * 0.4]], np.float32), np.array([1.0], np.float32)
    expected_embedding = reference.encode(dogs)
    expected_logits, _ = reference.decode(expected_embedding, point, label, (h, w))
    target = get_target("onnx")
    # int8: onnxruntime's saturating u8s8 kernels on an x86 CPU without VNNI drift further (conftest)
    int8_tolerance = 1.5e-1 if ort_int8_saturates() else 5e-2
    for precision, recipe, tolerance in (("fp32", None, 1e-4), ("fp16", None, 2e-2), ("int8", "dynamic-linear", int8_tolerance)):
        out = target.export(model, precision, recipe, tmp_path / precision, attention="fused")
        assert _ops(out / "encoder.onnx")[FUSED_OP] == model.config.encoder_depth
        runner = load_runner(out)
        embedding = runner.encode(dogs)
        logits, _ = runner.decode(embedding, point, label, (h, w))
        scale = float(np.abs(expected_embedding).max())
        assert np.abs(embedding - expected_embedding).max() <= tolerance * scale, precision
        assert np.abs(logits - expected_logits).max() <= tolerance * max(1.0, float(np.abs(expected_logits).max()))
        assert runner.manifest.export_options == {"attention": "fused"}
    with pytest.raises(EdgeSamError, match="TensorRT"):
        target.export(model, "fp32", None, tmp_path / "trt", attention="fused", for_runtime="tensorrt")
    assert not (tmp_path / "trt").exists()
