"""Predictor: encode an image once, then answer any number of point/box prompts against it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import PromptError
from .modeling import EfficientSam
from .transforms import check_image, image_to_tensor, upscale_logits

VALID_LABELS = (-1, 0, 1, 2, 3)


@dataclass(frozen=True)
class Prompt:
    """One query: points with labels, and/or a box (xyxy, image pixels)."""

    point_coords: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    box: np.ndarray | None = None


def prompt_to_points(
    prompt: Prompt, image_hw: tuple[int, int], max_slots: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a prompt and flatten it to (points [N, 2], labels [N]); a box becomes labels 2, 3.

    Every rule the model silently breaks on in the reference (too many points, points off the
    image, unknown labels, nothing to segment) is one clear PromptError here.
    """
    h, w = image_hw
    points = np.zeros((0, 2), np.float32)
    labels = np.zeros((0,), np.float32)
    if prompt.point_coords is not None or prompt.point_labels is not None:
        if prompt.point_coords is None or prompt.point_labels is None:
            raise PromptError("point_coords and point_labels must be given together")
        points = np.asarray(prompt.point_coords, dtype=np.float32).reshape(-1, 2)
        labels = np.asarray(prompt.point_labels, dtype=np.float32).reshape(-1)
        if len(points) != len(labels):
            raise PromptError(f"{len(points)} points but {len(labels)} labels")
        bad = sorted({float(v) for v in labels if v not in VALID_LABELS})
        if bad:
            raise PromptError(f"point labels must be in {VALID_LABELS} (1 fg, 0 bg, 2/3 box corners, -1 pad), got {bad}")
    if prompt.box is not None:
        box = np.asarray(prompt.box, dtype=np.float32).reshape(-1)
        if box.shape != (4,) or not (box[0] < box[2] and box[1] < box[3]):
            raise PromptError(f"box must be x0,y0,x1,y1 with x0 < x1 and y0 < y1, got {box.tolist()}")
        points = np.concatenate([points, box.reshape(2, 2)])
        labels = np.concatenate([labels, np.array([2, 3], np.float32)])
    active = labels != -1
    if not active.any():
        raise PromptError("empty prompt: give at least one point or a box")
    if not np.isfinite(points).all():
        raise PromptError("prompt coordinates must be finite numbers")
    outside = active & ((points[:, 0] < 0) | (points[:, 0] > w) | (points[:, 1] < 0) | (points[:, 1] > h))
    if outside.any():
        x, y = points[np.argmax(outside)]
        raise PromptError(f"prompt point ({x:g}, {y:g}) is outside the {w}x{h} image")
    if len(points) > max_slots:
        raise PromptError(f"{len(points)} prompt slots used; the decoder takes at most {max_slots} (a box uses 2)")
    return points, labels


class Predictor:
    """``set_image`` once (the encoder runs there), then ``predict`` as often as needed."""

    def __init__(self, model: EfficientSam) -> None:
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self._embedding: torch.Tensor | None = None
        self._image_hw: tuple[int, int] | None = None

    @property
    def max_slots(self) -> int:
        return self.model.decoder_max_num_input_points

    @property
    def image_hw(self) -> tuple[int, int]:
        if self._image_hw is None:
            raise PromptError("no image set: call set_image(image) first")
        return self._image_hw

    @property
    def image_embedding(self) -> torch.Tensor:
        """[1, C, h, w] embedding of the current image."""
        self.image_hw  # noqa: B018 - raises when no image is set
        return self._embedding

    @torch.inference_mode()
    def set_image(self, image: np.ndarray) -> None:
        """Encode an HxWx3 uint8 RGB image and cache its embedding."""
        check_image(image)
        self._embedding = self.model.get_image_embeddings(image_to_tensor(image).to(self.device))
        self._image_hw = image.shape[:2]

    def set_embedding(self, embedding: torch.Tensor, image_hw: tuple[int, int]) -> None:
        """Reuse an embedding computed elsewhere (a stored one, or another runtime's)."""
        self._embedding = embedding.to(self.device)
        self._image_hw = tuple(image_hw)

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One query -> (masks [M, H, W] bool (or logits), IoU predictions [M], low-res logits [M, h, w]).

        M is 3 with ``multimask_output`` (pick by the IoU predictions), else 1. Outputs keep
        the decoder's order, as the reference does.
        """
        masks, iou, low_res = self.predict_batch([Prompt(point_coords, point_labels, box)], multimask_output, return_logits)
        return masks[0], iou[0], low_res[0]

    @torch.inference_mode()
    def predict_batch(
        self, prompts: Sequence[Prompt], multimask_output: bool = True, return_logits: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Several queries at once: masks [Q, M, H, W], IoU [Q, M], low-res logits [Q, M, h, w]."""
        low_res, iou = self.decode_low_res(prompts, multimask_output)
        full = upscale_logits(low_res, self.image_hw)
        masks = full if return_logits else full > self.model.mask_threshold
        return masks.cpu().numpy(), iou.cpu().numpy(), low_res.cpu().numpy()

    @torch.inference_mode()
    def decode_low_res(self, prompts: Sequence[Prompt], multimask_output: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries -> low-res logits [Q, M, h, w] and IoU [Q, M], without upscaling."""
        if not prompts:
            raise PromptError("no prompts given")
        flat = [prompt_to_points(p, self.image_hw, self.max_slots) for p in prompts]
        n = max(len(points) for points, _ in flat)
        coords = torch.full((1, len(flat), n, 2), -1.0)
        labels = torch.full((1, len(flat), n), -1.0)
        for q, (points, point_labels) in enumerate(flat):
            coords[0, q, : len(points)] = torch.from_numpy(points)
            labels[0, q, : len(point_labels)] = torch.from_numpy(point_labels)
        h, w = self.image_hw
        low_res, iou = self.model.predict_masks(
            self.image_embedding, coords.to(self.device), labels.to(self.device), multimask_output, h, w
        )
        return low_res[0], iou[0]
