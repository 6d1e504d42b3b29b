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
from edge_sam.targets.deploy.images import bundled_images

IMAGES_KEPT = 8  # uploaded images (and their embeddings) kept in memory, least recently used dropped
# Loose thresholds: the bundled reference model's IoU head predicts 0.1-0.4 (see edge-sam demo).
REFERENCE_EVERYTHING = EverythingConfig(points_per_side=16, pred_iou_thresh=0.2, stability_score_thresh=0.3)
DEFAULT_EVERYTHING = EverythingConfig(points_per_side=16)


UNREADABLE = "cannot decode the uploaded file as an image (JPEG, PNG, BMP, WebP, TIFF)"
# An upload's pixel count, read from its header before anything is decoded: the 40 MB byte limit
# alone let a 1 MB PNG of 20000x20000 through (1.2 GB decoded, a 400-megapixel mask sent back).
MAX_UPLOAD_PIXELS = 50_000_000


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a JPEG's first start-of-frame segment (markers walked, nothing decoded)."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length field
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before them
            return None
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOF0..SOF15
            if pos + 9 > len(data):
                return None
            return int.from_bytes(data[pos + 7:pos + 9], "big"), int.from_bytes(data[pos + 5:pos + 7], "big")
        pos += 2 + length
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) from a TIFF's first IFD."""
    order = "little" if data[:2] == b"II" else "big"
    ifd = int.from_bytes(data[4:8], order)
    count = int.from_bytes(data[ifd:ifd + 2], order)
    size: dict[int, int] = {}
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag, kind = int.from_bytes(data[entry:entry + 2], order), int.from_bytes(data[entry + 2:entry + 4], order)
        if tag in (256, 257) and kind in (3, 4):  # SHORT or LONG, held in the entry itself
            size[tag] = int.from_bytes(data[entry + 8:entry + (10 if kind == 3 else 12)], order)
    return (size[256], size[257]) if len(size) == 2 else None


def image_header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a JPEG, PNG, BMP, WebP or TIFF file, without decoding
    it; None for anything else or a header cut short."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
        if data[:2] == b"BM" and len(data) >= 26:
            if int.from_bytes(data[14:18], "little") == 12:  # BITMAPCOREHEADER: 16-bit sizes
                return int.from_bytes(data[18:20], "little"), int.from_bytes(data[20:22], "little")
            width = int.from_bytes(data[18:22], "little", signed=True)
            return abs(width), abs(int.from_bytes(data[22:26], "little", signed=True))  # height < 0: top-down
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
            chunk = data[12:16]
            if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
                return (int.from_bytes(data[26:28], "little") & 0x3FFF,
                        int.from_bytes(data[28:30], "little") & 0x3FFF)
            if chunk == b"VP8L" and data[20] == 0x2F:
                bits = int.from_bytes(data[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8X":
                return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
            return None
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(data)
    except IndexError:
        return None
    return None


def decode_image_bytes(data: bytes) -> np.ndarray:
    """An uploaded file -> HxWx3 uint8 RGB, or one ImageError; the size in its header is checked
    against MAX_UPLOAD_PIXELS before it is decoded."""
    size = image_header_size(data)
    if size is None or min(size) < 1:
        raise ImageError(UNREADABLE)
    width, height = size
    if width * height > MAX_UPLOAD_PIXELS:
        raise ImageError(f"image of {width}x{height} ({width * height / 1e6:.0f} megapixels) is over the "
                         f"{MAX_UPLOAD_PIXELS / 1e6:.0f} megapixel limit for uploads: scale it down")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(UNREADABLE)
    if image.shape[0] * image.shape[1] > MAX_UPLOAD_PIXELS:  # a header that understated the size
        raise ImageError(f"image of {image.shape[1]}x{image.shape[0]} is over the "
                         f"{MAX_UPLOAD_PIXELS / 1e6:.0f} megapixel limit for uploads: scale it down")
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
