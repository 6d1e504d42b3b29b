"""What the web app computes: the fp32 PyTorch model and every artifact on the same image and
prompt, each through :class:`~edge_sam.predictor.Predictor` over its runner.

Each engine encodes an image once (the embedding and the time it took are cached per image), so
every later click runs the decoders only. Masks go to the page as PNG data URLs (0/255, one
channel: a few kB); the page tints and stacks them itself.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_sam.checkpoint import load_model
from edge_sam.errors import EdgeSamError, ImageError
from edge_sam.eval.metrics import mask_iou
from edge_sam.everything import EverythingConfig, EverythingGenerator
from edge_sam.predictor import Predictor
from edge_sam.runner import Runner, TorchRunner
from edge_sam.transforms import check_image, read_image
from edge_sam.visualize import overlay_masks

from edge_sam.targets.core.registry import load_runner
from edge_sam.targets.core.target import check_source, verify_artifact
from edge_sam.targets.pipeline.images import bundled_images

IMAGES_KEPT = 8  # uploaded images (and their embeddings) kept in memory, least recently used dropped
# Loose thresholds: the bundled reference model's IoU head predicts 0.1-0.4 (see edge-sam demo).
REFERENCE_EVERYTHING = EverythingConfig(points_per_side=16, pred_iou_thresh=0.2, stability_score_thresh=0.3)
DEFAULT_EVERYTHING = EverythingConfig(points_per_side=16)


def decode_image_bytes(data: bytes) -> np.ndarray:
    """An uploaded file -> HxWx3 uint8 RGB, or one ImageError."""
    array = np.frombuffer(data, np.uint8)
    image = cv2.imdecode(array, cv2.IMREAD_COLOR) if array.size else None
    if image is None:
        raise ImageError("cannot decode the uploaded file as an image (JPEG, PNG, BMP, WebP, TIFF)")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    check_image(image)
    return image


def png_data_url(image: np.ndarray) -> str:
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise ImageError("cannot encode a PNG")
    return "data:image/png;base64," + base64.b64encode(encoded.tobytes()).decode()


@dataclass
class Engine:
    """One way of running the model, shown as one panel."""

    label: str
    kind: str  # "fp32 PyTorch" or "target precision (recipe)"
    predictor: Predictor

    @classmethod
    def of(cls, runner: Runner, kind: str) -> "Engine":
        return cls(runner.label, kind, Predictor(runner))


@dataclass
class StoredImage:
    name: str
    image: np.ndarray
    data: bytes  # the file as uploaded or bundled, served back to the page
    embeddings: dict[int, tuple[np.ndarray, float]]  # engine index -> (embedding, encoder seconds)


class AppSession:
    """The engines and the images of one running app; every model call holds one lock."""

    def __init__(self, checkpoint: str | os.PathLike, artifacts: list[str | os.PathLike]) -> None:
        model = load_model(checkpoint)
        engines = [Engine.of(TorchRunner(model), "fp32 PyTorch (reference)")]
        for path in artifacts:
            manifest = verify_artifact(path)
            check_source(manifest, model, path)
            recipe = f" ({manifest.recipe['name']})" if manifest.recipe else ""
            engines.append(Engine.of(load_runner(path), f"{manifest.target} {manifest.precision}{recipe}"))
        sizes = {engine.predictor.runner.img_size for engine in engines}
        if len(sizes) > 1:
            raise EdgeSamError(f"the checkpoint and the artifacts run at different sizes ({sorted(sizes)}): "
                               "export the artifacts from this checkpoint")
        self.engines = engines
        self.everything_config = REFERENCE_EVERYTHING if str(checkpoint) == "reference" else DEFAULT_EVERYTHING
        self.images: OrderedDict[str, StoredImage] = OrderedDict()
        self.bundled: list[str] = []
        self.lock = threading.Lock()
        for path in [Path(str(bundled_images().parent / "dogs.jpg")), *sorted(bundled_images().glob("*.jpg"))]:
            self.bundled.append(self._add(path.name, path.read_bytes(), read_image(path), keep=True))

    # -- images -----------------------------------------------------------------------------
    def _add(self, name: str, data: bytes, image: np.ndarray, keep: bool = False) -> str:
        image_id = hashlib.sha256(data).hexdigest()[:16]
        if image_id not in self.images:
            self.images[image_id] = StoredImage(name, image, data, {})
        self.images.move_to_end(image_id)
        uploaded = [key for key in self.images if key not in self.bundled and key != image_id]
        while not keep and len(uploaded) > IMAGES_KEPT - 1:
            del self.images[uploaded.pop(0)]
        return image_id

    def upload(self, name: str, data: bytes) -> dict[str, Any]:
        image_id = self._add(name or "upload", data, decode_image_bytes(data))
        return self.image_info(image_id)

    def image(self, image_id: str) -> StoredImage:
        try:
            return self.images[image_id]
        except KeyError:
            raise EdgeSamError(f"unknown image {image_id!r}: upload it again") from None

    def image_info(self, image_id: str) -> dict[str, Any]:
        stored = self.image(image_id)
        h, w = stored.image.shape[:2]
        return {"id": image_id, "name": stored.name, "width": w, "height": h}

    def info(self) -> dict[str, Any]:
        return {
            "engines": [{"label": e.label, "kind": e.kind} for e in self.engines],
            "images": [self.image_info(image_id) for image_id in self.bundled],
        }

    # -- model calls --------------------------------------------------------------------------
    def _encoded(self, stored: StoredImage, index: int) -> tuple[bool, float]:
        """Point engine ``index`` at the image, encoding it only the first time; returns
        (cached, encoder seconds when it ran)."""
        engine = self.engines[index]
        cached = index in stored.embeddings
        if not cached:
            start = time.perf_counter()
            embedding = engine.predictor.runner.encode(stored.image)
            stored.embeddings[index] = (embedding, time.perf_counter() - start)
        embedding, seconds = stored.embeddings[index]
        engine.predictor.set_embedding(embedding, stored.image.shape[:2])
        return cached, seconds

    def segment(self, image_id: str, points: list[list[float]], box: list[float] | None) -> dict[str, Any]:
        """Every engine on one prompt: its best mask (by its own predicted IoU), that IoU, the mask
        IoU against the fp32 mask, and the encoder and decoder times."""
        coords = np.asarray([p[:2] for p in points], np.float32).reshape(-1, 2) if points else None
        labels = np.asarray([p[2] for p in points], np.float32) if points else None
        box_array = np.asarray(box, np.float32) if box else None
        with self.lock:
            stored = self.image(image_id)
            results, reference = [], None
            for index, engine in enumerate(self.engines):
                cached, encoder_s = self._encoded(stored, index)
                start = time.perf_counter()
                masks, iou, _ = engine.predictor.predict(coords, labels, box_array)
                decoder_s = time.perf_counter() - start
                best = int(np.argmax(iou))
                mask = masks[best]
                if reference is None:
                    reference = (mask, best)
                results.append({
                    "label": engine.label, "kind": engine.kind,
                    "mask_png": png_data_url(mask.astype(np.uint8) * 255),
                    "predicted_iou": float(iou[best]), "choice": best,
                    "same_choice_as_fp32": best == reference[1],
                    "mask_iou_vs_fp32": float(mask_iou(mask, reference[0])),
                    "mask_pixels": int(mask.sum()),
                    "encoder_s": encoder_s, "encoder_cached": cached, "decoder_s": decoder_s,
                })
        return {"image": self.image_info(image_id), "results": results}

    def everything(self, image_id: str) -> dict[str, Any]:
        """Segment-everything on every engine: an overlay of its masks, how many, how long."""
        with self.lock:
            stored = self.image(image_id)
            results = []
            for index, engine in enumerate(self.engines):
                cached, encoder_s = self._encoded(stored, index)
                start = time.perf_counter()
                records = EverythingGenerator(engine.predictor, self.everything_config).generate(progress=False)
                seconds = time.perf_counter() - start
                overlay = overlay_masks(stored.image, [r["segmentation"] for r in records])
                results.append({"label": engine.label, "kind": engine.kind, "overlay_png": png_data_url(overlay),
                                "masks": len(records), "seconds": seconds, "encoder_s": encoder_s,
                                "encoder_cached": cached})
        return {"image": self.image_info(image_id), "grid": self.everything_config.points_per_side, "results": results}
