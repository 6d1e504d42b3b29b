"""Resolution as a deployment knob: bring the model run at a reduced input size (512 instead of
1024: ~9x fewer encoder FLOPs) back toward its full-size masks with a short distillation.

Teacher: the fp32 model at its own size, frozen. Student: the same weights at ``img_size``
(the position table resized to the smaller grid, as :func:`edge_sam.runner.model_at_size`
does), only the image encoder trains. Per image the teacher runs once: its embedding, resized
(area average) to the student's grid, and its mask logits for a few prompts are the targets.
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
from edge_sam.train.optim import build_optimizer, warmup_cosine
from edge_sam.transforms import image_to_tensor


@dataclass(frozen=True)
class ResolutionDistillConfig:
    img_size: int  # the student's input size
    steps: int = 60
    lr: float = 3e-5
    warmup_steps: int = 5
    images_per_step: int = 2
    prompts_per_image: int = 8  # random clicks and boxes, fixed per image
    embedding_weight: float = 1.0
    mask_weight: float = 1.0
    seed: int = 0

    def validate(self, teacher: EfficientSam) -> None:
        patch = teacher.image_encoder.patch_size
        if self.img_size % patch or self.img_size <= 0:
            raise EdgeSamError(f"img_size {self.img_size} is not a positive multiple of the patch size {patch}")
        if min(self.steps, self.images_per_step, self.prompts_per_image) < 1:
            raise EdgeSamError("steps, images_per_step and prompts_per_image must be at least 1")


@dataclass
class _Target:
    image: torch.Tensor  # [1, 3, H, W] in [0, 1]
    embedding: torch.Tensor  # the teacher's, resized to the student's grid
    points: torch.Tensor  # [1, Q, 2, 2] image pixels
    labels: torch.Tensor  # [1, Q, 2]
    logits: torch.Tensor  # [Q, 3, h, w] the teacher's low-res mask logits


def random_prompts(image_hw: tuple[int, int], count: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` prompts in image pixels, half single clicks, half boxes (2 slots each)."""
    h, w = image_hw
    points = np.full((1, count, 2, 2), -1.0, np.float32)
    labels = np.full((1, count, 2), -1.0, np.float32)
    for q in range(count):
        if q % 2:
            x0, y0 = rng.uniform(0, 0.7) * w, rng.uniform(0, 0.7) * h
            points[0, q] = [[x0, y0], [x0 + rng.uniform(0.15, 0.3) * w, y0 + rng.uniform(0.15, 0.3) * h]]
            labels[0, q] = [2, 3]
        else:
            points[0, q, 0] = [rng.uniform(0, w), rng.uniform(0, h)]
            labels[0, q, 0] = 1
    return torch.from_numpy(points), torch.from_numpy(labels)


@torch.no_grad()
def teacher_targets(teacher: EfficientSam, images: list[np.ndarray], student_grid: int, prompts: int,
                    rng: np.random.Generator) -> list[_Target]:
    targets = []
    for image in tqdm(images, desc="teacher targets", unit="img"):
        tensor = image_to_tensor(image)
        embedding = teacher.get_image_embeddings(tensor)
        points, labels = random_prompts(image.shape[:2], prompts, rng)
        logits, _ = teacher.predict_masks(embedding, points, labels, True, *image.shape[:2])
        resized = F.interpolate(embedding, size=(student_grid, student_grid), mode="area")
        targets.append(_Target(tensor, resized, points, labels, logits[0]))
    return targets


def distill_resolution(teacher: EfficientSam, images: list[np.ndarray], config: ResolutionDistillConfig,
                       progress: bool = True) -> EfficientSam:
    """A copy of ``teacher`` at ``config.img_size`` whose encoder was distilled toward the teacher's
    embeddings and masks on ``images`` (the teacher is left untouched)."""
    config.validate(teacher)
    if not images:
        raise EdgeSamError("resolution distillation needs at least one image")
    teacher = teacher.eval()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    student = model_at_size(copy.deepcopy(teacher), config.img_size)
    student.requires_grad_(False)
    student.image_encoder.requires_grad_(True)
    grid = config.img_size // teacher.image_encoder.patch_size
    targets = teacher_targets(teacher, images, grid, config.prompts_per_image, rng)
    optimizer = build_optimizer(student.image_encoder, config.lr, weight_decay=0.0)
    scheduler = warmup_cosine(optimizer, config.warmup_steps, config.steps)
    student.train()
    bar = tqdm(range(config.steps), desc="distilling", unit="step", disable=not progress)
    for _ in bar:
        loss_total = torch.zeros(())
        for index in rng.choice(len(targets), size=min(config.images_per_step, len(targets)), replace=False):
            target = targets[index]
            embedding = student.get_image_embeddings(target.image)
            embedding_loss = (embedding - target.embedding).pow(2).sum() / target.embedding.pow(2).sum().clamp(min=1e-12)
            h, w = target.image.shape[-2:]
            logits, _ = student.predict_masks(embedding, target.points, target.labels, True, h, w)
            logits = F.interpolate(logits[0], size=target.logits.shape[-2:], mode="bilinear", align_corners=False)
            mask_loss = binary_kl(logits, target.logits).mean()
            loss = (config.embedding_weight * embedding_loss + config.mask_weight * mask_loss) / config.images_per_step
            loss.backward()
            loss_total += loss.detach()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        bar.set_postfix(loss=f"{loss_total.item():.4f}")
    return student.eval().requires_grad_(False)
