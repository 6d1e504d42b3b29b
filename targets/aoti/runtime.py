"""What a host needs to run an AOTInductor package: torch alone (no exporter, no quantizer, no compiler).

``torch._inductor.aoti_load_package`` loads the compiled model; its own metadata (written by
:mod:`.compile`) says the inputs and outputs it was compiled for, and an artifact whose manifest
disagrees is refused. ``threads`` sets torch's intra-op threads, which the oneDNN kernels
(convolutions, linear layers, INT8) use; Inductor's own loops keep the count they were compiled with.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from edge_sam.errors import EdgeSamError
from edge_sam.targets.core.artifact_runner import GraphRunner
from edge_sam.targets.core.manifest import ArtifactError, GraphSpec, first_line

EXTRA = "aoti"
RUNTIME = "torch._inductor"
# Metadata keys of every package: the graph's inputs and outputs as [[name, shape, dtype], ...].
INPUTS_KEY, OUTPUTS_KEY = "edge_sam.inputs", "edge_sam.outputs"


class AotiGraph:
    """One compiled package behind a NumPy call."""

    def __init__(self, path: Path, spec: GraphSpec) -> None:
        try:
            self.model = torch._inductor.aoti_load_package(str(path))
        except (RuntimeError, ValueError, OSError) as exc:
            raise ArtifactError(f"AOTInductor cannot load {path}: {first_line(exc)}") from None
        compiled = json.loads(self.model.get_metadata().get(INPUTS_KEY, "[]"))
        actual = [(name, tuple(shape)) for name, shape, _ in compiled]
        recorded = [(t.name, tuple(t.shape)) for t in spec.inputs]
        if actual != recorded:
            raise ArtifactError(f"{path} takes inputs {actual}, but its manifest records {recorded}")
        self.path = path

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        inputs = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in arrays]
        try:
            with torch.inference_mode():
                outputs = self.model(*inputs)
        except RuntimeError as exc:
            raise EdgeSamError(f"{self.path.name} failed to run: {first_line(exc)}") from None
        outputs = [outputs] if isinstance(outputs, torch.Tensor) else outputs
        return [output.numpy() for output in outputs]


class AotiRunner(GraphRunner):
    """Deploy-form artifact: the host preprocesses and pads prompts; the compiled packages run the graphs."""

    uses_torch_threads = True
