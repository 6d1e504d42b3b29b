"""What ``deploy`` will build: one job per (target, float precision) it can export and run here,
the INT8 ladder each target climbs, one line for each thing it skips, and whether an artifact
already in the output folder can be reused."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from edge_sam.errors import EdgeSamError, MissingToolchainError
from edge_sam.quantize.ladder import Rung, custom_rung, ladder_for
from edge_sam.quantize.qat_checkpoint import read_qat_checkpoint
from edge_sam.quantize.recipes import QuantRecipe, RecipeError, check_schemes

from edge_sam.image_sources import ImageSource
from edge_sam.targets.core.manifest import ArtifactError, toolchain_versions
from edge_sam.targets.core.registry import get_target, target_names
from edge_sam.targets.core.target import Target, resolve_recipe, verify_artifact


@dataclass(frozen=True)
class Job:
    """One artifact to build or reuse: ``OUT/<target>-<precision>[-<rung>]``."""

    target: str
    precision: str
    rung: str = ""  # the INT8 ladder rung ("" for fp32 / fp16, and for int8 with a fixed recipe)

    @property
    def name(self) -> str:
        return f"{self.target}-{self.precision}" + (f"-{self.rung}" if self.rung else "")


@dataclass(frozen=True)
class Plan:
    jobs: tuple[Job, ...]  # fp32 / fp16 artifacts
    ladders: dict[str, tuple[Rung, ...]]  # target -> the INT8 rungs it climbs, in order
    skipped: tuple[str, ...]  # "tflite int8: why", one per (target, precision) left out
    targets: tuple[str, ...]  # the targets with at least one job or rung: each must ship something


def parse_list(text: str | None, known: tuple[str, ...] | list[str], what: str) -> list[str] | None:
    """``"a,b"`` -> ["a", "b"], or one error naming the unknown entries and the known ones."""
    if text is None:
        return None
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in known]
    if unknown or not items:
        raise EdgeSamError(f"unknown {what} {', '.join(unknown) or repr(text)} (choose from {', '.join(known)})")
    return list(dict.fromkeys(items))


def int8_recipe(recipe: str | None, checkpoint: str | os.PathLike) -> QuantRecipe | None:
    """The one recipe this run's int8 artifacts get when it is fixed: the one named (registry name
    or recipe file) or a QAT checkpoint's own; None when each target climbs its INT8 ladder."""
    if recipe is None:
        qat = read_qat_checkpoint(checkpoint)
        return qat.recipe if qat is not None else None
    return resolve_recipe("int8", recipe)


def plan_jobs(targets: list[str] | None, precisions: list[str], recipe: QuantRecipe | None, int8: str = "any") -> Plan:
    """Jobs for every requested (target, precision) this machine can export and validate; for
    int8, the rungs each target climbs (``int8``: ``any``, ``full-integer`` or one rung's name),
    or the one ``recipe`` when it is fixed.

    ``targets=None`` means every registered target but those deployed only when named
    (:attr:`Target.deploy_only_when_named`): one whose toolchain is not installed is skipped with
    the line saying which extra installs it. A target named explicitly must be
    installed and must take the INT8 asked for: either is one error before any work. Otherwise
    a precision, recipe or rung a target does not take is skipped with its reason.
    """
    explicit = targets is not None
    jobs: list[Job] = []
    ladders: dict[str, tuple[Rung, ...]] = {}
    skipped: list[str] = []
    for name in targets or target_names():
        target = get_target(name)
        if not explicit and target.deploy_only_when_named:
            skipped.append(f"{name}: {target.deploy_only_when_named} (name it with --targets to deploy it)")
            continue
        try:
            target.check_toolchain("export")
            target.check_toolchain("runtime")
        except MissingToolchainError as exc:
            if explicit:
                raise EdgeSamError(f"target {name} cannot be built here: {exc}") from None
            skipped.append(f"{name}: {exc}")
            continue
        for precision in precisions:
            reason = refusal(target, precision, recipe)
            if reason is None and precision == "int8":
                rungs = (custom_rung(recipe),) if recipe is not None else ladder_for(target.int8_rungs, int8)
                if rungs:
                    ladders[name] = rungs
                else:
                    reason = f"target {name} has no INT8 rung for --int8 {int8} (its rungs: {', '.join(target.int8_rungs)})"
                    if explicit:
                        raise EdgeSamError(reason)
            if reason:
                skipped.append(f"{name} {precision}: {reason}")
            elif precision != "int8":
                jobs.append(Job(name, precision))
    if not jobs and not ladders:
        raise EdgeSamError("nothing to build: " + ("; ".join(skipped) or "no target given"))
    names = dict.fromkeys([job.target for job in jobs] + list(ladders))
    return Plan(tuple(jobs), ladders, tuple(skipped), tuple(sorted(names, key=list(targets or target_names()).index)))


def refusal(target: Target, precision: str, recipe: QuantRecipe | None) -> str | None:
    """Why ``target`` cannot export ``precision`` (with ``recipe`` for int8, when fixed), or None."""
    if precision not in target.precisions:
        return f"target {target.name} exports {', '.join(target.precisions)} only"
    if precision == "int8" and recipe is not None:
        try:
            check_schemes(recipe, target.name, target.schemes, target.activation_bits)
        except RecipeError as exc:
            return str(exc)
    return None


def expected_recipe(precision: str, recipe: QuantRecipe | None) -> dict | None:
    """The recipe record a manifest of this job holds (JSON round-tripped, as read back)."""
    return json.loads(json.dumps(recipe.describe())) if precision == "int8" else None


def stale_reason(
    artifact_dir: str | os.PathLike,
    job: Job,
    recipe: QuantRecipe,
    weights_sha256: str,
    img_size: int,
    calibration: ImageSource,
) -> str | None:
    """None when the artifact in ``artifact_dir`` is what this job would build (same weights,
    precision, recipe, size, calibration images and toolchain versions, files intact); else why
    it has to be built."""
    artifact_dir = Path(artifact_dir)
    if not artifact_dir.exists():
        return "new"
    try:
        manifest = verify_artifact(artifact_dir, expected_target=job.target)
    except ArtifactError as exc:
        return f"rebuilt: {exc}"
    target = get_target(job.target)
    recipe_record = expected_recipe(job.precision, recipe)
    checks = (
        (manifest.source_checkpoint.get("state_dict_sha256") == weights_sha256, "the checkpoint changed"),
        (manifest.precision == job.precision and manifest.interface == "deploy", "precision or interface differs"),
        (manifest.img_size == img_size, f"img_size {manifest.img_size} differs from {img_size}"),
        (manifest.recipe == recipe_record, "the recipe changed"),
        (not _calibrated(manifest.recipe) or (manifest.calibration or {}).get("ids_sha256")
         == calibration.describe()["ids_sha256"], "the calibration images changed"),
        (manifest.toolchain == toolchain_versions("edge-sam", "torch", *target.distributions),
         "a toolchain version changed"),
    )
    for ok, reason in checks:
        if not ok:
            return f"rebuilt: {reason}"
    return None


def _calibrated(recipe_record: dict | None) -> bool:
    return bool(recipe_record) and recipe_record.get("scheme") == "static"

