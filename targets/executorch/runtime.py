"""What a device needs to run a .pte artifact: ``executorch.runtime`` and the runner over it
(no exporter, no quantizer).

``executorch.runtime`` loads the two programs the manifest names (after its hashes are checked)
and checks their inputs against the manifest. ``profile=True`` records an ETDump so
:meth:`ExecuTorchRunner.operator_profile` can print per-operator times (XNNPACK ops included).
``threads`` sets the size of ExecuTorch's (process-wide) thread pool. The delegates a program
can be lowered to are described here too: the runtime checks it has the artifact's backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edge_sam.errors import EdgeSamError, require

from edge_sam.targets.core.manifest import ArtifactError, GraphSpec, first_line
from edge_sam.targets.core.artifact_runner import GraphRunner

EXTRA = "executorch"
RUNTIME = "executorch.runtime"


@dataclass(frozen=True)
class Delegate:
    """One ExecuTorch backend a .pte can be lowered to."""

    name: str  # the export option: delegate="xnnpack" | "coreml"
    backend_id: str  # the name ExecuTorch's backend registry knows it by
    manifest_backend: str  # what the manifest records (and the report prints)
    precisions: tuple[str, ...]
    runs_on: str  # where its programs can execute, for error messages


XNNPACK = Delegate("xnnpack", "XnnpackBackend", "XnnpackBackend", ("fp32", "int8"), "any CPU (Linux, Android, iOS, macOS)")
COREML = Delegate(
    "coreml", "CoreMLBackend", "CoreMLBackend (runs on macOS 14+ / iOS 17+ only)", ("fp32", "fp16"), "macOS 14+ / iOS 17+"
)
DELEGATES = {d.name: d for d in (XNNPACK, COREML)}


def get_delegate(name: str) -> Delegate:
    try:
        return DELEGATES[name]
    except KeyError:
        raise EdgeSamError(f"unknown ExecuTorch delegate '{name}' (choose from {', '.join(DELEGATES)})") from None


def delegate_for_backend(manifest_backend: str) -> Delegate:
    """The delegate an artifact's manifest names, or one error."""
    for delegate in DELEGATES.values():
        if delegate.manifest_backend == manifest_backend:
            return delegate
    known = ", ".join(d.manifest_backend for d in DELEGATES.values())
    raise EdgeSamError(f"manifest names ExecuTorch backend '{manifest_backend}', which this edge_sam does not know ({known})")



def runtime():
    """``executorch.runtime.Runtime`` (the one import a device needs), or the pip-extra error."""
    return require(RUNTIME, EXTRA).Runtime.get()


def set_threads(threads: int) -> None:
    """Resize ExecuTorch's thread pool (one per process: every loaded program shares it)."""
    from executorch.extension.pybindings import _C

    _C._unsafe_reset_threadpool(threads)


class PteMethod:
    """The ``forward`` method of one .pte behind a NumPy call."""

    def __init__(self, path: Path, spec: GraphSpec, delegate: Delegate, profile: bool) -> None:
        rt = runtime()
        if not rt.backend_registry.is_available(delegate.backend_id):
            have = ", ".join(sorted(rt.backend_registry.registered_backend_names)) or "none"
            raise EdgeSamError(
                f"{path} is lowered to {delegate.backend_id}, which this ExecuTorch runtime does not have "
                f"(it has: {have}); it runs on {delegate.runs_on}"
            )
        try:
            self.program = rt.load_program(path, enable_etdump=profile)
            self.method = self.program.load_method("forward")
        except (RuntimeError, ValueError) as exc:
            raise ArtifactError(f"ExecuTorch cannot load {path}: {first_line(exc)}") from None
        meta = self.method.metadata
        actual = [tuple(meta.input_tensor_meta(i).sizes()) for i in range(meta.num_inputs())]
        recorded = [tuple(t.shape) for t in spec.inputs]
        if actual != recorded:
            raise ArtifactError(f"{path} takes inputs of shapes {actual}, but its manifest records {recorded}")
        self.path = path

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        inputs = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in arrays]
        try:
            outputs = self.method.execute(inputs)
        except RuntimeError as exc:
            raise EdgeSamError(f"{self.path.name} failed to run: {first_line(exc)}") from None
        return [o.numpy() for o in outputs]


class ExecuTorchRunner(GraphRunner):
    """Deploy-form artifact: the host preprocesses and pads prompts; ExecuTorch runs the programs."""

    encoder: PteMethod
    context: PteMethod
    decoder: PteMethod

    def operator_profile(self, role: str) -> list[dict]:
        """Per-operator times of every run so far of one program (needs ``profile=True``)."""
        from edge_sam.targets.executorch.profile import operator_table

        return operator_table({"encoder": self.encoder, "context": self.context, "decoder": self.decoder}[role].program)
