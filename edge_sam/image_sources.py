"""Image sources for calibration and validation: a folder of image files or a dataset.

Both yield :class:`edge_sam.data.types.Sample` (a folder's samples carry no annotations), in a
fixed order, so the same path always gives the same images, and the manifest and the report
can say exactly which images were used.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_sam.data.types import Sample
from edge_sam.errors import EdgeSamError
from edge_sam.transforms import read_image, write_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_LISTED_IDS = 32


@dataclass
class ImageSource:
    """An ordered, optionally truncated list of samples from a folder or a dataset."""

    kind: str  # "folder" or "dataset"
    path: Path
    count: int
    _read: Any  # index -> Sample
    _ids: list[str]

    def __len__(self) -> int:
        return self.count

    def sample(self, index: int) -> Sample:
        if not 0 <= index < self.count:
            raise IndexError(f"image {index} of {self.count}")
        return self._read(index)

    def samples(self) -> Iterator[Sample]:
        for index in range(self.count):
            yield self._read(index)

    def images(self) -> Iterator[np.ndarray]:
        for sample in self.samples():
            yield sample.image

    def describe(self) -> dict[str, Any]:
        """Which images these are: enough to reproduce the set and to tell two sets apart."""
        ids = self._ids[: self.count]
        return {
            "kind": self.kind,
            "path": str(self.path),
            "count": self.count,
            "ids": ids[:_LISTED_IDS],
            "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
        }

    def limited(self, limit: int | None) -> "ImageSource":
        count = self.count if limit is None else min(self.count, limit)
        return ImageSource(self.kind, self.path, count, self._read, self._ids)

    def skipped(self, start: int) -> "ImageSource":
        """The images from index ``start`` on: a held-out split disjoint from ``limited(start)``."""
        start = min(start, self.count)
        read = self._read
        return ImageSource(self.kind, self.path, self.count - start, lambda index: read(start + index), self._ids[start:])


def image_folder(path: str | os.PathLike, limit: int | None = None) -> ImageSource:
    """Every image file directly in ``path``, sorted by name."""
    path = Path(path)
    if not path.is_dir():
        raise EdgeSamError(f"image folder not found: {path}")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise EdgeSamError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})")

    def read(index: int) -> Sample:
        return Sample(image=read_image(files[index]), annotations=[], image_id=files[index].name)

    return ImageSource("folder", path, len(files), read, [f.name for f in files]).limited(limit)


def dataset_source(path: str | os.PathLike, limit: int | None = None) -> ImageSource:
    """A dataset edge_sam.data can open (COCO instances file or tree, SA-1B folder)."""
    from edge_sam.data import open_dataset

    dataset = open_dataset(path)
    if len(dataset) == 0:
        raise EdgeSamError(f"dataset {path} holds no images")
    ids = [dataset.image_path(i).name for i in range(len(dataset))]
    return ImageSource("dataset", Path(path), len(dataset), dataset.__getitem__, ids).limited(limit)


def open_source(path: str | os.PathLike, limit: int | None = None) -> ImageSource:
    """A folder of plain images, or else a dataset (annotation files decide)."""
    path = Path(path)
    if path.is_dir() and not any(path.glob("*.json")) and not (path / "annotations").is_dir():
        return image_folder(path, limit)
    return dataset_source(path, limit)


def recorded_source(record: dict[str, Any] | None) -> ImageSource | None:
    """The calibration images a manifest records (``manifest.calibration``), if they are still
    at the recorded path and still the same images (same ids digest); None otherwise."""
    if not record:
        return None
    try:
        source = open_source(record["path"], record["count"])
    except EdgeSamError:
        return None
    return source if source.describe()["ids_sha256"] == record["ids_sha256"] else None


def photo_crops(image: np.ndarray, folder: str | os.PathLike, count: int = 8) -> ImageSource:
    """``count`` overlapping half-size crops of one photo, written to ``folder``, as an image source.

    A stand-in calibration set when only one photo is at hand (the latency benchmarks): the crops
    differ in content and scale, so observers see more than one view of the image.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    h, w = image.shape[:2]
    for i in range(count):
        y, x = (h // 4) * (i % 3) // 2, (w // 8) * i
        write_image(folder / f"crop_{i}.png", image[y : y + h // 2, x : x + w // 2])
    return image_folder(folder)
