"""Predictor: encode an image once, then answer any number of point/box prompts against it.

It runs over any :class:`~edge_sam.runner.Runner`: the PyTorch model (``Predictor(model)``
wraps it in a :class:`~edge_sam.runner.TorchRunner`) or an exported artifact
(``Predictor(edge_sam.targets.load_runner("out/onnx-fp32"))``). Every prompt goes through the
same checks, :func:`prompt_to_points`, whatever runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import PromptError
from .modeling import EfficientSam
from .runner import Runner, TorchRunner
from .transforms import check_image, upscale_logits

VALID_LABELS = (-1, 0, 1, 2, 3)
BOX_CORNER_LABELS = (2.0, 3.0)


@dataclass(frozen=True, eq=False)
class Prompt:
    """One query in image pixels: points with labels, and/or a box (x0, y0, x1, y1).

    The one prompt type of edge_sam: the Predictor, everything-mode and the drift report take
    it. ``object_index`` ties a validation prompt to the annotated object it was made from (the
    report scores the mask against that object's); interactive prompts leave it None.
    """

    point_coords: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    box: np.ndarray | None = None
    object_index: int | None = None

    @property
    def points(self) -> np.ndarray:
        """[N, 2] float32: the points, then the box's two corners (what the decoder takes).
        Unchecked: :func:`prompt_to_points` validates."""
        parts = [np.zeros((0, 2), np.float32)]
        if self.point_coords is not None:
            parts.append(np.asarray(self.point_coords, np.float32).reshape(-1, 2))
        if self.box is not None:
            parts.append(np.asarray(self.box, np.float32).reshape(2, 2))
        return np.concatenate(parts)

    @property
    def labels(self) -> np.ndarray:
        """[N] float32 labels of :attr:`points`: the point labels, then 2 and 3 for a box."""
        parts = [np.zeros((0,), np.float32)]
        if self.point_labels is not None:
            parts.append(np.asarray(self.point_labels, np.float32).reshape(-1))
        if self.box is not None:
            parts.append(np.array(BOX_CORNER_LABELS, np.float32))
        return np.concatenate(parts)

    @property
    def kind(self) -> str:
        """"box", "click" (one point), "points" or "points+box": how reports name it."""
        n_points = 0 if self.point_coords is None else len(np.asarray(self.point_coords).reshape(-1, 2))
        if self.box is not None:
            return "points+box" if n_points else "box"
        return "click" if n_points == 1 else "points"

    def describe(self) -> dict:
        """JSON-ready: kind, points and labels (as the decoder takes them), object index."""
        return {"kind": self.kind, "points": self.points.round(1).tolist(), "labels": self.labels.tolist(),
                "object_index": self.object_index}


def prompt_to_points(
    prompt: Prompt, image_hw: tuple[int, int], max_slots: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a prompt and flatten it to (points [N, 2], labels [N]); a box becomes labels 2, 3.

    Every rule the model silently breaks on in the reference (too many points, points off the
    image, unknown labels, nothing to segment) is one clear PromptError here, for every runner.
    """
    h, w = image_hw
    if prompt.point_coords is not None or prompt.point_labels is not None:
        if prompt.point_coords is None or prompt.point_labels is None:
            raise PromptError("point_coords and point_labels must be given together")
        n_points = np.asarray(prompt.point_coords).size // 2
        n_labels = np.asarray(prompt.point_labels).size
        if np.asarray(prompt.point_coords).size % 2 or n_points != n_labels:
            raise PromptError(f"{n_points} points but {n_labels} labels")
        bad = sorted({float(v) for v in np.asarray(prompt.point_labels, np.float32).reshape(-1) if v not in VALID_LABELS})
        if bad:
            raise PromptError(f"point labels must be in {VALID_LABELS} (1 fg, 0 bg, 2/3 box corners, -1 pad), got {bad}")
    if prompt.box is not None:
        box = np.asarray(prompt.box, dtype=np.float32).reshape(-1)
        if box.shape != (4,) or not (box[0] < box[2] and box[1] < box[3]):
            raise PromptError(f"box must be x0,y0,x1,y1 with x0 < x1 and y0 < y1, got {box.tolist()}")
    points, labels = prompt.points, prompt.labels
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
    """``set_image`` once (the encoder runs there), then ``predict`` as often as needed.

    ``source`` is an :class:`EfficientSam` (run in PyTorch on the device its weights are on) or
    any :class:`Runner`. Exported artifacts return the three multimask outputs only:
    ``multimask_output=False`` on one is a clear error rather than a silently different mask.
    """

    def __init__(self, source: EfficientSam | Runner) -> None:
        self.runner = source if isinstance(source, Runner) else TorchRunner(source.eval())
        self._embedding: np.ndarray | None = None
        self._image_hw: tuple[int, int] | None = None

    @property
    def max_slots(self) -> int:
        return self.runner.max_prompt_points

    @property
    def mask_threshold(self) -> float:
        return self.runner.mask_threshold

    @property
    def image_hw(self) -> tuple[int, int]:
        if self._image_hw is None:
            raise PromptError("no image set: call set_image(image) first")
        return self._image_hw

    @property
    def image_embedding(self) -> np.ndarray:
        """[1, C, h, w] embedding of the current image."""
        self.image_hw  # noqa: B018 - raises when no image is set
        return self._embedding

    def set_image(self, image: np.ndarray) -> None:
        """Encode an HxWx3 uint8 RGB image and cache its embedding."""
        check_image(image)
        self._embedding = self.runner.encode(image)
        self._image_hw = tuple(image.shape[:2])

    def set_embedding(self, embedding: np.ndarray | torch.Tensor, image_hw: tuple[int, int]) -> None:
        """Reuse an embedding computed elsewhere (a stored one, or another runtime's)."""
        if isinstance(embedding, torch.Tensor):
            embedding = embedding.detach().cpu().numpy()
        self._embedding = np.asarray(embedding, np.float32)
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
        with self.runner.host_side():  # the next call's runtime threads find the cores free
            full = upscale_logits(low_res, self.image_hw)
            masks = full if return_logits else full > self.mask_threshold
        return masks.numpy(), iou.numpy(), low_res.numpy()

    def decode_low_res(self, prompts: Sequence[Prompt], multimask_output: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries -> low-res logits [Q, M, h, w] and IoU [Q, M] (CPU tensors), without upscaling.

        All queries go to the runner's ``decode_batch`` at once (one decoder call in PyTorch),
        padded to the longest with point (-1, -1), label -1.
        """
        if not prompts:
            raise PromptError("no prompts given")
        flat = [prompt_to_points(p, self.image_hw, self.max_slots) for p in prompts]
        n = max(len(points) for points, _ in flat)
        coords = np.full((len(flat), n, 2), -1.0, np.float32)
        labels = np.full((len(flat), n), -1.0, np.float32)
        for q, (points, point_labels) in enumerate(flat):
            coords[q, : len(points)] = points
            labels[q, : len(point_labels)] = point_labels
        low_res, iou = self.runner.decode_batch(self.image_embedding, coords, labels, self.image_hw, multimask_output)
        return torch.from_numpy(np.asarray(low_res, np.float32)), torch.from_numpy(np.asarray(iou, np.float32))
