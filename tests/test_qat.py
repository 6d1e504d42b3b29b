"""Quantization-aware finetuning: a tiny QAT run trains, writes a checkpoint export reads back,
resumes exactly, runs the GPU recipe's CPU path (bf16 autocast, DDP), and refuses bad input in one line.

Tiny configs (64-pixel synthetic images, 2-block encoder, a few steps) keep each test to seconds.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_IMG
import torch

from edge_sam import load_model
from edge_sam.checkpoint import save_model
from edge_sam.errors import EdgeSamError
from edge_sam.quantize.layers import quantizable_layers
from edge_sam.quantize.studies.qat import QatConfig, quantization_aware_finetune
from edge_sam.quantize.qat_checkpoint import QAT_FILE, read_qat_checkpoint
from edge_sam.quantize.qat_graph import QAT_TARGET, QatPrepareError, learned_encoder
from edge_sam.quantize.recipes import RECIPES, RecipeError
from edge_sam.quantize.recipe_file import get_recipe
from edge_sam.train.state import STATE_FILE
from edge_sam.graph_contract import deploy_graph
from edge_sam.targets.core.manifest import ArtifactError
from edge_sam.targets.core.registry import get_target
from edge_sam.checkpoint import state_dict_sha256
from edge_sam.targets.core.target import check_source

IMG = TINY_IMG


pytestmark = pytest.mark.torch_threads(1)


@pytest.fixture(scope="module")
def data(tiny_synthetic) -> Path:
    return tiny_synthetic(train=4, val=2)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory, make_tiny_model) -> Path:
    path = tmp_path_factory.mktemp("qat_teacher") / "tiny.safetensors"
    save_model(make_tiny_model(seed=3), path)
    return path


def tiny_qat(data: Path, teacher: Path, out: Path, **overrides) -> QatConfig:
    values = dict(data=str(data / "train"), out_dir=str(out), checkpoint=str(teacher), steps=4, batch_size=2,
                  warmup_steps=1, lr=1e-3, max_objects=2, threads=1, freeze_observers=0.5)
    return QatConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def qat_run(data, teacher_file, tmp_path_factory):
    """One finished 4-step run: (outcome, out folder, what it printed)."""
    out = tmp_path_factory.mktemp("qat_run") / "qat"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        outcome = quantization_aware_finetune(tiny_qat(data, teacher_file, out))
    return outcome, out, printed.getvalue()


def test_qat_writes_a_checkpoint_that_is_a_normal_model(qat_run, teacher_file):
    outcome, out, printed = qat_run
    assert outcome.step == 4 and outcome.saved == out / "model.safetensors"
    teacher, trained = load_model(teacher_file), load_model(out)  # the folder works as a checkpoint path
    assert state_dict_sha256(trained) == state_dict_sha256(outcome.model)
    changed = {k for k, v in trained.state_dict().items() if not torch.equal(v, teacher.state_dict()[k])}
    assert changed and all(k.startswith("image_encoder.") for k in changed)  # only the encoder trains
    assert "image_encoder.pos_embed" not in changed  # baked as a constant in the deploy graph
    record = json.loads((out / QAT_FILE).read_text())
    assert record["recipe"]["name"] == "static-conv-linear"
    assert record["teacher"]["state_dict_sha256"] == state_dict_sha256(teacher)
    assert record["weights"]["state_dict_sha256"] == state_dict_sha256(trained)
    # A per-channel weight scale for every layer the recipe quantizes, and activation ranges.
    weights = {tuple(p["layers"]): p for p in record["parameters"] if p["kind"] == "weight"}
    for layer in quantizable_layers(teacher.config):
        module = teacher.get_submodule(layer if layer != "image_encoder.neck" else "image_encoder.neck.0")
        out_channels = next(module.parameters()).shape[0]
        assert len(weights[(layer,)]["scale"]) == out_channels, layer
    activations = [p for p in record["parameters"] if p["kind"] == "activation"]
    assert activations and all(p["scale"][0] > 0 and p["qscheme"] == "per_tensor_affine" for p in activations)
    assert "qat: 4 steps x 2 images in" in printed and "images/s (cpu, fp32, 1 process" in printed


def test_learned_ranges_go_into_the_int8_graph_unchanged(qat_run):
    _, out, _ = qat_run
    qat = read_qat_checkpoint(out)
    model = load_model(out)
    converted = learned_encoder(model, qat, qat.recipe, IMG, get_target(QAT_TARGET))
    recorded = sorted(round(p["scale"][0], 9) for p in qat.parameters if p["kind"] == "activation")
    used = sorted(round(float(n.args[1]), 9) for n in converted.graph.nodes
                  if n.op == "call_function" and "quantize_per_tensor" in str(n.target) and "dequantize" not in str(n.target))
    assert set(used) == set(recorded)  # the QAT ranges, not a calibration's
    x = torch.randn(1, 3, IMG, IMG)
    with torch.no_grad():
        fp32, int8 = deploy_graph(model, IMG, "encoder")(x), converted(x)
    assert torch.nn.functional.cosine_similarity(fp32.flatten(), int8.flatten(), dim=0) > 0.99
    with pytest.raises(EdgeSamError, match="not the one saved"):
        learned_encoder(load_model(qat.record["teacher"]["checkpoint"]), qat, qat.recipe, IMG, get_target(QAT_TARGET))


def test_resume_reproduces_the_uninterrupted_run(qat_run, data, teacher_file, tmp_path):
    outcome, full, _ = qat_run
    stopped = quantization_aware_finetune(tiny_qat(data, teacher_file, tmp_path, stop_after_steps=3))
    assert stopped.step == 3 and stopped.saved is None and not (tmp_path / QAT_FILE).exists()
    with pytest.raises(EdgeSamError, match="--resume"):
        quantization_aware_finetune(tiny_qat(data, teacher_file, tmp_path))
    resumed = quantization_aware_finetune(tiny_qat(data, teacher_file, tmp_path, resume=True))
    assert resumed.step == 4 and resumed.saved is not None
    assert state_dict_sha256(resumed.model) == state_dict_sha256(outcome.model)
    full_params = json.loads((full / QAT_FILE).read_text())["parameters"]
    assert json.loads((tmp_path / QAT_FILE).read_text())["parameters"] == full_params


def test_gpu_recipe_runs_on_the_cpu_path(data, teacher_file, tmp_path):
    # The GPU settings (bf16 autocast, a loader worker, log windows) through the same code on device=cpu.
    outcome = quantization_aware_finetune(
        tiny_qat(data, teacher_file, tmp_path, device="cpu", precision="bf16", num_workers=1, log_every=2, steps=2)
    )
    assert outcome.saved is not None
    records = [r for r in map(json.loads, open(tmp_path / "log.jsonl")) if "loss" in r]
    assert [r["step"] for r in records] == [2] and np.isfinite(records[0]["loss"])
    assert 0 <= records[0]["mask_iou_vs_fp32"] <= 1 and records[0]["images_per_s"] > 0


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from edge_sam.quantize.studies.qat import QatConfig, quantization_aware_finetune
    from edge_sam.checkpoint import state_dict_sha256

    config = QatConfig(**json.loads(sys.argv[1]))
    outcome = quantization_aware_finetune(config)
    Path(config.out_dir, f"rank{outcome.rank}.sha256").write_text(state_dict_sha256(outcome.model))
    """
)


