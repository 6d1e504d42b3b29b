"""Mask metrics shared by the evaluator and the drift report."""

from __future__ import annotations

import numpy as np

# COCO's object-size thresholds (pixel area): small < 32^2 <= medium < 96^2 <= large.
SMALL_MAX_AREA = 32**2
MEDIUM_MAX_AREA = 96**2
SIZE_BUCKETS = ("small", "medium", "large")


def mask_iou(pred: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union of two bool masks of the same shape; 1.0 when both are empty."""
    if pred.shape != target.shape:
        raise ValueError(f"mask shapes differ: prediction {pred.shape} vs target {target.shape}")
    union = int(np.logical_or(pred, target).sum())
    return 1.0 if union == 0 else int(np.logical_and(pred, target).sum()) / union


def size_bucket(area: int) -> str:
    """COCO size bucket of an object's mask area in pixels."""
    if area < SMALL_MAX_AREA:
        return "small"
    return "medium" if area < MEDIUM_MAX_AREA else "large"
