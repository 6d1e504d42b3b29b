"""What every target implements: export to an artifact folder, load it back as a runner.

A runtime package subclasses :class:`Target` (write the graph files, build a runner from a
verified manifest) and :class:`~edge_sam.targets.core.artifact_runner.DeployFormRunner` (run the encoder
and decoder graphs on already prepared arrays). Staging the artifact in a temp directory,
hashing, the manifest and resolving the precision and recipe live here, once.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from edge_sam.checkpoint import resolve_checkpoint, state_dict_sha256
from edge_sam.errors import EdgeSamError, require
from edge_sam.staging import staged_dir
from edge_sam.modeling import EfficientSam
from edge_sam.quantize.layers import check_layers
from edge_sam.quantize.qat_checkpoint import QatCheckpoint, read_qat_checkpoint
from edge_sam.quantize.recipes import DEFAULT_RECIPE, QuantRecipe, RecipeError, check_schemes
from edge_sam.quantize.recipe_file import get_recipe

from edge_sam.image_sources import ImageSource
from edge_sam.graph_contract import preprocessing_contract, prompt_contract
from edge_sam.targets.core.toolchain_log import export_log
from edge_sam.runner import Runner
from edge_sam.targets.core.manifest import (
    ArtifactError,
    GraphSpec,
    Manifest,
    read_manifest,
    sha256_file,
    toolchain_versions,
    verify_files,
    write_manifest,
)

if TYPE_CHECKING:
    from edge_sam.targets.core.layer_drift import LayerRow

# Every precision some target exports (bf16: the matrix units of CPUs with AVX512-BF16 or AMX, via AOTInductor).
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
INTERFACES = ("deploy", "official")


def source_fingerprint(model: EfficientSam, checkpoint: str | os.PathLike | None) -> dict[str, Any]:
    """sha256 of the checkpoint file (when there is one) and of the weights as loaded."""
    record: dict[str, Any] = {"state_dict_sha256": state_dict_sha256(model)}
    if checkpoint is not None:
        path = resolve_checkpoint(checkpoint)
        record.update(name=str(checkpoint), file=path.name, sha256=sha256_file(path))
        qat = read_qat_checkpoint(checkpoint)
        if qat is not None:  # the fp32 model the QAT weights were distilled from, also a valid reference
            record["qat_teacher_state_dict_sha256"] = qat.teacher_sha256
    return record


def check_source(manifest: Manifest, model: EfficientSam, artifact_dir: str | os.PathLike) -> None:
    """Refuse to compare an artifact against a model it was not exported from (or, for an export
    of QAT weights, the fp32 model they were distilled from)."""
    recorded = manifest.source_checkpoint.get("state_dict_sha256")
    actual = state_dict_sha256(model)
    if actual not in (recorded, manifest.source_checkpoint.get("qat_teacher_state_dict_sha256")):
        raise ArtifactError(
            f"{artifact_dir} was exported from different weights (state dict sha256 {str(recorded)[:12]}... "
            f"vs {actual[:12]}... for the given checkpoint)"
        )


def resolve_recipe(precision: str, recipe: str | QuantRecipe | None) -> QuantRecipe | None:
    """Float precisions take no recipe; int8 takes a registry name, a recipe file, or the default static one."""
    if precision not in PRECISIONS:
        raise EdgeSamError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    if precision != "int8":
        if recipe is not None:
            raise RecipeError(f"a quantization recipe applies to int8 only, not {precision}")
        return None
    if isinstance(recipe, QuantRecipe):
        return recipe
    return get_recipe(recipe or DEFAULT_RECIPE)


@dataclass(frozen=True)
class TargetOption:
    """One option a target takes at export or at load time. The CLI turns every declared option
    into a flag (``--<name with dashes>``), so a new runtime's options need no change in apps/."""

    name: str  # the keyword argument of export() / load(); the flag is --name-with-dashes
    help: str
    kind: type = str  # str, int, float, or bool for a switch
    choices: tuple[str, ...] | None = None
    separator: str | None = None  # "," for a comma-separated list of values

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, text: str) -> Any:
        """A command-line value as the keyword argument takes it."""
        if self.separator is None:
            return self.kind(text)
        return [self.kind(part) for part in text.split(self.separator) if part]


