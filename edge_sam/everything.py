"""Segment everything: prompt a grid of points, keep confident and stable masks, de-duplicate.

The reference tiles the image embedding once per query and upsamples every candidate to full
size, which is why a 32x32 grid needs > 20 GB there. Here the grid is decoded in chunks, IoU and
stability filtering happen on the low-res logits, and only the survivors are upsampled, one
chunk at a time, so peak memory is bounded by the chunk size, not the grid.

It runs over any runner the Predictor takes, and every runner computes the decoder's per-image
context once for the whole grid: in PyTorch each chunk is one decoder call; an exported
artifact decodes a chunk a few prompts per call where its decoder graph takes a prompt batch (ONNX), else
query by query (a static graph of one prompt: ExecuTorch, LiteRT, Core ML).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from .data.codec import encode_rle
from .memory import release_freed_memory
from .predictor import Predictor, Prompt
from .transforms import upscale_logits


@dataclass(frozen=True)
class EverythingConfig:
    points_per_side: int = 32
    points_per_batch: int = 8  # ~25 MB per prompt at 1024: 8 keeps a 32x32 grid under 1 GB
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    min_mask_area: int = 0
    output_mode: Literal["binary_mask", "coco_rle"] = "binary_mask"


def point_grid(points_per_side: int, image_hw: tuple[int, int]) -> np.ndarray:
    """Cell centres of an n x n grid over the image, in pixels: [n*n, 2] (x, y)."""
    h, w = image_hw
    offsets = (np.arange(points_per_side) + 0.5) / points_per_side
    xs, ys = np.meshgrid(offsets * w, offsets * h)
    return np.stack([xs.ravel(), ys.ravel()], axis=-1).astype(np.float32)


def count_true(masks: torch.Tensor) -> torch.Tensor:
    """Pixels set per mask, [N, ...] bool (CPU) -> [N] int64.

    NumPy's ``count_nonzero`` per mask allocates nothing and is ~10x faster than a torch sum with
    a dtype, which first copies the masks into that dtype: a temporary as large as a chunk of
    full-size masks, allocated and freed between small long-lived tensors, which fragments the
    heap (peak RSS grew with every chunk of a grid).
    """
    return torch.tensor([np.count_nonzero(mask) for mask in masks.flatten(1).numpy()], dtype=torch.int64)


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU between the masks thresholded at threshold +/- offset: near 1 for crisp masks."""
    inner = count_true(logits > threshold + offset)
    outer = count_true(logits > threshold - offset)
    return inner.float() / outer.clamp(min=1).float()


