"""Metrics shared by the evaluator, the drift report and quantization: mask IoU, size buckets,
SQNR (the one definition every per-tensor and per-layer comparison uses)."""

from __future__ import annotations

import math

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


def signal_and_noise(reference: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """(|ref|^2, |ref - test|^2) in float64: the two energies an SQNR compares. Summing them over
    several images before taking the ratio weighs each image by its energy, as one long signal."""
    reference = np.asarray(reference, np.float64)
    error = reference - np.asarray(test, np.float64)
    return float(np.vdot(reference, reference)), float(np.vdot(error, error))


def energy_ratio_db(signal: float, noise: float) -> float:
    """10 log10(signal / noise): inf when there is no noise, -inf when there is no signal."""
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal else -math.inf


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``test`` against ``reference`` in dB,
    10 log10(|ref|^2 / |ref - test|^2); inf when identical."""
    return energy_ratio_db(*signal_and_noise(reference, test))
