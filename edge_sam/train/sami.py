"""SAMI pretraining (EfficientSAM, arXiv 2312.00863): a masked student learns a teacher's features.

75% of the student's tokens are hidden (MAE masking). The student ViT (the image encoder's
patch embedding, position table and blocks; the neck is not part of it) encodes the visible
tokens. A cross-attention decoder then fills in the hidden ones: its queries are a learned mask
token plus each hidden token's position, its keys/values the visible tokens' encoder outputs
concatenated with the queries themselves. Decoded hidden tokens and encoded visible ones are
put back in token order, projected linearly to the teacher's channel count and regressed (MSE)
onto the teacher's feature map resized to the student's token grid.

The teacher is any module mapping a normalized [B, 3, S, S] image to [B, C, h, w] features,
e.g. an EfficientSAM or SAM image encoder loaded from a user checkpoint. The result is an
EfficientSam checkpoint whose image encoder is pretrained (``edge-sam train --init-encoder``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from edge_sam.checkpoint import load_model, save_model
from edge_sam.data import open_dataset
from edge_sam.errors import EdgeSamError
from edge_sam.modeling.image_encoder import ImageEncoderViT, Mlp
from edge_sam.transforms import preprocess

from . import distributed
from .config import RunConfig
from .loop import RunLog, TrainOutcome, run_steps, training_session
from .model_init import fresh_model, load_at_size, state_fingerprint
from .objects import resize_image
from .optim import build_optimizer, warmup_cosine
from .sampling import SampleKey, training_loader
from .state import load_state, save_state

ENCODER_FILE = "sami_encoder.safetensors"


class TeacherError(EdgeSamError, ValueError):
    """A teacher whose output cannot serve as a target for the student's token grid."""


@dataclass
class SamiConfig(RunConfig):
    teacher: str | None = None
    teacher_img_size: int | None = None
    mask_ratio: float = 0.75
    decoder_depth: int = 2
    lr: float = 1.5e-3

    def validate(self) -> None:
        super().validate()
        if not 0 < self.mask_ratio < 1:
            raise EdgeSamError(f"mask ratio must be in (0, 1), got {self.mask_ratio}")


def teacher_tokens(features: torch.Tensor, grid: int) -> torch.Tensor:
    """Teacher features [B, C, h, w] -> [B, grid*grid, C] targets in the student's token order.

    A square grid that is a whole multiple of the student's is area-pooled, a whole divisor is
    upsampled bilinearly; anything else has no sensible token-to-token correspondence.
    """
    if features.ndim != 4:
        raise TeacherError(f"the teacher must return a 4-D feature map [B, C, h, w], got shape {tuple(features.shape)}")
    h, w = features.shape[-2:]
    if h != w or (h % grid and grid % h):
        raise TeacherError(
            f"teacher feature grid {h}x{w} cannot be matched to the student's {grid}x{grid} token grid "
            f"(it must be square and a whole multiple or divisor of {grid}; change --teacher-img-size or --img-size)"
        )
    if h > grid:
        features = F.adaptive_avg_pool2d(features, grid)
    elif h < grid:
        features = F.interpolate(features, size=(grid, grid), mode="bilinear", align_corners=False)
    return features.flatten(2).transpose(1, 2)


