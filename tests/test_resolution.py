"""Resolution distillation: a reduced-size copy of the model trained toward the full-size one."""

from __future__ import annotations

import pytest
import torch

from edge_sam.data import generate_synthetic
from edge_sam.errors import EdgeSamError
from edge_sam.image_sources import open_source
from edge_sam.train.resolution import ResolutionDistillConfig, distill_resolution

pytestmark = pytest.mark.torch_threads(1)
FULL = 64


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("resolution_data")
    generate_synthetic(root, counts={"train": 3}, img_size=FULL, seed=0, progress=False)
    return open_source(root / "train")


def test_distillation_trains_only_the_reduced_copys_encoder(make_tiny_model, images):
    teacher = make_tiny_model(img_size=FULL)
    before = {name: value.clone() for name, value in teacher.state_dict().items()}
    config = ResolutionDistillConfig(img_size=FULL // 2, steps=3, lr=1e-3, warmup_steps=1)
    student = distill_resolution(teacher, images, config, progress=False)
    assert student.image_encoder.img_size == FULL // 2 and not student.training
    assert all(torch.equal(value, teacher.state_dict()[name]) for name, value in before.items())  # teacher untouched
    changed = {name for name, value in student.state_dict().items()
               if value.shape == before[name].shape and not torch.equal(value, before[name])}
    assert changed and all(name.startswith("image_encoder.") for name in changed)


def test_a_size_off_the_patch_grid_is_one_error(make_tiny_model, images):
    with pytest.raises(EdgeSamError, match="not a positive multiple of the patch size"):
        distill_resolution(make_tiny_model(img_size=FULL), images, ResolutionDistillConfig(img_size=40), progress=False)
