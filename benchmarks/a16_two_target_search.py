"""Can one a16-fallback recipe serve ONNX and LiteRT? Every layer at 16-bit activations, on both simulations.

    python benchmarks/a16_two_target_search.py [--images out/quant_table/synth/val] [--extra-held-out out/quant_table/photos]

``edge-sam quantize mixed --fallback a16`` moves layers from int8 to 16-bit activations until its
budget holds on every target's simulation; with every layer moved it has nothing left to try. This
scores that end point, and its start (every layer int8), on each target's simulation
(``quantize/studies/simulate.py``) with the search's own split (the quantization table's ``mixed`` stage: the first ``--calibration-images`` of
``--images`` calibrate, the next ``--held-out-images`` and every ``--extra-held-out`` folder are
scored, each metric the worst over the sets). Where the end point misses the budget on a target
whose score barely moves between start and end, no choice of layers meets the budget there. Writes
both scores per target, the worse end point and the budget into the record.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import edge_sam
from edge_sam.image_sources import open_source
from edge_sam.quantize.recipe_file import get_recipe
from edge_sam.quantize.recipes import A16
from edge_sam.quantize.studies.heldout import HeldOutSet, split_images, worst_of
from edge_sam.quantize.studies.mixed import Budget
from edge_sam.quantize.studies.sensitivity import LayerStudy

sys.path.insert(0, str(Path(__file__).parent))
from records import REPO, record_header, write_record  # noqa: E402  (a sibling module)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default="out/quant_table/synth/val")
    parser.add_argument("--calibration-images", type=int, default=8)
    parser.add_argument("--held-out-images", type=int, default=16)
    parser.add_argument("--extra-held-out", action="append", default=None, help="default: out/quant_table/photos")
    parser.add_argument("--targets", default="onnx,tflite")
    parser.add_argument("--recipe", default="static-conv-linear", help="the int8 recipe whose layers move to a16")
    parser.add_argument("--checkpoint", default="reference")
    parser.add_argument("--min-mask-iou", type=float, default=0.99)
    parser.add_argument("--min-mask-iou-p5", type=float, default=0.98)
    parser.add_argument("--record", type=Path, default=REPO / "docs" / "results" / "a16_two_target_search.json")
    args = parser.parse_args(argv)
    header = record_header()
    budget = Budget(args.min_mask_iou, args.min_mask_iou_p5)
    recipe = get_recipe(args.recipe)
    model = edge_sam.load_model(args.checkpoint)
    size = model.image_encoder.img_size
    calibration, held_out = split_images(open_source(args.images), args.calibration_images, args.held_out_images)
    extra = args.extra_held_out or ["out/quant_table/photos"]
    held = [HeldOutSet(model, held_out, size)] + [HeldOutSet(model, open_source(folder), size) for folder in extra]
    scores, int8_scores = {}, {}
    for target in [t for t in args.targets.split(",") if t]:
        study = LayerStudy(model, recipe, target, calibration, held, fallback=A16)
        scores[target], int8_scores[target] = study.score(study.layers), study.score(())
        print(f"{target}: every layer a16 mean {scores[target].mask_iou_mean:.4f}, p5 {scores[target].mask_iou_p5:.4f}; "
              f"every layer int8 mean {int8_scores[target].mask_iou_mean:.4f}, p5 {int8_scores[target].mask_iou_p5:.4f}",
              flush=True)
    worst = worst_of(scores.values())
    print(f"worse of the two: mean {worst.mask_iou_mean:.4f}, p5 {worst.mask_iou_p5:.4f}; "
          f"{budget.describe()} {'met' if budget.met(worst) else 'missed'}")
    write_record(args.record, {
        **header, "checkpoint": args.checkpoint, "recipe": recipe.name, "img_size": size,
        "budget": {"min_mask_iou": budget.min_mask_iou, "min_mask_iou_p5": budget.min_mask_iou_p5},
        "calibration": calibration.describe(), "held_out": [h.source.describe() for h in held],
        "every_layer_a16": {target: fidelity.to_dict() for target, fidelity in scores.items()},
        "every_layer_int8": {target: fidelity.to_dict() for target, fidelity in int8_scores.items()},
        "worst": worst.to_dict(), "budget_met": budget.met(worst)})
    print(f"-> {args.record}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
