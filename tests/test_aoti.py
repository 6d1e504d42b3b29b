"""AOTInductor packages of a tiny model: fp32 near exact against PyTorch, bf16 computed in bf16
with the masks kept (mask IoU >= 0.99), INT8 through the x86 inductor quantizer running oneDNN's
int8 kernels with its drift reported against the deploy gate, per-layer drift of the int8 and
bf16 packages (the graph each was compiled from, op by op, and the package against it), and the
refusals only this target has. The checks every target shares (tampered files, wrong I/O, other
weights) are in test_target_conformance.py.

Compile time dominates: each package (encoder + decoder) of the tiny model takes ~35-70 s to
compile on the shared 2-core machine, so each precision is exported once for the module, by the
first test that needs it.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import require_toolchain

from edge_sam.errors import EdgeSamError
from edge_sam.eval.metrics import mask_iou, sqnr_db
from edge_sam.fixed_prompts import grid_prompts
from edge_sam.graph_contract import encoder_input
from edge_sam.image_sources import photo_crops
from edge_sam.machine import X86_INT8_DOT_PRODUCT_FLAGS, cpu_flags, has_int8_dot_products
from edge_sam.quantize.recipes import RECIPES, RecipeError
from edge_sam.targets import TorchRunner, get_target, load_runner
from edge_sam.targets.aoti.quantize import quantized_graph
from edge_sam.targets.core.manifest import read_manifest
from edge_sam.targets.core.pt2e_layer_drift import requantized_encoder
from edge_sam.targets.validation.drift import full_size_masks, measure_drift

require_toolchain("torch._inductor")
require_toolchain("torchao")

pytestmark = pytest.mark.torch_threads(1)
# What edge-sam deploy ships an INT8 artifact under (mean / p5 mask IoU against fp32).
DEPLOY_GATE = (0.98, 0.95)


MODEL_SEED = 5  # the tiny weights of conftest's module-scoped `model` fixture
# An int8 package needs int8 dot-product instructions, like a GPU test needs a GPU: on a CPU without
# them the target refuses int8 in one line (test_int8_is_refused_on_a_cpu_without_int8_dot_products).
needs_int8_dot_products = pytest.mark.skipif(
    not has_int8_dot_products(),
    reason=f"an aoti int8 package needs a CPU with {', '.join(X86_INT8_DOT_PRODUCT_FLAGS)}; this one has {cpu_flags()}")


@pytest.fixture(scope="module")
def calibration(tmp_path_factory, dogs):
    return photo_crops(dogs, tmp_path_factory.mktemp("calibration"), count=3)


@pytest.fixture(scope="module")
def export(tmp_path_factory, model, calibration):
    """``export(precision)``: the module's package of that precision, compiled at first use."""
    root, made = tmp_path_factory.mktemp("aoti"), {}

    def make(precision: str) -> Path:
        if precision not in made:
            made[precision] = get_target("aoti").export(model, precision, None, root / precision,
                                                        calibration=calibration if precision == "int8" else None)
        return made[precision]

    return make


def _masks(runner, image: np.ndarray) -> list[np.ndarray]:
    embedding = runner.encode(image)
    return [full_size_masks(runner.decode(embedding, p.points, p.labels, image.shape[:2])[0], image.shape[:2])
            for p in grid_prompts(image.shape[:2])]


def _compiled_code(package: Path) -> str:
    """The C++ Inductor generated for a package (its wrapper and kernels, as stored in the .pt2)."""
    with zipfile.ZipFile(package) as archive:
        return "".join(archive.read(name).decode(errors="replace") for name in archive.namelist() if name.endswith(".cpp"))


