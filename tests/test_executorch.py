"""ExecuTorch target: XNNPACK fp32 parity with PyTorch, INT8 (PT2E, XNNPACKQuantizer) drift with
per-layer SQNR, ETDump operator times, Core ML lowering on Linux and its one-line refusal to
run here, and one clear error for a .pte the runtime cannot load (the refusals every target
shares: test_target_conformance.py).

Exports of the tiny model take seconds of CPU each (lowering dominates), so each artifact is
exported once per module.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from conftest import require_toolchain

from edge_sam.errors import EdgeSamError
from edge_sam.eval.metrics import mask_iou, sqnr_db
from edge_sam.quantize.recipes import OpClass, QuantRecipe, RecipeError
from edge_sam.targets import ArtifactError, TorchRunner, get_target, load_runner
from edge_sam.targets.validation.drift import full_size_masks, measure_drift
from edge_sam.targets.core.manifest import MANIFEST_NAME, read_manifest, sha256_file
from edge_sam.fixed_prompts import grid_prompts

require_toolchain("executorch.runtime")
require_toolchain("torchao")

RECOMMENDED = "static-conv-linear"


MODEL_SEED = 5  # the tiny weights of conftest's module-scoped `model` fixture
CALIBRATION_VIEWS = (3, 3)  # conftest's `calibration`: photo views (count, shrink)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, model, calibration):
    root = tmp_path_factory.mktemp("artifacts")
    target = get_target("executorch")
    return {
        "fp32": target.export(model, "fp32", None, root / "fp32"),
        "int8": target.export(model, "int8", RECOMMENDED, root / "int8", calibration=calibration),
    }


def _masks(runner, image: np.ndarray) -> list[np.ndarray]:
    """The full-size boolean masks of every validation prompt (all three multimask outputs)."""
    embedding = runner.encode(image)
    return [
        full_size_masks(runner.decode(embedding, p.points, p.labels, image.shape[:2])[0], image.shape[:2])
        for p in grid_prompts(image.shape[:2])
    ]


def test_fp32_pte_matches_pytorch(artifacts, model, dogs):
    runner = load_runner(artifacts["fp32"])
    reference = TorchRunner(model)
    assert sqnr_db(reference.encode(dogs), runner.encode(dogs)) > 90.0
    ious = [mask_iou(a[i], b[i]) for a, b in zip(_masks(reference, dogs), _masks(runner, dogs)) for i in range(3)]
    assert min(ious) >= 0.999, ious
    manifest = read_manifest(artifacts["fp32"])
    assert manifest.backend == "XnnpackBackend"
    assert [g.file for g in manifest.graphs] == ["encoder.pte", "context.pte", "decoder.pte"]
    assert manifest.graph("encoder").inputs[0].shape == (1, 3, 64, 64)


def test_int8_pte_runs_and_its_drift_is_reported(artifacts, model, calibration):
    manifest = read_manifest(artifacts["int8"])
    assert manifest.recipe["name"] == RECOMMENDED and manifest.calibration["count"] == len(calibration)
    # int8 weights: the encoder file shrinks; the decoder (float under this recipe) does not
    fp32_files = read_manifest(artifacts["fp32"]).files
    assert manifest.files["encoder.pte"]["bytes"] < 0.6 * fp32_files["encoder.pte"]["bytes"]
    assert manifest.files["decoder.pte"]["bytes"] == pytest.approx(fp32_files["decoder.pte"]["bytes"], rel=0.02)

    report = measure_drift(TorchRunner(model), [load_runner(artifacts["int8"])], calibration.limited(1), measure_memory=False)
    row = report.runners[0].summary()
    assert 0.0 < row["mask_iou_mean"] <= 1.0 and row["mask_iou_p5"] is not None
    assert np.isfinite(row["embedding_sqnr_db_mean"]) and row["embedding_sqnr_db_mean"] > 5.0


def test_int8_decoder_stays_float_under_the_default_recipe(artifacts, model, dogs):
    """Same embedding in, the INT8 artifact's decoder gives the fp32 artifact's logits."""
    fp32, int8 = load_runner(artifacts["fp32"]), load_runner(artifacts["int8"])
    embedding = TorchRunner(model).encode(dogs)
    points, labels = np.array([[300.0, 200.0]], np.float32), np.array([1.0], np.float32)
    a = fp32.decode(embedding, points, labels, dogs.shape[:2])[0]
    b = int8.decode(embedding, points, labels, dogs.shape[:2])[0]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_layer_drift_ranks_ops_and_checks_the_pte_against_its_simulation(artifacts, model, dogs):
    runner = load_runner(artifacts["int8"])
    rows = get_target("executorch").layer_drift(artifacts["int8"], runner, model, [dogs])
    ops = {r["op_type"] for r in rows}
    assert {"linear (int8)", "conv2d (int8)", "layer_norm (float)", "matmul (float)", "program"} <= ops
    assert all({"node", "sqnr_db", "input_sqnr_db", "drop_db"} <= set(r) for r in rows)
    program = rows[-1]
    # the runtime's INT8 kernels land within a few dB of the PT2E simulation they were lowered from
    assert abs(program["drop_db"]) < 3.0, program
    assert get_target("executorch").layer_drift(artifacts["fp32"], load_runner(artifacts["fp32"]), model, [dogs]) is None


def test_etdump_profile_lists_xnnpack_operators(artifacts, dogs):
    from edge_sam.targets.executorch.profile import format_table

    runner = load_runner(artifacts["fp32"], profile=True)
    runner.encode(dogs)
    rows = runner.operator_profile("encoder")
    assert rows[0]["op"].startswith("Method::execute") and rows[0]["ms"] > 0
    delegated = {r["op"] for r in rows if r["delegated"]}
    assert any("Fully Connected" in op for op in delegated), delegated
    assert "Fully Connected" in format_table(rows)


def test_the_etdump_times_every_encoder_layer_in_fp32_and_int8(artifacts, model, dogs):
    """The mixed search's prune order reads these: every layer's GEMMs must be found in both
    ETDumps (the INT8 GEMMs with their quantize/dequantize Converts), or the read-back refuses.
    XNNPACK times operators in whole microseconds, so one of the tiny model's INT8 GEMMs may read 0."""
    from edge_sam.quantize.layers import quantizable_layers, weighted_modules_per_layer
    from edge_sam.targets.executorch.profile import encoder_layer_ms

    layers = quantizable_layers(model.config)
    for name in ("fp32", "int8"):
        times = encoder_layer_ms(load_runner(artifacts[name], profile=True), weighted_modules_per_layer(model.config), dogs)
        assert sorted(times) == sorted(layers) and min(times.values()) >= 0 and sum(times.values()) > 0, name
    savings = get_target("executorch").int8_layer_savings(artifacts["fp32"], artifacts["int8"], layers, dogs)
    assert sorted(savings) == sorted(layers)


