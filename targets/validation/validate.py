"""``validate()``: exported artifacts against the fp32 PyTorch model, as one library call.

``edge-sam validate``, ``edge-sam export --validate`` and the deploy command all call this; it
does, in order: read and verify every artifact (manifest, file hashes), check each was exported
from the given checkpoint's weights, insist on one img_size per run (the fp32 reference runs at
that size), load the runners, run :func:`~edge_sam.targets.validation.drift.measure_drift` on
the images, write the report folder, and apply the mask-IoU gate::

    from edge_sam.targets import validate
    report = validate(["out/onnx-int8"], checkpoint="ckpt.pt", images="val_images/",
                      report_dir="out/report", fail_under_mask_iou=0.95)
    report.rows()[1].summary()["mask_iou_mean"]

Validate on images the artifacts were not calibrated on: a fidelity number measured on the
calibration set flatters the quantized model. ``validate`` warns when the folder is the same.
"""

from __future__ import annotations

import os
import warnings
from functools import partial
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edge_sam.checkpoint import load_model
from edge_sam.errors import EdgeSamError
from edge_sam.runner import TorchRunner
from edge_sam.image_sources import ImageSource, dataset_source, image_folder
from edge_sam.targets.core.manifest import Manifest
from edge_sam.targets.core.registry import get_target
from edge_sam.targets.core.target import check_source, verify_artifact
from edge_sam.fixed_prompts import prompts_for
from edge_sam.targets.devices.device_runner import RemoteSettings, device_runners, jobs_for
from edge_sam.targets.validation.drift import PROMPT_GRID, DriftReport, RunnerDrift, measure_drift, warm_up_prompt
from edge_sam.targets.validation.report import write_report

PathLike = str | os.PathLike


class FidelityGateError(EdgeSamError):
    """Some artifact's mean mask IoU vs fp32 is under the gate. Raised after the report is
    written; ``report`` and ``failing`` say which artifacts and by how much."""

    def __init__(self, report: DriftReport, threshold: float, failing: list[RunnerDrift]) -> None:
        names = ", ".join(f"{r.info['label']} ({r.summary()['mask_iou_mean']:.4f})" for r in failing)
        super().__init__(f"mask IoU vs fp32 below {threshold}: {names}")
        self.report, self.threshold, self.failing = report, threshold, failing


def default_report_dir(artifact_dir: PathLike) -> Path:
    """Where ``export --validate`` writes the report: ``<artifact>-validation`` beside the
    artifact folder (not inside it, so the artifact ships without its report)."""
    artifact_dir = Path(artifact_dir)
    return artifact_dir.parent / f"{artifact_dir.name}-validation"