def test_fp32_package_matches_pytorch(export, model, dogs):
    artifact = export("fp32")
    runner, reference = load_runner(artifact), TorchRunner(model)
    assert sqnr_db(reference.encode(dogs), runner.encode(dogs)) > 90.0
    ious = [mask_iou(a[i], b[i]) for a, b in zip(_masks(reference, dogs), _masks(runner, dogs)) for i in range(3)]
    assert min(ious) >= 0.999, ious
    manifest = read_manifest(artifact)
    assert (manifest.target, manifest.backend, manifest.precision) == ("aoti", "AOTInductor (CPU)", "fp32")
    assert [g.file for g in manifest.graphs] == ["encoder.pt2", "context.pt2", "decoder.pt2"]
    assert manifest.export_options == {"compiled_threads": 1}  # the tests' torch threads, compiled in
    assert manifest.graph("encoder").inputs[0].shape == (1, 3, 64, 64)
    # freezing turned the linear layers into oneDNN kernels with prepacked weights
    assert "mkldnn__linear_pointwise" in _compiled_code(artifact / "encoder.pt2").replace("aoti_torch_cpu_", "mkldnn_")


def test_bf16_package_computes_in_bf16_and_keeps_the_masks(export, model, calibration):
    artifact = export("bf16")
    report = measure_drift(TorchRunner(model), [load_runner(artifact)], calibration, measure_memory=False)
    row = report.runners[0].summary()
    assert row["mask_iou_mean"] >= 0.99, row
    # bf16 arithmetic, not fp32 relabelled: far from fp32's ~120 dB, far above a broken graph's
    assert 25.0 < row["embedding_sqnr_db_mean"] < 80.0, row["embedding_sqnr_db_mean"]
    assert read_manifest(artifact).precision == "bf16"


@needs_int8_dot_products
def test_int8_package_runs_onednn_int8_kernels_and_reports_drift(export, model, calibration, tmp_path):
    from edge_sam.targets.validation.report import write_report

    artifact = export("int8")
    encoder, decoder = _compiled_code(artifact / "encoder.pt2"), _compiled_code(artifact / "decoder.pt2")
    assert "qlinear_pointwise" in encoder and "qconv_pointwise" in encoder
    assert "qlinear_pointwise" not in decoder  # the default recipe keeps the decoder float
    manifest = read_manifest(artifact)
    assert manifest.recipe["name"] == "static-conv-linear" and manifest.calibration["count"] == len(calibration)
    # as edge-sam validate runs it: the per-layer table in the report beside the end-to-end row
    report = measure_drift(TorchRunner(model), [load_runner(artifact)], calibration, measure_memory=False,
                           layer_drift=lambda _, runner, images: get_target("aoti").layer_drift(artifact, runner, model, images))
    assert "linear (int8)" in {r["op_type"] for r in report.runners[0].layers}
    assert "## Per-layer drift" in (write_report(report, tmp_path / "report") / "report.md").read_text()
    row = report.runners[0].summary()
    assert row["embedding_sqnr_db_mean"] > 10.0, row
    print(f"aoti int8 vs fp32: mask IoU mean {row['mask_iou_mean']:.4f} / p5 {row['mask_iou_p5']:.4f}; "
          f"deploy gate {DEPLOY_GATE[0]} / {DEPLOY_GATE[1]}")
    assert row["mask_iou_mean"] >= DEPLOY_GATE[0] and row["mask_iou_p5"] >= DEPLOY_GATE[1], row


def _encoder_blocks(rows) -> set[int]:
    """The encoder blocks some row's op came from (rows name ops by module path)."""
    return {int(r["node"].split(".")[2]) for r in rows if r["node"].startswith("encoder.blocks.")}


def _layer_drift(export, precision: str, model, image) -> tuple[list, dict, set[str]]:
    """The per-layer rows of the module's package of ``precision``, checked for what every
    low-precision package's rows hold: an op row in every encoder block, the simulated embedding
    (the graph's last op) as the program row's input, and a program row that is the package's own
    end-to-end embedding SQNR. Returns the op rows, the program row and the op types."""
    artifact = export(precision)
    runner = load_runner(artifact)
    rows = get_target("aoti").layer_drift(artifact, runner, model, [image])
    layers, program = rows[:-1], rows[-1]
    assert program["op_type"] == "program" and program["node"].startswith("encoder.pt2 on the runtime")
    assert all({"node", "op_type", "sqnr_db", "input_sqnr_db", "drop_db", "quantized"} <= set(r) for r in layers)
    assert _encoder_blocks(layers) == set(range(len(model.image_encoder.blocks)))
    assert layers[-1]["sqnr_db"] == pytest.approx(program["input_sqnr_db"], abs=0.01)
    end_to_end = sqnr_db(TorchRunner(model).encode(image), runner.encode(image))
    assert program["sqnr_db"] == pytest.approx(end_to_end, abs=0.1)
    return layers, program, {r["op_type"] for r in layers}


