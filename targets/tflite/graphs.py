"""The deploy-form encoder and decoder as .tflite flatbuffers: litert-torch conversion (no
TensorFlow), fp16 weights, PT2E INT8, and the I/O edits LiteRT's converter has no flag for.

- fp32: ``litert_torch.convert`` of :class:`~edge_sam.deploy_form.EncoderGraph` /
  :class:`~edge_sam.deploy_form.DecoderGraph`, inputs named by keyword so the signature reads
  ``image`` rather than ``args_0``.
- fp16: ai-edge-quantizer casts the fp32 file's weights to float16 (compute stays float32; the
  file is half the size).
- INT8: static recipes through PT2E with the recipe's quantizer, then conversion; dynamic-range
  recipes by ai-edge-quantizer on the fp32 file (:mod:`.quantize`).
- A static INT8 graph whose first op is quantized comes out of the converter taking int8 (the
  converter folds the input QUANTIZE into the signature); :func:`float_io` puts a QUANTIZE /
  DEQUANTIZE back at the boundary so the default artifact takes and returns float32 like every
  other precision. ``int8_io=True`` keeps the int8 boundary for integer-only pipelines.

Converting a float graph takes 10-60 s (the decoder is the slow one), and a recipe that leaves
the decoder float needs exactly the bytes the fp32 export made, so float conversions are kept
per process, keyed by the weights' digest, size and role.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import torch

from edge_sam.errors import EdgeSamError
from edge_sam.modeling import EfficientSam
from edge_sam.graph_contract import IO_NAMES, deploy_graph
from edge_sam.targets.core.manifest import first_line
from edge_sam.targets.core.toolchain_log import capture
from edge_sam.targets.tflite.runtime import SIGNATURE

_FLOAT_CACHE_SIZE = 4
_float_cache: OrderedDict[tuple, bytes] = OrderedDict()


def convert(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], role: str, quantizer=None) -> bytes:
    """One graph -> .tflite bytes, with the role's input and output names in its signature."""
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig

    input_names, output_names = IO_NAMES[role]
    kwargs = dict(zip(input_names, example_inputs))
    quant_config = QuantConfig(pt2e_quantizer=quantizer) if quantizer is not None else None
    try:
        with capture("litert-torch conversion"), torch.no_grad():  # a progress tree and warnings per pass
            content = litert_torch.convert(module, (), kwargs, quant_config=quant_config).model_content()
    except Exception as exc:  # torch.export, the FX passes and the MLIR converter each raise their own types
        raise EdgeSamError(f"litert-torch cannot convert the {role} graph: {first_line(exc)}") from exc
    return rename_outputs(content, output_names)


def float_graph(model: EfficientSam, img_size: int, role: str, weights_digest: str) -> bytes:
    """The fp32 .tflite of one deploy graph (cached per process by weights digest, size, role)."""
    key = (weights_digest, img_size, role)
    if key in _float_cache:
        _float_cache.move_to_end(key)
        return _float_cache[key]
    graph = deploy_graph(model, img_size, role)
    content = convert(graph, graph.example_inputs(), role)
    _float_cache[key] = content
    while len(_float_cache) > _FLOAT_CACHE_SIZE:
        _float_cache.popitem(last=False)
    return content


def int8_graph(
    model: EfficientSam, img_size: int, role: str, quantizer, calibration: Iterable[tuple[torch.Tensor, ...]], total: int | None
) -> bytes:
    """PT2E-quantize one deploy graph with ``quantizer`` (calibrated on ``calibration``) and convert it."""
    from edge_sam.quantize.pt2e import quantize_pt2e

    graph = deploy_graph(model, img_size, role)
    example = graph.example_inputs()
    quantized = quantize_pt2e(
        graph, example, quantizer, calibration, fold_quantize=False, total=total, description=f"calibrating {role}"
    )
    return convert(quantized, example, role, quantizer)


