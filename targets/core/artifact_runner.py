"""Runners over exported artifacts: the manifest-carrying base and the deploy-form runner every
runtime package builds on (the :class:`~edge_sam.runner.Runner` interface lives in edge_sam)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edge_sam.deploy_form import pad_prompts
from edge_sam.flops import folds_decoder_attention
from edge_sam.modeling import EfficientSamConfig
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


# Prompts per call of a decoder graph that takes a prompt batch: each carries image-sized
# tensors, and ONNX Runtime keeps a call's working memory in its arena. At 1024 a call of 8
# prompts raised the process's peak RSS by ~490 MB over the encoder's 657 MB (segment-everything
# 32x32 peaked at 1263 MB, over its 1 GB bound), 4 by ~250 MB, 2 by ~130 MB, one at a time by
# ~60 MB (/proc VmHWM, 2 threads): 2 keeps everything-mode inside the bound.
PROMPT_CHUNK = 2


class DeployFormRunner(ArtifactRunner):
    """A runner for deploy-form graphs: the host resizes and normalizes the image and pads the
    prompts to the decoder's slots (both via edge_sam, so every target preprocesses the same way);
    a target only runs the three graphs. The decoder's per-image context is computed at the first
    decode of an embedding and kept for every later prompt of that embedding (the one
    :meth:`encode` returned last, by identity: the Predictor passes that array back)."""

    keeps_decoder_context = True

    def __init__(self, manifest: Manifest, label: str) -> None:
        self.manifest = manifest
        self.img_size = manifest.img_size
        self.slots = manifest.prompts["slots"]
        self.label = label
        # what ContextDecoderGraph chose at export: the same rule on the same config and size
        self.folds_decoder_attention = folds_decoder_attention(EfficientSamConfig.from_dict(manifest.model_config),
                                                               manifest.img_size)
        self._context: tuple[np.ndarray | None, Sequence[np.ndarray]] = (None, ())

    def encode(self, image: np.ndarray) -> np.ndarray:
        with self.host_side():
            x = preprocess(image_to_tensor(image), self.img_size).numpy()
        return self.run_encoder(np.ascontiguousarray(x, dtype=np.float32))

    def decoder_context(self, embedding: np.ndarray) -> Sequence[np.ndarray]:
        """The context graph's outputs for ``embedding``: kept for the last embedding seen."""
        seen, context = self._context
        if embedding is not seen:
            context = self.run_context(np.asarray(embedding, np.float32))
            self._context = (embedding, context)
        return context

    def decode(self, embedding, points, labels, image_hw):
        coords, padded = pad_prompts(points, labels, image_hw, self.img_size, self.slots)
        return self.run_decoder(self.decoder_context(embedding), coords[None], padded[None])

    @property
    def prompt_batch(self) -> int | None:
        """Prompt rows the decoder graph takes per call: 1 (a static graph), or None where its
        batch axis is symbolic (any number)."""
        rows = self.manifest.graph("decoder").inputs[-1].shape[0]
        return None if isinstance(rows, str) else int(rows)

    def decode_batch(self, embedding, points, labels, image_hw, multimask_output=True):
        """Q queries, :data:`PROMPT_CHUNK` per decoder call where the graph takes a prompt batch,
        else one by one; every call with the image's kept context."""
        if self.prompt_batch == 1:
            return super().decode_batch(embedding, points, labels, image_hw, multimask_output)
        self.check_multimask(multimask_output)
        context = self.decoder_context(embedding)
        padded = [pad_prompts(p, l, image_hw, self.img_size, self.slots) for p, l in zip(points, labels)]
        coords = np.stack([c for c, _ in padded])
        slot_labels = np.stack([l for _, l in padded])
        outputs = [self.run_decoder(context, coords[i : i + PROMPT_CHUNK], slot_labels[i : i + PROMPT_CHUNK])
                   for i in range(0, len(coords), PROMPT_CHUNK)]
        return np.concatenate([low for low, _ in outputs]), np.concatenate([iou for _, iou in outputs])

    @abstractmethod
    def run_encoder(self, image: np.ndarray) -> np.ndarray:
        """[1, 3, S, S] normalized float32 -> [1, C, S/16, S/16]."""

    @abstractmethod
    def run_context(self, embedding: np.ndarray) -> Sequence[np.ndarray]:
        """[1, C, h, w] -> the decoder's per-image context (the context graph's outputs, in order)."""

    @abstractmethod
    def run_decoder(
        self, context: Sequence[np.ndarray], coords: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """context, [Q, slots, 2] model px, [Q, slots] -> ([Q, 3, 4h, 4w], [Q, 3])."""


GraphCall = Callable[..., Sequence[np.ndarray]]


class GraphRunner(DeployFormRunner):
    """A deploy-form runner over three graph calls, ``encoder(image)``, ``context(embedding)``
    and ``decoder(*context, coords, labels)``, each returning its outputs in the manifest's
    order: a runtime package only wraps one of its files behind such a call."""

    def __init__(self, manifest: Manifest, encoder: GraphCall, context: GraphCall, decoder: GraphCall, label: str) -> None:
        super().__init__(manifest, label)
        self.encoder, self.context, self.decoder = encoder, context, decoder

    def run_encoder(self, image: np.ndarray) -> np.ndarray:
        return self.encoder(image)[0]

    def run_context(self, embedding: np.ndarray) -> Sequence[np.ndarray]:
        return tuple(self.context(embedding))

    def run_decoder(self, context, coords, labels):
        low_res, iou = self.decoder(*context, coords, labels)
        return low_res, iou