def validate(
    artifacts: Sequence[PathLike],
    *,
    checkpoint: PathLike = "reference",
    images: PathLike | None = None,
    dataset: PathLike | None = None,
    report_dir: PathLike | None = None,
    runtime_options: Mapping[str, Mapping[str, Any]] | None = None,
    max_images: int | None = None,
    max_objects: int = 8,
    measure_memory: bool = True,
    layers: bool = True,
    fail_under_mask_iou: float | None = None,
    torch_runs: Sequence[Mapping[str, Any]] = (),
    on: Sequence[str] = (),
    device_settings: RemoteSettings | None = None,
) -> DriftReport:
    """Compare ``artifacts`` with the fp32 model of ``checkpoint`` and return the drift report.

    ``images`` (a folder: grid clicks and boxes are generated) or ``dataset`` (with masks: a box
    and a centre click per object, scored against ground truth too), exactly one;
    ``max_images`` takes the first N, ``max_objects`` prompts at most N objects per dataset image.
    ``runtime_options`` maps a target name to the runtime options its runners take
    (``{"onnx": {"threads": 1}}``). ``measure_memory`` runs the peak-RSS subprocess probes;
    ``layers`` adds per-layer drift where the target has a tool. With ``report_dir`` the report
    is written there (report.json/.md/.html). With ``fail_under_mask_iou`` a
    :class:`FidelityGateError` is raised, after the report is written, when any artifact's mean
    mask IoU vs fp32 is below it. Every bad input is one :class:`EdgeSamError` before any work.

    ``torch_runs`` adds a PyTorch row per entry, each the keyword arguments of
    :class:`~edge_sam.runner.TorchRunner` (``{"device": "cuda", "precision": "fp16"}``). ``on``
    lists where the artifacts run: ``here`` (this process, the default), ``local`` (a subprocess
    with the device protocol), ``ssh://user@host[:port]`` or ``adb:SERIAL``; every device gets a
    row per artifact, run there with ``device_settings`` (:mod:`edge_sam.targets.devices`).
    """
    if not artifacts and not torch_runs:
        raise EdgeSamError("give at least one artifact folder (or a torch run) to validate")
    if (images is None) == (dataset is None):
        raise EdgeSamError("validate on an image folder or a dataset: give exactly one of images, dataset")
    if max_images is not None and max_images < 1:
        raise EdgeSamError(f"max_images must be at least 1, got {max_images}")
    artifacts = [str(path) for path in artifacts]
    manifests = [verify_artifact(path) for path in artifacts]
    sizes = sorted({m.img_size for m in manifests})
    if len(sizes) > 1:
        raise EdgeSamError(f"validate artifacts of one img_size per run (got {', '.join(map(str, sizes))})")
    places = list(on) or ["here"]
    devices = [place for place in places if place != "here"]
    model = load_model(checkpoint)
    sizes = sizes or [model.image_encoder.img_size]
    for path, manifest in zip(artifacts, manifests):
        check_source(manifest, model, path)
    source = image_folder(images, max_images) if images is not None else dataset_source(dataset, max_images)
    _warn_if_calibrated_on(source, artifacts, manifests)
    targets = [get_target(m.target) for m in manifests]
    options = runtime_options or {}
    here = "here" in places
    # loaders, not runners: measure_drift loads each artifact for its own pass only
    runners: list = [partial(t.load, path, **options.get(t.name, {})) for t, path in zip(targets, artifacts)] if here else []
    if layers and here:  # per-layer drift re-exports an fp32 graph, so it needs the export toolchain (one line if absent)
        for target, manifest in zip(targets, manifests):
            if manifest.precision != "fp32":
                target.check_toolchain("export")
    artifact_dirs: list[str | None] = list(artifacts) if here else []
    runners += [TorchRunner(model, sizes[0], **run) for run in torch_runs]
    artifact_dirs += [None] * len(torch_runs)
    if devices:
        jobs = jobs_for(source.samples(), lambda sample: prompts_for(sample, PROMPT_GRID, max_objects), warm_up_prompt)
        runners += device_runners(artifacts, devices, jobs, device_settings or RemoteSettings(), dict(options))
        artifact_dirs += list(artifacts) * len(devices)

    def layer_drift(index: int, runner, layer_images):
        if not here or index >= len(artifacts):  # PyTorch and device rows: no per-layer tool
            return None
        return targets[index].layer_drift(Path(artifacts[index]), runner, model, layer_images)

    report = measure_drift(
        TorchRunner(model, sizes[0]), runners, source, artifact_dirs=artifact_dirs, max_objects=max_objects,
        measure_memory=measure_memory, checkpoint=str(checkpoint), layer_drift=layer_drift if layers else None,
    )
    if report_dir is not None:
        write_report(report, report_dir)
    if fail_under_mask_iou is not None:
        failing = report.below(fail_under_mask_iou)
        if failing:
            raise FidelityGateError(report, fail_under_mask_iou, failing)
    return report


def _warn_if_calibrated_on(source: ImageSource, artifacts: list[str], manifests: list[Manifest]) -> None:
    for path, manifest in zip(artifacts, manifests):
        calibration = manifest.calibration or {}
        if calibration.get("path") and Path(calibration["path"]).resolve() == source.path.resolve():
            warnings.warn(
                f"{path} was calibrated on {source.path}, the images it is validated on: its drift numbers "
                "will look better than on unseen images", stacklevel=3,
            )
