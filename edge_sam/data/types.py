"""The in-memory form every dataset reader returns and every consumer (training, evaluation) reads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Annotation:
    """One object: its full-resolution mask plus the prompts derived from it.

    ``bbox_xyxy`` uses pixel-edge coordinates (a mask covering columns 3..7 has x0=3, x1=8), the
    convention of COCO's ``[x, y, w, h]`` boxes converted with ``x1 = x + w``. ``area`` is the mask's
    pixel count (what the evaluation buckets by). ``point_coords`` holds the dataset's own clicks
    (SA-1B stores the point each mask was generated from) as ``[K, 2]`` (x, y), or None.
    """

    mask: np.ndarray
    bbox_xyxy: np.ndarray
    area: int
    point_coords: np.ndarray | None = None


@dataclass
class Sample:
    """One image (HxWx3 uint8 RGB) with all its annotated objects."""

    image: np.ndarray
    annotations: list[Annotation]
    image_id: str
