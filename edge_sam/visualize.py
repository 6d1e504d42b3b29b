"""Overlays a person can read at a glance: masks tinted over the image, prompts drawn on top."""

from __future__ import annotations

import cv2
import numpy as np

PALETTE = np.array(
    [[30, 144, 255], [255, 99, 71], [50, 205, 50], [255, 215, 0], [186, 85, 211], [0, 206, 209], [255, 140, 0]],
    dtype=np.uint8,
)
_LABEL_COLORS = {1: (0, 255, 0), 0: (255, 0, 0)}


def overlay_masks(image: np.ndarray, masks: list[np.ndarray] | np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Tint each mask with its own palette colour and outline it."""
    out = image.copy()
    for i, mask in enumerate(masks):
        mask = np.asarray(mask, dtype=bool)
        color = PALETTE[i % len(PALETTE)]
        out[mask] = (out[mask] * (1 - alpha) + color * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), 2)
    return out


def draw_prompts(
    image: np.ndarray,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    box: np.ndarray | None = None,
) -> np.ndarray:
    """Foreground points green, background red, the box in yellow."""
    out = image.copy()
    radius = max(4, round(min(image.shape[:2]) / 100))
    if points is not None and labels is not None:
        for (x, y), label in zip(np.asarray(points).reshape(-1, 2), np.asarray(labels).reshape(-1)):
            if int(label) in _LABEL_COLORS:
                cv2.circle(out, (round(x), round(y)), radius, _LABEL_COLORS[int(label)], -1)
                cv2.circle(out, (round(x), round(y)), radius, (255, 255, 255), 1)
    if box is not None:
        x0, y0, x1, y1 = (round(v) for v in np.asarray(box).reshape(-1))
        cv2.rectangle(out, (x0, y0), (x1, y1), (255, 215, 0), 2)
    return out
