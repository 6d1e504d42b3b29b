"""What running a Core ML artifact needs: coremltools (to read the package), and one of two
engines per package, behind the same deploy-form runner.

- ``"mlmodel"``: ``MLModel.predict`` through Core ML, with ``compute_units`` one of ALL,
  CPU_ONLY, CPU_AND_GPU, CPU_AND_NE. Needs macOS; the default there.
- ``"host"``: :mod:`.host_executor` runs the saved program with NumPy, so the drift a Core ML
  artifact carries is measured on Linux too. Its rows are labelled "CoreML program executed on
  the host (fp16 semantics), not on a device". The default everywhere but macOS.

An image-input encoder (exported with ``image_input=True``) takes 0..255 RGB at the model size
and normalizes in the program; the runner feeds it the same pixels a device's buffer would hold.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_sam.errors import EdgeSamError
from edge_sam.transforms import IMAGENET_MEAN, IMAGENET_STD

from edge_sam.graph_contract import ROLES, encoder_input
from edge_sam.targets.core.manifest import ArtifactError, GraphSpec, Manifest, check_io_names, first_line
from edge_sam.targets.core.artifact_runner import GraphRunner
from edge_sam.targets.coreml.program import import_coremltools, read_io

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
ENGINES = ("mlmodel", "host")
# An image-input encoder takes 0..255 RGB; the program scales it to [0, 1] before mean/std.
IMAGE_SCALE = 1.0 / 255.0


def default_engine() -> str:
    """Core ML itself where it exists (macOS), the host executor elsewhere."""
    return "mlmodel" if sys.platform == "darwin" else "host"


def channel_tensor(values: tuple[float, float, float]) -> torch.Tensor:
    """Per-channel constants shaped to broadcast over [N, 3, H, W]."""
    return torch.tensor(values).reshape(1, 3, 1, 1)


def image_input_pixels(normalized: torch.Tensor) -> torch.Tensor:
    """A normalized model input -> the 0..255 RGB an image-input encoder takes, rounded to 8 bits
    as the pixel buffer a device hands Core ML would be."""
    rgb = (normalized * channel_tensor(IMAGENET_STD) + channel_tensor(IMAGENET_MEAN)) / IMAGE_SCALE
    return torch.clamp(torch.round(rgb), 0, 255)


# -- engines: run one package ---------------------------------------------------------------------
class HostEngine:
    """The saved ML program executed with NumPy (:class:`~.host_executor.executor.MilExecutor`)."""

    def __init__(self, package: Path) -> None:
        from edge_sam.targets.coreml.host_executor.executor import MilExecutor, host_label

        self.executor = MilExecutor.from_package(package)
        self.inputs = self.executor.program.inputs
        self.outputs = self.executor.output_names
        self.backend = host_label(self.executor.program)

    def predict(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.executor.run(feeds)


class MLModelEngine:
    """Core ML's own ``MLModel.predict`` (macOS only) on the chosen compute units."""

    def __init__(self, package: Path, compute_units: str) -> None:
        ct = import_coremltools()
        self.inputs, outputs = read_io(package)
        self.outputs = [o.name for o in outputs]
        try:
            self.model = ct.models.MLModel(str(package), compute_units=getattr(ct.ComputeUnit, compute_units))
        except Exception as exc:  # Core ML's compile errors come as generic exceptions
            raise ArtifactError(f"Core ML cannot load {package}: {first_line(exc)}") from None
        self.backend = f"Core ML MLModel.predict ({compute_units})"

    def predict(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        kinds = {spec.name: spec.kind for spec in self.inputs}
        prepared = {name: _pil_image(value) if kinds[name] == "image" else value for name, value in feeds.items()}
        return self.model.predict(prepared)


def _pil_image(pixels: np.ndarray):
    """[1, 3, H, W] 0..255 -> the PIL image coremltools' predict takes for an image input."""
    try:
        from PIL import Image
    except ImportError:
        raise EdgeSamError("Core ML image inputs are fed as PIL images on macOS: pip install pillow") from None
    return Image.fromarray(pixels[0].transpose(1, 2, 0).astype(np.uint8))


class PackageGraph:
    """One package behind a call: arrays in input order -> float32 outputs in the manifest's order."""

    def __init__(self, path: Path, spec: GraphSpec, engine: str, compute_units: str | None) -> None:
        self.engine = HostEngine(path) if engine == "host" else MLModelEngine(path, compute_units or "ALL")
        self.input_names = [i.name for i in self.engine.inputs]
        self.image_input = self.engine.inputs[0].kind == "image"
        self.backend = self.engine.backend
        check_io_names(path, spec, self.input_names, list(self.engine.outputs))

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        outputs = self.engine.predict(dict(zip(self.input_names, arrays)))
        return [np.asarray(outputs[name], np.float32) for name in self.engine.outputs]


def open_packages(artifact_dir: Path, manifest: Manifest, engine: str | None, compute_units: str | None) -> dict[str, PackageGraph]:
    """The encoder and decoder packages on one engine (default: :func:`default_engine`), or one
    error for an engine or compute units this machine cannot give."""
    engine = engine or default_engine()
    if engine not in ENGINES:
        raise EdgeSamError(f"unknown Core ML engine '{engine}' (choose from {', '.join(ENGINES)})")
    if engine == "mlmodel" and sys.platform != "darwin":
        raise EdgeSamError("engine 'mlmodel' runs Core ML's MLModel.predict, which needs macOS; use engine='host' here")
    if compute_units is not None and engine != "mlmodel":
        raise EdgeSamError("compute_units choose Core ML hardware for MLModel.predict (engine 'mlmodel', macOS only)")
    if compute_units is not None and compute_units not in COMPUTE_UNITS:
        raise EdgeSamError(f"unknown compute units '{compute_units}' (choose from {', '.join(COMPUTE_UNITS)})")
    return {
        role: PackageGraph(artifact_dir / manifest.graph(role).file, manifest.graph(role), engine, compute_units)
        for role in ROLES
    }


class CoreMLRunner(GraphRunner):
    """Deploy-form runner over three packages; an image-input encoder gets 0-255 RGB at the model size."""

    encoder: PackageGraph
    context: PackageGraph
    decoder: PackageGraph

    def encode(self, image: np.ndarray) -> np.ndarray:
        if not self.encoder.image_input:
            return super().encode(image)
        pixels = image_input_pixels(encoder_input(image, self.img_size))
        return self.run_encoder(pixels.numpy().astype(np.float32))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "backend": self.encoder.backend}
