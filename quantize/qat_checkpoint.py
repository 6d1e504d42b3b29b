"""The QAT checkpoint: a folder that is both a normal model and a record of how it was quantized.

``edge-sam quantize qat`` leaves, in its ``--out`` folder (besides ``log.jsonl`` and the resume
state ``state.pt``):

- ``model.safetensors``: the finetuned fp32 weights, a normal checkpoint
  (``edge_sam.load_model("QATDIR")`` or ``load_model("QATDIR/model.safetensors")``);
- ``qat.json``: the recipe QAT simulated, the quantizer, the teacher it was distilled from (its
  weights' sha256), the data, and per fake quantizer the learned parameters (scale, zero point,
  per-channel for weights, and the running min / max they come from);
- ``recipe.json``: the recipe as a recipe file, when it has per-layer choices (pass it to
  ``edge-sam export --recipe``; registry recipes go by name).

``edge-sam export --checkpoint QATDIR`` reads it back (:func:`read_qat_checkpoint`): the export
uses the QAT weights, defaults to the QAT recipe, and records in its manifest that the weights
come from QAT and whether the target used the learned ranges or re-calibrated its own.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edge_sam.checkpoint import RUN_MODEL_FILE as MODEL_FILE, save_model
from edge_sam.errors import EdgeSamError
from edge_sam.modeling import EfficientSam
from edge_sam.quantize.recipes import QuantRecipe

QAT_FILE = "qat.json"
RECIPE_FILE = "recipe.json"
FORMAT = "edge-sam-qat"
VERSION = 1
QUANTIZER = ("ExecuTorch XNNPACKQuantizer (QAT mode): int8 symmetric weights (per channel when the recipe says so), "
             "int8 per-tensor activations with moving-average ranges (FusedMovingAvgObsFakeQuantize)")


class QatCheckpointError(EdgeSamError, ValueError):
    """A folder that claims to be a QAT checkpoint but cannot be read as one."""


@dataclass(frozen=True)
class QatCheckpoint:
    """A QAT checkpoint folder as an export reads it."""

    path: Path
    record: dict[str, Any]

    @property
    def recipe(self) -> QuantRecipe:
        from edge_sam.quantize.recipe_file import recipe_from_manifest

        return recipe_from_manifest(self.record["recipe"])

    @property
    def img_size(self) -> int:
        return int(self.record["img_size"])

    @property
    def teacher_sha256(self) -> str:
        return self.record["teacher"]["state_dict_sha256"]

    @property
    def parameters(self) -> list[dict[str, Any]]:
        return self.record["parameters"]

    def simulated(self, recipe: QuantRecipe, img_size: int) -> bool:
        """Whether QAT simulated exactly this recipe at this size (so its learned ranges apply)."""
        from edge_sam.quantize.qat_graph import check_recipe_matches

        return img_size == self.img_size and check_recipe_matches(self.record["recipe"], recipe)

    def manifest_note(self, recipe: QuantRecipe | None, img_size: int, learned: bool) -> dict[str, Any]:
        """What an artifact exported from these weights records about them (in the manifest's recipe)."""
        if recipe is None:
            ranges = "none (float export of QAT weights)"
        elif learned:
            ranges = "learned in QAT (qat.json), used as they are"
        elif recipe.scheme == "static":
            ranges = "re-calibrated by this target's own PTQ on the QAT weights"
        else:
            ranges = "computed per run (dynamic recipe)"
        return {
            "weights": "qat",
            "qat_recipe": self.record["recipe"]["name"],
            "recipe_matches_qat": recipe is not None and self.simulated(recipe, img_size),
            "activation_ranges": ranges,
            "teacher_state_dict_sha256": self.teacher_sha256,
            "steps": self.record["steps"],
        }


def read_qat_checkpoint(checkpoint: str | os.PathLike | None) -> QatCheckpoint | None:
    """The QAT checkpoint at ``checkpoint`` (its folder or its model file), or None for any other
    checkpoint; one QatCheckpointError for a qat.json that is there but unreadable."""
    if checkpoint is None:
        return None
    path = Path(checkpoint)
    folder = path if path.is_dir() else path.parent
    if not (folder / QAT_FILE).is_file() or (path.is_file() and path.name != MODEL_FILE):
        return None
    try:
        record = json.loads((folder / QAT_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QatCheckpointError(f"{folder / QAT_FILE} is not readable JSON: {exc}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise QatCheckpointError(f"{folder / QAT_FILE} is not an edge-sam QAT record (no \"format\": \"{FORMAT}\")")
    if record.get("version") != VERSION:
        raise QatCheckpointError(f"{folder / QAT_FILE} has version {record.get('version')}; this edge_sam reads {VERSION}")
    return QatCheckpoint(folder, record)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def write_qat_checkpoint(
    out_dir: Path,
    *,
    trained: EfficientSam,
    teacher: EfficientSam,
    teacher_checkpoint: str | None,
    prepared: torch.fx.GraphModule,
    recipe: QuantRecipe,
    config,
    data: dict[str, Any],
) -> Path:
    """Write model.safetensors (``trained``: the teacher with the QAT encoder weights), qat.json
    (and recipe.json for a per-layer recipe); returns the model file. qat.json is written last:
    a folder with it is complete."""
    from edge_sam.quantize.qat_graph import learned_parameters
    from edge_sam.checkpoint import state_dict_sha256

    saved = save_model(trained, out_dir / MODEL_FILE)
    if recipe.layers:
        from edge_sam.quantize.recipe_file import write_recipe_file

        write_recipe_file(recipe, out_dir / RECIPE_FILE, provenance={"qat": str(out_dir)})
    record = {
        "format": FORMAT,
        "version": VERSION,
        "recipe": recipe.describe(),
        "quantizer": QUANTIZER,
        "img_size": config.img_size,
        "steps": config.steps,
        "teacher": {"checkpoint": teacher_checkpoint, "state_dict_sha256": state_dict_sha256(teacher)},
        "weights": {"file": MODEL_FILE, "state_dict_sha256": state_dict_sha256(trained)},
        "training": {"lr": config.lr, "batch_size": config.batch_size, "seed": config.seed,
                     "embedding_weight": config.embedding_weight, "mask_weight": config.mask_weight,
                     "activation_ranges": {"calibrated_on_first_images": config.calibration_images,
                                           "frozen_after_step": config.freeze_step},
                     "data": data},
        "parameters": learned_parameters(prepared.cpu(), teacher),
    }
    _write_json(out_dir / QAT_FILE, record)
    return saved
