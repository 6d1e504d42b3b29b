"""The ONNX graphs TensorRT takes as they are (``export --target onnx --for-runtime tensorrt``).

TensorRT parses ONNX itself, so the deploy graphs only need to be written the way its parser and
builder want them; every rule here is checked on the written file by :func:`tensorrt_problems`:

- **Static shapes.** Only the deploy interface (fixed image size, 6 prompt slots) is exported in
  this form: every input and output dimension is a number, so no optimization profile is needed.
- **No int64 shape arithmetic at run time.** ``Shape -> Gather -> Concat -> Reshape`` chains
  run on the GPU as int64 tensors TensorRT has to copy and convert; with static shapes they are
  constants. :func:`fold_shape_computations` evaluates them once, at export.
- **fp16 where it is safe** (``--precision fp16``): weights and activations in float16, except
  the ops whose reductions or arguments do not fit its 10-bit mantissa and 65504 range, kept
  float32 behind explicit Casts (:data:`FP32_OPS`, and the Fourier positional encoding of the
  prompts). TensorRT builds it with ``--stronglyTyped``: the types in the file are the precision.
- **Explicit INT8 as Q/DQ** (``--precision int8`` with a static recipe): the recipe's nodes get
  QuantizeLinear/DequantizeLinear on their inputs only, activations per tensor and weights per
  output channel, all symmetric (zero point 0: TensorRT quantizes symmetrically), biases left
  float (TensorRT takes no int32 bias). No calibration cache is needed: the scales are in the
  graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_sam.errors import EdgeSamError
from edge_sam.quantize.recipes import QuantRecipe

RUNTIMES = ("onnxruntime", "tensorrt")

# Ops kept float32 in the fp16 form, and why:
# - LayerNormalization / InstanceNormalization (the decoder's GroupNorm(1)): mean and variance
#   are sums over 192-2048 values of the residual stream; in float16 the sum of squares
#   overflows 65504 or loses the small variances. TensorRT warns about exactly this.
# - Softmax: over 4096 keys at 1024 px the exponent sum and the small probabilities need more
#   than float16's range (values under 6e-8 flush to zero).
# - Sin / Cos and everything feeding them (the random-Fourier encoding of prompt coordinates):
#   the arguments reach tens of radians, where float16's spacing (0.03 at 32) is a 3% error in
#   the encoding; see :func:`fourier_encoding_nodes`.
# - ReduceMean / Pow / Sqrt: a norm written out by hand instead of as LayerNormalization.
FP32_OPS = ("LayerNormalization", "InstanceNormalization", "GroupNormalization", "Softmax",
            "ReduceMean", "Pow", "Sqrt", "Sin", "Cos")
# TensorRT's Q/DQ placement: a DequantizeLinear feeds the weighted op it quantizes.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# ONNX Runtime's QDQ quantizer options that follow TensorRT's rules (see the module docstring).
QDQ_OPTIONS = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}


class TensorRTFormError(EdgeSamError):
    """A graph that breaks one of TensorRT's rules, or a request this form cannot take."""


def check_request(interface: str, precision: str, recipe: QuantRecipe | None) -> None:
    """One clear line, before any export work, for what the TensorRT form cannot be."""
    if interface != "deploy":
        raise TensorRTFormError(
            f"--for-runtime tensorrt exports the deploy interface (static shapes), not '{interface}'"
        )
    if precision == "int8" and recipe is not None and not recipe.needs_calibration:
        raise TensorRTFormError(
            f"recipe '{recipe.name}' is dynamic (activation ranges computed at run time), which TensorRT does "
            "not do: use a static recipe, whose calibrated scales become explicit Q/DQ nodes"
        )


# -- int64 shape chains ---------------------------------------------------------------------------

def _static_shapes(model) -> dict[str, list[int]]:
    """Every value's shape where all of its dimensions are numbers."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True).graph
    shapes = {}
    for value in [*inferred.input, *inferred.value_info, *inferred.output]:
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    return shapes


def _evaluate(node, constants: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run one node on constant inputs with ONNX's reference evaluator."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    inputs = [name for name in node.input if name]
    graph = helper.make_graph(
        [node], "fold", [], [helper.make_tensor_value_info(o, 0, None) for o in node.output],
        initializer=[numpy_helper.from_array(constants[name], name) for name in inputs],
    )
    return ReferenceEvaluator(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])).run(None, {})


def fold_shape_computations(model) -> int:
    """Fold every int64 tensor computable at export into an initializer: ``Shape`` of a
    statically shaped value becomes its dimensions, and each node whose inputs are all constants
    and whose outputs are int64 is evaluated (one sweep: the nodes are in topological order).
    Returns the number of nodes removed."""
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    shapes, types = _static_shapes(model), _value_types(model)
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    kept = []
    for node in graph.node:
        int64_outputs = bool(node.output) and all(types.get(o) == TensorProto.INT64 for o in node.output)
        if node.op_type == "Shape" and node.input[0] in shapes:
            start = next((a.i for a in node.attribute if a.name == "start"), 0)
            end = next((a.i for a in node.attribute if a.name == "end"), None)
            values = [np.asarray(shapes[node.input[0]][start:end], np.int64)]
        elif node.op_type == "Constant" or (int64_outputs and all(name in constants for name in node.input if name)):
            values = _evaluate(node, constants)
        else:
            kept.append(node)
            continue
        for name, value in zip(node.output, values):
            constants[name] = np.asarray(value)
            graph.initializer.append(numpy_helper.from_array(constants[name], name))
    removed = len(graph.node) - len(kept)
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    live = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)
    return removed


def _value_types(model) -> dict[str, int]:
    """The element type of every value and initializer (ONNX TensorProto codes)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.input, *inferred.value_info, *inferred.output]}
    types.update({t.name: t.data_type for t in inferred.initializer})
    return types


