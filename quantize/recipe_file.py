"""Recipe files: a per-layer recipe as JSON, the one format every target's export reads.

``edge-sam quantize mixed`` writes one; ``edge-sam export --recipe FILE`` (or
``get_recipe("FILE.json")``) reads it back for any target::

    {
      "format": "edge-sam-recipe", "version": 1,
      "name": "mixed-static-conv-linear",
      "summary": "static-conv-linear with 7 of 50 layers float ...",
      "base": "static-conv-linear",          # a registry recipe: op classes, calibration, ...
      "scheme": "static",                    # the base's scheme, stated for the reader
      "layers": {                            # model module name -> "static" | "a16" | "float"
        "image_encoder.patch_embed": "static",
        "image_encoder.blocks.0.attn.qkv": "float",
        ...
      },
      "provenance": {...}                    # how it was chosen (budget, images, measured fidelity)
    }

Layer names are checked against the model at export (:func:`edge_sam.quantize.layers.check_layers`);
here the file's own consistency is checked, each problem one :class:`RecipeError` line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edge_sam.quantize.recipes import FLOAT, RECIPE_FILE_SUFFIX, RECIPES, QuantRecipe, RecipeError, recipe_names

FORMAT = "edge-sam-recipe"
VERSION = 1
_KEYS = {"format", "version", "name", "summary", "base", "scheme", "layers", "provenance"}


def recipe_to_dict(recipe: QuantRecipe, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """The file content of a per-layer recipe."""
    if recipe.base is None:
        raise RecipeError(f"recipe '{recipe.name}' has no base recipe: only per-layer recipes go into recipe files")
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": recipe.name,
        "summary": recipe.summary,
        "base": recipe.base,
        "scheme": recipe.scheme,
        "layers": dict(recipe.layers),
        "provenance": provenance or {},
    }


def recipe_from_dict(data: Any, where: str) -> QuantRecipe:
    """A recipe from file content; ``where`` names the source in error messages."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RecipeError(f"{where} is not an edge-sam recipe file (no \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise RecipeError(f"{where}: recipe file version {data.get('version')} (this edge_sam reads version {VERSION})")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(unknown)} (a recipe file has {', '.join(sorted(_KEYS))})")
    base_name = data.get("base")
    if base_name not in RECIPES:
        raise RecipeError(f"{where}: base recipe '{base_name}' is not in the registry (known: {', '.join(sorted(RECIPES))})")
    base = RECIPES[base_name]
    if data.get("scheme", base.scheme) != base.scheme:
        raise RecipeError(f"{where}: scheme '{data['scheme']}' differs from its base '{base_name}' ({base.scheme})")
    layers = data.get("layers")
    if not isinstance(layers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in layers.items()):
        raise RecipeError(f"{where}: \"layers\" must map layer names to strings (\"{base.scheme}\", \"{FLOAT}\", ...)")
    name = data.get("name") or Path(where).stem
    try:
        return base.with_layers(layers, name=str(name), summary=data.get("summary"))
    except RecipeError as exc:
        raise RecipeError(f"{where}: {exc}") from None


def load_recipe_file(path: str | os.PathLike) -> tuple[QuantRecipe, dict[str, Any]]:
    """The recipe in a recipe file and its provenance (how ``quantize mixed`` chose it: budget,
    images, ranking; empty for a hand-written file), or one RecipeError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path} is not valid JSON: {exc}") from None
    recipe = recipe_from_dict(data, str(path))
    provenance = data.get("provenance")
    return recipe, provenance if isinstance(provenance, dict) else {}


def read_recipe_file(path: str | os.PathLike) -> QuantRecipe:
    """The recipe in a recipe file, or one RecipeError saying what is wrong with it."""
    return load_recipe_file(path)[0]


def write_recipe_file(recipe: QuantRecipe, path: str | os.PathLike, provenance: dict[str, Any] | None = None) -> Path:
    """Write the recipe file whole or not at all (a temp file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(recipe_to_dict(recipe, provenance), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def recipe_from_manifest(record: dict[str, Any]) -> QuantRecipe:
    """The recipe an artifact's manifest records (``QuantRecipe.describe()``), rebuilt: a
    registry recipe by name, a per-layer one from its base and layers."""
    if record.get("layers"):
        base = RECIPES.get(record.get("base") or "")
        if base is None:
            raise RecipeError(f"manifest recipe '{record.get('name')}' refines '{record.get('base')}', which is not in the registry")
        return base.with_layers(record["layers"], name=record["name"], summary=record.get("summary"))
    if record.get("name") not in RECIPES:
        raise RecipeError(f"manifest recipe '{record.get('name')}' is not in the registry")
    return RECIPES[record["name"]]


def get_recipe(name_or_file: str | Path) -> QuantRecipe:
    """A registry recipe by name, or the recipe in a recipe file (``*.json``, see
    below); anything else is one RecipeError listing the names that exist."""
    text = str(name_or_file)
    if text in RECIPES:
        return RECIPES[text]
    if text.endswith(RECIPE_FILE_SUFFIX) or Path(text).is_file():
        return read_recipe_file(text)
    raise RecipeError(f"unknown quantization recipe '{text}' (known: {', '.join(recipe_names())}; or a recipe file "
                      f"*{RECIPE_FILE_SUFFIX} from edge-sam quantize mixed)")
