"""Which onnxruntime execution provider actually ran each node.

Asking for ``--providers tensorrt,cuda,cpu`` says what may run, not what did: a provider takes
the nodes it supports and the rest fall back down the list. Session profiling records, for
every kernel of a run, the provider that executed it (after onnxruntime's graph optimizations;
TensorRT and CUDA graphs show up as their fused kernels). The first run of each session is
profiled, profiling is then switched off, and the count per provider goes into the runner's
report row (``device``) and its JSON (``node_providers``).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np


def enable_profiling(options, role: str) -> None:
    """Profile the session's runs until :meth:`PlacedSession.run` has seen the first one."""
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.gettempdir()) / f"edge-sam-ort-placement-{os.getpid()}-{role}")


def read_profile(path: str | os.PathLike) -> dict[str, int]:
    """Kernels per provider in an onnxruntime profile (the file is removed once read)."""
    path = Path(path)
    try:
        events = json.loads(path.read_text())
    finally:
        path.unlink(missing_ok=True)
    return dict(Counter(
        event["args"]["provider"] for event in events
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time") and "provider" in event.get("args", {})
    ))


class PlacedSession:
    """An ``InferenceSession`` (every other attribute passes through) that learns from its first
    run which provider ran each kernel."""

    def __init__(self, session) -> None:
        self.session = session
        self.placement: dict[str, int] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)

    def run(self, output_names, feeds, *args):
        outputs = self.session.run(output_names, feeds, *args)
        if self.placement is None:
            self.placement = read_profile(self.session.end_profiling())
        return outputs

    def __del__(self) -> None:
        """A session that never ran would write its (empty) profile when onnxruntime frees it."""
        if self.placement is None and "session" in self.__dict__:
            with contextlib.suppress(Exception):  # interpreter shutdown: nothing left to clean with
                Path(self.session.end_profiling()).unlink(missing_ok=True)

    def measure(self, img_size: int) -> dict[str, int]:
        """The placement, running the session once on placeholder inputs if it has not run yet."""
        if self.placement is None:
            self.run(None, placeholder_feeds(self.session, img_size))
        return self.placement


def placeholder_feeds(session, img_size: int) -> dict[str, np.ndarray]:
    """Zeros of every input's shape (a named, dynamic axis: 1); int64 inputs (the official
    decoder's ``orig_im_size``) hold ``img_size``, so size-dependent ops get a real size."""
    feeds = {}
    for value in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in value.shape]
        if value.type == "tensor(int64)":
            feeds[value.name] = np.full(shape, img_size, np.int64)
        else:
            feeds[value.name] = np.zeros(shape, np.float16 if value.type == "tensor(float16)" else np.float32)
    return feeds


def placement_summary(placements: dict[str, dict[str, int]]) -> str:
    """e.g. "CPUExecutionProvider" or "TensorrtExecutionProvider 4, CPUExecutionProvider 2 kernels"."""
    total: Counter = Counter()
    for counts in placements.values():
        total.update(counts)
    if len(total) == 1:
        return next(iter(total))
    return ", ".join(f"{provider} {count}" for provider, count in total.most_common()) + " kernels"


class ReportsPlacement:
    """Mixin for the ONNX runners (``encoder``/``decoder``, and ``context`` where the artifact
    has one, are graph calls over a
    :class:`PlacedSession`, in ``.session``): ``describe()`` says where the nodes ran."""

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        graphs = {"encoder": self.encoder, "context": getattr(self, "context", None), "decoder": self.decoder}
        placements = {role: graph.session.measure(self.img_size) for role, graph in graphs.items() if graph is not None}
        return {**info, "device": placement_summary(placements), "node_providers": placements}