def check_options(target: str, stage: str, given: dict[str, Any], declared: tuple[TargetOption, ...]) -> None:
    """One error naming every option ``target`` does not declare for ``stage`` (export or runtime)."""
    unknown = sorted(set(given) - {option.name for option in declared})
    if unknown:
        known = ", ".join(option.name for option in declared) or "none"
        raise EdgeSamError(f"target {target} takes no {stage} option {', '.join(unknown)} (its {stage} options: {known})")


@dataclass(frozen=True)
class ExportRequest:
    """The validated options of one export, handed to the target's graph writer."""

    precision: str
    recipe: QuantRecipe | None
    img_size: int
    interface: str
    calibration: ImageSource | None
    # Set when the encoder takes a QAT checkpoint's learned ranges instead of calibrating.
    qat: QatCheckpoint | None = None


class Target(ABC):
    """One runtime: exports artifacts and loads them back as runners."""

    name: ClassVar[str]
    backend: ClassVar[str]
    extra: ClassVar[str]  # the pip extra that installs the toolchain
    distributions: ClassVar[tuple[str, ...]]  # recorded in the manifest's toolchain versions
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "int8")
    # The recipe schemes its int8 export takes (edge_sam.quantize.recipes.SCHEMES); others are refused.
    schemes: ClassVar[tuple[str, ...]] = ()
    # The activation widths its static int8 export takes (QuantRecipe.activation_bits).
    activation_bits: ClassVar[tuple[int, ...]] = (8,)
    # The INT8 ladder rungs deploy climbs for it (edge_sam.quantize.ladder.RUNG_NAMES), in ladder order.
    int8_rungs: ClassVar[tuple[str, ...]] = ()
    # Whether latency on this host stands for the devices the target ships to (a laptop or server
    # CPU: yes; a phone's CPU, NPU or Neural Engine: no). Deploy ranks by host latency only where it does.
    host_latency_stands_for_devices: ClassVar[bool] = False
    # Where it does not: the compute precisions its devices run fastest, best first (deploy ranks by
    # this, then by size; an int8 artifact with weight-only compression computes in float).
    device_precisions: ClassVar[tuple[str, ...]] = ("int8", "fp16", "fp32")
    # Why a plain `edge-sam deploy` leaves this target out (it is deployed when named with --targets);
    # empty: deployed by default.
    deploy_only_when_named: ClassVar[str] = ""
    # Whose profile int8_layer_savings reads ("onnxruntime's profile"); empty where it has none.
    layer_time_source: ClassVar[str] = ""
    interfaces: ClassVar[tuple[str, ...]] = ("deploy",)
    # What the target takes, declared so the CLI and checks are built from it (see TargetOption).
    export_options: ClassVar[tuple[TargetOption, ...]] = ()
    runtime_options: ClassVar[tuple[TargetOption, ...]] = ()
    # Python modules export imports (converters, quantizers) and what loading an artifact needs
    # (the runtime alone: a device needs no converter).
    export_modules: ClassVar[tuple[str, ...]] = ()
    runtime_modules: ClassVar[tuple[str, ...]] = ()

    def require(self, module: str):
        """Import a toolchain module, or raise one line naming ``pip install 'edge-sam[<extra>]'``."""
        return require(module, self.extra)

    # -- export -------------------------------------------------------------------------------
    def export(
        self,
        model: EfficientSam,
        precision: str,
        recipe: str | QuantRecipe | None,
        out_dir: str | os.PathLike,
        calibration: ImageSource | None = None,
        img_size: int | None = None,
        *,
        interface: str = "deploy",
        checkpoint: str | os.PathLike | None = None,
        overwrite: bool = False,
        calibration_images: int | None = None,
        **opts: Any,
    ) -> Path:
        """Write an artifact directory (graph files + manifest.json) and return its path.

        ``checkpoint`` (the file the model came from) is hashed into the manifest;
        static recipes calibrate on the first ``calibration_images`` of ``calibration``
        (default: the recipe's count).
        """
        if precision not in self.precisions:
            raise EdgeSamError(f"target {self.name} exports {', '.join(self.precisions)}, not {precision}")
        if interface not in self.interfaces:
            raise EdgeSamError(f"target {self.name} has interfaces {', '.join(self.interfaces)}, not {interface}")
        qat = read_qat_checkpoint(checkpoint)
        if qat is not None and precision == "int8" and recipe is None:
            recipe = qat.recipe  # a QAT checkpoint exports the recipe it was trained for
        resolved = resolve_recipe(precision, recipe)
        if resolved is not None:
            check_schemes(resolved, self.name, self.schemes, self.activation_bits)
            check_layers(resolved, model)
        size = img_size or model.image_encoder.img_size
        learned = qat is not None and resolved is not None and resolved.needs_calibration and qat.simulated(
            resolved, size) and self.takes_learned_ranges(resolved)
        if resolved is not None and resolved.needs_calibration and calibration is None and not learned:
            raise EdgeSamError(f"int8 recipe '{resolved.name}' is static: it needs calibration images (--calibration DIR)")
        if size % model.image_encoder.patch_size:
            raise EdgeSamError(f"img_size {size} is not a multiple of the patch size {model.image_encoder.patch_size}")
        if resolved is not None and resolved.needs_calibration and not learned:
            calibration = calibration.limited(calibration_images or resolved.calibration_images)
        else:
            calibration = None
        check_options(self.name, "export", opts, self.export_options)
        request = ExportRequest(precision, resolved, size, interface, calibration, qat if learned else None)
        opts = self.resolve_export_options(request, opts)
        self.check_toolchain("export")
        fingerprint = source_fingerprint(model, checkpoint)
        # What the converters print goes to <artifact>/toolchain.log (not in the manifest: a diagnostic).
        with staged_dir(out_dir, overwrite) as tmp, export_log(self.name, out_dir, tmp):
            graphs = self.write_graphs(model.eval(), request, tmp, **opts)
            manifest = Manifest(
                target=self.name,
                backend=self.backend,
                interface=interface,
                precision=precision,
                recipe=_recipe_record(resolved, qat, size, learned),
                img_size=size,
                model_config=dataclasses.replace(model.config, img_size=size).to_dict(),
                preprocessing=preprocessing_contract(in_graph=interface == "official"),
                prompts=prompt_contract(model, in_graph=interface == "official"),
                graphs=tuple(graphs),
                source_checkpoint=fingerprint,
                toolchain=toolchain_versions("edge-sam", "torch", *self.distributions),
                calibration=request.calibration.describe() if request.calibration else None,
                export_options=opts,
            )
            write_manifest(tmp, manifest)
        return Path(out_dir)

    def takes_learned_ranges(self, recipe: QuantRecipe) -> bool:
        """Whether this target's export of ``recipe`` can use a QAT checkpoint's learned activation
        ranges as they are (its quantizer is the one QAT simulated); others re-calibrate."""
        return False

    def qat_quantizer(self, recipe: QuantRecipe) -> Any:
        """The PT2E quantizer, with fake-quantize modules, that quantization-aware training inserts
        for ``recipe`` (:mod:`edge_sam.quantize.qat_graph`): the one whose export takes the
        learned ranges as they are. None where this target has none."""
        return None

    def resolve_export_options(self, request: ExportRequest, opts: dict[str, Any]) -> dict[str, Any]:
        """The declared export options as this export applies them, defaults a target fills in
        included (the manifest records them); one EdgeSamError for an option ``request`` cannot take."""
        return dict(opts)

    def check_toolchain(self, stage: str = "export") -> None:
        """Import the modules ``stage`` ("export" or "runtime") needs up front, so a missing one
        fails in one line before any work."""
        modules = self.export_modules if stage == "export" else self.runtime_modules
        for module in modules:
            self.require(module)

    @abstractmethod
    def write_graphs(self, model: EfficientSam, request: ExportRequest, out_dir: Path, **opts: Any) -> list[GraphSpec]:
        """Write the encoder and decoder files into ``out_dir`` and describe their I/O."""

    # -- load ---------------------------------------------------------------------------------
    def load(self, artifact_dir: str | os.PathLike, *, label: str | None = None, **runtime_opts: Any) -> Runner:
        """Verify an artifact against its manifest and return a runner for it (``label`` names it
        in reports; the default says target, interface or delegate, precision and recipe)."""
        manifest = verify_artifact(artifact_dir, expected_target=self.name)
        check_options(self.name, "runtime", runtime_opts, self.runtime_options)
        self.check_toolchain("runtime")
        return self.make_runner(Path(artifact_dir), manifest, label=label, **runtime_opts)

    @abstractmethod
    def make_runner(self, artifact_dir: Path, manifest: Manifest, label: str | None = None, **runtime_opts: Any) -> Runner:
        """A runner for a verified artifact, taking the declared runtime options."""

    def layer_drift(self, artifact_dir: str | os.PathLike, runner: Runner, model: EfficientSam,
                    images: list[np.ndarray]) -> list[LayerRow] | None:
        """Per-layer SQNR of the artifact's encoder against an fp32 export of ``model``
        (:mod:`edge_sam.targets.core.layer_drift` rows); None where the target has no per-layer
        tool or the artifact is fp32 already."""
        if runner.manifest.precision == "fp32":
            return None
        if state_dict_sha256(model) != runner.manifest.source_checkpoint.get("state_dict_sha256"):
            # An export of QAT weights compared with the fp32 model they were distilled from: the
            # per-layer tools re-quantize the given model, which is not the artifact's.
            print(f"per-layer drift skipped for {artifact_dir}: it holds QAT weights; validate it with "
                  f"--checkpoint <the QAT checkpoint> for per-layer rows", file=sys.stderr)
            return None
        return self.compare_layers(Path(artifact_dir), runner, model, images)

    def profiled_layer_ms(self, artifact_dir: Path, layers: Sequence[str], image: np.ndarray) -> dict[str, float] | None:
        """Milliseconds per run of each encoder layer's operators in the artifact on ``image``, from
        the runtime's own profile; None where the target has none that names layers."""
        return None

    def int8_layer_savings(self, fp32_dir: Path, int8_dir: Path, layers: Sequence[str],
                           image: np.ndarray) -> dict[str, float] | None:
        """Per encoder layer, the milliseconds a run saves with that layer INT8 on this target's
        runtime (fp32 time minus INT8 time; negative where INT8 is slower), from the runtime's own
        profile of the fp32 and the full static INT8 artifact; None where the target has none that
        names layers (the mixed search then counts FLOPs). :attr:`layer_time_source` says whose."""
        fp32 = self.profiled_layer_ms(fp32_dir, layers, image)
        int8 = self.profiled_layer_ms(int8_dir, layers, image) if fp32 is not None else None
        if fp32 is None or int8 is None:
            return None
        return {layer: fp32.get(layer, 0.0) - int8.get(layer, 0.0) for layer in layers}

    def compare_layers(self, artifact_dir: Path, runner: Runner, model: EfficientSam,
                       images: list[np.ndarray]) -> list[LayerRow] | None:
        """The target's per-layer tool for a non-fp32 artifact (its runtime adapter of
        :func:`edge_sam.targets.core.layer_drift.layer_rows`); None where it has none."""
        return None


def _recipe_record(recipe: QuantRecipe | None, qat: QatCheckpoint | None, img_size: int, learned: bool):
    """The manifest's recipe: the recipe's own description, plus for QAT weights where they and
    their activation ranges came from (``qat``)."""
    if recipe is None:
        return None
    record = recipe.describe()
    if qat is not None:
        record["qat"] = qat.manifest_note(recipe, img_size, learned)
    return record


def verify_artifact(artifact_dir: str | os.PathLike, expected_target: str | None = None) -> Manifest:
    """Read the manifest, check it belongs to this target and this edge_sam, and check every hash."""
    manifest = read_manifest(artifact_dir)
    if expected_target is not None and manifest.target != expected_target:
        raise ArtifactError(f"{artifact_dir} is a '{manifest.target}' artifact, not '{expected_target}'")
    expected = preprocessing_contract(manifest.preprocessing.get("in_graph", False))
    for key in ("mean", "std", "input_range", "color"):
        if manifest.preprocessing.get(key) != expected[key]:
            raise ArtifactError(
                f"{artifact_dir}: manifest preprocessing {key}={manifest.preprocessing.get(key)} "
                f"differs from this edge_sam's {expected[key]}"
            )
    verify_files(artifact_dir, manifest)
    return manifest
