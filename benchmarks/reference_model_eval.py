"""The bundled reference model's mIoU on the synthetic splits it never trained on, and the same
architecture with random weights for scale.

    python benchmarks/reference_model_eval.py [--work reference_eval] [--json docs/results/reference_model.json]

Renders the val and test splits exactly as the training data command did (``edge-sam data
synth ... --val 200 --test 200 --img-size 256 --seed 0``: every image is seeded by (seed,
split, index), so the train split is not needed) and runs ``edge_sam.eval.evaluate`` (what
``edge-sam eval`` runs: box, 1-click, 3-click) with the reference model on both splits and
with random weights (``torch.manual_seed(0)``, the training code's fresh initialisation) on
test. It also records the three multimask outputs' predicted IoU for the box around the black dog
in the bundled ``dogs.jpg`` (what docs/reference_dogs_box.png shows). Deterministic on CPU; takes
minutes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import edge_sam
from edge_sam.data import generate_synthetic, open_dataset
from edge_sam.eval import evaluate
from edge_sam.modeling import EfficientSamConfig
from edge_sam.predictor import Predictor
from edge_sam.transforms import read_image
from edge_sam.train.model_init import fresh_model

sys.path.insert(0, str(Path(__file__).parent))
from records import record_header, write_record  # noqa: E402  (a sibling module)

SPLITS = {"val": 200, "test": 200}
IMG_SIZE = 256
DOGS = Path(edge_sam.__file__).parent / "assets" / "dogs.jpg"
DOGS_BOX = (575, 225, 775, 590)  # around the black dog, as in docs/reference_dogs_box.png


def random_weights() -> torch.nn.Module:
    torch.manual_seed(0)
    return fresh_model(EfficientSamConfig.vitt(img_size=IMG_SIZE)).eval()


def dogs_box_outputs(model: torch.nn.Module) -> dict:
    """The reference model's three multimask outputs for ``DOGS_BOX``: predicted IoU and mask area
    (a real photo the model never saw; the card says how little its IoU head knows of such images)."""
    predictor = Predictor(model)
    predictor.set_image(read_image(DOGS))
    masks, iou_predictions, _ = predictor.predict(box=list(DOGS_BOX), multimask_output=True)
    return {"box": list(DOGS_BOX), "predicted_iou": [round(float(v), 4) for v in iou_predictions],
            "mask_area_px": [int(m.sum()) for m in masks]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("reference_eval"), help="where the splits are rendered")
    parser.add_argument("--json", type=Path, default=None, help="write the record here")
    args = parser.parse_args(argv)
    header = record_header()
    missing = {split: n for split, n in SPLITS.items() if not (args.work / split).is_dir()}
    if missing:
        generate_synthetic(args.work, counts=missing, img_size=IMG_SIZE, seed=0, progress=False)
    runs = [("reference", "test"), ("reference", "val"), ("random weights (seed 0)", "test")]
    rows = []
    for name, split in runs:
        model = edge_sam.load_model("reference") if name == "reference" else random_weights()
        result = evaluate(Predictor(model), open_dataset(args.work / split), progress=False)
        print(f"{name}, {split}:\n{result.format_table()}\n")
        rows.append({"model": name, "split": split, **result.to_dict()})
    dogs = dogs_box_outputs(edge_sam.load_model("reference"))
    print(f"dogs.jpg, box {dogs['box']}: predicted IoU {dogs['predicted_iou']}, mask area {dogs['mask_area_px']} px")
    if args.json:
        write_record(args.json, {**header, "data": {
            "command": "edge-sam data synth DIR --val 200 --test 200 --img-size 256 --seed 0", "splits": SPLITS},
            "rows": rows, "dogs_box": dogs})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
