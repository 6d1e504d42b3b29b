"""Per-layer drift of an ONNX graph against its fp32 export: which nodes lose the most SQNR.

Both graphs are run on the same inputs with the outputs of their compute nodes exposed; the
quantizers (fp16 conversion, QDQ insertion) keep the fp32 graph's tensor names, so tensors
are matched by name. For each node we report the SQNR of its output against fp32 (the error
accumulated up to there) and the *drop*: how many dB worse its output is than the worst of
its inputs. A large drop marks a node whose own arithmetic adds error (quantized weights or
activations: candidates to keep float) or that amplifies it. Softmax rows need care: softmax
ignores each row's offset, which dominates its input's SQNR, so a sharp attention shows a large
drop even with float softmax; read those rows as "where the error shows".

Graph optimizations are disabled in both sessions so every node keeps its name; a QDQ graph
then runs as float with quantize-dequantize pairs, which is the arithmetic the fused INT8
kernels implement (up to rounding order).
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

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
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(inferred.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _sqnr_db(signal: float, noise: float) -> float:
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def compare_layers(reference_path: Path, artifact_path: Path, feeds: list[dict[str, np.ndarray]]) -> list[dict]:
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
    signal = dict.fromkeys(names, 0.0)
    noise = dict.fromkeys(names, 0.0)
    for feed in tqdm(feeds, desc="per-layer drift", unit="img"):
        ref_values = dict(zip([o.name for o in ref_session.get_outputs()], ref_session.run(None, feed)))
        art_values = dict(zip([o.name for o in art_session.get_outputs()], art_session.run(None, feed)))
        for name in names:
            a = ref_values[name].astype(np.float64)
            b = art_values[name].astype(np.float64)
            signal[name] += float(np.sum(a * a))
            noise[name] += float(np.sum((a - b) ** 2))
    sqnr = {name: _sqnr_db(signal[name], noise[name]) for name in names}
    upstream = _upstream_sqnr(reference, sqnr)
    rows = []
    for node in nodes:
        out = sqnr[node.output[0]]
        worst_input = min((upstream(i) for i in node.input if i), default=math.inf)
        drop = 0.0 if math.isinf(out) and math.isinf(worst_input) else worst_input - out
        rows.append({"node": node.name or node.output[0], "module": torch_scope(node), "op_type": node.op_type,
                     "output": node.output[0],
                     "sqnr_db": out, "input_sqnr_db": worst_input, "drop_db": drop})
    return rows


def torch_scope(node) -> str:
    """The PyTorch module path and op a node came from (recorded by torch.onnx's dynamo exporter),
    e.g. ``encoder.blocks.3.mlp.fc1/linear_7``; empty when the graph carries no such metadata."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = [s for s in ast.literal_eval(prop.value) if s]
            except (ValueError, SyntaxError):
                return ""
            modules = [s for s in scopes[:-1] if "." in s or s.isidentifier()]
            return "/".join(([modules[-1]] if modules else []) + scopes[-1:])
    return ""


def _upstream_sqnr(model, sqnr: dict[str, float]):
    """SQNR of a tensor, or of the nearest compared tensors upstream of it (through reshapes,
    transposes and other nodes we do not compare); graph inputs and constants are exact."""
    producers = {out: node for node in model.graph.node for out in node.output}
    memo: dict[str, float] = {}

    def upstream(name: str) -> float:
        if name in sqnr:
            return sqnr[name]
        if name in memo:
            return memo[name]
        node = producers.get(name)
        memo[name] = math.inf  # guards against cycles (none in a valid graph)
        if node is not None:
            memo[name] = min((upstream(i) for i in node.input if i), default=math.inf)
        return memo[name]

    return upstream
