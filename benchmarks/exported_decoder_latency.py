"""Exported decoders per prompt: the whole decoder (embedding + prompt, what artifacts ran before
the per-image context) against the artifact's context decoder (context once per image, then
prompt only, with the cross-attentions' image-side projections folded into the prompt tokens)
and against the same context decoder unfolded, in the same runtime, in interleaved rounds.

    python benchmarks/exported_decoder_latency.py [--targets onnx,executorch,tflite] [--size 1024] \\
        [--threads 2] [--rounds 20] [--record docs/results/decoder_context.json]

For each runtime, in its own fresh process (other runtimes' idle threads would slow it): export
an fp32 deploy artifact of the parity checkpoint (latency does not depend on the weights), the same
artifact again with the fold switched off (the exporter's rule ``folds_decoder_attention`` patched
to say no: the same export path, so the two differ in the fold alone), and the whole decoder graph
with the same runtime's converter; encode the sample photo; then in each round time one prompt through each decoder and the context
graph once (minimum over rounds, wall clock). The ratio decoder / whole is the saving to hold
against the context's FLOP share (``edge_sam.flops.decoder_image_flops`` over ``decoder_flops``);
the unfolded decoder says how much of it the context alone buys. The masks of the artifact's
decoder and the whole decoder for the validation grid prompts are compared (IoU of full-size
masks, every candidate). The JSON record carries the command, commit and
machine (:mod:`benchmarks.records`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from unittest import mock
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from records import record_header, write_record  # noqa: E402  (a sibling module)

ROOT = Path(__file__).resolve().parents[1]
PARITY = ROOT / "tests" / "data" / "parity" / "efficient_sam_vitt_random_seed1234.pt"
SAMPLE = ROOT / "edge_sam" / "assets" / "dogs.jpg"
TARGETS = ("onnx", "executorch", "tflite")
WHOLE_INPUTS = ("image_embeddings", "point_coords", "point_labels")


def whole_decoder_call(target: str, graph: torch.nn.Module, folder: Path, threads: int):
    """The whole decoder graph written by ``target``'s converter and opened in its runtime, as a
    call (embedding, coords, labels) -> (low_res_masks, iou_predictions)."""
    example = graph.example_inputs()
    if target == "onnx":
        import onnxruntime as ort

        from edge_sam.targets.onnx.graphs import _export
        from edge_sam.targets.onnx.runtime import session_options

        path = folder / "whole_decoder.onnx"
        _export(graph, example, path, (list(WHOLE_INPUTS), ["low_res_masks", "iou_predictions"]))
        session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        return lambda *arrays: session.run(None, dict(zip(WHOLE_INPUTS, arrays)))
    if target == "executorch":
        from edge_sam.targets.executorch.lowering import StageBar, lower_to_pte
        from edge_sam.targets.executorch.runtime import XNNPACK, runtime

        bar = StageBar(2, "whole decoder -> xnnpack fp32")
        try:
            path = folder / "whole_decoder.pte"
            path.write_bytes(lower_to_pte(graph, example, XNNPACK, "fp32", bar))
        finally:
            bar.close()
        method = runtime().load_program(path).load_method("forward")
        return lambda *arrays: [o.numpy() for o in method.execute([torch.from_numpy(a) for a in arrays])]
    if target == "tflite":
        import litert_torch

        from edge_sam.targets.tflite.runtime import SIGNATURE, open_interpreter

        with torch.no_grad():
            content = litert_torch.convert(graph, (), dict(zip(WHOLE_INPUTS, example))).model_content()
        signature = open_interpreter(content, threads).get_signature_runner(SIGNATURE)

        def call(*arrays):
            outputs = signature(**dict(zip(WHOLE_INPUTS, arrays)))
            return [outputs[f"output_{i}"] for i in range(len(outputs))]

        return call
    raise SystemExit(f"unknown target {target}")


def child(job: dict) -> dict:
    """One runtime, in a fresh process: export, then interleaved rounds."""
    import edge_sam
    from edge_sam.deploy_form import pad_prompts
    from edge_sam.eval.metrics import mask_iou
    from edge_sam.fixed_prompts import grid_prompts
    from edge_sam import deploy_form
    from edge_sam.graph_contract import whole_decoder_graph
    from edge_sam.targets import get_target, load_runner
    from edge_sam.targets.core.registry import threads_option
    from edge_sam.targets.validation.drift import full_size_masks
    from edge_sam.transforms import read_image

    target, size, threads = job["target"], job["size"], job["threads"]
    torch.set_num_threads(1)  # host-side work only; the runtimes run on their own threads
    model = edge_sam.load_model(job["checkpoint"])
    image = read_image(job["image"])
    with tempfile.TemporaryDirectory(prefix=f"decoder-context-{target}-") as work:
        work = Path(work)
        artifact = get_target(target).export(model, "fp32", None, work / "artifact", img_size=size)
        runner = load_runner(artifact, **threads_option(target, threads))
        with mock.patch.object(deploy_form, "folds_decoder_attention", lambda config, img_size=None: False):
            unfolded_artifact = get_target(target).export(model, "fp32", None, work / "unfolded", img_size=size)
        unfolded_runner = load_runner(unfolded_artifact, **threads_option(target, threads))
        whole = whole_decoder_call(target, whole_decoder_graph(model, size), work, threads)
        embedding = runner.encode(image)
        context = runner.run_context(embedding)
        unfolded_context = unfolded_runner.run_context(embedding)
        prompts = [pad_prompts(p.points, p.labels, image.shape[:2], size) for p in grid_prompts(image.shape[:2])]
        ious = []
        for coords, labels in prompts:
            split, _ = runner.run_decoder(context, coords[None], labels[None])
            full, _ = whole(embedding, coords[None], labels[None])
            split_masks, full_masks = full_size_masks(split, image.shape[:2]), full_size_masks(full, image.shape[:2])
            ious += [mask_iou(split_masks[k], full_masks[k]) for k in range(len(split_masks))]
        calls = {
            "whole": lambda c, l: whole(embedding, c, l),
            "decoder": lambda c, l: runner.run_decoder(context, c, l),
            "unfolded": lambda c, l: unfolded_runner.run_decoder(unfolded_context, c, l),
            "context": lambda c, l: runner.run_context(embedding),
        }
        best = {name: float("inf") for name in calls}
        loads = []
        for round_index in range(job["warmup"] + job["rounds"]):
            loads.append(os.getloadavg()[0])
            coords, labels = prompts[round_index % len(prompts)]
            for name, call in calls.items():
                start = time.perf_counter()
                call(coords[None], labels[None])
                if round_index >= job["warmup"]:
                    best[name] = min(best[name], time.perf_counter() - start)
    return {"target": target, "label": runner.label, "whole_ms": best["whole"] * 1e3, "decoder_ms": best["decoder"] * 1e3,
            "unfolded_decoder_ms": best["unfolded"] * 1e3, "folds_decoder_attention": runner.folds_decoder_attention,
            "context_ms": best["context"] * 1e3, "decoder_over_whole": best["decoder"] / best["whole"],
            "mask_iou_min": min(ious), "mask_iou_mean": float(np.mean(ious)), "masks_compared": len(ious),
            "load_average_min_max": [min(loads), max(loads)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(PARITY))
    parser.add_argument("--image", default=str(SAMPLE))
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--record", default=None, help="write the JSON record here (e.g. docs/results/decoder_context.json)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(sys.stdin.read()))))
        return
    import edge_sam
    from edge_sam.flops import decoder_flops, decoder_image_flops

    header = record_header()
    config = edge_sam.load_model(args.checkpoint).config
    whole_flops = decoder_flops(config, args.size).total
    share = decoder_image_flops(config, args.size).total / whole_flops
    folded_share = 1 - decoder_flops(config, args.size, factored=True).total / whole_flops
    rows = []
    for target in args.targets.split(","):
        job = {"target": target, "checkpoint": args.checkpoint, "image": args.image, "size": args.size,
               "threads": args.threads, "rounds": args.rounds, "warmup": args.warmup}
        done = subprocess.run([sys.executable, __file__, "--child"], input=json.dumps(job), capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{target} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  {target} done", file=sys.stderr, flush=True)
    print(f"# exported decoders per prompt at {args.size} px, fp32, {args.threads} threads, {args.rounds} interleaved "
          f"rounds (min); the context's FLOP share is {share:.3f}, with the folded cross-attention {folded_share:.3f}")
    print("| runtime | whole decoder ms | context decoder ms | saved | unfolded context decoder ms | "
          "context (once per image) ms | mask IoU min / mean | load |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        row["saved"] = 1 - row["decoder_over_whole"]
        row["saved_at_least_flop_share"] = row["saved"] >= share
        print(f"| {row['label']} | {row['whole_ms']:.1f} | {row['decoder_ms']:.1f} | {row['saved']:.3f}"
              f"{'' if row['saved_at_least_flop_share'] else ' (under the FLOP share)'} | {row['unfolded_decoder_ms']:.1f} | "
              f"{row['context_ms']:.1f} | "
              f"{row['mask_iou_min']:.4f} / {row['mask_iou_mean']:.4f} | "
              f"{row['load_average_min_max'][0]:.1f}-{row['load_average_min_max'][1]:.1f} |")
    if args.record:
        write_record(args.record, {**header, "context_flop_share": share, "folded_flop_share": folded_share,
                                   "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
