"""SA-1B layout: a folder of ``<stem>.jpg`` images, each with a ``<stem>.json`` of RLE masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge_sam.data.codec import (
    decode_rle,
    encode_jpeg,
    encode_rle,
    load_json,
    make_annotation,
    read_image_rgb,
    write_bytes_atomic,
)
from edge_sam.data.errors import DatasetError
from edge_sam.data.types import Sample


class SA1BDataset:
    """Reads SA-1B-format folders (the real SA-1B tar contents, or what ``generate_synthetic`` writes)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: not a folder")
        self.annotation_files = sorted(self.root.glob("*.json"))
        if not self.annotation_files:
            raise DatasetError(f"{self.root}: no SA-1B annotation files (<stem>.json beside <stem>.jpg) in this folder")

    def __len__(self) -> int:
        return len(self.annotation_files)

    def image_path(self, index: int) -> Path:
        return self.annotation_files[index].with_suffix(".jpg")

    def __getitem__(self, index: int) -> Sample:
        json_path = self.annotation_files[index]
        record = load_json(json_path)
        if not isinstance(record, dict) or not isinstance(record.get("annotations"), list):
            raise DatasetError(f"{json_path}: not an SA-1B annotation file (no 'annotations' list)")
        image = read_image_rgb(self.image_path(index))
        image_hw = image.shape[:2]
        annotations = []
        for position, ann in enumerate(record["annotations"]):
            source = f"{json_path} annotation {ann.get('id', position) if isinstance(ann, dict) else position}"
            if not isinstance(ann, dict) or "segmentation" not in ann:
                raise DatasetError(f"{source}: no 'segmentation'")
            mask = decode_rle(ann["segmentation"], image_hw, source)
            annotations.append(make_annotation(mask, ann.get("bbox"), ann.get("point_coords")))
        image_id = str(record.get("image", {}).get("image_id", json_path.stem))
        return Sample(image=image, annotations=annotations, image_id=image_id)


def write_sa1b_sample(sample: Sample, folder: Path, stem: str, image_id: int) -> None:
    """Write one sample as ``<stem>.jpg`` + ``<stem>.json`` in SA-1B format (each file written atomically).

    The JSON is serialised with sorted keys and no timestamps, so the same sample gives the same bytes.
    """
    folder = Path(folder)
    h, w = sample.image.shape[:2]
    annotations = []
    for ann_id, ann in enumerate(sample.annotations):
        x0, y0, x1, y1 = (float(v) for v in ann.bbox_xyxy)
        points = [] if ann.point_coords is None else np.asarray(ann.point_coords, float).reshape(-1, 2).tolist()
        annotations.append(
            {
                "id": ann_id,
                "segmentation": encode_rle(ann.mask),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": int(ann.area),
                "predicted_iou": 1.0,
                "stability_score": 1.0,
                "point_coords": points,
                "crop_box": [0.0, 0.0, float(w), float(h)],
            }
        )
    record = {
        "image": {"image_id": image_id, "width": w, "height": h, "file_name": f"{stem}.jpg"},
        "annotations": annotations,
    }
    write_bytes_atomic(folder / f"{stem}.jpg", encode_jpeg(sample.image))
    write_bytes_atomic(folder / f"{stem}.json", json.dumps(record, sort_keys=True).encode("utf-8"))
