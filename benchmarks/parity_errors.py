"""How far this implementation is from the reference implementation, measured, not bounded.

    python benchmarks/parity_errors.py [--json docs/results/parity.json]

Runs the official-format EfficientSAM-Ti checkpoint with random weights in tests/data/parity/ on
the sample photo and compares with what the reference implementation computed from the same
checkpoint and prompts (a two-point query and a box query): image embeddings and low-res logits
as max abs difference over the reference's max abs value, IoU predictions as max abs
difference, full-size masks as the fraction of pixels on the same side of 0. tests/test_parity.py
asserts bounds on these same numbers; this script prints them and writes them as a record.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

import edge_sam
from edge_sam.transforms import image_to_tensor, read_image

sys.path.insert(0, str(Path(__file__).parent))
from records import record_header  # noqa: E402  (a sibling module)

REPO = Path(__file__).resolve().parents[1]
PARITY_DIR = REPO / "tests" / "data" / "parity"
CHECKPOINT = PARITY_DIR / "efficient_sam_vitt_random_seed1234.pt"
OUTPUTS = PARITY_DIR / "efficient_sam_vitt_random_seed1234_outputs.npz"
PHOTO = Path(edge_sam.__file__).parent / "assets" / "dogs.jpg"


def relative_max_diff(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def reference_outputs() -> dict[str, np.ndarray]:
    with np.load(OUTPUTS) as npz:
        return {key: npz[key] for key in npz.files}


def measure(model: torch.nn.Module, expected: dict[str, np.ndarray], image: np.ndarray) -> dict[str, float]:
    """The four errors, each the worst over both queries."""
    points = torch.from_numpy(expected["batched_points"])
    labels = torch.from_numpy(expected["batched_point_labels"])
    with torch.inference_mode():
        embeddings = model.get_image_embeddings(image_to_tensor(image))
        low_res, iou = model.predict_masks(torch.from_numpy(expected["image_embeddings"]), points, labels,
                                           multimask_output=True, input_h=image.shape[0], input_w=image.shape[1])
        masks, _ = model(image_to_tensor(image), points, labels)
    for name, actual in (("image_embeddings", embeddings), ("low_res_logits", low_res), ("full_res_masks", masks)):
        if tuple(actual.shape) != expected[name].shape:  # broadcasting would compare the wrong things
            raise ValueError(f"{name}: shape {tuple(actual.shape)}, the reference's {expected[name].shape}")
    queries = range(points.shape[1])
    return {
        "image_embeddings_rel_max": relative_max_diff(embeddings.numpy(), expected["image_embeddings"]),
        "low_res_logits_rel_max": max(relative_max_diff(low_res[0, q].numpy(), expected["low_res_logits"][0, q])
                                      for q in queries),
        "iou_predictions_abs_max": float(np.abs(iou.numpy() - expected["iou_predictions"]).max()),
        "full_res_mask_agreement": float(((masks.numpy() > 0) == expected["full_res_masks"]).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=None, help="write the record here (e.g. docs/results/parity.json)")
    args = parser.parse_args(argv)
    header = record_header()
    expected = reference_outputs()
    image = read_image(PHOTO)
    errors = measure(edge_sam.load_model(CHECKPOINT), expected, image)
    for name, value in errors.items():
        print(f"{name}: {value:.3g}")
    if args.json:
        record = {**header, "checkpoint": str(CHECKPOINT.relative_to(REPO)), "image": str(PHOTO.relative_to(REPO)),
                  "image_hw": list(image.shape[:2]), "queries": int(expected["batched_points"].shape[1]), "errors": errors}
        args.json.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
