"""COCO instances JSON (polygon and RLE segmentations; crowd regions skipped) and a writer for it."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edge_sam.data.codec import (
    decode_rle,
    encode_jpeg,
    encode_rle,
    load_json,
    make_annotation,
    mask_to_polygons,
    polygons_to_mask,
    read_image_rgb,
    write_bytes_atomic,
)
from edge_sam.data.errors import DatasetError
from edge_sam.data.types import Sample

# A polygon is written only when it rasterises back to at least this IoU with the mask;
# masks with holes (or pixel-thin diagonal joins) are written as RLE instead.
POLYGON_MIN_IOU = 0.99


def _image_dir_candidates(annotation_file: Path) -> list[Path]:
    """Where COCO-style trees keep images relative to ``annotations/instances_<split>.json``."""
    split = annotation_file.stem.removeprefix("instances_")
    parent, top = annotation_file.parent, annotation_file.parent.parent
    return [parent, top / split, top / "images" / split, top / "images", parent / "images", parent / split]


class CocoDataset:
    """Reads a COCO instances file; each image becomes a Sample of its non-crowd objects."""

    def __init__(self, annotation_file: str | Path, image_dir: str | Path | None = None):
        self.annotation_file = Path(annotation_file)
        record = load_json(self.annotation_file)
        if not isinstance(record, dict) or not isinstance(record.get("images"), list) or not isinstance(
            record.get("annotations"), list
        ):
            raise DatasetError(f"{self.annotation_file}: not a COCO instances file (needs 'images' and 'annotations' lists)")
        self.images = record["images"]
        self._annotations_by_image: dict[int, list[dict]] = defaultdict(list)
        for ann in record["annotations"]:
            if not ann.get("iscrowd", 0):
                self._annotations_by_image[ann.get("image_id")].append(ann)
        self.image_dir = Path(image_dir) if image_dir is not None else self._find_image_dir()

    def _find_image_dir(self) -> Path:
        if not self.images:
            return self.annotation_file.parent
        first = self.images[0]["file_name"]
        candidates = _image_dir_candidates(self.annotation_file)
        for folder in candidates:
            if (folder / first).is_file():
                return folder
        tried = ", ".join(str(c) for c in candidates)
        raise DatasetError(f"{self.annotation_file}: cannot find image {first} (tried {tried}); pass image_dir")

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, index: int) -> Path:
        return self.image_dir / self.images[index]["file_name"]

    def __getitem__(self, index: int) -> Sample:
        info = self.images[index]
        image = read_image_rgb(self.image_path(index))
        image_hw = image.shape[:2]
        annotations = []
        for ann in self._annotations_by_image.get(info["id"], []):
            source = f"{self.annotation_file} annotation {ann.get('id')}"
            segmentation = ann.get("segmentation")
            if isinstance(segmentation, list):
                mask = polygons_to_mask(segmentation, image_hw, source)
            elif isinstance(segmentation, dict):
                mask = decode_rle(segmentation, image_hw, source)
            else:
                raise DatasetError(f"{source}: segmentation is neither polygons nor RLE")
            annotations.append(make_annotation(mask, ann.get("bbox")))
        return Sample(image=image, annotations=annotations, image_id=str(info["id"]))


def _segmentation_for(mask: np.ndarray, use_polygons: bool) -> list | dict:
    if use_polygons:
        polygons = mask_to_polygons(mask)
        if polygons:
            redrawn = polygons_to_mask(polygons, mask.shape, "write_coco")
            union = np.logical_or(redrawn, mask).sum()
            if union and np.logical_and(redrawn, mask).sum() / union >= POLYGON_MIN_IOU:
                return polygons
    return encode_rle(mask)


def write_coco(samples: Iterable[Sample], annotation_path: str | Path, image_dir: str | Path | None = None, polygons: bool = False) -> Path:
    """Write samples as a COCO instances file plus ``<image_id>.jpg`` images (default: beside the JSON).

    With ``polygons=True`` each mask is stored as polygons when they are nearly lossless
    (IoU >= POLYGON_MIN_IOU after rasterising) and as RLE otherwise, since COCO polygons cannot hold holes.
    All objects get category 1 ("object"); the JSON is written atomically.
    """
    annotation_path = Path(annotation_path)
    image_dir = Path(image_dir) if image_dir is not None else annotation_path.parent
    image_dir.mkdir(parents=True, exist_ok=True)
    annotation_path.parent.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_index, sample in enumerate(samples, start=1):
        h, w = sample.image.shape[:2]
        file_name = f"{sample.image_id}.jpg"
        write_bytes_atomic(image_dir / file_name, encode_jpeg(sample.image))
        images.append({"id": image_index, "file_name": file_name, "height": h, "width": w})
        for ann in sample.annotations:
            x0, y0, x1, y1 = (float(v) for v in ann.bbox_xyxy)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_index,
                    "category_id": 1,
                    "segmentation": _segmentation_for(ann.mask, polygons),
                    "area": int(ann.area),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "iscrowd": 0,
                }
            )
    record = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}
    write_bytes_atomic(annotation_path, json.dumps(record).encode("utf-8"))
    return annotation_path
