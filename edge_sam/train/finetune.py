"""SAM-style finetuning of EfficientSAM on SA-1B-format (or COCO) data.

Per image, up to ``max_objects`` objects each get a prompt (a jittered box, or 1-3 points,
sometimes with a background point); the image is encoded once and all its prompts are
decoded together. With probability ``correction_prob`` a second pass adds one correction
click per object where the first prediction was wrong (SAM's interactive training; EfficientSAM
has no mask input, so the click is the only feedback); that pass trains the single-mask
output, the first pass the 3 multimask outputs. Loss: focal + dice (20:1) on the best output
plus MSE on the IoU head, on the low-res logits (img_size / 4) against area-downsampled (soft)
ground truth.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset
from tqdm import tqdm

from edge_sam.checkpoint import RUN_MODEL_FILE, save_model
from edge_sam.data import open_dataset
from edge_sam.errors import EdgeSamError
from edge_sam.modeling import EfficientSam
from edge_sam.transforms import upscale_logits

from . import distributed
from .config import RunConfig
from .distributed import DistContext
from .losses import multimask_loss
from .corrections import sample_correction_clicks
from .loop import RunLog, TrainOutcome, run_steps, to_device, training_session
from .model_init import initial_model, state_fingerprint
from .objects import LOW_RES_FACTOR, PADDING_LABEL, PromptedObjects, PromptMix
from .optim import build_optimizer, warmup_cosine
from .sampling import training_loader
from .state import load_state, save_state

MODEL_FILE = RUN_MODEL_FILE
VAL_MODES = ("box", "1-click")


@dataclass
class FinetuneConfig(RunConfig):
    max_objects: int = 8
    box_prob: float = 0.5
    correction_prob: float = 0.5
    init: str | None = None
    init_encoder: str | None = None
    val_data: str | None = None
    val_every: int = 0
    val_images: int = 50

    def validate(self) -> None:
        super().validate()
        if self.max_objects <= 0:
            raise EdgeSamError(f"max_objects must be positive, got {self.max_objects}")
        for name in ("box_prob", "correction_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise EdgeSamError(f"{name} must be between 0 and 1, got {getattr(self, name)}")


def add_correction_clicks(
    logits: torch.Tensor,
    iou_pred: torch.Tensor,
    truth: torch.Tensor,
    points: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries' prompts plus one click each, in the first free slot, where the shown mask is wrong.

    logits [N, M, h, w] and iou_pred [N, M] of the first pass, truth [N, S, S] bool, points
    [N, slots, 2], labels [N, slots]. The "shown" mask is the output with the highest predicted
    IoU, upsampled to the input size, as the predictor shows it to a user. Queries whose mask is
    exact, or whose slots are full, keep their prompts.
    """
    n, _, h, w = logits.shape
    shown = logits.gather(1, iou_pred.argmax(-1)[:, None, None, None].expand(n, 1, h, w)).squeeze(1)
    size = truth.shape[-1]
    predicted = upscale_logits(shown, (size, size)) > 0
    click, click_label, has_click = sample_correction_clicks(predicted, truth, generator)
    free = labels == PADDING_LABEL
    # One-hot of the first free slot, for the queries that get a click (no host sync: no indexing by mask).
    slot = F.one_hot(free.int().argmax(dim=1), labels.shape[1]).bool() & (free.any(dim=1) & has_click)[:, None]
    points = torch.where(slot[..., None], click[:, None, :].to(points.dtype), points)
    labels = torch.where(slot, click_label[:, None].to(labels.dtype), labels)
    return points, labels


def low_res_targets(masks: torch.Tensor) -> torch.Tensor:
    """Bool masks [N, S, S] -> [N, S/4, S/4]: the fraction of each low-res cell the object covers."""
    return F.avg_pool2d(masks[:, None].float(), LOW_RES_FACTOR)[:, 0]