def box_iou(boxes: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of [N, 4] xyxy boxes."""
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    return inter / (area[:, None] + area[None, :] - inter).clamp(min=1e-6)


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS (torchvision does not import beside this torch): indices kept, best first."""
    order = torch.argsort(scores, descending=True)
    overlaps = box_iou(boxes[order])
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(order[i])
        suppressed |= overlaps[i] > iou_threshold
    return torch.stack(keep) if keep else torch.zeros(0, dtype=torch.long)


def mask_to_box(masks: torch.Tensor) -> torch.Tensor:
    """[N, H, W] bool -> [N, 4] xyxy boxes (exclusive max corner); empty masks give zeros."""
    n, h, w = masks.shape
    as_bytes = masks.view(torch.uint8)  # torch's bool any() over a dimension is ~10x slower than a byte max
    rows, cols = as_bytes.amax(dim=2) > 0, as_bytes.amax(dim=1) > 0
    ys, xs = torch.arange(h), torch.arange(w)
    y0 = torch.where(rows, ys, h).amin(dim=1)
    y1 = torch.where(rows, ys + 1, 0).amax(dim=1)
    x0 = torch.where(cols, xs, w).amin(dim=1)
    x1 = torch.where(cols, xs + 1, 0).amax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(rows.any(dim=1)[:, None], boxes, torch.zeros_like(boxes))


def _chunks(items: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class EverythingGenerator:
    """Automatic mask generation over a point grid, with memory bounded by ``points_per_batch``."""

    def __init__(self, predictor: Predictor, config: EverythingConfig = EverythingConfig()) -> None:
        self.predictor = predictor
        self.config = config

    @torch.inference_mode()
    def _candidates(self, progress: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Low-res logits, IoU, stability and grid point of every candidate that passes the filters."""
        cfg = self.config
        threshold = self.predictor.mask_threshold
        grid = point_grid(cfg.points_per_side, self.predictor.image_hw)
        kept_logits, kept_iou, kept_stability, kept_points = [], [], [], []
        batches = tqdm(
            list(_chunks(grid, cfg.points_per_batch)), desc="everything: decoding grid", unit="batch", disable=not progress
        )
        with self.predictor.runner.host_side():  # the filters between decoder calls
            for points in batches:
                prompts = [Prompt(point[None], np.ones(1, np.float32)) for point in points]
                low_res, iou = self.predictor.decode_low_res(prompts, multimask_output=True)
                logits, iou = low_res.flatten(0, 1), iou.flatten()
                stability = stability_score(logits, threshold, cfg.stability_score_offset)
                keep = (iou > cfg.pred_iou_thresh) & (stability >= cfg.stability_score_thresh)
                repeats = low_res.shape[1]
                kept_logits.append(logits[keep].half())  # half the memory; upscaling casts back
                kept_iou.append(iou[keep])
                kept_stability.append(stability[keep])
                kept_points.append(torch.from_numpy(points).repeat_interleave(repeats, dim=0)[keep])
                del low_res, logits
                release_freed_memory()
        return torch.cat(kept_logits), torch.cat(kept_iou), torch.cat(kept_stability), torch.cat(kept_points)

    def _full_masks(self, logits: torch.Tensor, image_hw: tuple[int, int], threshold: float) -> Iterator[torch.Tensor]:
        """Full-size masks of ``logits``, ``points_per_batch`` at a time, in one buffer that the
        next chunk overwrites: no allocation per chunk, so the heap does not grow over thousands
        of candidates (nothing to hand back to the OS between chunks)."""
        step = self.config.points_per_batch
        full = torch.empty(min(step, len(logits)), *image_hw)
        masks = torch.empty(full.shape, dtype=torch.bool)
        for start in range(0, len(logits), step):
            count = min(step, len(logits) - start)
            upscale_logits(logits[start : start + count], image_hw, out=full[:count])
            yield torch.gt(full[:count], threshold, out=masks[:count])

    @torch.inference_mode()
    def generate(self, image: np.ndarray | None = None, progress: bool = True) -> list[dict]:
        """Masks for the image (or the predictor's current one), best predicted IoU first.

        Each record: ``segmentation`` (bool HxW or COCO RLE), ``area``, ``bbox`` (x, y, w, h),
        ``predicted_iou``, ``stability_score``, ``point_coords``.
        """
        if image is not None:
            self.predictor.set_image(image)
        cfg = self.config
        logits, iou, stability, points = self._candidates(progress)
        image_hw = self.predictor.image_hw
        threshold = self.predictor.mask_threshold

        # Pass 1: boxes and areas only (full-size masks of every candidate would not fit).
        boxes, areas = [], []
        for chunk in self._full_masks(logits, image_hw, threshold):
            boxes.append(mask_to_box(chunk))
            areas.append(count_true(chunk))
        if not boxes:
            return []
        boxes_t, areas_t = torch.cat(boxes), torch.cat(areas)
        keep = (areas_t > max(cfg.min_mask_area, 0)).nonzero().flatten()
        keep = keep[box_nms(boxes_t[keep], iou[keep], cfg.box_nms_thresh)]
        # Pass 2: full-size masks of the survivors only.
        masks_t = torch.empty(len(keep), *image_hw, dtype=torch.bool)
        filled = 0
        for chunk in self._full_masks(logits[keep], image_hw, threshold):
            masks_t[filled : filled + len(chunk)] = chunk
            filled += len(chunk)

        records = []
        for row, i in enumerate(keep.tolist()):
            mask = masks_t[row].numpy()
            x0, y0, x1, y1 = boxes_t[i].tolist()
            records.append(
                {
                    "segmentation": encode_rle(mask) if cfg.output_mode == "coco_rle" else mask,
                    "area": int(areas_t[i]),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "predicted_iou": float(iou[i]),
                    "stability_score": float(stability[i]),
                    "point_coords": [points[i].tolist()],
                }
            )
        return records