def runtime_int64_nodes(model) -> list[str]:
    """Nodes that compute an int64 tensor at run time (shape arithmetic left in the hot path)."""
    from onnx import TensorProto

    types = _value_types(model)
    return [f"{n.op_type} {n.name}" for n in model.graph.node
            if n.op_type != "Constant" and any(types.get(o) == TensorProto.INT64 for o in n.output)]


# -- fp16 -----------------------------------------------------------------------------------------

def fourier_encoding_nodes(model) -> list[str]:
    """Names of the nodes that compute the arguments of Sin/Cos (the prompt coordinates' random
    Fourier features), so the fp16 conversion keeps that whole chain in float32."""
    producers = {out: node for node in model.graph.node for out in node.output}
    pending = [name for node in model.graph.node if node.op_type in ("Sin", "Cos") for name in node.input]
    chain: dict[str, None] = {}
    while pending:
        node = producers.get(pending.pop())
        if node is None or node.name in chain:
            continue
        chain[node.name] = None
        pending.extend(node.input)
    return list(chain)


def convert_fp16(src: Path, dst: Path) -> None:
    """float16 weights and activations, :data:`FP32_OPS` and the Fourier encoding in float32;
    inputs and outputs stay float32 (the runner contract)."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    from edge_sam.targets.onnx.quantize import sort_topologically

    model = onnx.load(str(src))
    converted = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP32_OPS],
        node_block_list=fourier_encoding_nodes(model),
    )
    _drop_no_op_casts(converted.graph)
    sort_topologically(converted.graph)
    onnx.save(converted, str(dst))


def _drop_no_op_casts(graph) -> None:
    """The converter casts the float32 weights of blocked nodes "back" to float32 and records
    them as float16 in value_info (onnx.checker then fails); drop both."""
    initializers = {t.name: t.data_type for t in graph.initializer}
    no_ops = {n.output[0]: n.input[0] for n in graph.node
              if n.op_type == "Cast" and initializers.get(n.input[0]) == next(a.i for a in n.attribute if a.name == "to")}
    keep = [n for n in graph.node if not (n.op_type == "Cast" and n.output[0] in no_ops)]
    for node in keep:
        node.input[:] = [no_ops.get(name, name) for name in node.input]
    del graph.node[:]
    graph.node.extend(keep)
    stale = [v for v in graph.value_info if v.name in initializers or v.name in no_ops]
    for value in stale:
        graph.value_info.remove(value)


# -- the checks -----------------------------------------------------------------------------------

def tensorrt_problems(model) -> list[str]:
    """What in ``model`` TensorRT would not take as this form promises; empty when none."""
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    problems = []
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if not all(d.HasField("dim_value") for d in dims):
            problems.append(f"{value.name} has a dynamic shape")
    problems += [f"{name} computes an int64 tensor at run time" for name in runtime_int64_nodes(model)]
    initializers = {t.name: t for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    types = _value_types(model)
    for node in graph.node:
        if node.op_type == "QuantizeLinear":
            zero = initializers.get(node.input[2]) if len(node.input) > 2 else None
            if zero is None or zero.data_type != TensorProto.INT8 or numpy_helper.to_array(zero).any():
                problems.append(f"{node.name}: Q/DQ must be int8 with zero point 0 (symmetric)")
        elif node.op_type == "DequantizeLinear":
            source = initializers.get(node.input[0])
            if source is not None and source.data_type != TensorProto.INT8:
                problems.append(f"{node.name}: dequantizes a {TensorProto.DataType.Name(source.data_type)} constant "
                                "(TensorRT takes int8 weights and float biases)")
            wrong = [c.op_type for c in consumers.get(node.output[0], []) if c.op_type not in WEIGHTED_OPS]
            if wrong:
                problems.append(f"{node.name} feeds {', '.join(sorted(set(wrong)))}, not a weighted op")
        elif node.op_type in FP32_OPS and types.get(node.input[0]) == TensorProto.FLOAT16:
            problems.append(f"{node.op_type} {node.name} runs in float16")
    return problems


def prepare_fp32(path: Path) -> None:
    """Fold the shape chains of an exported fp32 graph in place (before any precision change)."""
    import onnx

    model = onnx.load(str(path))
    if fold_shape_computations(model):
        onnx.save(model, str(path))


def check_written(path: Path) -> None:
    """Refuse to ship a file that breaks a TensorRT rule (one line naming the first ones)."""
    import onnx

    problems = tensorrt_problems(onnx.load(str(path)))
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise TensorRTFormError(f"{path.name} is not TensorRT-ready: {'; '.join(problems[:3])}{more}")
