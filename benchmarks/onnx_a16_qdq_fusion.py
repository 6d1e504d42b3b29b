"""What onnxruntime's Q/DQ fusion costs a W8A16 artifact: the same file run with and without it.

    python benchmarks/onnx_a16_qdq_fusion.py [--images out/quant_table/synth/test] [--record docs/results/onnx_a16_qdq_fusion.json]

Exports the reference model's encoder with ``static-a16-conv-linear`` (int8 weights, int16
activations) to ONNX, calibrated as the quantization table's ``compare`` stage calibrates (the
first ``--calibration-images`` of ``--images``), and runs that one artifact twice next to the fp32
model on the next ``--held-out-images`` and on the 8 crops of dogs.jpg: as the ONNX runner opens
it (without onnxruntime's ``QDQSelectorActionTransformer``, which the runner leaves out for 16-bit
activations) and with every onnxruntime optimizer on. Writes mask IoU vs fp32 (mean, p5, worst)
and embedding SQNR per set and way into the record; no timing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import edge_sam
from edge_sam.image_sources import open_source, photo_crops
from edge_sam.quantize.studies.compare import PHOTO, PHOTO_CROPS, PHOTO_SET
from edge_sam.quantize.recipe_file import recipe_from_manifest
from edge_sam.quantize.studies.heldout import split_images
from edge_sam.runner import TorchRunner
from edge_sam.targets.core.target import verify_artifact
from edge_sam.targets.core.registry import get_target
from edge_sam.targets.onnx.runtime import QDQ_FUSION, disabled_optimizers
from edge_sam.targets.onnx.target import open_runner
from edge_sam.targets.validation.drift import measure_drift
from edge_sam.transforms import read_image

sys.path.insert(0, str(Path(__file__).parent))
from records import REPO, record_header, write_record  # noqa: E402  (a sibling module)

RECIPE = "static-a16-conv-linear"
KEYS = ("mask_iou_mean", "mask_iou_p5", "mask_iou_worst", "embedding_sqnr_db_mean", "n_prompts")
WAYS = {"as the runner opens it": disabled_optimizers, "with every optimizer": lambda recipe, role: []}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default="out/quant_table/synth/test", help="a dataset: calibration, then held out")
    parser.add_argument("--calibration-images", type=int, default=8)
    parser.add_argument("--held-out-images", type=int, default=24)
    parser.add_argument("--checkpoint", default="reference")
    parser.add_argument("--record", type=Path, default=REPO / "docs" / "results" / "onnx_a16_qdq_fusion.json")
    args = parser.parse_args(argv)
    header = record_header()
    model = edge_sam.load_model(args.checkpoint)
    calibration, held_out = split_images(open_source(args.images), args.calibration_images, args.held_out_images)
    target = get_target("onnx")
    with tempfile.TemporaryDirectory(prefix="a16-qdq-fusion-") as work:
        artifact = target.export(model, "int8", RECIPE, Path(work) / "onnx-a16", calibration=calibration,
                                 checkpoint=args.checkpoint)
        manifest = verify_artifact(artifact, expected_target="onnx")
        if QDQ_FUSION not in disabled_optimizers(recipe_from_manifest(manifest.recipe), "encoder"):
            raise SystemExit(f"the ONNX runner no longer leaves {QDQ_FUSION} out for {RECIPE}: nothing to compare")
        runners = [open_runner(Path(artifact), manifest, label=way, disabled=rule) for way, rule in WAYS.items()]
        sets = {"held-out": held_out, PHOTO_SET: photo_crops(read_image(PHOTO), Path(work) / "crops", PHOTO_CROPS)}
        reference = TorchRunner(model, model.image_encoder.img_size)
        measured = {name: measure_drift(reference, runners, source, measure_memory=False) for name, source in sets.items()}
        described = {name: source.describe() for name, source in sets.items()}
    ways = {way: {name: {key: report.runners[index].summary()[key] for key in KEYS} for name, report in measured.items()}
            for index, way in enumerate(WAYS)}
    for way, by_set in ways.items():
        print(f"{way}: " + "; ".join(f"{name} mean {m['mask_iou_mean']:.4f} p5 {m['mask_iou_p5']:.4f} "
                                     f"SQNR {m['embedding_sqnr_db_mean']:.1f} dB" for name, m in by_set.items()))
    write_record(args.record, {**header, "checkpoint": args.checkpoint, "recipe": RECIPE, "optimizer": QDQ_FUSION,
                               "calibration": calibration.describe(), "sets": described, "ways": ways})
    print(f"-> {args.record}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
