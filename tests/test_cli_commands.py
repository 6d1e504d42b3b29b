"""``edge-sam demo``, ``bench``, ``data synth`` / ``data info`` and ``pretrain`` run end to end through
the real command line (``edge_sam.apps.cli.main``) with tiny settings, and their bad input is one
line with exit code 2."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import require_toolchain

import edge_sam
from edge_sam.apps.cli import main
from edge_sam.data import open_dataset
from edge_sam.targets.core.manifest import read_manifest
from edge_sam.train.sami import ENCODER_FILE

IMG = 64


pytestmark = pytest.mark.torch_threads(1)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-synth")
    assert main(["data", "synth", str(root), "--train", "4", "--val", "1", "--test", "0", "--img-size", str(IMG)]) == 0
    return root


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = edge_sam.build_efficient_sam(edge_sam.EfficientSamConfig.tiny(img_size=IMG)).eval()
    return edge_sam.save_model(model, tmp_path_factory.mktemp("cli-ckpt") / "tiny.safetensors")


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge-sam: error:") and "\n" not in err and "Traceback" not in err, err
    return err


# -- data ------------------------------------------------------------------------------------------

def test_data_synth_writes_the_splits_it_prints(synth, capsys):
    assert sorted(p.name for p in synth.iterdir()) == ["train", "val"]  # --test 0 writes no split
    assert len(open_dataset(synth / "train")) == 4 and len(open_dataset(synth / "val")) == 1


def test_data_info_counts_what_the_dataset_holds(synth, capsys):
    assert main(["data", "info", str(synth / "train")]) == 0
    out = capsys.readouterr().out
    dataset = open_dataset(synth / "train")
    objects = sum(len(dataset[i].annotations) for i in range(len(dataset)))
    assert "with 4 images; read 4" in out
    assert re.search(rf"objects: {objects} \(small \d+, medium \d+, large \d+\)", out), out
    assert main(["data", "info", str(synth / "train"), "--max-images", "1"]) == 0
    assert "read 1" in capsys.readouterr().out


def test_data_synth_refuses_an_existing_split_in_one_line(synth, capsys):
    assert main(["data", "synth", str(synth), "--train", "1", "--val", "0", "--test", "0", "--img-size", str(IMG)]) == 2
    assert "already exists" in _one_line_error(capsys)


def test_data_info_of_a_missing_dataset_is_one_line(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "nothing")]) == 2
    _one_line_error(capsys)


# -- pretrain --------------------------------------------------------------------------------------

def test_pretrain_saves_an_encoder_that_train_starts_from(synth, tiny_checkpoint, tmp_path, capsys):
    run = ["--model", "tiny", "--img-size", str(IMG), "--steps", "2", "--batch-size", "2", "--warmup-steps", "1",
           "--threads", "1"]
    assert main(["pretrain", str(synth / "train"), "--out", str(tmp_path / "sami"), "--teacher", str(tiny_checkpoint),
                 *run]) == 0
    encoder = tmp_path / "sami" / ENCODER_FILE
    assert f"saved {encoder}" in capsys.readouterr().out and encoder.is_file()
    assert main(["train", str(synth / "train"), "--out", str(tmp_path / "ft"), "--init-encoder", str(encoder), *run]) == 0
    assert "saved" in capsys.readouterr().out


def test_pretrain_with_a_missing_teacher_is_one_line(synth, tmp_path, capsys):
    assert main(["pretrain", str(synth / "train"), "--out", str(tmp_path / "sami"), "--teacher",
                 str(tmp_path / "no-teacher.pt"), "--model", "tiny", "--img-size", str(IMG), "--steps", "1"]) == 2
    _one_line_error(capsys)


# -- bench -----------------------------------------------------------------------------------------

def test_bench_pytorch_prints_encoder_and_decoder_latency(tiny_checkpoint, capsys):
    assert main(["bench", "pytorch", "--checkpoint", str(tiny_checkpoint), "--runs", "2", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    for role in ("encoder", "decoder"):
        assert re.search(rf"{role}: median \d+\.\d+ ms, min \d+\.\d+ ms", out), out


@pytest.mark.slow  # an ONNX export: 10-60 s on a shared 2-core CPU
def test_bench_an_artifact(tiny_checkpoint, tmp_path, capsys):
    require_toolchain("onnxruntime")
    require_toolchain("onnxscript")
    artifact = tmp_path / "onnx-fp32"
    assert main(["export", "--target", "onnx", "--checkpoint", str(tiny_checkpoint), "--out", str(artifact)]) == 0
    log = artifact / "toolchain.log"  # what torch.onnx printed, kept; one line about it on the terminal
    assert re.search(rf"^onnx: \d+ toolchain warnings? \(see {re.escape(str(log))}\)$", capsys.readouterr().err, re.M)
    assert "== torch.onnx.export" in log.read_text() and "toolchain.log" not in read_manifest(artifact).files
    assert main(["bench", str(artifact), "--runs", "2", "--warmup", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert f"model input {IMG}, 2 runs after 1 warm-up" in out
    assert re.search(r"encoder: median \d+\.\d+ ms", out) and re.search(r"decoder: median \d+\.\d+ ms", out), out


def test_bench_rejects_zero_runs_in_one_line(tiny_checkpoint, capsys):
    assert main(["bench", "pytorch", "--checkpoint", str(tiny_checkpoint), "--runs", "0"]) == 2
    assert "--runs must be at least 1" in _one_line_error(capsys)


# -- demo ------------------------------------------------------------------------------------------

@pytest.mark.slow  # the reference model at 256 and a 16x16 everything grid on the photo: 15-50 s
def test_demo_writes_its_overlays_and_refuses_a_full_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "model: reference" in printed and re.search(r"everything \(\d+x\d+ grid.*\): \d+ masks", printed), printed
    assert (out / "box_mask.png").is_file() and (out / "box_overlay.png").is_file()
    assert (out / "everything" / "overlay.png").is_file() and (out / "everything" / "masks.json").is_file()
    assert main(["demo", "--out", str(out)]) == 2
    assert "exists" in _one_line_error(capsys)
