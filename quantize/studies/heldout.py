"""Calibration and held-out images, and how far a quantized encoder moves the masks on the latter.

``split_images`` divides one image folder or dataset deterministically: the first N images
calibrate (the same N that ``edge-sam export --calibration DIR --calibration-images N`` would
take from it), the rest are held out, so a fidelity number is never measured on an image the
activation ranges were fitted to.

:class:`HeldOutSet` scores an encoder the way the drift report does
(:mod:`edge_sam.targets.validation.drift`): per prompt, the fp32 decoder's top-ranked output
mask from the quantized embedding against the one from the fp32 embedding, at image size;
plus the embedding SQNR. The fp32 side is computed once, so scoring many variants of one
encoder (the per-layer sensitivity, the mixed-precision search) costs one encoder pass and one
decoder pass per image each.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from edge_sam.errors import EdgeSamError
from edge_sam.eval.metrics import mask_iou
from edge_sam.modeling import EfficientSam
from edge_sam.runner import TorchRunner
from edge_sam.transforms import image_to_tensor, preprocess

from edge_sam.image_sources import ImageSource
from edge_sam.fixed_prompts import prompts_for
from edge_sam.targets.validation.drift import full_size_masks, sqnr_db

MIN_CALIBRATION = 2
MIN_HELD_OUT = 4
MAX_OBJECTS = 8  # prompts per dataset image: a box and a click for at most this many objects (as validate)


def split_images(source: ImageSource, calibration: int, held_out: int | None = None) -> tuple[ImageSource, ImageSource]:
    """(the first ``calibration`` images, the next ``held_out`` (default: all the rest)), or one
    EdgeSamError when there are too few for both."""
    if calibration < MIN_CALIBRATION:
        raise EdgeSamError(f"calibrate on at least {MIN_CALIBRATION} images, not {calibration}")
    wanted = max(MIN_HELD_OUT, held_out or 0)
    if len(source) < calibration + wanted:
        raise EdgeSamError(
            f"{source.path} holds {len(source)} images; the split needs {calibration} for calibration and at least "
            f"{wanted} held out (e.g. edge-sam data synth DIR --test {calibration + 2 * wanted})"
        )
    return source.limited(calibration), source.skipped(calibration).limited(held_out)


@dataclass(frozen=True)
class Fidelity:
    """Quantized vs fp32 on the held-out prompts."""

    embedding_sqnr_db: float  # mean over images
    mask_iou_mean: float
    mask_iou_p5: float
    mask_iou_worst: float
    n_prompts: int

    def meets(self, min_mean: float, min_p5: float) -> bool:
        return self.mask_iou_mean >= min_mean and self.mask_iou_p5 >= min_p5

    def to_dict(self) -> dict[str, float | int]:
        return {
            "embedding_sqnr_db": self.embedding_sqnr_db if math.isfinite(self.embedding_sqnr_db) else None,
            "mask_iou_mean": self.mask_iou_mean,
            "mask_iou_p5": self.mask_iou_p5,
            "mask_iou_worst": self.mask_iou_worst,
            "n_prompts": self.n_prompts,
        }


@dataclass
class _Image:
    encoder_input: torch.Tensor  # [1, 3, S, S] as the deploy-form encoder takes it
    image_hw: tuple[int, int]
    embedding: np.ndarray  # fp32
    points: torch.Tensor  # [1, Q, N, 2] image pixels, padded with -1
    labels: torch.Tensor  # [1, Q, N]
    top: np.ndarray  # [Q] the output fp32 ranks first, per prompt
    masks: np.ndarray  # [Q, H, W] fp32's top mask, per prompt


class HeldOutSet:
    """The held-out images with their prompts and fp32 masks, ready to score encoders."""

    def __init__(self, model: EfficientSam, source: ImageSource, img_size: int, max_objects: int = MAX_OBJECTS) -> None:
        self.reference = TorchRunner(model, img_size)
        self.img_size = img_size
        self.source = source
        self.images: list[_Image] = []
        for sample in source.samples():
            prompts = prompts_for(sample, max_objects=max_objects)
            if not prompts:
                continue
            embedding = self.reference.encode(sample.image)
            points, labels = _batched(prompts)
            image_hw = sample.image.shape[:2]
            low_res, iou = self._decode(embedding, points, labels, image_hw)
            top = np.argmax(iou, axis=1)
            masks = np.stack([_top_mask(low_res, q, t, image_hw) for q, t in enumerate(top)])
            x = preprocess(image_to_tensor(sample.image), img_size)
            self.images.append(_Image(x, image_hw, embedding, points, labels, top, masks))
        if not self.images:
            raise EdgeSamError(f"none of the {len(source)} held-out images of {source.path} has a prompt to score")

    @property
    def n_prompts(self) -> int:
        return sum(len(image.top) for image in self.images)

    @torch.inference_mode()
    def _decode(self, embedding: np.ndarray, points: torch.Tensor, labels: torch.Tensor, image_hw) -> tuple[np.ndarray, np.ndarray]:
        """All prompts of one image in one decoder call: [Q, 3, h, w] low-res logits, [Q, 3] IoU."""
        low_res, iou = self.reference.model.predict_masks(
            torch.as_tensor(embedding), points, labels, True, input_h=image_hw[0], input_w=image_hw[1]
        )
        return low_res[0].numpy(), iou[0].numpy()

    def embedding_sqnr_db(self, encoder: Callable[[torch.Tensor], torch.Tensor]) -> float:
        """Mean embedding SQNR of ``encoder`` over the images (the finite ones), no decoder pass."""
        with torch.no_grad():
            sqnr = [sqnr_db(image.embedding, encoder(image.encoder_input).numpy()) for image in self.images]
        finite = [s for s in sqnr if math.isfinite(s)]
        return float(np.mean(finite)) if finite else math.inf

    def score(self, encoder: Callable[[torch.Tensor], torch.Tensor]) -> Fidelity:
        """Run ``encoder`` (deploy-form input -> embedding) on every held-out image and compare."""
        sqnr, ious = [], []
        with torch.no_grad():
            for image in self.images:
                embedding = encoder(image.encoder_input).numpy()
                sqnr.append(sqnr_db(image.embedding, embedding))
                low_res, _ = self._decode(embedding, image.points, image.labels, image.image_hw)
                for q, top in enumerate(image.top):
                    ious.append(mask_iou(_top_mask(low_res, q, top, image.image_hw), image.masks[q]))
        finite = [s for s in sqnr if math.isfinite(s)]
        return Fidelity(
            embedding_sqnr_db=float(np.mean(finite)) if finite else math.inf,
            mask_iou_mean=float(np.mean(ious)),
            mask_iou_p5=float(np.percentile(ious, 5)),
            mask_iou_worst=float(min(ious)),
            n_prompts=len(ious),
        )


def worst_of(fidelities) -> Fidelity:
    """Each metric at its worst over several measurements (targets, image sets): a layer set
    passes only where it passes on all of them."""
    fidelities = list(fidelities)
    return Fidelity(
        embedding_sqnr_db=min(f.embedding_sqnr_db for f in fidelities),
        mask_iou_mean=min(f.mask_iou_mean for f in fidelities),
        mask_iou_p5=min(f.mask_iou_p5 for f in fidelities),
        mask_iou_worst=min(f.mask_iou_worst for f in fidelities),
        n_prompts=min(f.n_prompts for f in fidelities),
    )


def _top_mask(low_res: np.ndarray, prompt: int, output: int, image_hw: tuple[int, int]) -> np.ndarray:
    """One output's mask at image size, upsampled and thresholded as the drift report does
    (:func:`~edge_sam.targets.validation.drift.full_size_masks`, one channel only)."""
    return full_size_masks(low_res[prompt : prompt + 1, output : output + 1], image_hw)[0]


def _batched(prompts) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of different lengths as one [1, Q, N, 2] / [1, Q, N] batch, padded with -1 (the
    model pads every prompt to its slots the same way, so this decodes as one prompt at a time)."""
    n = max(len(p.points) for p in prompts)
    points = np.full((len(prompts), n, 2), -1.0, np.float32)
    labels = np.full((len(prompts), n), -1.0, np.float32)
    for q, prompt in enumerate(prompts):
        points[q, : len(prompt.points)] = prompt.points
        labels[q, : len(prompt.labels)] = prompt.labels
    return torch.from_numpy(points[None]), torch.from_numpy(labels[None])
