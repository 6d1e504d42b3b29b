"""Where static INT8 loses the embedding, and how much finetuning the weights can take back.

    python benchmarks/int8_error_sources.py --images SYNTH/test --train SYNTH/train \
        [--recipe static-conv-linear] [--calibration-images 8] [--held-out-images 24] [--top 8] [--steps 60] \
        [--lr 1e-5,1e-4] [--parts 1,2,3] [--record docs/results/int8_error_sources.json]

On the bundled reference model (or ``--checkpoint``), with the recipe's fake quantization as
QAT simulates it (PT2E, XNNPACK's quantizer: what ExecuTorch exports, and what ONNX QDQ, LiteRT
and Core ML W8A8 mirror), calibrated min/max on the first ``--calibration-images`` of
``--images`` and scored on the next ``--held-out-images`` and on 8 crops of dogs.jpg:

1. everything fake-quantized, then the weights alone, then the activations alone: which of the
   two costs the embedding's SQNR and the masks;
2. each activation quantizer alone (every other one off): the ``--top`` that cost the most
   embedding SQNR, with the layer they belong to and whether they quantize its input or output,
   then everything fake-quantized but those (an upper bound for keeping just them in 16 bits);
3. the weights' headroom: QAT's distillation loss (``edge_sam.quantize.studies.qat``) on one fixed batch
   of 4 ``--train`` images for ``--steps`` AdamW steps: how far the weights can pull that batch's
   own error down (overfitting is the best case) and what it does to the held-out images. With
   several ``--lr`` values each starts again from the same PTQ weights; the batch's SQNR is
   printed at every quarter of the steps, so a plateau shows.

Prints each part as it finishes; ``--record PATH`` also writes what it printed as JSON (the
header of ``benchmarks/records.py``, then per part the same numbers), which docs/qat.md and the
README quote through ``benchmarks/docs_views.py``.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import default_collate

import edge_sam
from edge_sam.quantize.studies.compare import PHOTO, PHOTO_CROPS
from edge_sam.quantize.studies.heldout import HeldOutSet, split_images
from edge_sam.quantize.studies.qat import DistillationObjective
from edge_sam.train.objects import DistillationItems
from edge_sam.quantize.qat_graph import (
    QAT_TARGET, activation_quantizers, calibrate_activation_ranges, fake_quantizers, freeze_activation_ranges,
    prepare_qat_encoder, quantizer_place,
)
from edge_sam.quantize.layers import layers_of_scopes, node_scopes, quantizable_layers
from edge_sam.quantize.recipe_file import get_recipe
from edge_sam.image_sources import open_source, photo_crops
from edge_sam.graph_contract import calibration_batches
from edge_sam.targets.core.registry import get_target
from edge_sam.targets.validation.drift import sqnr_db
from edge_sam.transforms import read_image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import record_header, write_record  # noqa: E402  (a sibling module)

QUANTIZED_OPS = ("linear", "conv2d")
SHAPE_OPS = ("permute", "view", "reshape", "transpose", "flatten", "clone", "contiguous")


Scores = dict[str, dict[str, float | int | None]]  # image set key -> Fidelity.to_dict()


def fidelity_text(fidelity: dict) -> str:
    sqnr = fidelity["embedding_sqnr_db"]
    return (f"mask IoU mean {fidelity['mask_iou_mean']:.4f} p5 {fidelity['mask_iou_p5']:.4f}, "
            f"embedding SQNR {'inf' if sqnr is None else f'{sqnr:.1f}'} dB")


def finite(value: float) -> float | None:
    """JSON has no infinity: an exact match (infinite SQNR) is recorded as null."""
    return value if math.isfinite(value) else None


def score(student: torch.fx.GraphModule, sets: dict[str, HeldOutSet]) -> Scores:
    return {key: held_out.score(student).to_dict() for key, held_out in sets.items()}


def producer(student: torch.fx.GraphModule, name: str) -> torch.fx.Node:
    """The op whose result a quantizer rounds, looking through shape-only ops and the quantizers
    before them (a conv's rounded output is permuted to channels-last and rounded again, on the
    same grid, before the LayerNorm that reads it)."""
    node = next(n for n in student.graph.nodes if n.op == "call_module" and n.target == name)
    source = node.args[0]
    while source.op == "call_module" or (source.op == "call_function" and source.name.startswith(SHAPE_OPS)):
        source = source.args[0]
    return source


def placement(student: torch.fx.GraphModule, name: str, layers: tuple[str, ...]) -> tuple[str, str]:
    """('input of' | 'output of', the model layer) of one activation quantizer."""
    place = quantizer_place(student, name, layers)
    if any(c.startswith(QUANTIZED_OPS) for c in place["consumers"]):
        return "input of", ", ".join(place["layers"]) or "-"
    source = producer(student, name)
    if source.name.startswith(QUANTIZED_OPS):
        return "output of", ", ".join(sorted(layers_of_scopes(node_scopes(source), layers))) or "-"
    return "after", source.name


def mean_sqnr(graph: torch.fx.GraphModule, held_out: HeldOutSet) -> float:
    with torch.no_grad():
        values = [sqnr_db(image.embedding, graph(image.encoder_input).numpy()) for image in held_out.images]
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.inf


def peak_over_rms(student: torch.fx.GraphModule, quantizer: torch.nn.Module, held_out: HeldOutSet) -> float:
    """max |x| / RMS(x) of what ``quantizer`` rounds, over every held-out image: the share of a
    per-tensor int8 grid that typical values get (a ratio of 10 leaves them ~13 of 127 steps)."""
    peak, squares, count = 0.0, 0.0, 0
    seen = []
    hook = quantizer.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach()))
    with torch.no_grad():
        for image in held_out.images:
            student(image.encoder_input)
    hook.remove()
    for x in seen:
        peak, squares, count = max(peak, x.abs().max().item()), squares + x.double().pow(2).sum().item(), count + x.numel()
    return peak / math.sqrt(squares / count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="reference")
    parser.add_argument("--images", required=True, help="calibration + held-out images (folder or dataset)")
    parser.add_argument("--train", required=True, help="images for the weights' headroom (step 3)")
    parser.add_argument("--recipe", default="static-conv-linear")
    parser.add_argument("--calibration-images", type=int, default=8)
    parser.add_argument("--held-out-images", type=int, default=24)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", default="1e-5", help="AdamW learning rate(s) of step 3, comma-separated")
    parser.add_argument("--parts", default="1,2,3", help="which of the three parts to run, e.g. 3")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--record", type=Path, help="also write the numbers printed as JSON here")
    args = parser.parse_args()
    header = record_header()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = edge_sam.load_model(args.checkpoint).eval()
    size = model.image_encoder.img_size
    calibration, held_out = split_images(open_source(args.images), args.calibration_images, args.held_out_images)
    with tempfile.TemporaryDirectory() as tmp:
        crops = photo_crops(read_image(PHOTO), Path(tmp) / "crops", PHOTO_CROPS)
        sets = {"synthetic": HeldOutSet(model, held_out, size), "photo_crops": HeldOutSet(model, crops, size)}
    set_names = {"synthetic": f"{len(held_out)} held-out images of {args.images}",
                 "photo_crops": f"{PHOTO_CROPS} crops of {PHOTO.name}"}

    student = prepare_qat_encoder(model, get_recipe(args.recipe), size, get_target(QAT_TARGET))
    batches, _ = calibration_batches(model, calibration, size, "encoder")
    calibrate_activation_ranges(student, torch.cat([images for (images,) in batches]))
    freeze_activation_ranges(student)
    objective = DistillationObjective(student, model, size, embedding_weight=1.0, mask_weight=10.0)
    objective.train(False)
    quantizers, activations = fake_quantizers(student), activation_quantizers(student)

    def only(names) -> None:
        for name, module in quantizers.items():
            module.enable_fake_quant(name in names)

    record = {**header, "checkpoint": args.checkpoint, "recipe": args.recipe,
              "calibration_images": args.calibration_images, "sets": set_names, "threads": args.threads}
    parts = {int(part) for part in args.parts.split(",")}
    if 1 in parts:
        record["split"] = split_weights_and_activations(student, sets, only)
        print(split_text(record["split"], args.recipe, set_names))
    if 2 in parts:
        record["activations"] = costliest_activations(student, model, sets, activations, only, args.top)
        print(costliest_text(record["activations"], set_names))
    if 3 in parts:
        only(set(quantizers))
        record["headroom"] = weights_headroom(student, objective, sets, args, set_names)
    if args.record:
        write_record(args.record, record)
        print(f"wrote {args.record}")


def split_weights_and_activations(student: torch.fx.GraphModule, sets: dict[str, HeldOutSet],
                                  only: Callable[[set[str]], None]) -> dict:
    """Part 1: everything fake-quantized, then the weights alone, then the activations alone."""
    quantizers, activations = fake_quantizers(student), activation_quantizers(student)
    rows = []
    for label, names in (("everything", set(quantizers)), ("weights only", set(quantizers) - set(activations)),
                         ("activations only", set(activations))):
        only(names)
        rows.append({"fake_quantized": label, "scores": score(student, sets)})
    return {"weight_quantizers": len(quantizers) - len(activations), "activation_quantizers": len(activations),
            "rows": rows}


def split_text(split: dict, recipe: str, set_names: dict[str, str]) -> str:
    lines = [f"1. {recipe}: {split['weight_quantizers']} weight and {split['activation_quantizers']} activation quantizers"]
    lines += [f"   {row['fake_quantized']:17s} {set_names[key]}: {fidelity_text(scores)}"
              for row in split["rows"] for key, scores in row["scores"].items()]
    return "\n".join(lines)


def costliest_activations(student: torch.fx.GraphModule, model, sets: dict[str, HeldOutSet], activations: dict,
                          only: Callable[[set[str]], None], top: int) -> dict:
    """Part 2: each activation quantizer alone, costliest first (peak / RMS for the ``top`` of
    them); then everything but those ``top``."""
    quantizers = fake_quantizers(student)
    synthetic = sets["synthetic"]
    layers = quantizable_layers(model.config)
    alone = []
    for name in activations:
        only({name})
        place = quantizer_place(student, name, layers)
        scale, _ = quantizers[name].calculate_qparams()
        role, layer = placement(student, name, layers)
        alone.append({"quantizer": name, "embedding_sqnr_db": finite(mean_sqnr(student, synthetic)), "role": role,
                      "layer": layer, "graph_input": place["input"], "consumers": list(place["consumers"]),
                      "scale": float(scale.reshape(-1)[0])})
    alone.sort(key=lambda row: math.inf if row["embedding_sqnr_db"] is None else row["embedding_sqnr_db"])
    only(set())  # peak / RMS of the fp32 values
    for row in alone[:top]:
        row["peak_over_rms"] = peak_over_rms(student, quantizers[row["quantizer"]], synthetic)
    only(set(quantizers) - {row["quantizer"] for row in alone[:top]})
    return {"scored_on": "synthetic", "top": top, "alone": alone, "all_but_top": score(student, sets)}


def costliest_text(activations: dict, set_names: dict[str, str]) -> str:
    top = activations["top"]
    lines = [f"2. one activation quantizer at a time (embedding SQNR on the held-out images; the {top} costliest;",
             "   peak / RMS: the largest magnitude the quantizer sees over those images, over the tensor's RMS):"]
    lines += [f"   {row['embedding_sqnr_db']:5.1f} dB  {row['role']:9s} {row['layer']:36s} peak / RMS {row['peak_over_rms']:5.1f} "
              f"(graph: {row['graph_input']} -> {', '.join(row['consumers'])}; scale {row['scale']:.4g})"
              for row in activations["alone"][:top]]
    lines.append(f"   the {top} above left unrounded (what 16-bit activations there would approach), everything else INT8:")
    lines += [f"   {set_names[key]}: {fidelity_text(scores)}" for key, scores in activations["all_but_top"].items()]
    return "\n".join(lines)


def weights_headroom(student: torch.fx.GraphModule, objective: DistillationObjective, sets: dict[str, HeldOutSet],
                     args: argparse.Namespace, set_names: dict[str, str]) -> dict:
    """Part 3: QAT's loss overfitting one fixed batch, from the same PTQ weights at each learning rate
    (each run printed as it finishes)."""
    source = open_source(args.train)
    size = objective.img_size
    items = DistillationItems(source, size, max_objects=8, flip_prob=0.0)
    batch = default_collate([items[(i, (0, 0, 0, i))] for i in range(4)])
    params = [p for p in student.parameters() if p.requires_grad]
    start = copy.deepcopy(student.state_dict())

    def batch_sqnr() -> float:
        objective.train(False)
        with torch.no_grad():
            value = objective(batch)["embedding_nmse"].item()
        objective.train(True)
        return -10 * math.log10(value)

    headroom = {"train": args.train, "batch_images": 4, "steps": args.steps, "batch_sqnr_db": batch_sqnr(),
                "scores": score(student, sets), "runs": []}
    checkpoints = {max(1, args.steps * quarter // 4) for quarter in range(1, 5)}
    for lr in (float(value) for value in args.lr.split(",")):
        student.load_state_dict(start)
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        trace = []
        for step in range(1, args.steps + 1):
            loss = objective(batch)["loss"]
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            if step in checkpoints:
                trace.append({"step": step, "batch_sqnr_db": batch_sqnr()})
        headroom["runs"].append({"lr": lr, "trace": trace, "scores": score(student, sets)})
        print(headroom_text(headroom, headroom["runs"][-1], set_names))
    return headroom


def headroom_text(headroom: dict, run: dict, set_names: dict[str, str]) -> str:
    trace = " -> ".join(f"{point['batch_sqnr_db']:.2f} (step {point['step']})" for point in run["trace"])
    lines = [f"3. QAT's loss on one fixed batch of {headroom['batch_images']} images of {headroom['train']}, "
             f"{headroom['steps']} AdamW steps at lr {run['lr']:g}:",
             f"   that batch's embedding SQNR {headroom['batch_sqnr_db']:.2f} -> {trace} dB"]
    for key, name in set_names.items():
        lines += [f"   {name}: {fidelity_text(headroom['scores'][key])}",
                  f"   {' ' * len(name)}  -> {fidelity_text(run['scores'][key])}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