def test_etdump_operators_are_read_back_to_layers_in_order_or_refused():
    """The Nth GEMM is the Nth conv/linear module (the neck has two); a Convert goes to the GEMM
    nearest to it in its delegate call (the one it feeds on a tie); a count that does not match
    the model is refused rather than shifted onto the wrong layers."""
    from edge_sam.targets.executorch.profile import layer_ms

    calls = [
        [("Convert (NC) #1", 0.1), ("Fully Connected (NC, QS8, QC8W) GEMM #1", 1.0), ("Convert (NC) #2", 0.2),
         ("Softmax (NC, F32) #1", 5.0), ("Convert (NC) #3", 0.4), ("Fully Connected (NC, QS8, QC8W) GEMM #2", 2.0)],
        [("Transpose (ND, X32) #1", 7.0), ("Convolution (NHWC, QC8) IGEMM #1", 3.0),
         ("Fully Connected (NC, QS8, QC8W) GEMM #1", 4.0), ("Convert (NC) #1", 0.8)],
    ]
    modules = {"a": 1, "b": 1, "neck": 2}
    assert layer_ms(calls, modules) == pytest.approx({"a": 1.3, "b": 2.4, "neck": 7.8})
    with pytest.raises(EdgeSamError, match="3 GEMM operators for the encoder's 4"):
        layer_ms(calls[:1] + [calls[1][:2]], modules)


