"""Training items for SAM finetuning and for distilling from a teacher: an image at the model size,
up to K objects, a prompt each.

Images are resized to the square model size the way inference resizes them (bilinear), masks
with area averaging; prompts are drawn on the resized masks, so their pixel coordinates are
model pixels; the low-res loss targets are made from the masks on the training device. Fixed
shapes (K objects, 6 prompt slots) let the default collate stack a batch; missing objects are
padding queries (all labels -1) flagged invalid for the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from edge_sam.data import prompts
from edge_sam.data.codec import make_annotation
from edge_sam.data.types import Sample

from .sampling import SampleKey, step_seed

PROMPT_SLOTS = 6
PADDING_LABEL = -1.0
BOX_LABELS = (2.0, 3.0)
LOW_RES_FACTOR = 4  # the decoder's low-res logits are img_size / 4
MIN_OBJECT_PIXELS = 16  # smaller objects vanish on the low-res grid


@dataclass(frozen=True)
class PromptMix:
    """How a training prompt is drawn for one object.

    A box with probability ``box_prob`` (corners jittered by ``box_jitter`` of its size), else
    1-3 foreground points (extra points with ``extra_points_prob``), each centre-biased with
    ``center_point_prob`` (the evaluation's 1-click is the mask's most interior pixel), plus a
    background point with ``background_point_prob``. One slot is always left free for the
    correction click of the second pass.
    """

    box_prob: float = 0.5
    box_jitter: float = 0.1
    extra_points_prob: float = 0.3
    center_point_prob: float = 0.5
    center_bias: float = 2.0
    background_point_prob: float = 0.2


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[:2] == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Bool mask -> coverage fraction per output pixel (float32 in [0, 1])."""
    coverage = mask.astype(np.float32)
    if coverage.shape == (size, size):
        return coverage
    return cv2.resize(coverage, (size, size), interpolation=cv2.INTER_AREA)


def sample_prompt(mask: np.ndarray, rng: np.random.Generator, mix: PromptMix) -> tuple[np.ndarray, np.ndarray]:
    """Points [n, 2] (x, y model pixels) and labels [n] for one object; n <= PROMPT_SLOTS - 1."""
    if rng.random() < mix.box_prob:
        box = prompts.sample_box(mask, rng, jitter=mix.box_jitter)
        return box.reshape(2, 2), np.array(BOX_LABELS, np.float32)
    n_points = 1 + int(rng.random() < mix.extra_points_prob) * int(rng.integers(1, 3))
    points = []
    for _ in range(n_points):
        bias = mix.center_bias if rng.random() < mix.center_point_prob else 0.0
        points.append(prompts.sample_point_in_mask(mask, rng, center_bias=bias))
    labels = [1.0] * n_points
    if rng.random() < mix.background_point_prob and not mask.all():
        points.append(prompts.sample_background_point(mask, rng))
        labels.append(0.0)
    return np.stack(points).astype(np.float32), np.array(labels, np.float32)


class PromptedObjects(Dataset):
    """Wraps an ``edge_sam.data`` dataset; items are keyed by (index, seed words) from TrainingStream."""

    def __init__(
        self, dataset, img_size: int, max_objects: int, mix: PromptMix = PromptMix(), flip_prob: float = 0.5
    ) -> None:
        if img_size % LOW_RES_FACTOR:
            raise ValueError(f"img_size {img_size} is not a multiple of {LOW_RES_FACTOR}")
        self.dataset = dataset
        self.img_size = img_size
        self.max_objects = max_objects
        self.mix = mix
        self.flip_prob = flip_prob

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: SampleKey) -> dict[str, torch.Tensor]:
        index, seed_words = key
        item = self.build(self.dataset[index], np.random.default_rng(list(seed_words)))
        item["step_seed"] = torch.tensor(step_seed(seed_words), dtype=torch.int64)
        return item

    def build(self, sample: Sample, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        size, k = self.img_size, self.max_objects
        image = resize_image(sample.image, size)
        flip = rng.random() < self.flip_prob
        if flip:
            image = image[:, ::-1]
        masks = np.zeros((k, size, size), bool)
        points = np.full((k, PROMPT_SLOTS, 2), -1.0, np.float32)
        labels = np.full((k, PROMPT_SLOTS), PADDING_LABEL, np.float32)
        valid = np.zeros(k, bool)
        filled = 0
        for ann_index in rng.permutation(len(sample.annotations)):
            if filled == k:
                break
            coverage = resize_mask(sample.annotations[ann_index].mask, size)
            if flip:
                coverage = coverage[:, ::-1]
            mask = coverage >= 0.5
            if mask.sum() < MIN_OBJECT_PIXELS:
                continue
            query_points, query_labels = sample_prompt(mask, rng, self.mix)
            n = len(query_labels)
            masks[filled] = mask
            points[filled, :n] = query_points
            labels[filled, :n] = query_labels
            valid[filled] = True
            filled += 1
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1),
            "masks": torch.from_numpy(masks),
            "points": torch.from_numpy(points),
            "labels": torch.from_numpy(labels),
            "valid": torch.from_numpy(valid),
            "seed": torch.tensor(int(rng.integers(2**62)), dtype=torch.int64),
        }


REGION_SIDE = (0.1, 0.7)  # stand-in objects' sides, as fractions of the image's


def random_regions(sample: Sample, rng: np.random.Generator, count: int) -> Sample:
    """The image with ``count`` random rectangles as its objects: somewhere for prompts to land."""
    h, w = sample.image.shape[:2]
    annotations = []
    for _ in range(count):
        rh, rw = (max(2, int(side * rng.uniform(*REGION_SIDE))) for side in (h, w))
        y, x = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
        mask = np.zeros((h, w), bool)
        mask[y : y + rh, x : x + rw] = True
        annotations.append(make_annotation(mask))
    return Sample(sample.image, annotations, sample.image_id)


class _Indexed:
    """An image source (``len`` and ``sample(i)``, e.g. ``edge_sam.targets``' ImageSource) as the
    ``dataset[i]`` that :class:`PromptedObjects` reads."""

    def __init__(self, source) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Sample:
        return self.source.sample(index)


class DistillationItems(PromptedObjects):
    """Items for distilling from a teacher (QAT, a reduced input size): an image at the model size
    and up to ``max_objects`` prompts on its objects, or on random rectangles when the source has
    no annotations (a plain folder); the teacher's outputs are the targets, so no masks are kept."""

    def __init__(self, source, img_size: int, max_objects: int, flip_prob: float) -> None:
        super().__init__(_Indexed(source), img_size, max_objects, PromptMix(), flip_prob)

    def build(self, sample: Sample, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        if not sample.annotations:
            sample = random_regions(sample, rng, self.max_objects)
        item = super().build(sample, rng)
        del item["masks"]  # the teacher is the target; the masks only placed the prompts
        return item
