"""Per-layer drift of an ExecuTorch INT8 encoder: the encoder is re-quantized exactly as it was
exported (same recipe, same calibration images, XNNPACK's quantizer) and compared op by op with
the float graph in PyTorch; one more row puts the .pte itself (ExecuTorch's INT8 kernels) against
that simulation, so a kernel that computes differently from the simulated arithmetic shows as a
drop there. The comparison is :mod:`edge_sam.targets.core.pt2e_layer_drift`'s; this module names
the quantizer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_sam.modeling import EfficientSam
from edge_sam.targets.core.layer_drift import LayerRow
from edge_sam.targets.core.pt2e_layer_drift import requantized_encoder_drift
from edge_sam.targets.executorch.quantize import quantized_graph
from edge_sam.targets.executorch.runtime import ExecuTorchRunner


def encoder_layer_drift(artifact_dir: Path, runner: ExecuTorchRunner, model: EfficientSam, images: list[np.ndarray]) -> list[LayerRow] | None:
    """Per-op rows of the INT8 encoder plus the program row; None where the encoder is not INT8
    or its activation ranges cannot be redone."""
    return requantized_encoder_drift(artifact_dir, runner, model, images, quantized_graph)