def test_every_decoder_linear_layer_runs_in_xnnpack(artifacts, model, dogs):
    """The upscaling layers' weights are computed from the transposed-convolution kernels in the
    graph; the export folds them into constants, else XNNPACK leaves them to portable addmm
    kernels (93% of a prompt's time at 1024)."""
    runner = load_runner(artifacts["fp32"], profile=True)
    embedding = TorchRunner(model).encode(dogs)
    runner.decode(embedding, np.array([[300.0, 200.0]], np.float32), np.array([1.0], np.float32), dogs.shape[:2])
    rows = runner.operator_profile("decoder")
    portable = [r["op"] for r in rows if not r["delegated"] and ("addmm" in r["op"] or "mm.out" in r["op"])]
    assert not portable, portable
    assert any("Fully Connected" in r["op"] for r in rows if r["delegated"])


def test_coreml_delegate_lowers_on_linux_and_refuses_to_run_here(model, tmp_path):
    require_toolchain("coremltools")
    out = get_target("executorch").export(model, "fp32", None, tmp_path / "coreml", delegate="coreml")
    manifest = read_manifest(out)
    assert manifest.backend.startswith("CoreMLBackend") and "macOS" in manifest.backend
    assert (out / "encoder.pte").stat().st_size > 0 and manifest.graph("decoder").outputs[0].shape == (1, 3, 16, 16)
    if sys.platform == "darwin":
        pytest.skip("macOS only: Core ML runs here, and the refusal is for runtimes without it")
    with pytest.raises(EdgeSamError) as error:
        load_runner(out)
    message = str(error.value)
    assert "\n" not in message and "CoreMLBackend" in message and "macOS" in message


def _rehash(folder, name: str) -> None:
    """Record the current bytes of ``name`` in the manifest (as a careless hand edit would)."""
    data = json.loads((folder / MANIFEST_NAME).read_text())
    data["files"][name].update(sha256=sha256_file(folder / name), bytes=(folder / name).stat().st_size)
    (folder / MANIFEST_NAME).write_text(json.dumps(data))


def test_corrupt_pte_is_refused_by_name(artifacts, tmp_path):
    broken = shutil.copytree(artifacts["fp32"], tmp_path / "corrupt")
    content = (broken / "encoder.pte").read_bytes()
    (broken / "encoder.pte").write_bytes(content[: len(content) // 3])
    _rehash(broken, "encoder.pte")
    with pytest.raises(ArtifactError, match="ExecuTorch cannot load .*encoder.pte"):
        load_runner(broken)


def test_recipes_xnnpack_cannot_quantize_are_refused():
    from edge_sam.targets.executorch.quantize import recipe_quantizer

    recipe = QuantRecipe("attention-int8", "test", "static", frozenset({OpClass.LINEAR, OpClass.ATTENTION_MATMUL}))
    with pytest.raises(RecipeError, match="attention_matmul"):
        recipe_quantizer(recipe)


def test_bad_options_fail_before_writing_anything(model, tmp_path):
    target = get_target("executorch")
    with pytest.raises(EdgeSamError, match="unknown ExecuTorch delegate 'vulkan'"):
        target.export(model, "fp32", None, tmp_path / "a", delegate="vulkan")
    with pytest.raises(EdgeSamError, match="exports fp32, int8, not fp16"):
        target.export(model, "fp16", None, tmp_path / "b")
    with pytest.raises(EdgeSamError, match="target executorch takes no export option colour"):
        target.export(model, "fp32", None, tmp_path / "c", colour="blue")
    assert not any(tmp_path.iterdir())
