"""Training: finetuning and SAMI learn, resume is exact, DDP keeps ranks identical, bad teachers fail clearly.

Tiny configs (64-pixel images, 2-block encoder) on synthetic SA-1B data keep every test to seconds.
"""

from __future__ import annotations

import argparse
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
from torch import nn
from torch.utils.data import default_collate

from edge_sam import load_model
from edge_sam.data import open_dataset
from edge_sam.modeling import EfficientSamConfig
from edge_sam.predictor import Predictor
from edge_sam.train.corrections import sample_correction_clicks
from edge_sam.train.finetune import (
    MODEL_FILE,
    FinetuneConfig,
    PromptedMaskObjective,
    add_correction_clicks,
    finetune,
    low_res_targets,
)
from edge_sam.train.model_init import fresh_model, initial_model, state_fingerprint
from edge_sam.train.objects import PromptedObjects
from edge_sam.train.optim import build_optimizer
from edge_sam.train.sami import ENCODER_FILE, SamiConfig, SamiImages, SamiObjective, SamiStudent, TeacherError, pretrain
from edge_sam.train.state import STATE_FILE, ResumeError

IMG = TINY_IMG


pytestmark = pytest.mark.torch_threads(1)


@pytest.fixture(scope="module")
def synth(tiny_synthetic) -> Path:
    return tiny_synthetic(train=8, val=2)


def tiny_finetune(synth: Path, out: Path, **overrides) -> FinetuneConfig:
    values = dict(data=str(synth / "train"), out_dir=str(out), model="tiny", img_size=IMG, steps=4, batch_size=2,
                  max_objects=4, warmup_steps=1, lr=2e-3, correction_prob=0.5, threads=1)
    return FinetuneConfig(**{**values, **overrides})


def fixed_batch(dataset, count: int) -> dict[str, torch.Tensor]:
    """The same items every call: keys carry fixed seed words (run seed, step, rank, slot)."""
    return default_collate([dataset[(i, (0, 0, 0, i))] for i in range(count)])


