"""Prompt sampling as in SAM training and the interactive evaluation protocol.

Points are ``[x, y]`` float32 pixel indices (column, row) of the chosen pixel; boxes are xyxy in
pixel-edge coordinates (see :class:`edge_sam.data.types.Annotation`). All randomness comes from the
``np.random.Generator`` passed in, so a seeded caller gets the same prompts every run.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_sam.data.codec import bbox_xyxy_from_mask

def _as_point(x: int | float, y: int | float) -> np.ndarray:
    return np.array([x, y], np.float32)


def _as_mask(mask: np.ndarray) -> np.ndarray:
    """Any 0/1 array (bool, uint8, float) as bool, so that ``~`` and ``&`` mean what they say."""
    return np.asarray(mask, dtype=bool)


def _require_nonempty(mask: np.ndarray, what: str) -> None:
    if mask.ndim != 2 or not mask.any():
        raise ValueError(f"cannot {what}: the mask is empty (or not 2-D)")


def distance_to_boundary(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each mask pixel to the nearest pixel outside it; the image border counts as outside."""
    distance = np.zeros(mask.shape, np.float32)
    x0, y0, x1, y1 = (int(v) for v in bbox_xyxy_from_mask(mask))
    if x1 > x0:
        # The nearest outside pixel of any mask pixel lies within one pixel of the mask's box, so the
        # transform over that window equals the full-image one at a fraction of the cost.
        window = np.pad(mask[y0:y1, x0:x1].astype(np.uint8), 1)
        distance[y0:y1, x0:x1] = cv2.distanceTransform(window, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    return distance


def _weighted_pick(weights: np.ndarray, rng: np.random.Generator) -> int:
    cumulative = np.cumsum(weights, dtype=np.float64)
    return int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right").clip(0, len(weights) - 1))


def sample_point_in_mask(mask: np.ndarray, rng: np.random.Generator, center_bias: float = 0.0) -> np.ndarray:
    """A pixel of ``mask``: uniform for ``center_bias=0``, else weighted by distance-to-boundary ** center_bias."""
    mask = _as_mask(mask)
    _require_nonempty(mask, "sample a point")
    rows, cols = np.nonzero(mask)
    if center_bias == 0:
        k = int(rng.integers(rows.size))
    else:
        k = _weighted_pick(distance_to_boundary(mask)[rows, cols] ** center_bias, rng)
    return _as_point(cols[k], rows[k])


def mask_center_point(mask: np.ndarray) -> np.ndarray:
    """The pixel farthest from the mask boundary (first in raster order on ties): the paper's 1-click point."""
    mask = _as_mask(mask)
    _require_nonempty(mask, "find the mask centre")
    row, col = np.unravel_index(int(np.argmax(distance_to_boundary(mask))), mask.shape)
    return _as_point(col, row)


def sample_box(
    mask_or_bbox: np.ndarray,
    rng: np.random.Generator,
    jitter: float = 0.1,
    image_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """The object's box with each side moved by up to ``jitter`` of the box's width/height, clipped to the image.

    ``mask_or_bbox`` is a 2-D mask (its tight box and size are used) or an xyxy box; for a box, pass
    ``image_hw`` to clip. Returns float32 xyxy with at least one pixel of width and height.
    """
    array = np.asarray(mask_or_bbox)
    if array.ndim == 2:
        array = _as_mask(array)
        _require_nonempty(array, "sample a box")
        bbox, image_hw = bbox_xyxy_from_mask(array).astype(np.float64), array.shape
    else:
        bbox = array.astype(np.float64).reshape(4)
    if not 0.0 <= jitter < 0.5:
        raise ValueError(f"box jitter must be in [0, 0.5), got {jitter}")
    width, height = bbox[2] - bbox[0], bbox[3] - bbox[1]
    box = bbox + rng.uniform(-1.0, 1.0, 4) * jitter * np.array([width, height, width, height])
    if image_hw is not None:
        box = np.clip(box, 0.0, [image_hw[1], image_hw[0], image_hw[1], image_hw[0]])
    box[2] = max(box[2], box[0] + 1.0)
    box[3] = max(box[3], box[1] + 1.0)
    return box.astype(np.float32)


def sample_background_point(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A uniformly chosen pixel outside the mask (a negative click)."""
    mask = _as_mask(mask)
    _require_nonempty(~mask, "sample a background point (the mask covers the whole image)")
    rows, cols = np.nonzero(~mask)
    k = int(rng.integers(rows.size))
    return _as_point(cols[k], rows[k])


def largest_error_component(gt_mask: np.ndarray, pred_mask: np.ndarray) -> tuple[np.ndarray, int] | None:
    """The largest connected piece of the larger error type, with the click label that fixes it.

    Missed object pixels (false negatives) need a positive click (label 1); pixels wrongly included
    (false positives) need a negative click (label 0). Returns None when the prediction is exact.
    """
    gt_mask, pred_mask = _as_mask(gt_mask), _as_mask(pred_mask)
    false_negative = gt_mask & ~pred_mask
    false_positive = pred_mask & ~gt_mask
    n_fn, n_fp = int(false_negative.sum()), int(false_positive.sum())
    if n_fn == 0 and n_fp == 0:
        return None
    region, label = (false_negative, 1) if n_fn >= n_fp else (false_positive, 0)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest, label


def center_correction_click(gt_mask: np.ndarray, pred_mask: np.ndarray) -> tuple[np.ndarray, int] | None:
    """Deterministic correction click for evaluation: the centre of the largest error component."""
    error = largest_error_component(gt_mask, pred_mask)
    if error is None:
        return None
    component, label = error
    return mask_center_point(component), label
