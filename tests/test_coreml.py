"""Core ML target: export at every precision, run the saved ML programs on Linux with the host
executor, and compare with PyTorch; clear errors for broken packages, unknown ops and options.

Tiny model (img_size 64) everywhere except the accuracy thresholds, which use the reference
model (EfficientSAM-Ti at 256, bundled).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import require_toolchain

require_toolchain("coremltools")

import edge_sam  # noqa: E402
from edge_sam.errors import EdgeSamError  # noqa: E402
from edge_sam.graph_contract import CONTEXT_NAMES  # noqa: E402
from edge_sam.quantize.recipes import RecipeError  # noqa: E402
from edge_sam.runner import TorchRunner
from edge_sam.image_sources import image_folder  # noqa: E402
from edge_sam.targets.coreml.host_executor.executor import MilExecutor, UnsupportedOpError  # noqa: E402
from edge_sam.targets.coreml.program import load_program  # noqa: E402
from edge_sam.eval.metrics import sqnr_db  # noqa: E402
from edge_sam.targets.validation.drift import cosine, measure_drift  # noqa: E402
from edge_sam.targets.core.manifest import ArtifactError  # noqa: E402
from edge_sam.targets.core.registry import get_target, load_runner  # noqa: E402
from edge_sam.transforms import write_image  # noqa: E402

HOST_LABEL = "CoreML program executed on the host"


MODEL_SEED = 3  # the tiny weights of conftest's module-scoped `model` fixture


@pytest.fixture(scope="module")
def image(dogs):
    return dogs[::4, ::4].copy()  # small copy: the tiny model resizes to 64 anyway


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """fp32 and fp16 artifacts of the tiny model, exported once for the module."""
    root = tmp_path_factory.mktemp("coreml")
    target = get_target("coreml")
    return {precision: target.export(model, precision, None, root / precision) for precision in ("fp32", "fp16")}


def prompts(image: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    h, w = image.shape[:2]
    return [
        (np.array([[w * 0.5, h * 0.5]], np.float32), np.array([1.0], np.float32)),
        (np.array([[w * 0.3, h * 0.6], [w * 0.7, h * 0.4]], np.float32), np.array([1.0, 0.0], np.float32)),
        (np.array([[w * 0.2, h * 0.2], [w * 0.8, h * 0.9]], np.float32), np.array([2.0, 3.0], np.float32)),
    ]


def compare(runner, reference: TorchRunner, image: np.ndarray) -> dict[str, float]:
    """Embedding and logit agreement of ``runner`` with the fp32 PyTorch model, every prompt."""
    ref_embedding, embedding = reference.encode(image), runner.encode(image)
    logit_sqnr, iou_delta = [], []
    for points, labels in prompts(image):
        ref_logits, ref_iou = reference.decode(ref_embedding, points, labels, image.shape[:2])
        logits, iou = runner.decode(embedding, points, labels, image.shape[:2])
        assert logits.shape == ref_logits.shape and iou.shape == ref_iou.shape
        logit_sqnr.append(sqnr_db(ref_logits, logits))
        iou_delta.append(float(np.abs(iou - ref_iou).max()))
    return {"cosine": cosine(ref_embedding, embedding), "embedding_sqnr": sqnr_db(ref_embedding, embedding),
            "logit_sqnr": min(logit_sqnr), "iou_delta": max(iou_delta)}


def test_fp32_program_matches_pytorch(exported, model, image):
    runner = load_runner(exported["fp32"])
    assert HOST_LABEL in runner.label and "(fp32 semantics)" in runner.describe()["backend"]
    result = compare(runner, TorchRunner(model), image)
    assert result["embedding_sqnr"] > 90 and result["logit_sqnr"] > 80 and result["iou_delta"] < 1e-4, result


def test_fp16_program_stays_close_and_computes_in_fp16(exported, model, image):
    runner = load_runner(exported["fp16"])
    assert "(fp16 semantics)" in runner.describe()["backend"]
    program = load_program(exported["fp16"] / "encoder.mlpackage")
    assert any(out.dtype == np.float16 for op in program.operations for out in op.outputs)
    result = compare(runner, TorchRunner(model), image)
    assert result["cosine"] > 0.9999 and result["logit_sqnr"] > 35 and result["iou_delta"] < 5e-3, result


def test_manifest_records_the_packages(exported):
    manifest = load_runner(exported["fp16"]).manifest
    encoder, context, decoder = (manifest.graph(role) for role in ("encoder", "context", "decoder"))
    assert (encoder.file, context.file, decoder.file) == ("encoder.mlpackage", "context.mlpackage", "decoder.mlpackage")
    assert [t.name for t in encoder.inputs] == ["image"] and encoder.inputs[0].shape == (1, 3, 64, 64)
    assert [t.name for t in context.inputs] == ["image_embeddings"]
    assert [t.name for t in decoder.inputs] == [*CONTEXT_NAMES, "point_coords", "point_labels"]
    assert [t.name for t in decoder.outputs] == ["low_res_masks", "iou_predictions"]
    assert all(t.dtype == "float32" for g in (encoder, context, decoder) for t in (*g.inputs, *g.outputs))
    assert manifest.files["encoder.mlpackage"]["bytes"] > 0 and "coremltools" in manifest.toolchain


def test_weight_only_recipes_compress_and_stay_close(model, image, tmp_path):
    """int8 per-channel and 4-bit palettized weights (6-bit is measured in docs/coreml.md)."""
    target, reference = get_target("coreml"), TorchRunner(model)
    bounds = {"w8-conv-linear": 0.999, "palettize-4bit": 0.95}
    sizes = {}
    for recipe, min_cosine in bounds.items():
        out = target.export(model, "int8", recipe, tmp_path / recipe)
        runner = load_runner(out)
        assert runner.describe()["recipe"] == recipe
        op_types = load_program(out / "encoder.mlpackage").op_types
        decompress = "constexpr_affine_dequantize" if recipe.startswith("w8") else "constexpr_lut_to_dense"
        assert decompress in op_types, op_types
        result = compare(runner, reference, image)
        assert result["cosine"] > min_cosine, (recipe, result)
        sizes[recipe] = runner.manifest.files["encoder.mlpackage"]["bytes"]
    assert sizes["palettize-4bit"] < sizes["w8-conv-linear"]


def test_ios18_image_input_program(model, image, tmp_path):
    """iOS18 emits fused attention and blockwise int8 weights, and an image-input encoder
    normalizes 0..255 pixels itself; the executor runs all of it (one export covers both)."""
    out = get_target("coreml").export(model, "int8", "w8-conv-linear", tmp_path / "ios18",
                                      deployment_target="iOS18", image_input=True)
    op_types = load_program(out / "encoder.mlpackage").op_types
    assert {"scaled_dot_product_attention", "constexpr_blockwise_shift_scale"} <= op_types, op_types
    runner = load_runner(out)
    assert runner.manifest.graph("encoder").inputs[0].dtype == "image:RGB"
    result = compare(runner, TorchRunner(model), image)
    assert result["cosine"] > 0.999 and result["logit_sqnr"] > 25, result


def test_w8a8_quantizes_activations_of_the_encoder(model, image, tmp_path):
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    for index in range(2):
        write_image(calibration / f"{index}.png", np.roll(image, 40 * index, axis=1))
    out = get_target("coreml").export(model, "int8", "static-conv-linear", tmp_path / "w8a8",
                                      calibration=image_folder(calibration))
    encoder_ops = load_program(out / "encoder.mlpackage").op_types
    assert {"quantize", "dequantize"} <= encoder_ops, encoder_ops
    assert "quantize" not in load_program(out / "decoder.mlpackage").op_types  # the recipe keeps the decoder float
    result = compare(load_runner(out), TorchRunner(model), image)
    assert result["cosine"] > 0.99, result


def test_validate_reports_host_execution(exported, model, image, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    write_image(folder / "a.png", image)
    runner = load_runner(exported["fp16"])
    report = measure_drift(TorchRunner(model), [runner], image_folder(folder), artifact_dirs=[str(exported["fp16"])],
                           measure_memory=False)
    row = report.to_dict()["rows"][1]
    assert HOST_LABEL in row["label"] and row["mask_iou_mean"] > 0.9


def test_dynamic_recipe_and_bad_options_are_clear_errors(model, exported, tmp_path):
    target = get_target("coreml")
    with pytest.raises(RecipeError, match="target coreml takes static, weight-only recipes; 'dynamic-linear' is dynamic"):
        target.export(model, "int8", "dynamic-linear", tmp_path / "dynamic")
    with pytest.raises(EdgeSamError, match="deployment target"):
        target.export(model, "fp16", None, tmp_path / "bad-target", deployment_target="iOS9")
    assert not (tmp_path / "dynamic").exists() and not (tmp_path / "bad-target").exists()
    with pytest.raises(EdgeSamError, match="needs macOS"):
        target.load(exported["fp16"], engine="mlmodel")
    with pytest.raises(EdgeSamError, match="compute_units"):
        target.load(exported["fp16"], compute_units="CPU_AND_NE")
    with pytest.raises(EdgeSamError, match="target coreml takes no runtime option providers"):
        target.load(exported["fp16"], providers=["CPU"])


def test_corrupt_package_is_a_clear_error(exported, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(exported["fp16"], broken)
    spec = broken / "encoder.mlpackage" / "Data" / "com.apple.CoreML" / "model.mlmodel"
    spec.write_bytes(b"\x0a\xff\xff\xff garbage" + spec.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="cannot read Core ML package"):
        load_program(broken / "encoder.mlpackage")
    with pytest.raises(ArtifactError, match="does not match its manifest hash"):
        load_runner(broken)
    weights = broken / "decoder.mlpackage" / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    weights.write_bytes(weights.read_bytes()[:64])
    with pytest.raises(ArtifactError, match="cannot load the ML program"):
        load_program(broken / "decoder.mlpackage")
    with pytest.raises(ArtifactError, match="not a Core ML package"):
        load_program(tmp_path)


def test_unknown_op_is_named(tmp_path):
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 8))], opset_version=ct.target.iOS17)
    def program(x):
        return mb.cumsum(x=x, axis=1, name="running_total")

    ct.convert(program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
               skip_model_load=True).save(str(tmp_path / "cumsum.mlpackage"))
    with pytest.raises(UnsupportedOpError, match="does not implement: cumsum"):
        MilExecutor.from_package(tmp_path / "cumsum.mlpackage")


@pytest.mark.slow
def test_reference_model_mask_iou_thresholds(tmp_path, dogs):
    """fp32 program >= 0.999 and fp16 >= 0.995 mean mask IoU vs PyTorch on the trained reference model."""
    model = edge_sam.load_model("reference")
    folder = tmp_path / "images"
    folder.mkdir()
    write_image(folder / "dogs.png", dogs)
    target = get_target("coreml")
    runners = [load_runner(target.export(model, precision, None, tmp_path / precision)) for precision in ("fp32", "fp16")]
    report = measure_drift(TorchRunner(model), runners, image_folder(folder), measure_memory=False)
    fp32, fp16 = (row["mask_iou_mean"] for row in report.to_dict()["rows"][1:])
    assert fp32 >= 0.999 and fp16 >= 0.995, (fp32, fp16)


def test_cli_exports_a_weight_only_recipe(tmp_path, make_tiny_model, capsys):
    """W8/palettized Core ML artifacts are reachable from `edge-sam export --recipe`, not only from Python."""
    from edge_sam import save_model
    from edge_sam.apps.cli import main
    from edge_sam.targets import read_manifest

    checkpoint = save_model(make_tiny_model(), tmp_path / "tiny.safetensors")
    out = tmp_path / "coreml-pal6"
    code = main(["export", "--target", "coreml", "--precision", "int8", "--recipe", "palettize-6bit",
                 "--checkpoint", str(checkpoint), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert read_manifest(out).recipe["name"] == "palettize-6bit"
