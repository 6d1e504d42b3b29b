"""Per-layer drift of an ExecuTorch INT8 encoder: the encoder is re-quantized exactly as it was
exported (same recipe, same calibration images) and compared op by op with the float graph in
PyTorch (:mod:`edge_sam.targets.core.pt2e_layer_drift`); one more row puts the .pte itself
(ExecuTorch's INT8 kernels) against that simulation, so a kernel that computes differently
from the simulated arithmetic shows as a drop there.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from edge_sam.modeling import EfficientSam
from edge_sam.quantize.recipe_file import recipe_from_manifest

from edge_sam.image_sources import recorded_source
from edge_sam.graph_contract import deploy_graph, encoder_input
from edge_sam.targets.executorch.quantize import quantized_graph
from edge_sam.targets.executorch.runtime import ExecuTorchRunner
from edge_sam.targets.core.layer_drift import Layer, LayerRow, SqnrSums, layer_rows
from edge_sam.targets.core.pt2e_layer_drift import compare_layers


def encoder_layer_drift(artifact_dir: Path, runner: ExecuTorchRunner, model: EfficientSam, images: list[np.ndarray]) -> list[LayerRow] | None:
    """Per-op rows of the INT8 encoder plus the program row; None where the encoder is not INT8
    or the calibration images it was exported with are gone (a static recipe cannot be redone)."""
    manifest = runner.manifest
    recipe = manifest.recipe
    if manifest.precision != "int8" or recipe is None or "encoder" not in recipe["components"]:
        return None
    if recipe.get("qat", {}).get("activation_ranges", "").startswith("learned"):
        print(f"per-layer drift skipped for {artifact_dir}: its activation ranges were learned in QAT, "
              "not calibrated (no PTQ run to redo)", file=sys.stderr)
        return None
    calibration = recorded_source(manifest.calibration)
    if recipe["scheme"] == "static" and calibration is None:
        print(f"per-layer drift skipped for {artifact_dir}: its calibration images "
              f"({manifest.calibration['path']}) are not available as recorded", file=sys.stderr)
        return None
    size = manifest.img_size
    graph = deploy_graph(model, size, "encoder")
    reference = torch.export.export(graph, graph.example_inputs()).module()
    converted = quantized_graph(model, graph, recipe_from_manifest(recipe), calibration, size, "encoder")
    batches = [(encoder_input(image, size),) for image in images]
    rows = compare_layers(reference, converted, batches, total=len(batches))
    return [*rows, program_row(runner, reference, converted, batches)]


def program_row(runner: ExecuTorchRunner, reference, converted, batches) -> LayerRow:
    """How far the .pte is from fp32, next to the PT2E simulation's distance: its input is the
    simulation, so its drop is what ExecuTorch's kernels add to the simulated arithmetic."""
    sums = SqnrSums()
    with torch.no_grad():
        for (image,) in batches:
            ref = reference(image).numpy()
            sums.add("simulation", ref, converted(image).numpy())
            sums.add("image_embeddings", ref, runner.run_encoder(image.numpy()))
    program = Layer(f"{runner.manifest.graph('encoder').file} on the runtime (input = PT2E simulation)", "program",
                    "image_embeddings", ("simulation",))
    (row,) = layer_rows([program], sums.sqnr_db(), {})
    return row
