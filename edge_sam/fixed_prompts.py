"""Deterministic prompts for validation: the same image always gets the same prompts.

Plain images get a grid of single foreground clicks plus a few boxes; dataset samples get,
per annotated object, its box and a click at its centre (the point farthest from the mask
boundary, the 1-click protocol of the EfficientSAM paper), tied to the object's mask so the
report can score both against ground truth. Each is an :class:`edge_sam.predictor.Prompt`,
the same type the Predictor takes, so a validation prompt can be replayed there as it is.
"""

from __future__ import annotations

import numpy as np

from edge_sam.data.prompts import mask_center_point
from edge_sam.data.types import Sample
from edge_sam.predictor import Prompt

# Boxes as fractions of the image (x0, y0, x1, y1): centre, left-top quadrant-ish, a wide strip.
_FOLDER_BOXES = ((0.25, 0.25, 0.75, 0.75), (0.05, 0.1, 0.5, 0.6), (0.3, 0.55, 0.95, 0.9))


def box_prompt(box_xyxy: np.ndarray, object_index: int | None = None) -> Prompt:
    return Prompt(box=np.asarray(box_xyxy, np.float32).reshape(4), object_index=object_index)


def click_prompt(point_xy: np.ndarray, object_index: int | None = None) -> Prompt:
    """One foreground click."""
    return Prompt(np.asarray(point_xy, np.float32).reshape(1, 2), np.ones(1, np.float32), object_index=object_index)


def grid_prompts(image_hw: tuple[int, int], grid: int = 3) -> list[Prompt]:
    """``grid`` x ``grid`` cell-centre clicks, then three fixed boxes."""
    h, w = image_hw
    steps = (np.arange(grid) + 0.5) / grid
    clicks = [click_prompt([x * w, y * h]) for y in steps for x in steps]
    boxes = [box_prompt(np.array(box) * [w, h, w, h]) for box in _FOLDER_BOXES]
    return clicks + boxes


def object_prompts(sample: Sample) -> list[Prompt]:
    """A box and a centre click for every non-empty annotated object (edge_sam.eval's protocol:
    the stored box clipped to the image, the point farthest from the mask boundary)."""
    h, w = sample.image.shape[:2]
    prompts = []
    for index, annotation in enumerate(sample.annotations):
        if not annotation.mask.any():
            continue
        prompts.append(box_prompt(np.clip(np.asarray(annotation.bbox_xyxy, np.float32), 0, [w, h, w, h]), index))
        prompts.append(click_prompt(mask_center_point(annotation.mask), index))
    return prompts


def prompts_for(sample: Sample, grid: int = 3, max_objects: int | None = None) -> list[Prompt]:
    """Object prompts when the sample has annotations, else the grid."""
    if sample.annotations:
        prompts = object_prompts(sample)
        return prompts if max_objects is None else prompts[: 2 * max_objects]
    return grid_prompts(sample.image.shape[:2], grid)
