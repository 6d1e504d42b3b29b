"""Run a saved Core ML ML program on the host, with NumPy, where Core ML itself is not available.

Core ML runs only on Apple OSes, so on Linux CI nothing would otherwise execute the exported
``.mlpackage``. This interpreter walks the program the package holds (parsed by
:mod:`.coreml_program`) op by op with the implementations in :mod:`.coreml_ops` and
:mod:`.coreml_quant_ops`, and rounds every op's result to the dtype the program declares: an
fp16 program is executed with fp16 storage between ops, compressed weights are decompressed
from the package's own int8 / lookup-table data, and quantize/dequantize pairs round
activations as the program says. What it measures is the drift the *program* carries
(conversion, fp16, weight compression, activation quantization); what it cannot measure is a
device's kernels (ANE/GPU accumulation order and precision). Reports label its results
"CoreML program executed on the host (<dtype> semantics), not on a device".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_sam.errors import EdgeSamError

from edge_sam.targets.coreml.host_executor import quant_ops as coreml_quant_ops  # noqa: F401  (registers the compressed-weight and quantization ops)
from edge_sam.targets.coreml.host_executor.ops import OPS, OpArgumentError
from edge_sam.targets.coreml.program import MilProgram, Operation, Ref, load_program


class ExecutorError(EdgeSamError, ValueError):
    """The host executor cannot run this program, or a run went wrong; the message names the op."""


class UnsupportedOpError(ExecutorError):
    """The program uses an op the host executor has no implementation for."""


def compute_dtype(program: MilProgram) -> str:
    """"fp16" when any op of the program stores fp16 results, else "fp32"."""
    for operation in program.operations:
        if any(out.dtype == np.float16 for out in operation.outputs):
            return "fp16"
    return "fp32"


def host_label(program: MilProgram) -> str:
    """How reports must describe results of this executor."""
    return f"CoreML program executed on the host ({compute_dtype(program)} semantics), not on a device"


class MilExecutor:
    """Executes the ``main`` function of one ML program.

    Construction checks every op is implemented (one error listing the missing ones), folds the
    compile-time ``constexpr_*`` ops into constants, and plans when each intermediate value can be
    freed, so a 1024-px encoder's attention maps do not all stay alive at once.
    """

    def __init__(self, program: MilProgram) -> None:
        missing = sorted(program.op_types - OPS.keys())
        if missing:
            raise UnsupportedOpError(
                f"{program.path.name} uses Core ML op(s) the host executor does not implement: {', '.join(missing)}"
            )
        self.program = program
        self.constants: dict[str, Any] = dict(program.constants)
        self.operations: list[Operation] = []
        for operation in program.operations:
            if operation.type.startswith("constexpr_"):
                self._execute(operation, self.constants)
            else:
                self.operations.append(operation)
        # Ops compute in float32 anyway: widen fp16 constants (weights) once, not on every run.
        self.constants = {name: _widen(value) for name, value in self.constants.items()}
        self._last_use = self._plan_frees()

    @classmethod
    def from_package(cls, package: str | Path) -> "MilExecutor":
        return cls(load_program(package))

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.program.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.program.outputs]

    def _plan_frees(self) -> dict[int, list[str]]:
        """For each op index, the non-constant values nothing after it reads."""
        last: dict[str, int] = {}
        for index, operation in enumerate(self.operations):
            for ref in operation.operands():
                if ref.name not in self.constants:
                    last[ref.name] = index
        keep = set(self.output_names)
        frees: dict[int, list[str]] = {}
        for name, index in last.items():
            if name not in keep:
                frees.setdefault(index, []).append(name)
        return frees

    def run(
        self, feeds: Mapping[str, np.ndarray], observe: Callable[[str, np.ndarray], None] | None = None
    ) -> dict[str, np.ndarray]:
        """Feed the model inputs by name; returns the outputs by name (in the program's dtypes).

        ``observe(name, value)`` sees every op's output as it is computed (the per-layer drift
        reads them before they are freed)."""
        values: dict[str, Any] = {}
        for spec in self.program.inputs:
            if spec.name not in feeds:
                raise ExecutorError(f"{self.program.path.name}: input '{spec.name}' not fed (inputs: {', '.join(self.input_names)})")
            array = np.asarray(feeds[spec.name])
            if tuple(array.shape) != spec.shape:
                raise ExecutorError(f"{self.program.path.name}: input '{spec.name}' has shape {tuple(array.shape)}, expected {spec.shape}")
            values[spec.name] = array.astype(spec.dtype, copy=False)
        scope = _Scope(self.constants, values)
        for index, operation in enumerate(self.operations):
            self._execute(operation, scope)
            if observe is not None:
                for info in operation.outputs:
                    observe(info.name, values[info.name])
            for name in self._last_use.get(index, ()):
                values.pop(name, None)
        return {name: values[name] for name in self.output_names}

    def _execute(self, operation: Operation, scope) -> None:
        arguments = {param: _resolve(ref, scope) for param, ref in operation.inputs.items()}
        try:
            result = OPS[operation.type](**arguments)
        except (OpArgumentError, TypeError, ValueError, IndexError) as exc:
            raise ExecutorError(f"{self.program.path.name}: op {operation.type} '{operation.name}' failed: {exc}") from None
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(operation.outputs):
            raise ExecutorError(
                f"{self.program.path.name}: op {operation.type} '{operation.name}' gave {len(results)} outputs, "
                f"the program declares {len(operation.outputs)}"
            )
        for info, value in zip(operation.outputs, results):
            value = np.asarray(value)
            if info.shape and tuple(value.shape) != info.shape:
                raise ExecutorError(
                    f"{self.program.path.name}: op {operation.type} '{operation.name}' produced shape {tuple(value.shape)}, "
                    f"the program declares {info.shape}"
                )
            scope[info.name] = value.astype(info.dtype, copy=False) if info.dtype is not None else value


class _Scope:
    """Constants (shared, read-only) layered under one run's values."""

    def __init__(self, constants: dict[str, Any], values: dict[str, Any]) -> None:
        self.constants, self.values = constants, values

    def __getitem__(self, name: str) -> Any:
        return self.values[name] if name in self.values else self.constants[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self.values[name] = value


def _widen(value: Any) -> Any:
    """fp16 operands are computed in float32; the result is rounded back at the op's output."""
    if isinstance(value, np.ndarray) and value.dtype == np.float16:
        return value.astype(np.float32)
    if isinstance(value, np.float16):
        return np.float32(value)
    return value


def _resolve(ref: Ref | tuple[Ref, ...], scope) -> Any:
    if isinstance(ref, tuple):
        return [_widen(scope[r.name]) for r in ref]
    return _widen(scope[ref.name])