def train_on(objective: nn.Module, batch: dict[str, torch.Tensor], steps: int, lr: float) -> list[float]:
    optimizer = build_optimizer(objective, lr, 0.0)
    losses = []
    for _ in range(steps):
        loss = objective(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_finetune_steps_reduce_loss_on_a_fixed_batch(synth):
    torch.manual_seed(0)
    model = fresh_model(EfficientSamConfig.tiny(img_size=IMG)).train()
    batch = fixed_batch(PromptedObjects(open_dataset(synth / "train"), IMG, max_objects=4), 2)
    assert batch["valid"].sum() >= 4
    # correction_prob=1: every step also runs (and trains) the correction-click pass.
    losses = train_on(PromptedMaskObjective(model, correction_prob=1.0), batch, steps=8, lr=2e-3)
    assert losses[-1] < 0.8 * losses[0], losses


def _square(size: int, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_correction_clicks_land_in_the_error_region_with_the_right_label():
    truth = _square(60, 10, 40, 10, 40)
    too_small = _square(60, 10, 40, 20, 40)  # misses a 30x10 strip: positive clicks belong there
    too_big = truth | _square(60, 10, 40, 40, 55)  # adds a 30x15 strip: negative clicks belong there
    sliver = truth & ~_square(60, 10, 11, 10, 40)  # misses one row: too thin to erode, still clicked
    predicted = torch.stack([too_small, too_big, sliver, truth])
    truths = truth.expand(4, 60, 60)
    regions = [truth & ~too_small, too_big & ~truth, truth & ~sliver]
    for seed in range(20):
        points, labels, has_click = sample_correction_clicks(predicted, truths, torch.Generator().manual_seed(seed))
        assert has_click.tolist() == [True, True, True, False]  # the exact prediction gets no click
        assert labels[:3].tolist() == [1.0, 0.0, 1.0]
        for region, (x, y) in zip(regions, points[:3].long().tolist()):
            assert region[y, x]
        # Clicks keep off the region's rim where its interior allows: 2+ pixels inside the strips.
        assert 12 <= points[0, 0] <= 17 and 12 <= points[0, 1] <= 37
        assert 42 <= points[1, 0] <= 52 and 12 <= points[1, 1] <= 37


def test_correction_pass_fills_the_first_free_slot_only():
    truth = _square(16, 2, 10, 2, 10).expand(3, 16, 16)
    logits = torch.full((3, 3, 4, 4), -10.0)  # predicts nothing: every query needs a positive click
    iou = torch.zeros(3, 3)
    points = torch.full((3, 3, 2), -1.0)
    labels = torch.full((3, 3), -1.0)
    labels[0, 0] = 1.0  # one prompt point: the click goes to slot 1
    labels[1] = torch.tensor([2.0, 3.0, 1.0])  # no free slot: unchanged
    new_points, new_labels = add_correction_clicks(logits, iou, truth.clone(), points, labels)
    assert new_labels[0].tolist() == [1.0, 1.0, -1.0]
    assert new_labels[1].tolist() == [2.0, 3.0, 1.0]
    assert new_labels[2].tolist() == [1.0, -1.0, -1.0]
    x, y = new_points[0, 1].long().tolist()
    assert truth[0, y, x]
    assert torch.equal(new_points[1], points[1])


def test_low_res_targets_are_cell_coverage():
    masks = _square(8, 0, 3, 0, 8)[None]  # rows 0-2 of an 8x8 mask: 2x2 low-res cells, 3/4 of the top row covered
    assert torch.equal(low_res_targets(masks), torch.tensor([[[0.75, 0.75], [0.0, 0.0]]]))


def test_sami_steps_reduce_loss_on_a_fixed_batch(synth):
    torch.manual_seed(0)
    # A fixed random conv net as teacher: 8x8 features for the student's 4x4 token grid (pooled).
    teacher = nn.Sequential(nn.Conv2d(3, 24, kernel_size=8, stride=8), nn.GELU(), nn.Conv2d(24, 24, kernel_size=1))
    student = SamiStudent(fresh_model(EfficientSamConfig.tiny(img_size=IMG)).image_encoder, 24, decoder_depth=1)
    objective = SamiObjective(student, teacher, IMG, IMG, mask_ratio=0.75).train()
    batch = fixed_batch(SamiImages(open_dataset(synth / "train"), IMG, flip_prob=0.5), 4)
    losses = train_on(objective, batch, steps=10, lr=3e-3)
    assert losses[-1] < 0.7 * losses[0], losses
    assert all(not p.requires_grad for p in teacher.parameters())


def test_resume_reproduces_the_uninterrupted_run(synth, tmp_path):
    full = finetune(tiny_finetune(synth, tmp_path / "full"))
    stopped = finetune(tiny_finetune(synth, tmp_path / "split", stop_after_steps=2))
    assert stopped.step == 2 and stopped.saved is None
    resumed = finetune(tiny_finetune(synth, tmp_path / "split", resume=True))
    assert resumed.step == 4 and resumed.saved is not None
    assert state_fingerprint(resumed.model) == state_fingerprint(full.model)
    full_losses = [r["loss"] for r in map(json.loads, open(tmp_path / "full" / "log.jsonl")) if "loss" in r]
    split_losses = [r["loss"] for r in map(json.loads, open(tmp_path / "split" / "log.jsonl")) if "loss" in r]
    assert split_losses == full_losses
    # The saved model is the trained one, with its config.
    reloaded = load_model(tmp_path / "full" / MODEL_FILE)
    assert reloaded.config == full.model.config
    assert state_fingerprint(reloaded) == state_fingerprint(full.model)


def test_bf16_run_with_loader_workers_logs_one_record_per_window(synth, tmp_path):
    # The GPU recipe's settings, on the CPU: bf16 autocast, a worker process, a log record per 3 steps.
    outcome = finetune(tiny_finetune(synth, tmp_path, precision="bf16", log_every=3, num_workers=1, correction_prob=1.0))
    assert outcome.saved is not None
    records = [r for r in map(json.loads, open(tmp_path / "log.jsonl")) if "loss" in r]
    assert [(r["step"], r["steps_in_record"]) for r in records] == [(3, 3), (4, 1)]
    assert all(np.isfinite(r["loss"]) and 0 <= r["train_iou_corrected"] <= 1 for r in records)


def test_time_limited_session_stops_checkpointed_and_resumes(synth, tmp_path):
    stopped = finetune(tiny_finetune(synth, tmp_path, stop_after_minutes=1e-6))  # out of time after step 1
    assert stopped.step == 1 and stopped.saved is None and (tmp_path / STATE_FILE).is_file()
    resumed = finetune(tiny_finetune(synth, tmp_path, resume=True))
    assert resumed.step == 4 and resumed.saved is not None


def test_resume_with_changed_settings_is_refused(synth, tmp_path):
    finetune(tiny_finetune(synth, tmp_path, steps=2, stop_after_steps=1))
    with pytest.raises(ResumeError, match="lr"):
        finetune(tiny_finetune(synth, tmp_path, steps=2, lr=1e-4, resume=True))


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from edge_sam.train.finetune import FinetuneConfig, finetune
    from edge_sam.train.model_init import state_fingerprint

    config = FinetuneConfig(**json.loads(sys.argv[1]))
    outcome = finetune(config)
    Path(config.out_dir, f"rank{outcome.rank}.sha256").write_text(state_fingerprint(outcome.model))
    """
)


def test_torchrun_two_processes_keep_identical_weights(synth, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "run"
    config = vars(tiny_finetune(synth, out, steps=3))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         json.dumps(config)],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    hashes = [(out / f"rank{r}.sha256").read_text() for r in (0, 1)]
    assert hashes[0] == hashes[1]
    # Rank 0 saved that same model; the ranks trained on different shards (so only gradient
    # averaging can explain equal weights), and the log saw the whole world.
    assert state_fingerprint(load_model(out / MODEL_FILE)) == hashes[0]
    start = json.loads(open(out / "log.jsonl").readline())
    assert start["world_size"] == 2
    torch.manual_seed(config["seed"])
    untrained = initial_model(EfficientSamConfig.tiny(img_size=IMG), None, None)
    assert state_fingerprint(untrained) != hashes[0]


class FlatTeacher(nn.Module):
    """Returns tokens [B, N, C] instead of a feature map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


@pytest.mark.parametrize(
    "teacher, message",
    [
        (nn.Conv2d(3, 8, kernel_size=(9, 13), stride=(9, 13)), "teacher feature grid 7x4 cannot be matched"),
        (nn.Conv2d(3, 8, kernel_size=10, stride=10), "teacher feature grid 6x6 cannot be matched"),
        (FlatTeacher(), "4-D feature map"),
        # An EfficientSAM encoder built for 32-pixel input refuses the 64-pixel images.
        (fresh_model(EfficientSamConfig.tiny(img_size=32)).image_encoder, "teacher fails on a 64x64 input"),
    ],
)
def test_unusable_teacher_is_one_clear_error(synth, tmp_path, teacher, message):
    config = SamiConfig(data=str(synth / "train"), out_dir=str(tmp_path), model="tiny", img_size=IMG, steps=1)
    with pytest.raises(TeacherError, match=message):
        pretrain(config, teacher=teacher)
    assert not (tmp_path / "state.pt").exists()


def test_sami_encoder_starts_finetuning(synth, tmp_path):
    teacher = nn.Conv2d(3, 16, kernel_size=16, stride=16)  # exactly the student's 4x4 grid
    config = SamiConfig(data=str(synth / "train"), out_dir=str(tmp_path / "sami"), model="tiny", img_size=IMG,
                        steps=2, batch_size=2, warmup_steps=1, threads=1)
    outcome = pretrain(config, teacher=teacher)
    assert outcome.saved == tmp_path / "sami" / ENCODER_FILE
    model = initial_model(EfficientSamConfig.tiny(img_size=IMG), None, str(outcome.saved))
    for key, value in outcome.model.image_encoder.state_dict().items():
        assert torch.equal(model.image_encoder.state_dict()[key], value), key


def test_cli_train_saves_a_loadable_model(synth, tmp_path, capsys):
    from edge_sam.apps import cmd_train

    parser = argparse.ArgumentParser()
    cmd_train.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", str(synth / "train"), "--out", str(tmp_path), "--model", "tiny",
                              "--img-size", str(IMG), "--steps", "2", "--batch-size", "2", "--warmup-steps", "1",
                              "--threads", "1"])
    assert args.run(args) == 0
    assert f"saved {tmp_path / MODEL_FILE}" in capsys.readouterr().out
    model = load_model(tmp_path / MODEL_FILE)
    assert model.config.img_size == IMG
    predictor = Predictor(model)
    predictor.set_image(np.zeros((IMG, IMG, 3), np.uint8))
    masks, iou, _ = predictor.predict(box=np.array([4, 4, 40, 40], np.float32))
    assert masks.shape == (3, IMG, IMG) and np.isfinite(iou).all()
