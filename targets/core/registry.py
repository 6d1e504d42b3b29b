"""Targets by name. Adding a runtime is one line here plus its module.

Entries are import paths, so listing the targets (``edge-sam export --help``) imports no
toolchain; a target's own module imports its toolchain lazily, too.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from edge_sam.errors import EdgeSamError

from edge_sam.runner import Runner
from edge_sam.targets.core.target import Target
from edge_sam.targets.core.manifest import read_manifest

TARGETS: dict[str, str] = {
    "aoti": "edge_sam.targets.aoti.target:AotiTarget",
    "coreml": "edge_sam.targets.coreml.target:CoreMLTarget",
    "executorch": "edge_sam.targets.executorch.target:ExecuTorchTarget",
    "onnx": "edge_sam.targets.onnx.target:OnnxTarget",
    "tflite": "edge_sam.targets.tflite.target:TfliteTarget",
}


def target_names() -> list[str]:
    return sorted(TARGETS)


def get_target(name: str) -> Target:
    """The target called ``name``, or one error listing the known ones."""
    try:
        module_name, class_name = TARGETS[name].split(":")
    except KeyError:
        raise EdgeSamError(f"unknown target '{name}' (known: {', '.join(target_names())})") from None
    return getattr(importlib.import_module(module_name), class_name)()


def load_runner(artifact_dir: str | os.PathLike, **runtime_opts: Any) -> Runner:
    """A runner for any artifact: its manifest names the target that loads it."""
    return get_target(read_manifest(artifact_dir).target).load(artifact_dir, **runtime_opts)


def threads_option(target_name: str, threads: int | None) -> dict[str, int]:
    """``{"threads": threads}`` where the target declares a ``threads`` runtime option, else
    nothing: benchmarks pin every runtime to the same thread count, and a target without the
    option (Core ML's host executor) would refuse it."""
    declared = {option.name for option in get_target(target_name).runtime_options}
    return {"threads": threads} if threads and "threads" in declared else {}
