"""Correction clicks for interactive training, for a whole batch of queries at once on their device.

SAM's recipe: after a prediction, the next click is drawn from the error region, positive where
the object was missed (false negatives) and negative where the mask spilled over (false
positives); we take the larger of the two. Clicks are kept off the thin rim of the region (where
a click is ambiguous) by drawing from the region eroded by ``ERODE_RADIUS`` pixels when anything
of it survives. Everything is tensor work, so a GPU step never waits for a per-object CPU loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ERODE_RADIUS = 2


def _erode(region: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary erosion with a square window; pixels beyond the image border count as inside."""
    window = 2 * radius + 1
    return -F.max_pool2d(-region.float()[:, None], window, stride=1, padding=radius)[:, 0] > 0.5


def sample_correction_clicks(
    predicted: torch.Tensor, truth: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One click per query for boolean ``predicted`` / ``truth`` masks [N, H, W].

    Returns points [N, 2] (x, y pixel indices, float32), labels [N] (1 positive, 0 negative) and
    ``has_click`` [N] (False where the prediction is exact; that query's point and label are
    meaningless then).
    """
    if predicted.shape != truth.shape or predicted.dim() != 3:
        raise ValueError(f"expected two [N, H, W] masks, got {tuple(predicted.shape)} and {tuple(truth.shape)}")
    predicted, truth = predicted.bool(), truth.bool()
    missed = truth & ~predicted
    spilled = predicted & ~truth
    positive = missed.sum(dim=(1, 2)) >= spilled.sum(dim=(1, 2))
    region = torch.where(positive[:, None, None], missed, spilled)
    interior = _erode(region, ERODE_RADIUS)
    has_interior = interior.flatten(1).any(dim=1)
    allowed = torch.where(has_interior[:, None, None], interior, region).flatten(1)
    has_click = allowed.any(dim=1)
    # Exact queries draw from a uniform row (multinomial refuses all-zero rows); has_click drops them.
    weights = torch.where(has_click[:, None], allowed.float(), torch.ones_like(allowed, dtype=torch.float32))
    flat = torch.multinomial(weights, 1, generator=generator)[:, 0]
    width = truth.shape[-1]
    points = torch.stack([flat % width, flat // width], dim=1).float()
    return points, positive.float(), has_click
