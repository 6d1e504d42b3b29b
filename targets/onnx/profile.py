"""Where INT8 buys time on onnxruntime: each encoder layer's time in an artifact (the fp32 one and
the full static INT8 one, :meth:`Target.int8_layer_savings`), from onnxruntime's own profile.

The mixed-precision search gives INT8 back last to the layers where it saves no time
(:func:`edge_sam.quantize.studies.mixed.search`); FLOPs say where INT8 *could* act, this says
where it does on this runtime (a layer whose INT8 form runs dequantize + float op saves nothing).

A profile event names the node it timed; a fused node keeps its first node's name before a "/"
(``node_MatMul_6/MatMulAddFusion``), a conv in onnxruntime's blocked layout is named after its
output with ``_nchwc`` appended (``conv2d_1_nchwc``). Nodes carry the PyTorch module they came from
(``pkg.torch.onnx.name_scopes``); a Q/DQ node the quantizer added has none and is charged to
the layer of the op it feeds. Time on nodes that map to no layer (attention, norms, nodes that
onnxruntime created) is left out: it is the same whichever layers are INT8, up to the Q/DQ
nodes at the edges of an INT8 layer that onnxruntime renamed, which are few.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_sam.graph_contract import encoder_input
from edge_sam.quantize.layers import layers_of_scopes
from edge_sam.quantize.recipe_file import recipe_from_manifest
from edge_sam.targets.core.manifest import read_manifest
from edge_sam.targets.core.profiling import PROFILED_RUNS
from edge_sam.targets.onnx.placement import enable_profiling
from edge_sam.targets.onnx.quantize import node_scopes
from edge_sam.targets.onnx.runtime import disabled_optimizers, session_options

_KERNEL = "_kernel_time"
_NCHWC = "_nchwc"
_CONSUMER_DEPTH = 3  # how far a Q/DQ node is followed to the op it feeds


def node_layers(model, layers: Sequence[str]) -> dict[str, str]:
    """Node name, and the name of each value it outputs -> the encoder layer the node belongs
    to, for every node that belongs to one."""
    owner = {}
    for node in model.graph.node:
        found = layers_of_scopes(node_scopes(node), layers)
        if len(found) == 1:
            owner[node.name] = next(iter(found))
    consumers = defaultdict(list)
    for node in model.graph.node:
        for value in node.input:
            consumers[value].append(node)
    for node in model.graph.node:
        if node.name in owner or node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        frontier = list(node.output)
        for _ in range(_CONSUMER_DEPTH):
            fed = [n for value in frontier for n in consumers[value]]
            owners = {owner[n.name] for n in fed if n.name in owner}
            if owners:
                if len(owners) == 1:
                    owner[node.name] = owners.pop()
                break
            frontier = [value for n in fed for value in n.output]
    for node in model.graph.node:
        if node.name in owner:
            owner.update({value: owner[node.name] for value in node.output})
    return owner


def _event_layer(name: str, owner: dict[str, str]) -> str | None:
    """The layer of the node a profile event timed (see the module docstring for the names)."""
    for candidate in (name, name.split("/")[0], name.removesuffix(_NCHWC)):
        if candidate in owner:
            return owner[candidate]
    return None


def profiled_layer_ms(artifact_dir: Path, layers: Sequence[str], image: np.ndarray) -> dict[str, float]:
    """Milliseconds per run (each node's median) of each layer's nodes in the artifact's encoder, opened as its runner
    opens it (the same disabled optimizers), on ``image``."""
    import onnx
    import onnxruntime as ort

    manifest = read_manifest(artifact_dir)
    path = Path(artifact_dir) / manifest.graph("encoder").file
    owner = node_layers(onnx.load(str(path), load_external_data=False), layers)
    options = session_options()
    enable_profiling(options, f"layer-time-{path.stem}")
    disabled = disabled_optimizers(recipe_from_manifest(manifest.recipe) if manifest.recipe else None, "encoder")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
    feed = {session.get_inputs()[0].name: encoder_input(image, manifest.img_size).numpy()}
    session.run(None, feed)
    for _ in range(PROFILED_RUNS):
        session.run(None, feed)
    profile = Path(session.end_profiling())
    try:
        events = json.loads(profile.read_text())
    finally:
        profile.unlink(missing_ok=True)
    per_run = defaultdict(list)  # every kernel event; the untimed first run is the first of each node's
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith(_KERNEL):
            per_run[event["name"][: -len(_KERNEL)]].append(event["dur"])
    totals: dict[str, float] = defaultdict(float)
    for name, durations in per_run.items():
        layer = _event_layer(name, owner)
        if layer is not None:
            totals[layer] += float(np.median(durations[-PROFILED_RUNS:])) / 1000.0
    return dict(totals)
