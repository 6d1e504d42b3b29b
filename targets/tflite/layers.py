"""Per-module drift of a .tflite graph against its fp32 conversion: which modules lose SQNR.

litert-torch names each tensor after the module stack that produced it, e.g.
``edge_sam.deploy_form.EncoderGraph/edge_sam.modeling.image_encoder.Block_0/torch.nn.modules.linear.Linear_qkv;3``,
in the fp32 and the quantized conversion alike, while op order, shapes (rank-2 vs rank-3
FULLY_CONNECTED) and tensor numbering differ between the two. Tensors are therefore matched by
module: a module's output is the last op (other than QUANTIZE/DEQUANTIZE) inside its scope.
The converter also rewrites differently around quantized ops (in fp32 it folds a LayerNorm's
scale and shift into the following linear layer, which it cannot do when that layer is int8),
so a module is compared only where the ops in the scope of its output are the same in both
graphs (layout ops aside); otherwise the two "outputs" are different functions.
The rows (output SQNR, what enters the module, the drop) come from
:mod:`edge_sam.targets.core.layer_drift`, walking the artifact's graph; this module only pairs
the tensors and runs the two graphs.

Only the compared tensors are kept (added as graph outputs), a group of them per run
(:func:`~edge_sam.targets.core.layer_drift.element_groups`), and both graphs run with the XNNPACK
delegate: preserving every tensor would hold several GB of attention maps at 1024.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from edge_sam.targets.tflite import graphs as tflite_graphs
from edge_sam.targets.tflite.runtime import dequantize_output, open_interpreter, quantize_input
from edge_sam.targets.core.layer_drift import Layer, LayerRow, SqnrSums, element_groups, layer_rows

_BOUNDARY_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})
_LAYOUT_OPS = frozenset({"RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS"})
_SCOPE_ROOT = "edge_sam.deploy_form."


@dataclass
class _Graph:
    """The ops of a .tflite in execution order, and the module each one belongs to."""

    op_types: list[str]
    op_inputs: list[list[int]]
    op_outputs: list[list[int]]
    scopes: list[tuple[str, ...]]
    producer: dict[int, int] = field(default_factory=dict)
    module_outputs: dict[tuple[str, ...], tuple[int, int]] = field(default_factory=dict)  # scope -> (op, tensor)
    elements: dict[int, int] = field(default_factory=dict)  # tensor -> its element count

    def compute_ops(self, scope: tuple[str, ...]) -> Counter:
        """The op types directly in ``scope``, without quantize/dequantize and layout ops."""
        skipped = _BOUNDARY_OPS | _LAYOUT_OPS
        return Counter(t for t, s in zip(self.op_types, self.scopes) if s == scope and t not in skipped)


def module_path(tensor_name: str) -> tuple[str, ...]:
    """``a.b.EncoderGraph/x.y.Block_0/z.Linear_qkv;3`` -> ``("Block_0", "Linear_qkv")``; () outside a module."""
    components = tensor_name.split(";")[0].split("/")
    if not components[0].startswith(_SCOPE_ROOT):
        return ()
    return tuple(c.rsplit(".", 1)[-1] for c in components[1:])


def _analyse(content: bytes) -> _Graph:
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    op_names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    subgraph = model.subgraphs[0]
    names = [t.name.decode() if isinstance(t.name, bytes) else t.name for t in subgraph.tensors]
    graph = _Graph([], [], [], [])
    graph.elements = {index: int(np.prod(t.shape)) if t.shape is not None else 1 for index, t in enumerate(subgraph.tensors)}
    for index, op in enumerate(subgraph.operators):
        code = flatbuffer_utils.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])
        graph.op_types.append(op_names.get(code, str(code)))
        graph.op_inputs.append([i for i in op.inputs if i >= 0])
        graph.op_outputs.append(list(op.outputs))
        graph.scopes.append(module_path(names[op.outputs[0]]))
        for tensor in op.outputs:
            graph.producer[tensor] = index
        if graph.op_types[-1] in _BOUNDARY_OPS:
            continue
        scope = graph.scopes[-1]
        for depth in range(1, len(scope) + 1):  # the op is the latest output of the module and its parents
            graph.module_outputs[scope[:depth]] = (index, op.outputs[0])
    return graph


def _run(content: bytes, tensors: list[int], feeds: list[np.ndarray]):
    """Yield, per feed, the float values of ``tensors`` (dequantized where integer)."""
    interpreter = open_interpreter(tflite_graphs.with_extra_outputs(content, tensors))
    (input_detail,) = interpreter.get_input_details()
    quantization = {d["index"]: d["quantization"] for d in interpreter.get_tensor_details()}
    for feed in feeds:
        interpreter.set_tensor(input_detail["index"], quantize_input(feed, input_detail))
        interpreter.invoke()
        yield {t: dequantize_output(interpreter.get_tensor(t), quantization[t]).ravel() for t in tensors}


def compare_layers(reference: bytes, artifact: bytes, feeds: list[np.ndarray]) -> list[LayerRow]:
    """Per-module SQNR (dB), input SQNR and drop of ``artifact`` vs ``reference``, in graph order."""
    ref_graph, art_graph = _analyse(reference), _analyse(artifact)
    scopes = [s for s in art_graph.module_outputs if s in ref_graph.module_outputs and _same_computation(ref_graph, art_graph, s)]
    deepest: dict[int, tuple[str, ...]] = {}  # a module ending in its last child's op is one row (the child)
    for scope in scopes:
        tensor = art_graph.module_outputs[scope][1]
        if len(scope) > len(deepest.get(tensor, ())):
            deepest[tensor] = scope
    paired = {tensor: ref_graph.module_outputs[scope][1] for tensor, scope in deepest.items()}  # artifact -> reference
    sums = SqnrSums()
    groups = element_groups(sorted(paired), art_graph.elements)
    with tqdm(total=len(groups) * len(feeds), desc="per-layer drift", unit="run", leave=False) as bar:
        for group in groups:
            runs = zip(_run(reference, sorted({paired[t] for t in group}), feeds), _run(artifact, group, feeds))
            for ref_values, art_values in runs:
                for tensor in group:
                    sums.add(tensor, ref_values[paired[tensor]], art_values[tensor])
                bar.update()
    layers = [
        Layer("/".join(scope), art_graph.op_types[art_graph.module_outputs[scope][0]], tensor,
              tuple(_inputs_entering(art_graph, scope)))
        for tensor, scope in sorted(deepest.items(), key=lambda item: art_graph.module_outputs[item[1]][0])
    ]
    producer_inputs = {tensor: art_graph.op_inputs[op] for tensor, op in art_graph.producer.items()}
    return layer_rows(layers, sums.sqnr_db(), producer_inputs)


def _same_computation(reference: _Graph, artifact: _Graph, scope: tuple[str, ...]) -> bool:
    """Whether the module output ``scope`` names is computed by the same ops in both graphs."""
    ref_scope = reference.scopes[reference.module_outputs[scope][0]]
    art_scope = artifact.scopes[artifact.module_outputs[scope][0]]
    return ref_scope == art_scope and reference.compute_ops(ref_scope) == artifact.compute_ops(art_scope)


def _inputs_entering(graph: _Graph, scope: tuple[str, ...]) -> set[int]:
    """Tensors consumed inside ``scope`` that were produced outside it (or are graph inputs)."""
    inside = [i for i, s in enumerate(graph.scopes) if s[: len(scope)] == scope]
    entering = set()
    for index in inside:
        for tensor in graph.op_inputs[index]:
            producer = graph.producer.get(tensor)
            if producer is None or graph.scopes[producer][: len(scope)] != scope:
                entering.add(tensor)
    return entering
