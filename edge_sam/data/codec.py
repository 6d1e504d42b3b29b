"""Mask, box and image encoding shared by the dataset readers and writers (one place for each format rule).

pycocotools is imported inside the functions that need it, so ``import edge_sam`` stays
torch + numpy + opencv.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from edge_sam.data.errors import DatasetError
from edge_sam.data.types import Annotation


def _mask_api():
    from pycocotools import mask

    return mask


def encode_rle(mask: np.ndarray) -> dict:
    """Compressed COCO RLE of a bool HxW mask, as JSON-ready ``{"size": [h, w], "counts": str}``."""
    rle = _mask_api().encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict, image_hw: tuple[int, int], source: str) -> np.ndarray:
    """Decode a COCO RLE (compressed string or uncompressed list counts) into a bool mask.

    Raises DatasetError naming ``source`` when the counts cannot be decoded or the RLE's size does
    not match the image; pycocotools would otherwise return uninitialised memory for empty counts.
    """
    mask_api = _mask_api()
    try:
        size = [int(v) for v in rle["size"]]
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"{source}: RLE segmentation needs 'size' [h, w] and 'counts'") from None
    if tuple(size) != tuple(image_hw):
        raise DatasetError(f"{source}: RLE size {size} does not match the image size {list(image_hw)}")
    if isinstance(counts, list):
        if sum(counts) != size[0] * size[1]:
            raise DatasetError(f"{source}: RLE counts sum to {sum(counts)}, expected h*w = {size[0] * size[1]}")
        compressed = mask_api.frPyObjects({"size": size, "counts": counts}, *size)
    elif isinstance(counts, (str, bytes)) and len(counts) > 0:
        try:
            compressed = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        except UnicodeEncodeError:
            raise DatasetError(f"{source}: RLE counts cannot be decoded (non-ASCII characters)") from None
    else:
        raise DatasetError(f"{source}: RLE counts are empty or not a string/list")
    try:
        decoded = mask_api.decode(compressed)
    except ValueError:
        raise DatasetError(f"{source}: RLE counts cannot be decoded (corrupt segmentation)") from None
    return decoded.astype(bool)


def polygons_to_mask(polygons: list[list[float]], image_hw: tuple[int, int], source: str) -> np.ndarray:
    """Rasterise COCO polygons (flat [x0, y0, x1, y1, ...] lists in pixel-edge coordinates) with pycocotools."""
    polygons = [p for p in polygons if len(p) >= 6]
    if not polygons:
        raise DatasetError(f"{source}: polygon segmentation has no polygon with 3 or more points")
    mask_api = _mask_api()
    try:
        rles = mask_api.frPyObjects(polygons, *image_hw)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{source}: polygon segmentation cannot be read ({exc})") from None
    return mask_api.decode(mask_api.merge(rles)).astype(bool)


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer boundaries of a mask as COCO polygons that rasterise back to (nearly) the same pixels.

    Contours are traced on a 2x nearest-upsampled mask and mapped back with ``(x + 0.5) / 2``: that
    puts each vertex a quarter pixel inside the true pixel edge, so pycocotools' centre-in-polygon
    rule recovers every boundary pixel. Holes are not representable in COCO polygons.
    """
    h, w = mask.shape
    doubled = cv2.resize(mask.astype(np.uint8), (w * 2, h * 2), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(doubled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [((c.reshape(-1, 2) + 0.5) / 2.0).ravel().round(3).tolist() for c in contours if len(c) >= 3]


def bbox_xyxy_from_mask(mask: np.ndarray) -> np.ndarray:
    """Tight pixel-edge box of a mask; all zeros for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return np.zeros(4, np.float32)
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def xywh_to_xyxy(bbox_xywh) -> np.ndarray:
    x, y, w, h = (float(v) for v in bbox_xywh)
    return np.array([x, y, x + w, y + h], np.float32)


def make_annotation(mask: np.ndarray, bbox_xywh=None, point_coords=None) -> Annotation:
    """Annotation from a decoded mask; the stored box is used when the file has one, else the mask's."""
    bbox = xywh_to_xyxy(bbox_xywh) if bbox_xywh is not None else bbox_xyxy_from_mask(mask)
    points = None if point_coords is None else np.asarray(point_coords, np.float32).reshape(-1, 2)
    return Annotation(mask=mask, bbox_xyxy=bbox, area=int(mask.sum()), point_coords=points)


def load_json(path: Path) -> dict:
    """Parse a JSON file, or raise one DatasetError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read JSON ({exc})") from None


def read_image_rgb(path: Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB, or raise one DatasetError naming the file."""
    data = np.fromfile(str(path), np.uint8) if Path(path).is_file() else None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
    if image is None:
        raise DatasetError(f"{path}: image is missing or cannot be decoded")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def encode_jpeg(image_rgb: np.ndarray, quality: int = 92) -> bytes:
    """JPEG without chroma subsampling: 4:2:0 would smear colour across the object boundaries masks follow."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise DatasetError("JPEG encoding failed")
    return buf.tobytes()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename, so a reader never sees half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
