"""What an iOS or Android app needs beside an artifact, without reading edge_sam's Python.

Next to a Core ML, LiteRT or ExecuTorch artifact ``deploy`` writes ``app_contract.json`` (the
preprocessing constants, every graph input and output with its shape, dtype and int8 scale,
the prompt encoding, the mask post-processing) and a short ``README.md`` for that runtime.
Everything in them is read from the artifact's manifest, the same record the Python runners
follow, so an app and edge_sam's validation cannot disagree about the contract.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge_sam.data.codec import write_bytes_atomic
from edge_sam.modeling import EfficientSam

from edge_sam.targets.core.manifest import Manifest, TensorSpec

CONTRACT_FILE = "app_contract.json"
README_FILE = "README.md"
CONTRACT_VERSION = 2  # 2: the decoder split into a per-image context graph and a per-prompt decoder


def postprocessing_contract(manifest: Manifest) -> dict[str, Any]:
    """From decoder outputs to the mask an app shows (what edge_sam's runners and the report do)."""
    grid = manifest.img_size // manifest.model_config["patch_size"]
    return {
        "low_res_masks": f"[1, {manifest.prompts['multimask_outputs']}, {4 * grid}, {4 * grid}] mask logits, one per "
                         "candidate mask, in the model's square frame",
        "choose": "the candidate with the highest iou_predictions value (the decoder's own quality estimate)",
        "resize": "to the original image height x width, bicubic, align_corners=False (edge_sam's runners; "
                  "bilinear on a device moves object-boundary pixels only)",
        "threshold": EfficientSam.mask_threshold,
        "mask": "resized logits > threshold are the object",
    }


def _tensor(spec: TensorSpec) -> dict[str, Any]:
    record: dict[str, Any] = {"name": spec.name, "shape": list(spec.shape), "dtype": spec.dtype}
    if spec.quantization:
        record["quantization"] = dict(spec.quantization, real_value="(q - zero_point) * scale")
    return record


def app_contract(manifest: Manifest) -> dict[str, Any]:
    """The manifest's deploy contract, as the one JSON file an app reads."""
    return {
        "contract_version": CONTRACT_VERSION,
        "target": manifest.target,
        "backend": manifest.backend,
        "precision": manifest.precision,
        "recipe": manifest.recipe["name"] if manifest.recipe else None,
        "img_size": manifest.img_size,
        "preprocessing": manifest.preprocessing,
        "graphs": {
            graph.role: {"file": graph.file, "inputs": [_tensor(t) for t in graph.inputs],
                         "outputs": [_tensor(t) for t in graph.outputs]}
            for graph in manifest.graphs
        },
        "prompts": manifest.prompts,
        "postprocessing": postprocessing_contract(manifest),
        "flow": [
            "encoder: once per image -> image_embeddings",
            "context: once per image, with those image_embeddings -> " + ", ".join(t.name for t in manifest.graph("context").outputs),
            "decoder: once per prompt, with that context and the prompt -> low_res_masks, iou_predictions",
        ],
    }


# How each mobile runtime opens the graph files; the rest of the README comes from the manifest.
_RUNTIME_NOTES = {
    "coreml": (
        "iOS 17+ / macOS 14+ (Core ML)",
        "Add the three `.mlpackage` folders to the Xcode target (Xcode compiles them to `.mlmodelc`) and "
        "`app_contract.json` as a resource. The Swift sample `apps/ios/EdgeSAMCoreML.swift` in the edge_sam "
        "repository does all of the steps below with these I/O names. An encoder with an `image:RGB` input "
        "takes 0-255 RGB at the model size and normalizes inside the program.",
    ),
    "tflite": (
        "Android / iOS / Linux (LiteRT, the TFLite runtime)",
        "Open each `.tflite` file with the LiteRT `Interpreter` (XNNPACK delegate on CPU) and call its "
        "`serving_default` signature with the input names below (`getSignatureRunner(\"serving_default\")` "
        "on Android). An int8 input or output lists its scale and zero point: real = (q - zero_point) * scale.",
    ),
    "executorch": (
        "Android / iOS / Linux (ExecuTorch)",
        "Load each `.pte` with ExecuTorch's `Module` (Android: `org.pytorch.executorch.Module.load(path)`; "
        "C++: `executorch::extension::Module`) and call its `forward` method with the inputs in the order "
        "listed below; the outputs come back in the order listed. Link the backend named in the manifest "
        "(XnnpackBackend: the XNNPACK delegate).",
    ),
}


def readme(manifest: Manifest) -> str:
    platform, how = _RUNTIME_NOTES[manifest.target]
    pre, prompts, post = manifest.preprocessing, manifest.prompts, postprocessing_contract(manifest)
    lines = [
        f"# EfficientSAM for {platform}: {manifest.target} {manifest.precision}"
        + (f" ({manifest.recipe['name']})" if manifest.recipe else ""),
        "",
        "Written by `edge-sam deploy`. Everything below is also in `app_contract.json` (machine-readable) and "
        "`manifest.json` (with the sha256 of every file).",
        "",
        "## Load",
        "",
        how,
        "",
        "## Inputs and outputs",
        "",
        "| graph | file | direction | name | shape | dtype |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for graph in manifest.graphs:
        for direction, specs in (("in", graph.inputs), ("out", graph.outputs)):
            for spec in specs:
                lines.append(f"| {graph.role} | `{graph.file}` | {direction} | `{spec.name}` | "
                             f"{list(spec.shape)} | {spec.dtype} |")
    size = manifest.img_size
    lines += [
        "",
        "## Run",
        "",
        f"1. **Image** (once per image): RGB, resized to {size}x{size} ({pre['resize']}), "
        f"scaled to [0, 1]; subtract mean {pre['mean']}, divide by std {pre['std']}, layout {pre['layout']} "
        "float32. Run the encoder, then the context graph on its `image_embeddings`; keep the context's "
        "outputs (the decoder's image-only part, computed once per image).",
        f"2. **Prompt** (per tap or box): {prompts['slots']} slots. Coordinates in model pixels "
        f"(x * {size} / image width, y * {size} / image height). Labels: "
        + ", ".join(f"{k} = {v}" for k, v in prompts["labels"].items())
        + f". A box takes two slots (labels 2 and 3). Fill unused slots with point {prompts['padding']['point']} "
        f"and label {prompts['padding']['label']}.",
        f"3. **Mask**: run the decoder on the kept context and the prompt. Of the {prompts['multimask_outputs']} candidates take the one with the "
        f"highest `iou_predictions`; resize its `low_res_masks` logits {post['resize']}; "
        f"pixels with logit > {post['threshold']} are the object.",
        "",
        "Validated against the fp32 PyTorch model on held-out images: see `report/` and `summary.md` beside "
        "this folder.",
    ]
    return "\n".join(lines) + "\n"


def needs_bundle(manifest: Manifest) -> bool:
    """Only artifacts bound for phones get a bundle (ONNX artifacts serve desktop and server apps)."""
    return manifest.target in _RUNTIME_NOTES


def write_bundle(artifact_dir: str | Path, manifest: Manifest) -> list[Path]:
    """Write ``app_contract.json`` and ``README.md`` into the artifact folder (for a mobile target;
    each file atomically, so a reused artifact's bundle can be refreshed in place)."""
    if not needs_bundle(manifest):
        return []
    artifact_dir = Path(artifact_dir)
    files = {CONTRACT_FILE: json.dumps(app_contract(manifest), indent=2) + "\n", README_FILE: readme(manifest)}
    for name, text in files.items():
        if not (artifact_dir / name).is_file() or (artifact_dir / name).read_text() != text:
            write_bytes_atomic(artifact_dir / name, text.encode())
    return [artifact_dir / name for name in files]
