"""Quantization-aware finetuning (QAT) of the image encoder, distilled from the fp32 model.

The fp32 model is the teacher, so any images will do (no labels): each step encodes a batch
with the frozen fp32 encoder and with the fake-quantized student (:mod:`edge_sam.quantize.qat_graph`), and the
loss pulls the student's outputs toward the teacher's:

- the image embedding: normalized MSE, ``|s - t|^2 / |t|^2`` (1 / SQNR);
- the mask logits of the fp32 decoder for sampled prompts, decoded once from the student's
  embedding and once from the teacher's: binary KL between the two sets of mask
  probabilities (all three multimask outputs), so what a user sees, the mask, is what is kept.

Prompts come from the training samplers (:func:`edge_sam.train.objects.sample_prompt`: jittered
boxes, 1-3 points, sometimes a background point) on each image's annotated objects; images
without annotations (a plain folder) get random rectangles as stand-in objects, which only
decide where prompts land. The decoder stays fp32 and frozen; only encoder weights train.
For static recipes the activation ranges start as a minmax calibration on the first images and,
by default, stay there (``freeze_observers`` lets them move for a share of the steps): the
weights learn to work with the ranges an export's own minmax calibration will pick.

The run reuses the training machinery (:mod:`edge_sam.train`): device and DDP setup (torchrun),
bf16 autocast, the resumable sample stream, AdamW with warmup + cosine, ``--stop-after-minutes``
and exact resume from ``state.pt``. The finished run folder is a QAT checkpoint
(:mod:`edge_sam.quantize.qat_checkpoint`): ``model.safetensors`` (a normal model) and ``qat.json`` (recipe,
learned quantization parameters, provenance).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edge_sam.checkpoint import load_model
from edge_sam.deploy_form import DecoderGraph
from edge_sam.errors import EdgeSamError
from edge_sam.modeling import EfficientSam
from edge_sam.quantize.recipes import DEFAULT_RECIPE, QuantRecipe
from edge_sam.quantize.recipe_file import get_recipe
from edge_sam.train import distributed
from edge_sam.train.config import RunConfig
from edge_sam.train.loop import RunLog, TrainOutcome, run_steps, to_device, training_session
from edge_sam.train.losses import binary_kl
from edge_sam.train.objects import DistillationItems
from edge_sam.train.optim import build_optimizer, warmup_cosine
from edge_sam.train.sampling import training_loader
from edge_sam.train.state import STATE_FILE, load_state, save_state
from edge_sam.transforms import preprocess

from edge_sam.image_sources import ImageSource, open_source
from edge_sam.graph_contract import calibration_batches, deploy_graph
from edge_sam.targets.core.registry import get_target
from edge_sam.checkpoint import state_dict_sha256

from edge_sam.quantize.qat_checkpoint import QAT_FILE, write_qat_checkpoint
from edge_sam.quantize.qat_graph import (
    QAT_TARGET,
    calibrate_activation_ranges,
    check_qat_recipe,
    fake_quantize_in_fp32,
    freeze_activation_ranges,
    prepare_qat_encoder,
    with_encoder_weights,
)


@dataclass
class QatConfig(RunConfig):
    """QAT run settings; ``data`` is the image folder or dataset, ``out_dir`` the QAT checkpoint."""

    checkpoint: str = "reference"
    recipe: str = DEFAULT_RECIPE
    img_size: int | None = None  # default: the checkpoint's own
    steps: int = 300
    batch_size: int = 4
    lr: float = 1e-5
    weight_decay: float = 0.0  # decaying trained weights toward zero only fights the teacher
    warmup_steps: int = 20
    flip_prob: float = 0.5
    max_objects: int = 8
    embedding_weight: float = 1.0
    mask_weight: float = 10.0  # the mask KL runs ~10x smaller than the embedding's normalized MSE
    # Static recipes: activation ranges start as the min / max over the first images (a minmax
    # calibration, what every target's PTQ does), then move as moving averages for this share of
    # the steps and stay frozen for the rest (0: frozen throughout, the weights learn the ranges
    # an export will calibrate).
    calibration_images: int = 8
    freeze_observers: float = 0.0

    def validate(self) -> None:
        if self.img_size is None:
            raise EdgeSamError("img_size must be resolved from the checkpoint before validation")
        super().validate()
        if self.max_objects <= 0:
            raise EdgeSamError(f"max_objects must be positive, got {self.max_objects}")
        if min(self.embedding_weight, self.mask_weight) < 0 or self.embedding_weight + self.mask_weight == 0:
            raise EdgeSamError("embedding_weight and mask_weight must be >= 0 and not both 0")
        if not 0.0 <= self.freeze_observers <= 1.0:
            raise EdgeSamError(f"freeze_observers is a share of the steps in [0, 1], got {self.freeze_observers}")
        if self.calibration_images <= 0:
            raise EdgeSamError(f"calibration_images must be positive, got {self.calibration_images}")

    @property
    def freeze_step(self) -> int:
        """The step after which activation ranges stay fixed (0: from the start)."""
        return round(self.freeze_observers * self.steps)


class DistillationObjective(nn.Module):
    """Batch -> loss; the module DDP wraps. Only the student's weights train."""

    def __init__(self, student: torch.fx.GraphModule, model: EfficientSam, img_size: int,
                 embedding_weight: float, mask_weight: float) -> None:
        super().__init__()
        self.student = student
        self.teacher = deploy_graph(model, img_size, "encoder", attention="sdpa").requires_grad_(False)
        self.decoder = DecoderGraph(model, img_size, multimask=True).eval().requires_grad_(False)
        self.img_size = img_size
        self.embedding_weight = embedding_weight
        self.mask_weight = mask_weight

    def train(self, mode: bool = True) -> "DistillationObjective":
        """Exported graphs switch modes by rewriting their graph (``nn.Module.train`` is refused
        on them); teacher and decoder stay in eval mode."""
        from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

        self.training = mode
        (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.student)
        return self

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images = preprocess(batch["image"].float() / 255.0, self.img_size)
        with torch.no_grad():
            target = self.teacher(images).float()
        embedding = self.student(images).float()
        embedding_loss = (embedding - target).pow(2).sum() / target.pow(2).sum().clamp(min=1e-12)
        # Decode every valid prompt of the batch as one flat batch (as finetuning does).
        valid = batch["valid"].cpu()
        if not valid.any():
            valid[:, 0] = True  # an image without objects still trains the embedding
        image_index, query_index = (to_device(i, images.device) for i in valid.nonzero(as_tuple=True))
        points = batch["points"][image_index, query_index]
        labels = batch["labels"][image_index, query_index]
        with torch.no_grad():
            teacher_logits, _ = self.decoder(target[image_index], points, labels)
        student_logits, _ = self.decoder(embedding[image_index], points, labels)
        student_logits, teacher_logits = student_logits.float(), teacher_logits.float()
        mask_loss = binary_kl(student_logits, teacher_logits).mean()
        loss = self.embedding_weight * embedding_loss + self.mask_weight * mask_loss
        with torch.no_grad():
            agree = ((student_logits > 0) & (teacher_logits > 0)).sum(dim=(-2, -1)).float()
            union = ((student_logits > 0) | (teacher_logits > 0)).sum(dim=(-2, -1)).float()
            mask_iou = torch.where(union > 0, agree / union.clamp(min=1), torch.ones_like(union)).mean()
        return {
            "loss": loss,
            "embedding_nmse": embedding_loss.detach(),
            "mask_kl": mask_loss.detach(),
            "mask_iou_vs_fp32": mask_iou,
        }