def probe_teacher(teacher: nn.Module, teacher_img_size: int, grid: int, device: torch.device) -> int:
    """Run the teacher once on a blank image: its channel count, or one TeacherError before training."""
    try:
        with torch.no_grad():
            features = teacher(torch.zeros(1, 3, teacher_img_size, teacher_img_size, device=device))
    except (RuntimeError, ValueError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TeacherError(f"the teacher fails on a {teacher_img_size}x{teacher_img_size} input: {first_line}") from None
    if not isinstance(features, torch.Tensor):
        raise TeacherError(f"the teacher must return a tensor, got {type(features).__name__}")
    return teacher_tokens(features, grid).shape[-1]


class CrossAttentionBlock(nn.Module):
    """Hidden-token queries attend to [visible encoder outputs, queries]; pre-norm, then an MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_queries = nn.LayerNorm(dim, eps=1e-6)
        self.norm_context = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, queries: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        context = self.norm_context(torch.cat([visible, queries], dim=1))
        queries = queries + self.attn(self.norm_queries(queries), context, context, need_weights=False)[0]
        return queries + self.mlp(self.norm_mlp(queries))


def gather_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """tokens [B, T, C], index [B, K] -> [B, K, C]."""
    return tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


class SamiStudent(nn.Module):
    """The masked student: an EfficientSAM image encoder (neck unused), decoder and projection head."""

    def __init__(self, encoder: ImageEncoderViT, teacher_channels: int, decoder_depth: int) -> None:
        super().__init__()
        dim = encoder.pos_embed.shape[-1]
        heads = encoder.blocks[0].attn.num_heads
        mlp_ratio = encoder.blocks[0].mlp.fc1.out_features / dim
        self.encoder = encoder
        # The neck maps block outputs for the mask decoder; SAMI does not train it (and DDP
        # must not wait for its gradients).
        encoder.neck.requires_grad_(False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.decoder = nn.ModuleList(CrossAttentionBlock(dim, heads, mlp_ratio) for _ in range(decoder_depth))
        self.head = nn.Sequential(nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, teacher_channels))

    def forward(self, images: torch.Tensor, visible_index: torch.Tensor, hidden_index: torch.Tensor) -> torch.Tensor:
        """Normalized images [B, 3, S, S] -> predicted teacher features [B, T, C_teacher], token order."""
        patches = self.encoder.patch_embed(images).permute(0, 2, 3, 1)
        b, h, w, c = patches.shape
        position = self.encoder.position_embedding(h, w).reshape(1, h * w, c)
        tokens = patches.reshape(b, h * w, c) + position
        visible = gather_tokens(tokens, visible_index)
        for block in self.encoder.blocks:
            visible = block(visible)
        queries = self.mask_token + gather_tokens(position.expand(b, -1, -1), hidden_index)
        for block in self.decoder:
            queries = block(queries, visible)
        merged = torch.empty(b, h * w, c, dtype=visible.dtype, device=visible.device)
        merged = merged.scatter(1, visible_index.unsqueeze(-1).expand(-1, -1, c), visible)
        merged = merged.scatter(1, hidden_index.unsqueeze(-1).expand(-1, -1, c), queries)
        return self.head(merged)


def random_masking(batch: int, tokens: int, ratio: float, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, a random split of token indices into (visible, hidden) with ``ratio`` hidden."""
    hidden = int(round(tokens * ratio))
    if not 0 < hidden < tokens:
        raise EdgeSamError(f"mask ratio {ratio} hides {hidden} of {tokens} tokens; it must leave some visible and hide some")
    order = torch.from_numpy(np.argsort(rng.random((batch, tokens)), axis=1))
    return order[:, : tokens - hidden], order[:, tokens - hidden :]


class SamiObjective(nn.Module):
    """Batch -> reconstruction loss; the module DDP wraps (the frozen teacher has no gradients)."""

    def __init__(self, student: SamiStudent, teacher: nn.Module, img_size: int, teacher_img_size: int, mask_ratio: float) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher.eval().requires_grad_(False)
        self.img_size = img_size
        self.teacher_img_size = teacher_img_size
        self.mask_ratio = mask_ratio

    def train(self, mode: bool = True) -> "SamiObjective":
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images = batch["image"].float() / 255.0
        grid = self.img_size // self.student.encoder.patch_size
        with torch.no_grad():
            targets = teacher_tokens(self.teacher(preprocess(images, self.teacher_img_size)), grid)
        rng = np.random.default_rng(batch["seed"].tolist())
        visible, hidden = random_masking(images.shape[0], grid * grid, self.mask_ratio, rng)
        predicted = self.student(preprocess(images, self.img_size), visible.to(images.device), hidden.to(images.device))
        loss = F.mse_loss(predicted, targets)
        cosine = F.cosine_similarity(predicted.detach(), targets, dim=-1).mean()
        return {"loss": loss, "cosine": cosine}


class SamiImages(Dataset):
    """Images only (annotations are not used), resized to ``size`` and randomly flipped."""

    def __init__(self, dataset, size: int, flip_prob: float) -> None:
        self.dataset = dataset
        self.size = size
        self.flip_prob = flip_prob

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: SampleKey) -> dict[str, torch.Tensor]:
        index, seed_words = key
        rng = np.random.default_rng(list(seed_words))
        image = resize_image(self.dataset[index].image, self.size)
        if rng.random() < self.flip_prob:
            image = image[:, ::-1]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1),
            "seed": torch.tensor(int(rng.integers(2**62)), dtype=torch.int64),
        }


