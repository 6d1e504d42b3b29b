"""The two calls every way of running the model answers: encode an image, decode prompts.

:class:`Runner` lives here, beside the model, so the Predictor and everything-mode take any
runner without importing a deployment toolchain; the runners of exported artifacts subclass it
in :mod:`edge_sam.targets`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch

from .modeling import EfficientSam, build_efficient_sam
from .transforms import image_to_tensor


def model_at_size(model: EfficientSam, img_size: int) -> EfficientSam:
    """The same weights at another input size (the position table is resized on the fly)."""
    if model.image_encoder.img_size == img_size:
        return model
    resized = build_efficient_sam(dataclasses.replace(model.config, img_size=img_size))
    resized.load_state_dict(model.state_dict())
    return resized.eval()


class Runner(ABC):
    """Runs the model (PyTorch, or an exported artifact of any runtime) behind the same two calls.

    ``encode`` takes an HxWx3 uint8 RGB image and returns the image embedding [1, C, h, w];
    ``decode`` takes that embedding and prompts in image pixels and returns the low-res mask
    logits [1, 3, 4h, 4w] and IoU predictions [1, 3]. The drift report, the Predictor and
    everything-mode only see these calls.
    """

    label: str
    img_size: int

    @abstractmethod
    def encode(self, image: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def decode(
        self, embedding: np.ndarray, points: np.ndarray, labels: np.ndarray, image_hw: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def describe(self) -> dict[str, Any]:
        """What the report prints about this runner."""
        return {"label": self.label, "img_size": self.img_size}


class TorchRunner(Runner):
    """The fp32 PyTorch model through its own public methods: the reference every number uses."""

    def __init__(self, model: EfficientSam, img_size: int | None = None, label: str = "pytorch-fp32") -> None:
        self.model = model_at_size(model, img_size or model.image_encoder.img_size)
        self.img_size = self.model.image_encoder.img_size
        self.label = label

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> np.ndarray:
        return self.model.get_image_embeddings(image_to_tensor(image)).numpy()

    @torch.inference_mode()
    def decode(self, embedding, points, labels, image_hw):
        points = torch.as_tensor(np.asarray(points, np.float32)).reshape(1, 1, -1, 2)
        labels = torch.as_tensor(np.asarray(labels, np.float32)).reshape(1, 1, -1)
        masks, iou = self.model.predict_masks(
            torch.as_tensor(embedding), points, labels, True, input_h=image_hw[0], input_w=image_hw[1]
        )
        return masks[:, 0].numpy(), iou[:, 0].numpy()

    def describe(self) -> dict[str, Any]:
        params = sum(p.numel() for p in self.model.parameters())
        return {"label": self.label, "target": "pytorch", "backend": f"torch {torch.__version__}", "interface": "eager",
                "precision": "fp32", "recipe": None, "img_size": self.img_size, "bytes": params * 4}
