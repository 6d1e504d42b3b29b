"""Datasets (SA-1B folders, COCO instances files, a synthetic SA-1B generator) and prompt sampling.

Every reader returns :class:`Sample` objects holding full-resolution bool masks, so training and
evaluation never see a file format.
"""

from __future__ import annotations

from pathlib import Path

from edge_sam.data.coco import CocoDataset, write_coco
from edge_sam.data.errors import DatasetError
from edge_sam.data.sa1b import SA1BDataset, write_sa1b_sample
from edge_sam.data.synthetic import generate_synthetic
from edge_sam.data.types import Annotation, Sample

__all__ = [
    "Annotation",
    "CocoDataset",
    "DatasetError",
    "SA1BDataset",
    "Sample",
    "generate_synthetic",
    "open_dataset",
    "write_coco",
    "write_sa1b_sample",
]


def open_dataset(path: str | Path) -> SA1BDataset | CocoDataset:
    """Open a dataset by looking at what ``path`` holds.

    A ``.json`` file is a COCO instances file; a folder with ``annotations/instances_*.json`` is a COCO
    tree; a folder of per-image ``.json`` files is SA-1B.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix != ".json":
            raise DatasetError(f"{path}: expected a COCO instances .json file or a dataset folder")
        return CocoDataset(path)
    coco_files = sorted((path / "annotations").glob("instances_*.json"))
    if len(coco_files) == 1:
        return CocoDataset(coco_files[0])
    if len(coco_files) > 1:
        names = ", ".join(str(f) for f in coco_files)
        raise DatasetError(f"{path}: several COCO annotation files ({names}); pass the one to use")
    if any(path.glob("*.json")):
        return SA1BDataset(path)
    splits = sorted(p.name for p in path.iterdir() if p.is_dir() and any(p.glob("*.json")))
    hint = f"; pass one of its split folders ({', '.join(splits)})" if splits else ""
    raise DatasetError(f"{path}: no annotations found (no SA-1B <stem>.json files, no annotations/instances_*.json){hint}")