def calibration_images(source: ImageSource, config: QatConfig, model: EfficientSam, device: torch.device) -> torch.Tensor:
    """The first ``calibration_images`` images as one encoder batch, for the initial ranges."""
    batches, _ = calibration_batches(model, source.limited(config.calibration_images), config.img_size, "encoder")
    return torch.cat([images for (images,) in batches]).to(device)


def qat_recipe(name_or_file: str | QuantRecipe) -> QuantRecipe:
    """The recipe QAT simulates: a registry name or a recipe file, checked for what QAT can take."""
    recipe = name_or_file if isinstance(name_or_file, QuantRecipe) else get_recipe(name_or_file)
    check_qat_recipe(recipe)
    return recipe


def _check_out_dir(out_dir: Path, resume: bool) -> None:
    """A fresh run needs a folder without a run in it; a resumed one needs the run's state."""
    if resume:
        return  # load_state says clearly when there is nothing to resume
    for name in (STATE_FILE, QAT_FILE):
        if (out_dir / name).exists():
            raise EdgeSamError(f"{out_dir} already holds a QAT run ({name}): pass --resume to continue it, "
                               "or choose another --out")


def quantization_aware_finetune(config: QatConfig, teacher: EfficientSam | None = None) -> TrainOutcome:
    """Run (or resume) QAT; rank 0 writes ``out_dir``. The outcome's model is the finetuned fp32
    EfficientSam; ``saved`` is the QAT checkpoint's model file once the last step is done.

    ``teacher`` overrides ``config.checkpoint`` for library callers holding a model already.
    """
    recipe = qat_recipe(config.recipe)
    model = teacher if teacher is not None else load_model(config.checkpoint)
    model = model.cpu().eval()
    config = dataclasses.replace(config, img_size=config.img_size or model.image_encoder.img_size)
    config.validate()
    source = open_source(config.data)
    out_dir = Path(config.out_dir)
    _check_out_dir(out_dir, config.resume)
    with training_session(config) as (ctx, out_dir):
        teacher_sha256 = state_dict_sha256(model)
        student = prepare_qat_encoder(model, recipe, config.img_size, get_target(QAT_TARGET))
        if config.precision == "bf16":
            fake_quantize_in_fp32(student)
        objective = DistillationObjective(student, model, config.img_size, config.embedding_weight, config.mask_weight)
        objective = objective.to(ctx.device)
        optimizer = build_optimizer(student, config.lr, config.weight_decay)
        scheduler = warmup_cosine(optimizer, config.warmup_steps, config.steps)
        signature = {**config.signature(ctx.world_size), "teacher_state_dict_sha256": teacher_sha256,
                     "recipe_described": recipe.describe()}
        start = 0
        if config.resume:
            start = load_state(out_dir, model=student, optimizer=optimizer, scheduler=scheduler, run_signature=signature)
        items = DistillationItems(source, config.img_size, config.max_objects, config.flip_prob)
        loader = training_loader(items, config, ctx, start)
        log = RunLog(out_dir, ctx.is_main)
        if ctx.is_main:
            log.write({"event": "start", "from_step": start, "config": dataclasses.asdict(config),
                       "recipe": recipe.describe(), "world_size": ctx.world_size, "data": source.describe()})

        def save(step: int) -> None:
            save_state(out_dir, model=student, optimizer=optimizer, scheduler=scheduler, step=step, run_signature=signature)

        static = recipe.scheme == "static"  # dynamic recipes have per-run activation ranges: nothing to fix
        if static and start == 0:  # a resumed run has its ranges in the restored state
            calibrate_activation_ranges(student, calibration_images(source, config, model, ctx.device))
            freeze_activation_ranges(student, frozen=config.freeze_step == 0)

        def freeze_ranges(step: int) -> None:
            if static and step == config.freeze_step:
                freeze_activation_ranges(student)

        reached = run_steps(
            objective=distributed.wrap(objective, ctx), batches=iter(loader), optimizer=optimizer,
            scheduler=scheduler, config=config, ctx=ctx, start_step=start, save=save, log=log, desc="qat",
            after_step=freeze_ranges,
        )
        objective.train(False)
        trained = with_encoder_weights(model, student)
        saved = None
        if reached == config.steps and ctx.is_main:
            saved = write_qat_checkpoint(
                out_dir, trained=trained, teacher=model, teacher_checkpoint=config.checkpoint if teacher is None else None,
                prepared=student, recipe=recipe, config=config, data=source.describe(),
            )
            log.write({"event": "done", "step": reached, "model": str(saved), "weights_sha256": state_dict_sha256(trained)})
        distributed.barrier(ctx)
        return TrainOutcome(trained, reached, ctx.rank, saved)
