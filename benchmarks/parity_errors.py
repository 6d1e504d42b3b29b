"""How far this implementation is from the reference implementation, measured, not bounded.

    python benchmarks/parity_errors.py [--json docs/results/parity.json]
    python benchmarks/parity_errors.py --target onnx [--json docs/results/parity_onnx.json]

Runs the official-format EfficientSAM-Ti checkpoint with random weights in tests/data/parity/ on
the sample photo and compares with what the reference implementation computed from the same
checkpoint and prompts (a two-point query and a box query): image embeddings and low-res logits
as max abs difference over the reference's max abs value, IoU predictions as max abs
difference, full-size masks as the fraction of pixels on the same side of 0. ``--target onnx``
measures the same through onnxruntime: the checkpoint exported with the official interface
(bicubic upsampling, as the reference's ``predict_masks``; into ``--work``), its decoder fed the
reference's embeddings. tests/test_parity.py and tests/test_onnx.py assert bounds on these same
numbers; this script prints them and writes them as a record.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

import edge_sam
from edge_sam.transforms import image_to_tensor, read_image

sys.path.insert(0, str(Path(__file__).parent))
from records import record_header, write_record  # noqa: E402  (a sibling module)

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


def errors(outputs: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> dict[str, float]:
    """The four errors of ``outputs`` (image_embeddings, low_res_logits, iou_predictions,
    full_res_masks), each the worst over both queries."""
    for name in ("image_embeddings", "low_res_logits", "full_res_masks"):
        if outputs[name].shape != expected[name].shape:  # broadcasting would compare the wrong things
            raise ValueError(f"{name}: shape {outputs[name].shape}, the reference's {expected[name].shape}")
    queries = range(expected["batched_points"].shape[1])
    return {
        "image_embeddings_rel_max": relative_max_diff(outputs["image_embeddings"], expected["image_embeddings"]),
        "low_res_logits_rel_max": max(relative_max_diff(outputs["low_res_logits"][0, q], expected["low_res_logits"][0, q])
                                      for q in queries),
        "iou_predictions_abs_max": float(np.abs(outputs["iou_predictions"] - expected["iou_predictions"]).max()),
        "full_res_mask_agreement": float(((outputs["full_res_masks"] > 0) == expected["full_res_masks"]).mean()),
    }


def measure(model: torch.nn.Module, expected: dict[str, np.ndarray], image: np.ndarray) -> dict[str, float]:
    """The PyTorch model's errors: its own embeddings, the decoder on the reference's, masks end to end."""
    points = torch.from_numpy(expected["batched_points"])
    labels = torch.from_numpy(expected["batched_point_labels"])
    with torch.inference_mode():
        embeddings = model.get_image_embeddings(image_to_tensor(image))
        low_res, iou = model.predict_masks(torch.from_numpy(expected["image_embeddings"]), points, labels,
                                           multimask_output=True, input_h=image.shape[0], input_w=image.shape[1])
        masks, _ = model(image_to_tensor(image), points, labels)
    outputs = {"image_embeddings": embeddings, "low_res_logits": low_res, "iou_predictions": iou, "full_res_masks": masks}
    return errors({name: value.numpy() for name, value in outputs.items()}, expected)


def measure_onnx(model: torch.nn.Module, expected: dict[str, np.ndarray], image: np.ndarray, work: Path) -> dict[str, float]:
    """The official-interface ONNX export's errors through onnxruntime: the encoder on the photo,
    the decoder (upsampling bicubic) on the reference's embeddings."""
    import onnxruntime as ort

    from edge_sam.targets import get_target

    artifact = get_target("onnx").export(model, "fp32", None, work, interface="official", upsample="bicubic", overwrite=True)
    encoder = ort.InferenceSession(str(artifact / "encoder.onnx"))
    decoder = ort.InferenceSession(str(artifact / "decoder.onnx"))
    (embeddings,) = encoder.run(None, {"batched_images": image_to_tensor(image).numpy()})
    masks, iou, low_res = decoder.run(None, {
        "image_embeddings": expected["image_embeddings"], "batched_point_coords": expected["batched_points"],
        "batched_point_labels": expected["batched_point_labels"], "orig_im_size": np.array(image.shape[:2], np.int64)})
    return errors({"image_embeddings": embeddings, "low_res_logits": low_res, "iou_predictions": iou,
                   "full_res_masks": masks}, expected)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("pytorch", "onnx"), default="pytorch", help="what runs the checkpoint")
    parser.add_argument("--work", type=Path, default=REPO / "out" / "parity_onnx", help="the ONNX export (--target onnx)")
    parser.add_argument("--json", type=Path, default=None, help="write the record here (e.g. docs/results/parity.json)")
    args = parser.parse_args(argv)
    header = record_header()
    expected = reference_outputs()
    image = read_image(PHOTO)
    model = edge_sam.load_model(CHECKPOINT)
    found = measure(model, expected, image) if args.target == "pytorch" else measure_onnx(model, expected, image, args.work)
    for name, value in found.items():
        print(f"{name}: {value:.3g}")
    if args.json:
        runs = {"pytorch": {}, "onnx": {"target": "onnx", "interface": "official", "upsample": "bicubic"}}[args.target]
        write_record(args.json, {**header, **runs, "checkpoint": CHECKPOINT, "image": PHOTO, "image_hw": list(image.shape[:2]),
                                 "queries": int(expected["batched_points"].shape[1]), "errors": found})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
