"""Prompted-segmentation mIoU as in the EfficientSAM paper's Table 4, for any predictor-like object.

Protocol (per ground-truth object, the image embedded once):

- ``box``: the ground-truth box (xyxy, as stored in the dataset). With ``box_multimask=True`` (the
  default) the box goes through the multimask head and the mask with the highest predicted IoU is
  kept, as the EfficientSAM reference example does; ``False`` uses the single-mask output, as SAM's
  evaluation does for boxes.
- ``1-click``: one positive click at the point farthest from the object boundary
  (:func:`edge_sam.data.prompts.mask_center_point`); a single click is ambiguous, so the multimask
  output with the highest predicted IoU is kept.
- ``n-click``: the centre click, then up to ``n_clicks - 1`` correction clicks, each at the centre
  of the largest component of the larger error type (missed pixels -> positive click, extra pixels ->
  negative click). As in SAM's interactive evaluation, clicks after the first use the single-mask
  output because several clicks are no longer ambiguous. Once a prediction is exact no more clicks
  are added. The reported IoU is the one after the last click; ``n_click_curve`` has the mIoU after
  each click.

Objects whose mask is empty are skipped and counted. Size buckets use COCO's thresholds
(small < 32^2, medium < 96^2, large otherwise) on the mask's pixel area in the image as given; on data
at a reduced resolution (e.g. 256-pixel synthetic images) they are the COCO thresholds applied to the
pixel area of that data, not COCO-equivalent object sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from tqdm import tqdm

from edge_sam.data.prompts import center_correction_click, mask_center_point
from edge_sam.errors import EdgeSamError
from edge_sam.eval.metrics import MEDIUM_MAX_AREA, SIZE_BUCKETS, SMALL_MAX_AREA, mask_iou, size_bucket

MODES = ("box", "1-click", "n-click")
# The decoder has six prompt slots, so at most six clicks fit.
MAX_CLICKS = 6


class EvalError(EdgeSamError, ValueError):
    """An evaluation request that cannot run (unknown mode, too many clicks, wrong mask shape)."""


class PredictorLike(Protocol):
    def set_image(self, image: np.ndarray) -> None: ...

    def predict(self, point_coords=None, point_labels=None, box=None, multimask_output: bool = True): ...


@dataclass
class EvalResult:
    """Per-object IoUs for each mode, with the objects' mask areas for size buckets."""

    n_clicks: int
    n_images: int = 0
    skipped_empty: int = 0
    areas: list[int] = field(default_factory=list)
    ious: dict[str, list[float]] = field(default_factory=dict)
    click_ious: list[list[float]] = field(default_factory=list)

    @property
    def n_objects(self) -> int:
        return len(self.areas)

    def miou(self, mode: str, bucket: str | None = None) -> float | None:
        """Mean IoU of a mode over all objects or one size bucket; None when there are no such objects."""
        ious = np.asarray(self.ious[mode], np.float64)
        if bucket is not None:
            ious = ious[np.array([size_bucket(a) == bucket for a in self.areas], bool)]
        return float(ious.mean()) if ious.size else None

    def bucket_counts(self) -> dict[str, int]:
        return {b: sum(size_bucket(a) == b for a in self.areas) for b in SIZE_BUCKETS}

    def n_click_curve(self) -> list[float]:
        """mIoU after 1, 2, ... n_clicks clicks (n-click mode)."""
        return [float(v) for v in np.asarray(self.click_ious, np.float64).mean(axis=0)] if self.click_ious else []

    def to_dict(self) -> dict:
        return {
            "n_images": self.n_images,
            "n_objects": self.n_objects,
            "skipped_empty_masks": self.skipped_empty,
            "n_clicks": self.n_clicks,
            "size_thresholds_px": {"small_below": SMALL_MAX_AREA, "medium_below": MEDIUM_MAX_AREA},
            "objects_per_size": self.bucket_counts(),
            "miou": {
                mode: {"all": self.miou(mode), **{b: self.miou(mode, b) for b in SIZE_BUCKETS}} for mode in self.ious
            },
            "n_click_curve": self.n_click_curve(),
        }

    def _mode_label(self, mode: str) -> str:
        return f"{self.n_clicks}-click" if mode == "n-click" else mode

    def format_table(self) -> str:
        """A Markdown table of mIoU (in %) per mode, overall and by object size."""
        counts = self.bucket_counts()
        header = "| prompt | mIoU | " + " | ".join(f"{b} (n={counts[b]})" for b in SIZE_BUCKETS) + " |"
        lines = [header, "| --- | ---: | ---: | ---: | ---: |"]
        for mode in self.ious:
            cells = [self.miou(mode)] + [self.miou(mode, b) for b in SIZE_BUCKETS]
            text = ["n/a" if v is None else f"{100 * v:.1f}" for v in cells]
            lines.append(f"| {self._mode_label(mode)} | " + " | ".join(text) + " |")
        lines.append("")
        lines.append(
            f"{self.n_objects} objects in {self.n_images} images; {self.skipped_empty} empty masks skipped."
        )
        return "\n".join(lines)


