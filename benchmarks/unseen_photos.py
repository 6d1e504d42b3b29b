"""Do the INT8 artifacts ``edge-sam deploy`` shipped hold its gate on real photos nothing chose them on?

    python benchmarks/unseen_photos.py deploy_out [--photos DIR] [--json unseen.json]

Deploy calibrates, climbs its INT8 ladders and measures on its own images (by default the
bundled synthetic scenes and crops of dogs.jpg and of four scikit-image photos). This script
takes photos from sources none of those sets, nor the docs' quantization tables, use: matplotlib's
``grace_hopper.jpg`` (a US Navy portrait, public domain) and scikit-image's ``camera.png`` and
``coins.png`` (CC0 / no known restrictions; grey, given three channels), both inside wheels the
``all`` extra installs, so nothing is downloaded. Three square crops of each, 256 px. Every INT8
artifact deploy shipped (``deploy.json``) is validated on them against the fp32 model with the
gate deploy used (mean and p5 mask IoU); it prints one row per artifact and writes a JSON record.
Exit 1 when an artifact misses the gate.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from edge_sam.data.codec import write_bytes_atomic
from edge_sam.transforms import read_image, write_image

sys.path.insert(0, str(Path(__file__).parent))
from records import record_header  # noqa: E402  (a sibling module)

SIDE = 256


def unseen_photo_files() -> list[Path]:
    import matplotlib  # the demo / dev extras
    import skimage  # the bench extra

    return [Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
            Path(skimage.__file__).parent / "data" / "camera.png",
            Path(skimage.__file__).parent / "data" / "coins.png"]


def write_crops(out: Path) -> list[Path]:
    """Three square crops per photo (left, centre, right end, as large as the short side allows),
    resized to SIDE px."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for photo in unseen_photo_files():
        image = read_image(photo)
        if image.ndim == 2 or image.shape[2] == 1:
            image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2)
        h, w = image.shape[:2]
        side = min(h, w, int(0.8 * max(h, w)))
        for index, frac in enumerate((0.0, 0.5, 1.0)):
            y0, x0 = int(frac * (h - side)), int(frac * (w - side))
            crop = cv2.resize(np.ascontiguousarray(image[y0 : y0 + side, x0 : x0 + side]), (SIDE, SIDE),
                              interpolation=cv2.INTER_AREA)
            path = out / f"{photo.stem}_{index}.png"
            write_image(path, crop)
            written.append(path)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("deploy_out", type=Path, help="a folder edge-sam deploy wrote")
    parser.add_argument("--photos", type=Path, default=None, help="where to write the crops (default DEPLOY_OUT/unseen_photos)")
    parser.add_argument("--json", type=Path, default=None, help="record (default DEPLOY_OUT/unseen_photos.json)")
    args = parser.parse_args()
    header = record_header()
    record = json.loads((args.deploy_out / "deploy.json").read_text())
    gate = record["gate"]
    shipped = [ship["artifact"] for ship in record["ship"].values() if ship["artifact"] and "-int8" in ship["artifact"]]
    if not shipped:
        print("deploy shipped no INT8 artifact", file=sys.stderr)
        return 1
    photos = write_crops(args.photos or args.deploy_out / "unseen_photos")
    from edge_sam.targets import validate

    report = validate([args.deploy_out / name for name in shipped], checkpoint=record["checkpoint"],
                      images=photos[0].parent, measure_memory=False, layers=False)
    rows = []
    print(f"{len(photos)} crops of {', '.join(p.name for p in unseen_photo_files())}; gate mean >= "
          f"{gate['mask_iou_mean_min']}, p5 >= {gate['mask_iou_p5_min']}")
    print("| artifact | mask IoU mean | p5 | gate |\n| --- | ---: | ---: | --- |")
    for drift in report.rows()[1:]:
        row = drift.summary()
        holds = row["mask_iou_mean"] >= gate["mask_iou_mean_min"] and row["mask_iou_p5"] >= gate["mask_iou_p5_min"]
        rows.append({"artifact": Path(row["artifact_dir"]).name, "mask_iou_mean": row["mask_iou_mean"],
                     "mask_iou_p5": row["mask_iou_p5"], "holds": holds})
        print(f"| {rows[-1]['artifact']} | {row['mask_iou_mean']:.4f} | {row['mask_iou_p5']:.4f} | "
              f"{'holds' if holds else 'MISSES'} |")
    out = args.json or args.deploy_out / "unseen_photos.json"
    write_bytes_atomic(out, (json.dumps({
        **header, "photos": [p.name for p in photos], "prompts": report.n_prompts,
        "gate": gate, "rows": rows}, indent=2) + "\n").encode())
    print(f"wrote {out}")
    return 0 if all(row["holds"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
