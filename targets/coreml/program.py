"""Read a saved Core ML ``.mlpackage`` into a plain description of its ML program.

coremltools parses the package on any OS (``MLModel(..., skip_model_load=True)`` plus the MIL
proto loader), including the weight blob and compressed weights; only *running* the model needs
macOS. This module turns the parsed ``main`` function into data the host executor walks:
constants (by value name), operations in program order (type, name, input references, declared
output names, dtypes and shapes), and the I/O the model description declares.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_sam.targets.core.manifest import ArtifactError
from edge_sam.targets.core.toolchain_log import capture

MODEL_SPEC = Path("Data") / "com.apple.CoreML" / "model.mlmodel"


@dataclass(frozen=True)
class Ref:
    """A reference to a value by name: a program input, a constant, or an earlier op's output."""

    name: str


@dataclass(frozen=True)
class ValueInfo:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Operation:
    type: str
    name: str
    inputs: dict[str, Ref | tuple[Ref, ...]]
    outputs: tuple[ValueInfo, ...]

    def operands(self) -> Iterator[Ref]:
        """Every value the op reads, list-valued inputs flattened."""
        for ref in self.inputs.values():
            yield from ref if isinstance(ref, tuple) else (ref,)


@dataclass(frozen=True)
class ModelInput:
    """One input of the model description: a tensor, or an image Core ML converts to a tensor."""

    name: str
    kind: str  # "tensor" or "image"
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass
class MilProgram:
    path: Path
    specification_version: int
    inputs: tuple[ModelInput, ...]
    outputs: tuple[ValueInfo, ...]
    operations: list[Operation]
    constants: dict[str, Any] = field(default_factory=dict)

    @property
    def op_types(self) -> set[str]:
        return {operation.type for operation in self.operations}


_SPEC_DTYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "DOUBLE": np.float64, "INT32": np.int32}


def _numpy_dtype(builtin) -> np.dtype | None:
    from coremltools.converters.mil.mil import types

    try:
        return np.dtype(types.nptype_from_builtin(builtin))
    except KeyError:  # str and other non-tensor types (a pad mode, a dtype name)
        return None


def _value_info(var) -> ValueInfo:
    return ValueInfo(var.name, _numpy_dtype(var.dtype), tuple(int(d) for d in var.shape))


def _const_value(var) -> Any:
    """A const's value as numpy (declared dtype) or a plain Python string."""
    value = var.val
    if isinstance(value, str):
        return value
    dtype = _numpy_dtype(var.dtype)
    array = np.asarray(value)
    return array.astype(dtype) if dtype is not None and array.dtype != dtype else array


def _model_inputs(description) -> tuple[ModelInput, ...]:
    inputs = []
    for feature in description.input:
        kind = feature.type.WhichOneof("Type")
        if kind == "multiArrayType":
            array = feature.type.multiArrayType
            dtype = np.dtype(_SPEC_DTYPES[array.ArrayDataType.Name(array.dataType)])
            inputs.append(ModelInput(feature.name, "tensor", tuple(int(d) for d in array.shape), dtype))
        elif kind == "imageType":
            image = feature.type.imageType
            inputs.append(ModelInput(feature.name, "image", (1, 3, int(image.height), int(image.width)), np.dtype(np.float32)))
        else:
            raise ArtifactError(f"model input '{feature.name}' has type {kind}, which edge_sam does not feed")
    return tuple(inputs)


def _model_outputs(description) -> tuple[ValueInfo, ...]:
    outputs = []
    for feature in description.output:
        array = feature.type.multiArrayType
        dtype = np.dtype(_SPEC_DTYPES[array.ArrayDataType.Name(array.dataType)])
        outputs.append(ValueInfo(feature.name, dtype, tuple(int(d) for d in array.shape)))
    return tuple(outputs)


def read_io(package: str | Path) -> tuple[tuple[ModelInput, ...], tuple[ValueInfo, ...]]:
    """The inputs and outputs a package's model description declares (no weights are read)."""
    spec, _ = _parse_spec(Path(package))
    return _model_inputs(spec.description), _model_outputs(spec.description)


def _parse_spec(package: Path):
    """(spec, weights dir) of a package; every way a package can be unreadable is one ArtifactError."""
    if not package.is_dir():
        raise ArtifactError(f"Core ML package not found: {package}")
    if not (package / MODEL_SPEC).is_file():
        raise ArtifactError(f"{package} is not a Core ML package (no {MODEL_SPEC})")
    ct = import_coremltools()
    try:
        model = ct.models.MLModel(str(package), skip_model_load=True)
        spec = model.get_spec()
    except Exception as exc:  # protobuf and the package library raise their own types
        raise ArtifactError(f"cannot read Core ML package {package}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if spec.WhichOneof("Type") != "mlProgram":
        raise ArtifactError(f"{package} holds a '{spec.WhichOneof('Type')}' model, not an ML program")
    return spec, model.weights_dir


def load_program(package: str | Path) -> MilProgram:
    """Parse ``package`` (an .mlpackage directory) into a :class:`MilProgram`."""
    import_coremltools()
    from coremltools.converters.mil.frontend.milproto import load as milproto

    package = Path(package)
    spec, weights_dir = _parse_spec(package)
    try:
        with quiet_toolchain():
            program = milproto.load(spec, specification_version=spec.specificationVersion, file_weights_dir=weights_dir)
    except Exception as exc:  # a damaged weight blob or program surfaces from the loader's internals
        raise ArtifactError(f"cannot load the ML program of {package}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if "main" not in program.functions:
        raise ArtifactError(f"{package} has no 'main' function (functions: {', '.join(program.functions)})")
    main = program.functions["main"]
    constants: dict[str, Any] = {}
    operations: list[Operation] = []
    for mil_op in main.operations:
        if mil_op.op_type == "const":
            constants[mil_op.outputs[0].name] = _const_value(mil_op.outputs[0])
            continue
        inputs = {
            param: tuple(Ref(v.name) for v in var) if isinstance(var, (list, tuple)) else Ref(var.name)
            for param, var in mil_op.inputs.items()
        }
        operations.append(Operation(mil_op.op_type, mil_op.name, inputs, tuple(_value_info(v) for v in mil_op.outputs)))
    return MilProgram(
        path=package,
        specification_version=spec.specificationVersion,
        inputs=_model_inputs(spec.description),
        outputs=_model_outputs(spec.description),
        operations=operations,
        constants=constants,
    )


def quiet_toolchain() -> contextlib.AbstractContextManager[None]:
    """coremltools logs one line per macOS-only binding and version check on Linux, and
    torch.export / ct.convert print per-pass progress bars: all of it goes to the export's
    toolchain log (:func:`~edge_sam.targets.core.toolchain_log.capture`), off the terminal."""
    return capture("coremltools")


def import_coremltools():
    """``coremltools``, imported quietly (see :func:`quiet_toolchain`)."""
    with quiet_toolchain():
        import coremltools

    return coremltools
