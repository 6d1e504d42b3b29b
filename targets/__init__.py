"""Targets: export EfficientSAM to a runtime, load it back as a runner, measure its drift.

``get_target("onnx").export(model, "int8", None, "out/onnx-int8", calibration=image_folder("calib"))``
writes an artifact directory; ``load_runner("out/onnx-int8")`` verifies it against its manifest
and returns a :class:`Runner` (``edge_sam.predictor.Predictor(runner)`` prompts it like the PyTorch
model); ``validate(["out/onnx-int8"], checkpoint=..., images="val/", report_dir="out/report")``
compares artifacts with the fp32 :class:`TorchRunner` and writes the drift report. Toolchains are
imported only when a target needs them.
"""

from edge_sam.runner import Runner, TorchRunner
from edge_sam.targets.core.artifact_runner import DeployFormRunner
from edge_sam.targets.core.target import Target
from edge_sam.image_sources import ImageSource, dataset_source, image_folder, open_source
from edge_sam.targets.core.manifest import ArtifactError, Manifest, read_manifest
from edge_sam.targets.core.registry import get_target, load_runner, target_names
from edge_sam.targets.validation.validate import FidelityGateError, validate

__all__ = [
    "ArtifactError",
    "DeployFormRunner",
    "FidelityGateError",
    "ImageSource",
    "Manifest",
    "Runner",
    "Target",
    "TorchRunner",
    "dataset_source",
    "get_target",
    "image_folder",
    "load_runner",
    "open_source",
    "read_manifest",
    "target_names",
    "validate",
]