def _best_mask(masks: np.ndarray, iou_predictions: np.ndarray) -> np.ndarray:
    return np.asarray(masks[int(np.argmax(np.asarray(iou_predictions)))], bool)


def _predict_mask(predictor: PredictorLike, multimask: bool, **prompt) -> np.ndarray:
    masks, iou_predictions, _ = predictor.predict(multimask_output=multimask, **prompt)
    return _best_mask(masks, iou_predictions)


def _click_ious(predictor: PredictorLike, gt: np.ndarray, n_clicks: int) -> list[float]:
    """IoU after each click of the n-click protocol (centre click, then correction clicks)."""
    points = [mask_center_point(gt)]
    labels = [1]
    pred = _predict_mask(predictor, True, point_coords=np.stack(points), point_labels=np.array(labels))
    ious = [mask_iou(pred, gt)]
    for _ in range(n_clicks - 1):
        click = center_correction_click(gt, pred)
        if click is not None:
            points.append(click[0])
            labels.append(click[1])
            pred = _predict_mask(predictor, False, point_coords=np.stack(points), point_labels=np.array(labels))
        ious.append(mask_iou(pred, gt))
    return ious


def evaluate(
    predictor_like: PredictorLike,
    dataset,
    modes: tuple[str, ...] | list[str] = MODES,
    n_clicks: int = 3,
    max_images: int | None = None,
    progress: bool = True,
    box_multimask: bool = True,
) -> EvalResult:
    """Run the prompt modes over every non-empty object of the first ``max_images`` dataset images."""
    modes = tuple(modes)
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise EvalError(f"unknown evaluation mode(s) {unknown or modes}; choose from {', '.join(MODES)}")
    if not 1 <= n_clicks <= MAX_CLICKS:
        raise EvalError(f"n_clicks must be between 1 and {MAX_CLICKS} (the decoder's prompt slots), got {n_clicks}")
    n_images = len(dataset) if max_images is None else min(len(dataset), max_images)
    result = EvalResult(n_clicks=n_clicks, ious={m: [] for m in modes})
    bar = tqdm(range(n_images), desc="evaluate", unit="img", disable=not progress)
    for index in bar:
        sample = dataset[index]
        predictor_like.set_image(sample.image)
        h, w = sample.image.shape[:2]
        result.n_images += 1
        for ann in sample.annotations:
            gt = ann.mask
            if not gt.any():
                result.skipped_empty += 1
                continue
            result.areas.append(int(gt.sum()))
            if "box" in modes:
                # Stored boxes (COCO's float xywh) can overshoot the image edge by rounding; predictors reject that.
                box = np.clip(np.asarray(ann.bbox_xyxy, np.float32), 0, [w, h, w, h])
                pred = _predict_mask(predictor_like, box_multimask, box=box)
                result.ious["box"].append(mask_iou(pred, gt))
            if "1-click" in modes:
                pred = _predict_mask(
                    predictor_like, True, point_coords=mask_center_point(gt)[None], point_labels=np.array([1])
                )
                result.ious["1-click"].append(mask_iou(pred, gt))
            if "n-click" in modes:
                curve = _click_ious(predictor_like, gt, n_clicks)
                result.click_ious.append(curve)
                result.ious["n-click"].append(curve[-1])
        if progress and result.areas:
            bar.set_postfix({m: f"{100 * result.miou(m):.1f}" for m in modes})
    return result
