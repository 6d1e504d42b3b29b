"""Per-node drift of an ONNX graph against its fp32 export: the ONNX adapter of
:mod:`edge_sam.targets.core.layer_drift`.

Both graphs are run on the same inputs with the outputs of their compute nodes exposed; the
quantizers (fp16 conversion, QDQ insertion) keep the fp32 graph's tensor names, so tensors
are matched by name, and the upstream walk follows the fp32 graph.

Graph optimizations are disabled in both sessions so every node keeps its name; a QDQ graph
then runs as float with quantize-dequantize pairs, which is the arithmetic the fused INT8
kernels implement (up to rounding order).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge_sam.targets.onnx.quantize import node_scopes
from edge_sam.targets.onnx.runtime import session_options
from edge_sam.targets.core.layer_drift import Layer, LayerRow, SqnrSums, layer_rows

COMPARED_OPS = frozenset(
    {"Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "LayerNormalization", "InstanceNormalization", "Softmax", "Resize"}
)
# Larger tensors are skipped: at 1024 the attention maps are 3 x 4096 x 4096 per block (200 MB
# each); their effect shows in the SQNR of the matmul that consumes them.
MAX_ELEMENTS = 1 << 22


def _elements(value_info) -> int:
    dims = value_info.type.tensor_type.shape.dim
    return math.prod(d.dim_value if d.dim_value > 0 else 1 for d in dims)


def _exposed_session(model, names: list[str]):
    """A session of ``model`` that also outputs the tensors ``names`` (shape-inferred types)."""
    import onnx
    import onnxruntime as ort

    inferred = onnx.shape_inference.infer_shapes(model)
    infos = {v.name: v for v in inferred.graph.value_info}
    existing = {o.name for o in inferred.graph.output}
    inferred.graph.output.extend(infos[n] for n in names if n not in existing)
    return ort.InferenceSession(inferred.SerializeToString(), session_options(optimize=False), providers=["CPUExecutionProvider"])


def compare_layers(reference_path: Path, artifact_path: Path, feeds: list[dict[str, np.ndarray]]) -> list[LayerRow]:
    """Per-node SQNR (dB) and SQNR drop of ``artifact_path`` vs ``reference_path``, in graph order."""
    import onnx

    reference = onnx.load(str(reference_path))
    artifact = onnx.load(str(artifact_path))
    ref_infos = {v.name: v for v in onnx.shape_inference.infer_shapes(reference).graph.value_info}
    art_infos = {v.name for v in onnx.shape_inference.infer_shapes(artifact).graph.value_info}
    art_infos |= {o.name for o in artifact.graph.output}
    nodes = [
        node
        for node in reference.graph.node
        if node.op_type in COMPARED_OPS
        and node.output[0] in art_infos
        and node.output[0] in ref_infos
        and _elements(ref_infos[node.output[0]]) <= MAX_ELEMENTS
    ]
    names = [node.output[0] for node in nodes]
    ref_session = _exposed_session(reference, names)
    art_session = _exposed_session(artifact, names)
    sums = SqnrSums()
    for feed in tqdm(feeds, desc="per-layer drift", unit="img"):
        ref_values = dict(zip([o.name for o in ref_session.get_outputs()], ref_session.run(None, feed)))
        art_values = dict(zip([o.name for o in art_session.get_outputs()], art_session.run(None, feed)))
        for name in names:
            sums.add(name, ref_values[name], art_values[name])
    layers = [
        Layer(node.name or node.output[0], node.op_type, node.output[0], tuple(i for i in node.input if i),
              module=torch_scope(node))
        for node in nodes
    ]
    producer_inputs = {out: [i for i in node.input if i] for node in reference.graph.node for out in node.output}
    return layer_rows(layers, sums.sqnr_db(), producer_inputs)


def torch_scope(node) -> str:
    """The PyTorch module path and op a node came from (recorded by torch.onnx's dynamo exporter),
    e.g. ``encoder.blocks.3.mlp.fc1/linear_7``; empty when the graph carries no such metadata."""
    scopes = [scope for scope in node_scopes(node) if scope]
    modules = [s for s in scopes[:-1] if "." in s or s.isidentifier()]
    return "/".join(([modules[-1]] if modules else []) + scopes[-1:])