def fp16_weights(content: bytes) -> bytes:
    """float16 weights, float32 compute: ai-edge-quantizer's weight-only float casting."""
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    tool = quantizer.Quantizer(bytearray(content))
    tool.add_weight_only_config(
        regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
        algorithm_key=AlgorithmName.FLOAT_CASTING,
    )
    with capture("ai-edge-quantizer fp16"):
        return bytes(tool.quantize(enable_progress_bar=False, enable_progress_report=False).quantized_model)


# -- flatbuffer edits ---------------------------------------------------------------------------

def _read(content: bytes):
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(content))


def _write(model) -> bytes:
    from ai_edge_litert.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _signature(model):
    for signature in model.signatureDefs or []:
        key = signature.signatureKey.decode() if isinstance(signature.signatureKey, bytes) else signature.signatureKey
        if key == SIGNATURE:
            return signature
    raise ValueError(f"converted graph has no '{SIGNATURE}' signature")


def rename_outputs(content: bytes, names: tuple[str, ...]) -> bytes:
    """Give the signature's outputs (``output_0``, ...) the names the manifest and runners use."""
    model = _read(content)
    outputs = _signature(model).outputs
    by_position = {f"output_{i}": name for i, name in enumerate(names)}
    if sorted(_text(o.name) for o in outputs) != sorted(by_position):
        raise ValueError(f"converted graph has outputs {[_text(o.name) for o in outputs]}, expected {len(names)}")
    for output in outputs:
        output.name = by_position[_text(output.name)]
    return _write(model)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _opcode_index(model, builtin: int) -> int:
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    for index, code in enumerate(model.operatorCodes):
        if flatbuffer_utils.get_builtin_code_from_operator_code(code) == builtin:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def float_io(content: bytes) -> bytes:
    """Give every integer signature input a float32 input + QUANTIZE, every integer output a DEQUANTIZE.

    The new float tensors take the original names (the int8 ones get an ``_int8`` suffix), so a
    caller sees the same signature as an fp32 export; the scale and zero point stay the ones
    calibration chose.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = _read(content)
    signature = _signature(model)
    graph = model.subgraphs[signature.subgraphIndex]
    integer_types = (schema.TensorType.INT8, schema.TensorType.UINT8, schema.TensorType.INT16)
    replaced: dict[int, int] = {}
    for index in [*graph.inputs, *graph.outputs]:
        tensor = graph.tensors[index]
        if tensor.type not in integer_types or index in replaced:
            continue
        boundary = schema.TensorT()
        boundary.shape, boundary.shapeSignature = list(tensor.shape), tensor.shapeSignature
        boundary.type, boundary.buffer, boundary.name = schema.TensorType.FLOAT32, 0, _text(tensor.name)
        tensor.name = f"{_text(tensor.name)}_int8"
        graph.tensors.append(boundary)
        replaced[index] = len(graph.tensors) - 1
    if not replaced:
        return content

    def boundary_op(builtin: int, source: int, target: int):
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = _opcode_index(model, builtin), [source], [target]
        return op

    head = [boundary_op(schema.BuiltinOperator.QUANTIZE, replaced[i], i) for i in graph.inputs if i in replaced]
    tail = [boundary_op(schema.BuiltinOperator.DEQUANTIZE, i, replaced[i]) for i in graph.outputs if i in replaced]
    graph.operators = [*head, *graph.operators, *tail]
    graph.inputs = [replaced.get(i, i) for i in graph.inputs]
    graph.outputs = [replaced.get(i, i) for i in graph.outputs]
    for tensor_map in [*signature.inputs, *signature.outputs]:
        tensor_map.tensorIndex = replaced.get(tensor_map.tensorIndex, tensor_map.tensorIndex)
    return _write(model)


def with_extra_outputs(content: bytes, tensor_indices: list[int]) -> bytes:
    """The same graph with more of its tensors as subgraph outputs, so an interpreter keeps them
    (the per-layer drift reads them; preserving every tensor would hold GBs at 1024)."""
    model = _read(content)
    graph = model.subgraphs[_signature(model).subgraphIndex]
    graph.outputs = [*graph.outputs, *[i for i in tensor_indices if i not in graph.outputs]]
    return _write(model)