@needs_int8_dot_products
def test_int8_layer_drift_ranks_the_compiled_graph_and_checks_the_package_against_it(export, model, dogs):
    layers, program, ops = _layer_drift(export, "int8", model, dogs)
    assert {"linear (int8)", "conv2d (int8)", "layer_norm (float)", "matmul (float)", "softmax (float)"} <= ops
    assert {r["quantized"] for r in layers if r["op_type"].endswith("(int8)")} == {True}
    # every block's linear layers are int8 under the default recipe
    assert _encoder_blocks([r for r in layers if r["op_type"] == "linear (int8)"]) == _encoder_blocks(layers)
    # The rows' graph is the one the package was compiled from: oneDNN's fused int8 kernels compute
    # what it computes (integer products, the same scales and zero points), so the package's
    # embedding is the simulation's far beyond int8's own error; a graph re-quantized otherwise
    # (another observer, other images) lands near int8's error instead.
    assert abs(program["drop_db"]) < 0.5, program
    artifact = export("int8")
    _, simulation = requantized_encoder(artifact, read_manifest(artifact), model, quantized_graph)
    image = encoder_input(dogs, read_manifest(artifact).img_size)
    assert sqnr_db(simulation(image).detach().numpy(), load_runner(artifact).run_encoder(image.numpy())) > 60.0
    # error accumulates: no op is far worse than the embedding, and some int8 op is where it enters
    worst = min(layers, key=lambda r: r["sqnr_db"])
    assert worst["sqnr_db"] > program["sqnr_db"] - 10.0, worst
    largest_drop = max(layers, key=lambda r: r["drop_db"])
    assert largest_drop["drop_db"] > 0.0 and any(r["drop_db"] > 1.0 for r in layers if r["quantized"]), largest_drop
    fp32 = export("fp32")
    assert get_target("aoti").layer_drift(fp32, load_runner(fp32), model, [dogs]) is None


def test_bf16_layer_drift_names_the_ops_autocast_computes_in_bf16(export, model, dogs):
    layers, program, ops = _layer_drift(export, "bf16", model, dogs)
    assert {"linear (bf16)", "conv2d (bf16)", "matmul (bf16)"} <= ops
    assert not any(op.endswith("(int8)") for op in ops) and not any(r["quantized"] for r in layers)
    # bf16 rounding, not fp32 relabelled: every compared op loses something, none is exact
    assert all(math.isfinite(r["sqnr_db"]) for r in layers)
    assert abs(program["drop_db"]) < 3.0, program


def test_int8_is_refused_on_a_cpu_without_int8_dot_products(monkeypatch, model, calibration, tmp_path):
    from edge_sam.targets.aoti import target as aoti_target

    monkeypatch.setattr(aoti_target, "cpu_flags", lambda: "avx2 fma")
    with pytest.raises(EdgeSamError, match="aoti int8 needs a CPU with avx512_vnni, avx_vnni, amx_int8") as exc:
        get_target("aoti").export(model, "int8", None, tmp_path / "int8", calibration=calibration)
    assert "\n" not in str(exc.value) and not (tmp_path / "int8").exists()


@pytest.mark.parametrize("recipe, message", [
    ("naive-all-int8", "x86 inductor quantizer cannot make INT8"),
    ("static-a16-conv-linear", "quantizes activations to 8 bits"),
])
def test_recipes_the_x86_quantizer_cannot_take_are_refused(model, calibration, tmp_path, recipe, message):
    with pytest.raises(RecipeError, match=message):
        get_target("aoti").export(model, "int8", RECIPES[recipe], tmp_path / recipe, calibration=calibration)
    assert not (tmp_path / recipe).exists()
