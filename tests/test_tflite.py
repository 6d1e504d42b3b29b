"""LiteRT target: fp32/fp16 parity with PyTorch, dynamic and static INT8 with drift and per-module
drift, int8 I/O, the drift gate catching the naive all-INT8 variant, and one clear error for
a corrupt flatbuffer or a missing runtime (the refusals every target shares: test_target_conformance.py).

The tiny model runs at img_size 512: 1024 tokens is where LiteRT's int8 softmax (outputs on a
1/256 grid) starts zeroing attention weights, so the naive variant drifts for real, while the
tiny widths keep every conversion to seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys

import numpy as np
import pytest
from conftest import require_toolchain

import edge_sam
from edge_sam.graph_contract import CONTEXT_NAMES
from edge_sam.apps import cmd_export
from edge_sam.errors import EdgeSamError, MissingToolchainError
from edge_sam.eval.metrics import mask_iou
from edge_sam.quantize.recipes import OpClass, RecipeError
from edge_sam.quantize.recipe_file import get_recipe
from edge_sam.targets import ArtifactError, TorchRunner, get_target, load_runner
from edge_sam.targets.validation.drift import cosine, full_size_masks, measure_drift
from edge_sam.targets.core.manifest import MANIFEST_NAME, read_manifest, write_manifest
from edge_sam.fixed_prompts import grid_prompts

require_toolchain("litert_torch")
interpreter_lib = require_toolchain("ai_edge_litert.interpreter")

IMG_SIZE = 512
GATE = 0.95
RECOMMENDED = "static-conv-linear"


MODEL_SEED = 3  # the tiny weights of conftest's module-scoped `model` fixture
MODEL_CONFIG = {"img_size": IMG_SIZE}
CALIBRATION_VIEWS = (4, 2)  # conftest's `calibration`: photo views (count, shrink)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, model, calibration):
    """One export per precision/recipe the tests need (the slow part, done once)."""
    root = tmp_path_factory.mktemp("artifacts")
    target = get_target("tflite")
    plans = {
        "fp32": ("fp32", None, {}),
        "fp16": ("fp16", None, {}),
        "int8-dynamic": ("int8", "dynamic-linear", {}),
        "int8-static": ("int8", RECOMMENDED, {}),
        "int8-naive": ("int8", "naive-all-int8", {}),
        "int8-io": ("int8", RECOMMENDED, {"int8_io": True}),
    }
    return {
        name: target.export(model, precision, recipe, root / name, calibration=calibration, **opts)
        for name, (precision, recipe, opts) in plans.items()
    }


def _mask_ious(reference: TorchRunner, runner, image: np.ndarray) -> list[float]:
    ref_embedding, embedding = reference.encode(image), runner.encode(image)
    ious = []
    for prompt in grid_prompts(image.shape[:2]):
        ref_masks = full_size_masks(reference.decode(ref_embedding, prompt.points, prompt.labels, image.shape[:2])[0], image.shape[:2])
        masks = full_size_masks(runner.decode(embedding, prompt.points, prompt.labels, image.shape[:2])[0], image.shape[:2])
        ious += [mask_iou(masks[k], ref_masks[k]) for k in range(3)]
    return ious


def _ops(path) -> dict[str, set[tuple[str, ...]]]:
    """op name -> the dtypes of its (non-constant) inputs, for every op in a .tflite."""
    interpreter = interpreter_lib.Interpreter(
        model_path=str(path), experimental_op_resolver_type=interpreter_lib.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    dtypes = {d["index"]: np.dtype(d["dtype"]).name for d in interpreter.get_tensor_details()}
    ops: dict[str, set[tuple[str, ...]]] = {}
    for op in interpreter._get_ops_details():
        ops.setdefault(op["op_name"], set()).add(tuple(dtypes[i] for i in op["inputs"] if i >= 0))
    return ops


def _one_line(exc: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(exc.value)
    return str(exc.value)


# -- parity -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "min_cos", "min_iou"), [("fp32", 0.9999, 0.999), ("fp16", 0.999, 0.995)])
def test_float_artifacts_match_pytorch(artifacts, model, dogs, name, min_cos, min_iou):
    reference, runner = TorchRunner(model), load_runner(artifacts[name], threads=2)
    assert cosine(reference.encode(dogs), runner.encode(dogs)) >= min_cos
    ious = _mask_ious(reference, runner, dogs)
    assert np.mean(ious) >= min_iou, f"{name}: mean mask IoU {np.mean(ious):.4f}"


def test_reference_kernels_agree_with_xnnpack(artifacts, dogs):
    target = get_target("tflite")
    xnnpack, reference_kernels = target.load(artifacts["fp32"]), target.load(artifacts["fp32"], delegate="none")
    assert cosine(xnnpack.encode(dogs), reference_kernels.encode(dogs)) >= 0.99999


def test_manifest_records_float_io_and_fp16_weights(artifacts):
    fp32, fp16 = read_manifest(artifacts["fp32"]), read_manifest(artifacts["fp16"])
    encoder = fp32.graph("encoder")
    assert [(t.name, t.shape, t.dtype) for t in encoder.inputs] == [("image", (1, 3, IMG_SIZE, IMG_SIZE), "float32")]
    assert [t.name for t in fp32.graph("context").inputs] == ["image_embeddings"]
    assert [t.name for t in fp32.graph("decoder").inputs] == [*CONTEXT_NAMES, "point_coords", "point_labels"]
    assert [t.name for t in fp32.graph("decoder").outputs] == ["low_res_masks", "iou_predictions"]
    for name in ("encoder.tflite", "decoder.tflite"):  # weights are cast; float32 constants (position grid) stay
        assert fp16.files[name]["bytes"] < 0.9 * fp32.files[name]["bytes"]
        assert ("float16",) in _ops(artifacts["fp16"] / name)["DEQUANTIZE"]
    static = read_manifest(artifacts["int8-static"])
    assert {t.dtype for g in static.graphs for t in (*g.inputs, *g.outputs)} == {"float32"}  # float I/O by default


# -- INT8 -----------------------------------------------------------------------------------------

def test_recipes_quantize_what_they_name(artifacts):
    static = _ops(artifacts["int8-static"] / "encoder.tflite")
    assert ("int8", "int8", "int32") in static["FULLY_CONNECTED"] and ("int8", "int8", "int32") in static["CONV_2D"]
    float_ops = ("BATCH_MATMUL", "SOFTMAX", "MEAN", "RSQRT", "SQUARED_DIFFERENCE")  # attention and LayerNorm
    assert all("int8" not in inputs for op in float_ops for inputs in static[op])
    assert all(set(inputs) == {"float32"} for inputs in _ops(artifacts["int8-static"] / "decoder.tflite")["FULLY_CONNECTED"])
    naive = _ops(artifacts["int8-naive"] / "encoder.tflite")
    assert ("int8", "int8") in naive["BATCH_MATMUL"] and ("int8",) in naive["SOFTMAX"]
    dynamic = _ops(artifacts["int8-dynamic"] / "encoder.tflite")
    assert ("float32", "int8", "float32") in dynamic["FULLY_CONNECTED"]  # int8 weights, float activations
    assert all("int8" not in inputs for inputs in dynamic["CONV_2D"])  # dynamic-linear leaves conv float


def test_int8_drift_is_reported_and_the_gate_catches_naive_all_int8(artifacts, model, calibration, tmp_path):
    from edge_sam.targets.validation.report import write_report

    names = ["fp16", "int8-dynamic", "int8-static", "int8-naive"]
    target = get_target("tflite")
    runners = [load_runner(artifacts[n]) for n in names]
    report = measure_drift(
        TorchRunner(model), runners, calibration.limited(2), artifact_dirs=[str(artifacts[n]) for n in names], measure_memory=False,
        layer_drift=lambda i, runner, images: target.layer_drift(artifacts[names[i]], runner, model, images),
    )
    rows = {name: report.to_dict()["rows"][i + 1] for i, name in enumerate(names)}
    print({n: (round(r["mask_iou_mean"], 4), round(r["embedding_cosine_mean"], 5)) for n, r in rows.items()})
    for row in rows.values():
        assert row["n_prompts"] == report.n_prompts > 0 and row["encoder_p50_s"] > 0 and row["bytes"] > 0
    assert rows["int8-static"]["mask_iou_mean"] >= GATE and rows["int8-dynamic"]["mask_iou_mean"] >= GATE
    flagged = {r.info["label"] for r in report.below(GATE)}
    assert flagged == {runners[3].label}, f"the gate flagged {flagged}"
    assert rows["int8-naive"]["embedding_sqnr_db_mean"] < rows["int8-static"]["embedding_sqnr_db_mean"] - 10
    layers = report.to_dict()["layers"]
    assert set(layers) == {r.label for r in runners}
    static_layers = {row["node"]: row for row in layers[runners[2].label]}
    assert {"Block_0/Attention_attn/Linear_qkv", "Block_1/Mlp_mlp/Linear_fc1", "Sequential_neck/Conv2d_0"} <= set(static_layers)
    assert all(np.isfinite(row["sqnr_db"]) and row["sqnr_db"] > 10 for row in static_layers.values())
    fp16_worst = min(row["sqnr_db"] for row in layers[runners[0].label])
    assert fp16_worst > max(row["sqnr_db"] for row in static_layers.values())  # fp16 beats int8 at every module
    out = write_report(report, tmp_path / "report")
    assert "Per-layer drift" in (out / "report.md").read_text()


def test_int8_io_keeps_the_integer_boundary_and_records_its_quantization(artifacts, model, dogs):
    manifest = read_manifest(artifacts["int8-io"])
    recorded = json.loads((artifacts["int8-io"] / MANIFEST_NAME).read_text())["graphs"]
    (image,) = recorded[0]["inputs"]
    assert image["dtype"] == "int8" and image["quantization"]["scale"] > 0
    assert manifest.graph("encoder").inputs[0].quantization == image["quantization"]  # kept on read-back
    interpreter = interpreter_lib.Interpreter(model_path=str(artifacts["int8-io"] / "encoder.tflite"))
    (detail,) = interpreter.get_input_details()
    assert np.dtype(detail["dtype"]) == np.int8
    assert detail["quantization"] == pytest.approx((image["quantization"]["scale"], image["quantization"]["zero_point"]))
    assert manifest.graph("encoder").outputs[0].dtype == "float32"  # the neck's LayerNorm stays float
    assert {t.dtype for g in manifest.graphs[1:] for t in (*g.inputs, *g.outputs)} == {"float32"}  # float decoder
    runner = load_runner(artifacts["int8-io"])  # quantizes the image with the recorded scale and zero point
    float_io = load_runner(artifacts["int8-static"])  # the same recipe with a QUANTIZE op in the graph
    assert cosine(float_io.encode(dogs), runner.encode(dogs)) >= 0.9999


# -- export command -------------------------------------------------------------------------------

def test_export_command_writes_a_tflite_artifact(model, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    cmd_export.register(parser.add_subparsers())
    checkpoint = edge_sam.save_model(model, tmp_path / "tiny.safetensors")
    args = parser.parse_args(["export", "--target", "tflite", "--precision", "fp16", "--checkpoint", str(checkpoint),
                              "--out", str(tmp_path / "art")])
    assert args.run(args) == 0
    assert "tflite deploy fp16" in capsys.readouterr().out
    assert read_manifest(tmp_path / "art").graph("encoder").file == "encoder.tflite"


# -- one clear error for a corrupt graph or a missing runtime (shared refusals: test_target_conformance.py)

def test_corrupt_tflite_is_refused_by_name(artifacts, tmp_path):
    """A file that matches its manifest hash but is not a valid flatbuffer (a broken export)."""
    artifact = shutil.copytree(artifacts["fp32"], tmp_path / "corrupt")
    (artifact / "encoder.tflite").write_bytes(b"not a flatbuffer" * 64)
    write_manifest(artifact, read_manifest(artifact))  # re-hash, so only LiteRT can object
    with pytest.raises(ArtifactError) as exc:
        load_runner(artifact)
    assert "LiteRT cannot load" in _one_line(exc) and "encoder.tflite" in str(exc.value)


def _hide_modules(monkeypatch, *prefixes: str) -> None:
    """Make ``import <prefix>...`` fail as if the package were not installed."""
    for name in [m for m in sys.modules if m.split(".")[0] in prefixes]:
        monkeypatch.delitem(sys.modules, name)
    for prefix in prefixes:
        monkeypatch.setitem(sys.modules, prefix, None)  # a None entry makes the import raise ImportError


def test_missing_interpreter_names_the_extra(artifacts, monkeypatch):
    _hide_modules(monkeypatch, "ai_edge_litert", "tflite_runtime")
    with pytest.raises(MissingToolchainError) as exc:
        load_runner(artifacts["fp32"])
    assert "pip install 'edge-sam[tflite]'" in _one_line(exc)


def test_tflite_runtime_is_used_where_it_is_the_only_interpreter(artifacts, model, dogs, monkeypatch):
    """A device with only tflite_runtime: the same Interpreter API under another package name
    (here the installed ai-edge-litert module, registered under that name)."""
    import types

    standalone = types.ModuleType("tflite_runtime")
    standalone.interpreter = interpreter_lib
    _hide_modules(monkeypatch, "ai_edge_litert")
    monkeypatch.setitem(sys.modules, "tflite_runtime", standalone)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", interpreter_lib)
    runner = load_runner(artifacts["fp32"])
    assert cosine(TorchRunner(model).encode(dogs), runner.encode(dogs)) >= 0.9999


def test_bad_options_fail_before_writing_anything(model, tmp_path):
    target = get_target("tflite")
    with pytest.raises(EdgeSamError, match="target tflite takes no export option opset"):
        target.export(model, "fp32", None, tmp_path / "art", opset=11)
    norm = dataclasses.replace(get_recipe("dynamic-linear"), name="with-norm", quantized_ops=frozenset({OpClass.NORM}))
    with pytest.raises(RecipeError, match="quantizes norm, which LiteRT's dynamic quantization cannot make INT8"):
        target.export(model, "int8", norm, tmp_path / "art")
    assert list(tmp_path.iterdir()) == []


def test_unknown_runtime_options_are_refused(artifacts):
    with pytest.raises(EdgeSamError, match="unknown LiteRT delegate 'gpu'"):
        get_target("tflite").load(artifacts["fp32"], delegate="gpu")
    with pytest.raises(EdgeSamError, match="target tflite takes no runtime option providers"):
        get_target("tflite").load(artifacts["fp32"], providers=["CUDA"])


def test_integer_tensors_dequantize_int16_as_well_as_int8():
    """The per-layer drift reads 16x8 artifacts' int16 activations as numbers, not raw codes."""
    from edge_sam.targets.tflite.runtime import dequantize_output, quantize_input

    for dtype in (np.int8, np.int16):
        codes = quantize_input(np.array([0.5, -1.0], np.float32), {"dtype": dtype, "quantization": (0.25, 0)})
        assert codes.dtype == dtype and codes.tolist() == [2, -4]
        assert dequantize_output(codes, (0.25, 0)).tolist() == [0.5, -1.0]


def test_int8_io_only_where_the_graph_has_an_integer_boundary(model, calibration, tmp_path):
    """The 16-bit route (ai-edge-quantizer) and float exports take and return float32: asking for
    an int8 boundary there is one line, before anything is written."""
    from edge_sam.errors import EdgeSamError

    for precision, recipe in (("fp32", None), ("int8", "static-a16-conv-linear")):
        with pytest.raises(EdgeSamError, match="--int8-io keeps the int8 inputs and outputs of a static 8-bit graph"):
            get_target("tflite").export(model, precision, recipe, tmp_path / precision, calibration=calibration, int8_io=True)
        assert not (tmp_path / precision).exists()