class PromptedMaskObjective(nn.Module):
    """Batch -> loss; the module DDP wraps, so both decoder passes run inside its forward.

    ``valid``, ``seed`` and ``step_seed`` arrive on the host (see ``loop.HOST_KEYS``): the
    choices made from them (which queries, whether to add a correction pass) then never make
    the host wait for the device.
    """

    def __init__(self, model: EfficientSam, correction_prob: float) -> None:
        super().__init__()
        self.model = model
        self.correction_prob = correction_prob

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # Decode the valid queries of all images as one flat batch (each with its image's
        # embedding): images hold different numbers of objects, and padding queries would cost
        # as much decoder time as real ones.
        device = batch["image"].device
        valid = batch["valid"].cpu()
        selected = valid.clone()
        if not selected.any():
            selected[:, 0] = True  # keeps every parameter in the graph (DDP), at zero weight
        image_index, query_index = (to_device(i, device) for i in selected.nonzero(as_tuple=True))
        weight = to_device(valid[selected].float(), device)
        points = batch["points"][image_index, query_index]
        labels = batch["labels"][image_index, query_index]
        truth = batch["masks"][image_index, query_index]
        targets = low_res_targets(truth)
        images = batch["image"].float() / 255.0
        size = images.shape[-1]
        embeddings = self.model.get_image_embeddings(images)[image_index]
        logits, iou = self.model.predict_masks(embeddings, points[:, None], labels[:, None], True, size, size)
        loss, stats = multimask_loss(logits[:, 0], iou[:, 0], targets, weight)
        # Whether to add the correction pass is decided alike on every rank (the step's seed),
        # so ranks do the same work and log the same statistics; the clicks differ per rank.
        if np.random.default_rng(int(batch["step_seed"][0])).random() < self.correction_prob:
            generator = torch.Generator(device=device).manual_seed(int(batch["seed"][0]))
            points, labels = add_correction_clicks(logits[:, 0].detach(), iou[:, 0].detach(), truth, points, labels, generator)
            # Several clicks are no longer ambiguous: like SAM (and the n-click evaluation), the
            # second pass trains the single-mask output.
            logits2, iou2 = self.model.predict_masks(embeddings, points[:, None], labels[:, None], False, size, size)
            loss2, stats2 = multimask_loss(logits2[:, 0], iou2[:, 0], targets, weight)
            loss = (loss + loss2) / 2
            stats["train_iou_corrected"] = stats2["train_iou"]
        return {"loss": loss, **stats}


def make_validator(
    model: EfficientSam, config: FinetuneConfig, ctx: DistContext, log: RunLog
) -> Callable[[int], None] | None:
    """Box and 1-click mIoU on the first ``val_images`` validation images, on rank 0."""
    if not config.val_data or config.val_images <= 0:
        return None
    from edge_sam.eval import evaluate
    from edge_sam.predictor import Predictor

    dataset = open_dataset(config.val_data)
    subset = Subset(dataset, range(min(config.val_images, len(dataset))))

    def validate(step: int) -> None:
        if ctx.is_main:
            model.eval()
            with torch.no_grad():
                result = evaluate(Predictor(model), subset, modes=VAL_MODES, progress=False)
            log.write({"step": step, "val": result.to_dict()})
            tqdm.write(f"step {step} validation on {len(subset)} images:\n{result.format_table()}")
            model.train()
        distributed.barrier(ctx)

    return validate


def finetune(config: FinetuneConfig) -> TrainOutcome:
    """Run (or resume) finetuning; the outcome's model is in eval mode. Rank 0 writes ``out_dir``."""
    config.validate()
    with training_session(config) as (ctx, out_dir):
        model = initial_model(config.model_config(), config.init, config.init_encoder).to(ctx.device)
        objective = PromptedMaskObjective(model, config.correction_prob)
        optimizer = build_optimizer(objective, config.lr, config.weight_decay)
        scheduler = warmup_cosine(optimizer, config.warmup_steps, config.steps)
        signature = config.signature(ctx.world_size)
        start = 0
        if config.resume:
            start = load_state(out_dir, model=objective, optimizer=optimizer, scheduler=scheduler, run_signature=signature)
        data = PromptedObjects(
            open_dataset(config.data), model.config.img_size, config.max_objects,
            PromptMix(box_prob=config.box_prob), config.flip_prob,
        )
        loader = training_loader(data, config, ctx, start)
        log = RunLog(out_dir, ctx.is_main)
        if ctx.is_main:
            log.write({"event": "start", "from_step": start, "config": dataclasses.asdict(config),
                       "model_config": model.config.to_dict(), "world_size": ctx.world_size})

        def save(step: int) -> None:
            save_state(out_dir, model=objective, optimizer=optimizer, scheduler=scheduler, step=step,
                       run_signature=signature)

        validate = make_validator(model, config, ctx, log)
        reached = run_steps(
            objective=distributed.wrap(objective, ctx), batches=iter(loader), optimizer=optimizer,
            scheduler=scheduler, config=config, ctx=ctx, start_step=start, save=save, log=log,
            validate=validate, val_every=config.val_every, desc="finetune",
        )
        saved = None
        if reached == config.steps:
            if validate is not None:
                validate(reached)
            if ctx.is_main:
                saved = save_model(model, out_dir / MODEL_FILE)
                log.write({"event": "done", "step": reached, "model": str(saved), "weights_sha256": state_fingerprint(model)})
        distributed.barrier(ctx)
        return TrainOutcome(model.eval(), reached, ctx.rank, saved)
