"""Per-layer drift of an AOTInductor encoder package, from the graph it was compiled from.

A package is compiled machine code: Inductor fuses ops across layer boundaries, so there is no
per-op output to read out of it. What can be compared op by op is the graph it was compiled
from, run in PyTorch beside the float graph (:mod:`edge_sam.targets.core.pt2e_layer_drift`):

- **int8**: the encoder re-quantized exactly as export quantized it (the manifest's recipe and
  calibration images, the x86 inductor quantizer): the PT2E reference numerics of the graph
  Inductor compiled.
- **bf16**: the float graph under CPU bf16 autocast, which is what :class:`~.compile.Bf16Graph`
  wraps around it in the package.

One more row puts the package itself against that simulation: what Inductor's kernels (oneDNN's
fused int8 or bf16 kernels, its own C++ loops) add to, or take from, the simulated arithmetic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edge_sam.graph_contract import deploy_graph, encoder_input
from edge_sam.modeling import EfficientSam
from edge_sam.targets.aoti.compile import Bf16Graph
from edge_sam.targets.aoti.quantize import quantized_graph
from edge_sam.targets.aoti.runtime import AotiRunner
from edge_sam.targets.core.layer_drift import LayerRow
from edge_sam.targets.core.pt2e_layer_drift import (
    compare_layers,
    exported_encoder,
    program_row,
    requantized_encoder_drift,
)


def encoder_layer_drift(artifact_dir: Path, runner: AotiRunner, model: EfficientSam, images: list[np.ndarray]) -> list[LayerRow] | None:
    """Per-op rows of an int8 or bf16 encoder plus the package row; None for fp32, for an int8
    encoder the recipe leaves float, or where its activation ranges cannot be redone."""
    if runner.manifest.precision == "bf16":
        return bf16_encoder_drift(runner, model, images)
    return requantized_encoder_drift(artifact_dir, runner, model, images, quantized_graph)


def bf16_encoder_drift(runner: AotiRunner, model: EfficientSam, images: list[np.ndarray]) -> list[LayerRow]:
    """The float encoder graph against itself under bf16 autocast, op by op, plus the package row."""
    size = runner.manifest.img_size
    reference = exported_encoder(deploy_graph(model, size, "encoder"))
    batches = [(encoder_input(image, size),) for image in images]
    rows = compare_layers(reference, reference, batches, total=len(batches), autocast=torch.bfloat16)
    return [*rows, program_row(runner, reference, Bf16Graph(reference), batches, "bf16 autocast simulation")]