@pytest.mark.slow
def test_torchrun_two_processes_keep_identical_weights(data, teacher_file, tmp_path):
    script = tmp_path / "ddp_qat.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "run"
    config = vars(tiny_qat(data, teacher_file, out, steps=2))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         json.dumps(config)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    hashes = [(out / f"rank{r}.sha256").read_text() for r in (0, 1)]
    assert hashes[0] == hashes[1] == state_dict_sha256(load_model(out))
    assert json.loads(open(out / "log.jsonl").readline())["world_size"] == 2


@pytest.mark.parametrize(
    "recipe, message",
    [
        ("palettize-4bit", "weight-only"),
        ("naive-all-int8", "QAT cannot take this recipe"),
        ("no-such-recipe", "unknown quantization recipe"),
    ],
)
def test_recipes_qat_cannot_take_are_one_line(data, teacher_file, tmp_path, recipe, message):
    with pytest.raises(RecipeError, match=message) as info:
        quantization_aware_finetune(tiny_qat(data, teacher_file, tmp_path, recipe=recipe))
    assert "\n" not in str(info.value) and not (tmp_path / STATE_FILE).exists()


def test_recipe_that_leaves_every_layer_float_cannot_be_prepared(data, teacher_file, tmp_path):
    model = load_model(teacher_file)
    everything_float = RECIPES["static-conv-linear"].with_layers(
        {layer: "float" for layer in quantizable_layers(model.config)}, name="all-float")
    with pytest.raises(QatPrepareError, match="annotated nothing"):
        quantization_aware_finetune(tiny_qat(data, teacher_file, tmp_path, recipe=everything_float))


def test_no_images_is_one_line(teacher_file, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EdgeSamError, match="holds no images"):
        quantization_aware_finetune(QatConfig(data=str(empty), out_dir=str(tmp_path / "out"), checkpoint=str(teacher_file)))
    assert not (tmp_path / "out").exists()


def test_cli_bad_input_is_one_line_exit_2(teacher_file, tmp_path, capsys):
    from edge_sam.apps.cli import main

    code = main(["quantize", "qat", "--checkpoint", str(teacher_file), "--images", str(tmp_path / "missing"),
                 "--steps", "1", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("edge-sam: error:") and "\n" not in err


@pytest.mark.slow
def test_export_uses_learned_ranges_on_executorch_and_recalibrates_elsewhere(qat_run, data, teacher_file, tmp_path,
                                                                            make_tiny_model):
    from edge_sam.image_sources import open_source
    from edge_sam.targets.core.manifest import read_manifest

    _, out, _ = qat_run
    model = load_model(out)
    learned = get_target("executorch").export(model, "int8", None, tmp_path / "et", checkpoint=out)
    recalibrated = get_target("onnx").export(model, "int8", None, tmp_path / "onnx", checkpoint=out,
                                             calibration=open_source(data / "val"))
    et, onnx = read_manifest(learned), read_manifest(recalibrated)
    assert et.recipe["name"] == "static-conv-linear" and et.calibration is None  # no --recipe, no images needed
    assert et.recipe["qat"]["activation_ranges"].startswith("learned")
    assert onnx.recipe["qat"]["activation_ranges"].startswith("re-calibrated") and onnx.calibration is not None
    # Compared against the QAT weights or the fp32 model they were distilled from; nothing else.
    check_source(et, model, learned)
    check_source(et, load_model(teacher_file), learned)
    with pytest.raises(ArtifactError, match="different weights"):
        check_source(et, make_tiny_model(seed=99), learned)
    # The .pte computes what the learned-range graph computes.
    runner = get_target("executorch").load(learned)
    qat = read_qat_checkpoint(out)
    x = torch.randn(1, 3, IMG, IMG)
    with torch.no_grad():
        expected = learned_encoder(model, qat, get_recipe("static-conv-linear"), IMG, get_target(QAT_TARGET))(x).numpy()
    actual = runner.run_encoder(x.numpy())
    assert np.abs(actual - expected).max() < 0.05 * np.abs(expected).max()
