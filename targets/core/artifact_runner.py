"""Runners over exported artifacts: the manifest-carrying base and the deploy-form runner every
runtime package builds on (the :class:`~edge_sam.runner.Runner` interface lives in edge_sam)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edge_sam.deploy_form import pad_prompts
from edge_sam.runner import Runner
from edge_sam.transforms import image_to_tensor, preprocess

from edge_sam.targets.core.manifest import Manifest


class ArtifactRunner(Runner):
    """A runner over an exported artifact: its manifest says what it is."""

    manifest: Manifest

    @property
    def max_prompt_points(self) -> int:
        """The decoder's prompt slots, as the manifest records them."""
        return self.manifest.prompts["slots"]

    def describe(self) -> dict[str, Any]:
        """What the report prints about this runner."""
        m = self.manifest
        return {
            "label": self.label,
            "target": m.target,
            "backend": m.backend,
            "interface": m.interface,
            "precision": m.precision,
            "recipe": m.recipe["name"] if m.recipe else None,
            "scheme": m.recipe["scheme"] if m.recipe else None,
            "img_size": m.img_size,
            "bytes": sum(f["bytes"] for f in m.files.values()),
        }


class DeployFormRunner(ArtifactRunner):
    """A runner for deploy-form graphs: the host resizes and normalizes the image and pads the
    prompts to the decoder's slots (both via edge_sam, so every target preprocesses the same way);
    a target only runs the two graphs."""

    def __init__(self, manifest: Manifest, label: str) -> None:
        self.manifest = manifest
        self.img_size = manifest.img_size
        self.slots = manifest.prompts["slots"]
        self.label = label

    def encode(self, image: np.ndarray) -> np.ndarray:
        with self.host_side():
            x = preprocess(image_to_tensor(image), self.img_size).numpy()
        return self.run_encoder(np.ascontiguousarray(x, dtype=np.float32))

    def decode(self, embedding, points, labels, image_hw):
        coords, padded = pad_prompts(points, labels, image_hw, self.img_size, self.slots)
        return self.run_decoder(np.asarray(embedding, np.float32), coords[None], padded[None])

    @abstractmethod
    def run_encoder(self, image: np.ndarray) -> np.ndarray:
        """[1, 3, S, S] normalized float32 -> [1, C, S/16, S/16]."""

    @abstractmethod
    def run_decoder(self, embedding: np.ndarray, coords: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[1, C, h, w], [1, slots, 2] model px, [1, slots] -> ([1, 3, 4h, 4w], [1, 3])."""


GraphCall = Callable[..., Sequence[np.ndarray]]


class GraphPairRunner(DeployFormRunner):
    """A deploy-form runner over two graph calls, ``encoder(image)`` and ``decoder(embedding,
    coords, labels)``, each returning its outputs in the manifest's order: a runtime package
    only wraps one of its files behind such a call."""

    def __init__(self, manifest: Manifest, encoder: GraphCall, decoder: GraphCall, label: str) -> None:
        super().__init__(manifest, label)
        self.encoder, self.decoder = encoder, decoder

    def run_encoder(self, image: np.ndarray) -> np.ndarray:
        return self.encoder(image)[0]

    def run_decoder(self, embedding, coords, labels):
        low_res, iou = self.decoder(embedding, coords, labels)
        return low_res, iou