def load_teacher(config: SamiConfig) -> tuple[nn.Module, int]:
    """The image encoder of ``config.teacher`` (any checkpoint load_model reads) at its own
    input size, or rebuilt at ``teacher_img_size``; returns it with that size."""
    if not config.teacher:
        raise EdgeSamError("SAMI needs a teacher: pass --teacher CHECKPOINT (an EfficientSAM checkpoint)")
    if config.teacher_img_size:
        return load_at_size(config.teacher, config.teacher_img_size).image_encoder, config.teacher_img_size
    teacher = load_model(config.teacher).image_encoder
    return teacher, teacher.img_size


def pretrain(config: SamiConfig, teacher: nn.Module | None = None) -> TrainOutcome:
    """Run (or resume) SAMI; the outcome's model is the student EfficientSam (encoder pretrained).

    ``teacher`` overrides ``config.teacher`` for library callers with their own module; its
    input size is then ``config.teacher_img_size`` (default: the student's).
    """
    config.validate()
    with training_session(config) as (ctx, out_dir):
        if teacher is None:
            teacher, teacher_size = load_teacher(config)
        else:
            teacher_size = config.teacher_img_size or config.img_size
        teacher = teacher.to(ctx.device).eval()
        model = fresh_model(config.model_config()).to(ctx.device)
        grid = model.config.embedding_grid
        channels = probe_teacher(teacher, teacher_size, grid, ctx.device)
        student = SamiStudent(model.image_encoder, channels, config.decoder_depth).to(ctx.device)
        objective = SamiObjective(student, teacher, config.img_size, teacher_size, config.mask_ratio)
        optimizer = build_optimizer(student, config.lr, config.weight_decay)
        scheduler = warmup_cosine(optimizer, config.warmup_steps, config.steps)
        signature = {**config.signature(ctx.world_size), "teacher_img_size": teacher_size, "teacher_channels": channels}
        start = 0
        if config.resume:
            start = load_state(out_dir, model=student, optimizer=optimizer, scheduler=scheduler, run_signature=signature)
        images = SamiImages(open_dataset(config.data), max(config.img_size, teacher_size), config.flip_prob)
        loader = training_loader(images, config, ctx, start)
        log = RunLog(out_dir, ctx.is_main)
        if ctx.is_main:
            log.write({"event": "start", "from_step": start, "config": dataclasses.asdict(config),
                       "teacher_img_size": teacher_size, "teacher_channels": channels, "world_size": ctx.world_size})

        def save(step: int) -> None:
            save_state(out_dir, model=student, optimizer=optimizer, scheduler=scheduler, step=step,
                       run_signature=signature)

        reached = run_steps(
            objective=distributed.wrap(objective, ctx), batches=iter(loader), optimizer=optimizer,
            scheduler=scheduler, config=config, ctx=ctx, start_step=start, save=save, log=log, desc="sami",
        )
        model.image_encoder.neck.requires_grad_(True)
        saved = None
        if reached == config.steps and ctx.is_main:
            saved = save_model(model, out_dir / ENCODER_FILE)
            log.write({"event": "done", "step": reached, "model": str(saved), "weights_sha256": state_fingerprint(model)})
        distributed.barrier(ctx)
        return TrainOutcome(model.eval(), reached, ctx.rank, saved)
