"""ExecuTorch target: ``encoder.pte`` + ``decoder.pte`` lowered to XNNPACK (fp32, INT8) or Core ML.

Export (``get_target("executorch").export(..., delegate="xnnpack" | "coreml")``):

- ``xnnpack`` (default): fp32, or INT8 through PT2E with ExecuTorch's ``XNNPACKQuantizer``
  restricted to the recipe's op classes (:mod:`.executorch_quantize`); a component the recipe
  leaves float (the decoder, by default) is lowered in fp32. Attention is spelled as
  matmul + softmax: XNNPACK takes no SDPA op, and SDPA falls back to slow portable kernels.
- ``coreml``: fp32 or fp16 compute, lowered with the CoreMLPartitioner (works on Linux);
  running it needs macOS 14+ / iOS 17+. The manifest's backend says so and the runner refuses
  it, in one line, wherever the runtime has no Core ML backend.

Runner: ``executorch.runtime`` loads the two programs the manifest names (after its hashes
are checked) and checks their inputs against the manifest. ``profile=True`` records an ETDump
so :meth:`ExecuTorchRunner.operator_profile` can print per-operator times (XNNPACK ops
included). ``threads`` sets the size of ExecuTorch's (process-wide) thread pool.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_sam.errors import EdgeSamError
from edge_sam.modeling import EfficientSam
from edge_sam.transforms import image_to_tensor, preprocess

from edge_sam.targets.core.contract import IO_NAMES, calibration_batches, deploy_graph
from edge_sam.runner import Runner
from edge_sam.targets.core.runner import DeployFormRunner
from edge_sam.targets.core.target import ExportRequest, Target, TargetOption, verify_artifact
from edge_sam.targets.core.calibration import open_source
from edge_sam.targets.executorch.lowering import (
    DELEGATES,
    XNNPACK,
    Delegate,
    StageBar,
    delegate_for_backend,
    get_delegate,
    lower_to_pte,
)
from edge_sam.targets.core.manifest import ArtifactError, GraphSpec, Manifest, TensorSpec, artifact_label

FILES = {"encoder": "encoder.pte", "decoder": "decoder.pte"}
EXTRA = "executorch"
_SCALAR_TYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 7: "float64", 11: "bool"}


def runtime():
    """``executorch.runtime.Runtime`` (the one import a device needs), or the pip-extra error."""
    from edge_sam.errors import require

    return require("executorch.runtime", EXTRA).Runtime.get()


def graph_spec(content: bytes, role: str) -> GraphSpec:
    """The I/O contract of a program, read back from the serialized file as the runtime sees it."""
    meta = runtime().load_program(content).metadata("forward")
    input_names, output_names = IO_NAMES[role]

    def specs(get, names):
        infos = [get(i) for i in range(len(names))]
        return tuple(TensorSpec(n, tuple(info.sizes()), _SCALAR_TYPES.get(int(info.dtype()), str(info.dtype())))
                     for n, info in zip(names, infos))

    if (meta.num_inputs(), meta.num_outputs()) != (len(input_names), len(output_names)):
        raise EdgeSamError(f"lowered {role} has {meta.num_inputs()} inputs / {meta.num_outputs()} outputs, "
                           f"expected {len(input_names)} / {len(output_names)}")
    return GraphSpec(role, FILES[role], specs(meta.input_tensor_meta, input_names), specs(meta.output_tensor_meta, output_names))


class PteMethod:
    """The ``forward`` method of one .pte behind a NumPy call."""

    def __init__(self, path: Path, spec: GraphSpec, delegate: Delegate, profile: bool) -> None:
        rt = runtime()
        if not rt.backend_registry.is_available(delegate.backend_id):
            have = ", ".join(sorted(rt.backend_registry.registered_backend_names)) or "none"
            raise EdgeSamError(
                f"{path} is lowered to {delegate.backend_id}, which this ExecuTorch runtime does not have "
                f"(it has: {have}); it runs on {delegate.runs_on}"
            )
        try:
            self.program = rt.load_program(path, enable_etdump=profile)
            self.method = self.program.load_method("forward")
        except (RuntimeError, ValueError) as exc:
            raise ArtifactError(f"ExecuTorch cannot load {path}: {str(exc).strip().splitlines()[0]}") from None
        meta = self.method.metadata
        actual = [tuple(meta.input_tensor_meta(i).sizes()) for i in range(meta.num_inputs())]
        recorded = [tuple(t.shape) for t in spec.inputs]
        if actual != recorded:
            raise ArtifactError(f"{path} takes inputs of shapes {actual}, but its manifest records {recorded}")
        self.path = path

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        inputs = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in arrays]
        try:
            outputs = self.method.execute(inputs)
        except RuntimeError as exc:
            raise EdgeSamError(f"{self.path.name} failed to run: {str(exc).strip().splitlines()[0]}") from None
        return [o.numpy() for o in outputs]


class ExecuTorchRunner(DeployFormRunner):
    """Deploy-form artifact: the host preprocesses and pads prompts; ExecuTorch runs the programs."""

    def __init__(self, manifest: Manifest, encoder: PteMethod, decoder: PteMethod, label: str) -> None:
        super().__init__(manifest, label)
        self.methods = {"encoder": encoder, "decoder": decoder}

    def run_encoder(self, image: np.ndarray) -> np.ndarray:
        return self.methods["encoder"](image)[0]

    def run_decoder(self, embedding, coords, labels):
        low_res, iou = self.methods["decoder"](embedding, coords, labels)
        return low_res, iou

    def operator_profile(self, role: str) -> list[dict]:
        """Per-operator times of every run so far of one program (needs ``profile=True``)."""
        from edge_sam.targets.executorch.profile import operator_table

        return operator_table(self.methods[role].program)


class ExecuTorchTarget(Target):
    """One target, two delegates: an instance is bound to one (its manifest backend and its
    precisions); ``export(..., delegate=...)`` hands the export to an instance for that one, and
    loading reads the delegate back from the manifest."""

    name = "executorch"
    extra = EXTRA
    distributions = ("executorch", "torchao", "coremltools")

    def __init__(self, delegate: str = XNNPACK.name) -> None:
        self.delegate = get_delegate(delegate)
        self.backend = self.delegate.manifest_backend
        self.precisions = self.delegate.precisions

    export_options = (
        TargetOption("delegate", "the backend the .pte is lowered to (default xnnpack; coreml artifacts run on Apple "
                     "devices and macOS only)", choices=tuple(sorted(DELEGATES))),
    )
    runtime_options = (
        TargetOption("threads", "runtime threads (default: the runtime's own choice)", int),
        TargetOption("profile", "record an ETDump per run (per-operator times: edge-sam bench --profile)", bool),
    )
    runtime_modules = ("executorch.runtime",)

    @property
    def export_modules(self) -> tuple[str, ...]:  # type: ignore[override]
        modules = ("executorch.exir", "executorch.runtime", "torchao.quantization.pt2e")
        return (*modules, "coremltools") if self.delegate.name == "coreml" else modules

    # -- export -------------------------------------------------------------------------------
    def export(self, *args: Any, delegate: str | None = None, **kwargs: Any) -> Path:
        """:meth:`Target.export`, plus ``delegate`` ("xnnpack" default, or "coreml")."""
        if delegate is not None and delegate != self.delegate.name:
            return ExecuTorchTarget(delegate).export(*args, **kwargs)
        return super().export(*args, **kwargs)

    def write_graphs(self, model: EfficientSam, request: ExportRequest, out_dir: Path, **opts: Any) -> list[GraphSpec]:
        if opts:
            raise EdgeSamError(f"unknown ExecuTorch export option(s): {', '.join(sorted(opts))}")
        specs = []
        for role, file in FILES.items():
            int8 = request.precision == "int8" and request.recipe.quantizes(role)
            precision = "int8" if int8 else ("fp32" if request.precision == "int8" else request.precision)
            bar = StageBar(3 if int8 else 2, f"{role} -> {self.delegate.name} {precision}")
            try:
                graph = deploy_graph(model, request.img_size, role)
                module = graph
                if int8:
                    with bar.stage("quantize"):
                        module = quantized_graph(model, graph, request.recipe, request.calibration, request.img_size, role)
                content = lower_to_pte(module, graph.example_inputs(), self.delegate, precision, bar)
            finally:
                bar.close()
            (out_dir / file).write_bytes(content)
            specs.append(graph_spec(content, role))
        return specs

    # -- load ---------------------------------------------------------------------------------
    def load(self, artifact_dir: str | os.PathLike, **runtime_opts: Any) -> Runner:
        """Verify the artifact and open it; needs only ``executorch.runtime`` (not the exporter)."""
        manifest = verify_artifact(artifact_dir, expected_target=self.name)
        runtime()
        return self.make_runner(Path(artifact_dir), manifest, **runtime_opts)

    def make_runner(
        self, artifact_dir: Path, manifest: Manifest, threads: int | None = None, profile: bool = False,
        label: str | None = None,
    ) -> Runner:
        delegate = delegate_for_backend(manifest.backend)
        if threads:
            from executorch.extension.pybindings import _C

            _C._unsafe_reset_threadpool(threads)
        encoder, decoder = (
            PteMethod(artifact_dir / manifest.graph(role).file, manifest.graph(role), delegate, profile)
            for role in ("encoder", "decoder")
        )
        label = label or artifact_label(artifact_dir, manifest, delegate.name)
        return ExecuTorchRunner(manifest, encoder, decoder, label)

    def layer_drift(self, artifact_dir, runner, model, images):
        """Per-op SQNR of the INT8 encoder (re-quantized exactly as exported, simulated in PyTorch)
        against the fp32 graph, plus one row for the .pte itself against that simulation."""
        manifest = runner.manifest
        recipe = manifest.recipe
        if manifest.precision != "int8" or recipe is None or "encoder" not in recipe["components"]:
            return None
        calibration = _recorded_calibration(manifest)
        if recipe["scheme"] == "static" and calibration is None:
            print(f"per-layer drift skipped for {artifact_dir}: its calibration images "
                  f"({manifest.calibration['path']}) are not available as recorded", file=sys.stderr)
            return None
        from edge_sam.targets.validation.pt2e_layers import compare_layers
        from edge_sam.quantize.recipes import get_recipe

        size = manifest.img_size
        graph = deploy_graph(model, size, "encoder")
        example = graph.example_inputs()
        reference = torch.export.export(graph, example).module()
        converted = quantized_graph(model, graph, get_recipe(recipe["name"]), calibration, size, "encoder")
        batches = [(preprocess(image_to_tensor(image), size),) for image in images]
        rows = compare_layers(reference, converted, batches, total=len(batches))
        return [*rows, _program_row(runner, reference, converted, batches)]


def quantized_graph(model: EfficientSam, graph: torch.nn.Module, recipe, calibration, img_size: int, role: str):
    """``graph`` PT2E-quantized with the recipe's XNNPACK quantizer (calibrated when static)."""
    from edge_sam.quantize.pt2e import quantize_pt2e

    from edge_sam.targets.executorch.quantize import recipe_quantizer

    if recipe.needs_calibration:
        batches, total = calibration_batches(model, calibration, img_size, role)
    else:  # dynamic: one pass so the weight observers see the weights
        batches, total = [graph.example_inputs()], 1
    return quantize_pt2e(graph, graph.example_inputs(), recipe_quantizer(recipe), batches, total=total,
                         description=f"calibrating {role}")


