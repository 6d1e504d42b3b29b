"""What a device needs to run a .tflite artifact: the LiteRT interpreter and nothing of the
converter.

``ai_edge_litert.interpreter`` is used where installed (XNNPACK delegate by default), else
``tflite_runtime.interpreter`` (the same API) on a device that has only that. Every graph is
called with float32 arrays: int8 inputs and outputs are (de)quantized with the scale and zero
point the file itself records.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge_sam.errors import EdgeSamError, require

from edge_sam.targets.core.manifest import ArtifactError, GraphSpec, check_io_names, first_line

EXTRA = "tflite"
INTERPRETER = "ai_edge_litert.interpreter"
_STANDALONE_INTERPRETER = "tflite_runtime.interpreter"
SIGNATURE = "serving_default"  # the signature every edge_sam .tflite is called through
DELEGATES = ("xnnpack", "none")  # "none": LiteRT's reference kernels (slow; for debugging numerics)


def interpreter_module():
    """``ai_edge_litert.interpreter``, or ``tflite_runtime.interpreter`` (same API) where only that exists."""
    for name in (INTERPRETER, _STANDALONE_INTERPRETER):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return require(INTERPRETER, EXTRA)  # raises the one-line "pip install" error


def open_interpreter(source: Path | bytes, threads: int | None = None, delegate: str = "xnnpack"):
    """An allocated LiteRT interpreter, or one ArtifactError naming the file that LiteRT refuses."""
    if delegate not in DELEGATES:
        raise EdgeSamError(f"unknown LiteRT delegate '{delegate}' (choose from {', '.join(DELEGATES)})")
    module = interpreter_module()
    options: dict[str, Any] = {"num_threads": threads or os.cpu_count() or 1}
    if isinstance(source, Path):
        options["model_path"] = str(source)
    else:
        options["model_content"] = source
    if delegate == "none":
        options["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interpreter = module.Interpreter(**options)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        name = source if isinstance(source, Path) else "the model"
        raise ArtifactError(f"LiteRT cannot load {name}: {first_line(exc)}") from None
    return interpreter


def quantize_input(array: np.ndarray, detail: dict) -> np.ndarray:
    """float32 -> what the input takes: as is, or int8/uint8/int16 with the input's scale and zero point."""
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return np.ascontiguousarray(array, dtype=np.float32)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(array / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize_output(array: np.ndarray, quantization: tuple[float, int]) -> np.ndarray:
    """int8/uint8/int16 tensor values -> float32 (per-tensor scale and zero point); floats pass through."""
    if array.dtype in (np.int8, np.uint8, np.int16):
        scale, zero_point = quantization
        return (array.astype(np.float32) - zero_point) * np.float32(scale)
    return array.astype(np.float32, copy=False)


class SignatureGraph:
    """One .tflite behind a float32-in, float32-out call (its outputs in the manifest's order)."""

    def __init__(self, path: Path, spec: GraphSpec, threads: int | None, delegate: str) -> None:
        interpreter = open_interpreter(path, threads, delegate)
        try:
            self.signature = interpreter.get_signature_runner(SIGNATURE)
        except ValueError:
            raise ArtifactError(f"{path} has no '{SIGNATURE}' signature") from None
        self.inputs, self.outputs = self.signature.get_input_details(), self.signature.get_output_details()
        self.input_names = [t.name for t in spec.inputs]
        self.output_names = [t.name for t in spec.outputs]
        check_io_names(path, spec, list(self.inputs), list(self.outputs), ordered=False)  # a signature binds by name

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        feeds = {name: quantize_input(array, self.inputs[name]) for name, array in zip(self.input_names, arrays)}
        results = self.signature(**feeds)
        return [dequantize_output(results[name], self.outputs[name]["quantization"]) for name in self.output_names]
