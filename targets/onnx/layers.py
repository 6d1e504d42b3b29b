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

from edge_sam.targets.onnx.quantize import exposed_session, node_scopes
from edge_sam.targets.core.layer_drift import Layer, LayerRow, SqnrSums, element_groups, layer_rows

COMPARED_OPS = frozenset(
    {"Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "LayerNormalization", "InstanceNormalization", "Softmax", "Resize"}
)
# Larger tensors are skipped: at 1024 the attention maps are 3 x 4096 x 4096 per block (200 MB
# each); their effect shows in the SQNR of the matmul that consumes them.
MAX_ELEMENTS = 1 << 22
# The compared values are streamed in groups of GROUP_ELEMENTS (layer_drift.element_groups): at
# 1024 exposing all of them at once took the process past 8 GB.


def _elements(value_info) -> int:
    dims = value_info.type.tensor_type.shape.dim
    return math.prod(d.dim_value if d.dim_value > 0 else 1 for d in dims)


def compare_layers(reference_path: Path, artifact_path: Path, feeds: list[dict[str, np.ndarray]]) -> list[LayerRow]:
    """Per-node SQNR (dB) and SQNR drop of ``artifact_path`` vs ``reference_path``, in graph order."""
    import onnx

    reference = onnx.shape_inference.infer_shapes(onnx.load(str(reference_path)))
    artifact = onnx.shape_inference.infer_shapes(onnx.load(str(artifact_path)))
    ref_infos = {v.name: v for v in reference.graph.value_info}
    art_infos = {v.name for v in artifact.graph.value_info} | {o.name for o in artifact.graph.output}
    nodes = [
        node
        for node in reference.graph.node
        if node.op_type in COMPARED_OPS
        and node.output[0] in art_infos
        and node.output[0] in ref_infos
        and _elements(ref_infos[node.output[0]]) <= MAX_ELEMENTS
    ]
    names = [node.output[0] for node in nodes]
    groups = element_groups(names, {name: _elements(ref_infos[name]) for name in names})
    sums = SqnrSums()
    with tqdm(total=len(groups) * len(feeds), desc="per-layer drift", unit="run") as bar:
        for group in groups:
            ref_session, art_session = exposed_session(reference, group), exposed_session(artifact, group)
            for feed in feeds:
                for name, ref_value, art_value in zip(group, ref_session.run(group, feed), art_session.run(group, feed)):
                    sums.add(name, ref_value, art_value)
                bar.update()
            del ref_session, art_session
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