def _recorded_calibration(manifest: Manifest):
    """The calibration images the manifest records, if they are still there and still the same."""
    record = manifest.calibration
    if not record:
        return None
    try:
        source = open_source(record["path"], record["count"])
    except EdgeSamError:
        return None
    return source if source.describe()["ids_sha256"] == record["ids_sha256"] else None


def _program_row(runner: ExecuTorchRunner, reference, converted, batches) -> dict:
    """How far the .pte (ExecuTorch's INT8 kernels) is from fp32, next to the PT2E simulation's distance."""
    signal = noise_sim = noise_pte = 0.0
    with torch.no_grad():
        for (image,) in batches:
            ref = reference(image).double()
            sim = converted(image).double()
            pte = torch.from_numpy(runner.run_encoder(image.numpy())).double()
            signal += float(torch.sum(ref * ref))
            noise_sim += float(torch.sum((ref - sim) ** 2))
            noise_pte += float(torch.sum((ref - pte) ** 2))

    def db(noise: float) -> float:
        return math.inf if noise == 0 else 10 * math.log10(signal / noise)

    pte_db, sim_db = db(noise_pte), db(noise_sim)
    return {"node": f"{runner.manifest.graph('encoder').file} on the runtime (input = PT2E simulation)",
            "op_type": "program", "output": "image_embeddings", "sqnr_db": pte_db, "input_sqnr_db": sim_db,
            "drop_db": sim_db - pte_db}
