"""Fused attention for ONNX Runtime: every exported attention becomes one
``com.microsoft.MultiHeadAttention`` node (an ONNX Runtime contrib op with a CPU kernel).

The deploy graphs spell attention as matmul + softmax (the form every runtime takes), which
exports as::

    q3 -> Reshape [b, n, heads, d] -> Transpose 0213 -> Mul scale ─┐
    k3 -> Reshape [b, m, heads, d] -> Transpose 0231 ────────────── MatMul -> Softmax ─┐
    v3 -> Reshape [b, m, heads, d] -> Transpose 0213 ──────────────────────────────── MatMul
          -> Transpose 0213 -> Reshape [b, n, heads * d]

ONNX Runtime runs those as separate kernels and writes the [b, heads, n, m] score matrix (at
1024 px the encoder's is 3 x 4096 x 4096 per block) to memory twice; its transformer optimizer
fuses none of it here (our pattern is not BERT's). MultiHeadAttention takes the three [b, n, C]
projections and does the same arithmetic in one kernel. This pass rewrites exactly that
pattern and leaves anything else alone; the export validates the result against the unfused
graph (``max_abs_diff``), as every graph rewrite should be.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

MS_DOMAIN = "com.microsoft"
FUSED_OP = "MultiHeadAttention"
ATTENTION_FORMS = ("matmul", "fused")  # the ONNX target's --attention choices


@dataclass
class _Match:
    nodes: list  # every node the fused op replaces
    q: str  # [b, n, C] inputs of the per-head reshapes
    k: str
    v: str
    output: str  # the [b, n, C] output of the final reshape
    heads: int
    scale: float
    anchor: object  # the final reshape: the fused node takes its place in the node order


class _Graph:
    """Producer / consumer / constant lookups over an ONNX graph."""

    def __init__(self, graph) -> None:
        from onnx import numpy_helper

        self.graph = graph
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant":
                value = next((a for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    self.constants[node.output[0]] = numpy_helper.to_array(value.t)
        self.outputs = {o.name for o in graph.output}

    def op(self, name: str, op_type: str):
        """The node producing ``name`` if it is an ``op_type`` whose output only one node reads."""
        node = self.producer.get(name)
        if node is None or node.op_type != op_type or name in self.outputs or len(self.consumers.get(name, [])) != 1:
            return None
        return node

    def only_consumer(self, name: str, op_type: str):
        readers = self.consumers.get(name, [])
        if len(readers) != 1 or readers[0].op_type != op_type or name in self.outputs:
            return None
        return readers[0]


def _perm(node) -> list[int] | None:
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == "perm":
            return list(helper.get_attribute_value(attribute))
    return None


def _heads(graph: _Graph, name: str, perm: list[int]) -> tuple[str, list, int] | None:
    """``name`` = Transpose(perm) of Reshape(x, [b, n, heads, d]): (x, [nodes], heads)."""
    transpose = graph.op(name, "Transpose")
    if transpose is None or _perm(transpose) != perm:
        return None
    reshape = graph.op(transpose.input[0], "Reshape")
    shape = graph.constants.get(reshape.input[1]) if reshape is not None else None
    if shape is None or shape.shape != (4,) or shape[2] <= 0:
        return None
    return reshape.input[0], [transpose, reshape], int(shape[2])


def _match(graph: _Graph, softmax) -> _Match | None:
    axis = next((a.i for a in softmax.attribute if a.name == "axis"), -1)
    if axis not in (-1, 3):
        return None
    scores = graph.op(softmax.input[0], "MatMul")
    attend = graph.only_consumer(softmax.output[0], "MatMul")
    if scores is None or attend is None or attend.input[0] != softmax.output[0]:
        return None
    scale_node, scale = graph.op(scores.input[0], "Mul"), 1.0
    q_heads_name = scores.input[0]
    if scale_node is not None:
        operands = list(scale_node.input)
        constant = next((c for c in operands if c in graph.constants and graph.constants[c].size == 1), None)
        if constant is None:
            return None
        scale = float(graph.constants[constant].reshape(()))
        q_heads_name = operands[1] if operands[0] == constant else operands[0]
    q = _heads(graph, q_heads_name, [0, 2, 1, 3])
    k = _heads(graph, scores.input[1], [0, 2, 3, 1])
    v = _heads(graph, attend.input[1], [0, 2, 1, 3])
    back = graph.only_consumer(attend.output[0], "Transpose")
    if None in (q, k, v, back) or _perm(back) != [0, 2, 1, 3] or not (q[2] == k[2] == v[2]):
        return None
    merge = graph.only_consumer(back.output[0], "Reshape")
    shape = graph.constants.get(merge.input[1]) if merge is not None else None
    if shape is None or shape.shape != (3,):
        return None
    nodes = [*q[1], *k[1], *v[1], scores, softmax, attend, back, merge] + ([scale_node] if scale_node is not None else [])
    return _Match(nodes, q[0], k[0], v[0], merge.output[0], q[2], scale, merge)


def fuse_attention(model) -> int:
    """Rewrite every matching attention in ``model`` (an onnx.ModelProto, in place) to one
    MultiHeadAttention node; returns how many were fused."""
    from onnx import helper

    graph = _Graph(model.graph)
    matches = [m for m in (_match(graph, n) for n in model.graph.node if n.op_type == "Softmax") if m is not None]
    if not matches:
        return 0
    replaced = {id(node) for match in matches for node in match.nodes}
    fused_at = {id(match.anchor): match for match in matches}
    nodes = []
    for node in model.graph.node:
        match = fused_at.get(id(node))
        if match is not None:  # emitted where the final reshape was: every input exists by then
            nodes.append(helper.make_node(
                FUSED_OP, [match.q, match.k, match.v], [match.output], name=f"{match.output}/{FUSED_OP}",
                domain=MS_DOMAIN, num_heads=match.heads, scale=match.scale,
            ))
        elif id(node) not in replaced:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    _drop_unused_initializers(model.graph)
    return len(matches)


def _drop_unused_initializers(graph) -> None:
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def fuse_attention_file(path: Path) -> int:
    """Fuse the attentions of the ONNX file at ``path`` in place and check that onnxruntime
    computes the same outputs as before on random inputs (max abs error 1e-4 of the output's
    range); returns how many were fused."""
    import onnx

    original = onnx.load(str(path))
    fused = onnx.load(str(path))
    count = fuse_attention(fused)
    if count:
        error = max_abs_diff(original, fused)
        if not error["ok"]:
            from edge_sam.errors import EdgeSamError

            raise EdgeSamError(f"fused attention changed {path.name}'s outputs (max abs diff {error['max_abs_diff']:.3g} "
                               f"of range {error['range']:.3g}); export without --attention fused")
        onnx.save(fused, str(path))
    return count


def max_abs_diff(reference, candidate, seed: int = 0) -> dict:
    """Run both models in onnxruntime on the same random inputs; the largest output difference."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = [ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
                for m in (reference, candidate)]
    feeds = {}
    for tensor in sessions[0].get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in tensor.shape]
        feeds[tensor.name] = rng.standard_normal(shape).astype(np.float32)
    if "point_labels" in feeds:  # a decoder: real prompt slots (a click and padding), not noise
        feeds["point_labels"] = np.full(feeds["point_labels"].shape, -1.0, np.float32)
        feeds["point_labels"][..., 0] = 1.0
        feeds["point_coords"] = np.abs(feeds["point_coords"]) * 10
    expected, actual = (s.run(None, feeds) for s in sessions)
    diff = max(float(np.abs(e - a).max()) for e, a in zip(expected, actual))
    scale = max(float(np.abs(e).max()) for e in expected)
    return {"max_abs_diff": diff, "range": scale, "ok": diff <= 1e-4 * max(1.0, scale)}
