"""Resolution as a deployment knob: bring the model run at a reduced input size (512 instead of
1024: ~9x fewer encoder FLOPs) back toward its full-size masks with a short distillation.

Teacher: the fp32 model at its own size, frozen. Student: the same weights at ``img_size``
(the position table resized to the smaller grid, as :func:`edge_sam.runner.model_at_size`
does), only the image encoder trains. Each step the teacher encodes each image (flipped at
random): its embedding, resized (area average) to the student's grid, and its mask logits for
prompts drawn on the image's objects are the targets.
The loss is the normalized embedding MSE plus the binary KL between the student's and the
teacher's mask probabilities (the student's low-res logits upsampled to the teacher's), the
two objectives quantization-aware finetuning uses too. No labels are needed, so any images
of the deployment domain will do; measure the result on other images (held out).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from edge_sam.errors import EdgeSamError
from edge_sam.modeling import EfficientSam
from edge_sam.runner import model_at_size
from edge_sam.train.losses import binary_kl
from edge_sam.train.objects import DistillationItems
from edge_sam.train.optim import build_optimizer, warmup_cosine


@dataclass(frozen=True)
class ResolutionDistillConfig:
    img_size: int  # the student's input size
    steps: int = 60
    lr: float = 3e-5
    warmup_steps: int = 5
    images_per_step: int = 2
    prompts_per_image: int = 8  # objects prompted per image (a box or 1-3 clicks each), drawn anew every step
    embedding_weight: float = 1.0
    mask_weight: float = 1.0
    seed: int = 0

    def validate(self, teacher: EfficientSam) -> None:
        patch = teacher.image_encoder.patch_size
        if self.img_size % patch or self.img_size <= 0:
            raise EdgeSamError(f"img_size {self.img_size} is not a positive multiple of the patch size {patch}")
        if min(self.steps, self.images_per_step, self.prompts_per_image) < 1:
            raise EdgeSamError("steps, images_per_step and prompts_per_image must be at least 1")


def distill_resolution(teacher: EfficientSam, source, config: ResolutionDistillConfig,
                       progress: bool = True) -> EfficientSam:
    """A copy of ``teacher`` at ``config.img_size`` whose encoder was distilled toward the teacher's
    embeddings and masks on the images of ``source`` (``len`` and ``sample(i)``: an image folder
    or a dataset, e.g. ``edge_sam.targets``' ``open_source``); the teacher is left untouched.

    Every step draws new prompts on each image's objects (a plain folder's images get random
    rectangles as stand-in objects), as quantization-aware finetuning does: a fixed set of
    prompts per image was fitted without moving the masks for other prompts.
    """
    config.validate(teacher)
    if len(source) == 0:
        raise EdgeSamError("resolution distillation needs at least one image")
    teacher = teacher.eval()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    student = model_at_size(copy.deepcopy(teacher), config.img_size)
    student.requires_grad_(False)
    student.image_encoder.requires_grad_(True)
    size = teacher.image_encoder.img_size  # items at the teacher's size; the student resizes them
    grid = config.img_size // teacher.image_encoder.patch_size
    items = DistillationItems(source, size, config.prompts_per_image, flip_prob=0.5)
    optimizer = build_optimizer(student.image_encoder, config.lr, weight_decay=0.0)
    scheduler = warmup_cosine(optimizer, config.warmup_steps, config.steps)
    student.train()
    bar = tqdm(range(config.steps), desc="distilling", unit="step", disable=not progress)
    for _ in bar:
        loss_total = torch.zeros(())
        for index in rng.choice(len(items), size=min(config.images_per_step, len(items)), replace=False):
            item = items.build(items.dataset[int(index)], rng)
            image = item["image"][None].float() / 255.0
            valid = item["valid"]
            points, labels = item["points"][valid][None], item["labels"][valid][None]
            with torch.no_grad():
                target = teacher.get_image_embeddings(image)
                target_logits = teacher.predict_masks(target, points, labels, True, size, size)[0][0] if valid.any() else None
                target = F.interpolate(target, size=(grid, grid), mode="area")
            embedding = student.get_image_embeddings(image)
            loss = config.embedding_weight * (embedding - target).pow(2).sum() / target.pow(2).sum().clamp(min=1e-12)
            if target_logits is not None:
                logits = student.predict_masks(embedding, points, labels, True, size, size)[0][0]
                logits = F.interpolate(logits, size=target_logits.shape[-2:], mode="bilinear", align_corners=False)
                loss = loss + config.mask_weight * binary_kl(logits, target_logits).mean()
            loss = loss / config.images_per_step
            loss.backward()
            loss_total += loss.detach()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        bar.set_postfix(loss=f"{loss_total.item():.4f}")
    return student.eval().requires_grad_(False)
