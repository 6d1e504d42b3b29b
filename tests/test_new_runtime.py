"""Adding a runtime is one package plus one registry line.

The runtime written here is real, if small: torch.export's ``.pt2`` programs (saved with
``torch.export.save``, run with ``torch.export.load``). It lives in a package made in a temp
folder, is registered with one line, and from then on exports, loads, validates and shows its
flags in ``edge-sam export --help`` / ``validate --help`` without any change in apps/.
"""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from edge_sam.apps.cli import build_parser, main
from edge_sam.errors import EdgeSamError
from edge_sam.predictor import prompt_to_points, Prompt
from edge_sam.runner import TorchRunner
from edge_sam.targets import get_target, load_runner
from edge_sam.targets.core import registry

PT2_PACKAGE = '''
"""torch.export programs as a runtime: the whole of a new target."""

from pathlib import Path

import numpy as np
import torch

from edge_sam.graph_contract import IO_NAMES, ROLES, deploy_graph
from edge_sam.targets.core.manifest import GraphSpec, TensorSpec
from edge_sam.targets.core.artifact_runner import DeployFormRunner
from edge_sam.targets.core.target import Target, TargetOption


def _specs(names, tensors):
    return tuple(TensorSpec(n, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in zip(names, tensors))


class Pt2Target(Target):
    name = "pt2"
    backend = "torch.export"
    extra = "dev"
    distributions = ()
    precisions = ("fp32",)
    export_modules = ("torch.export",)
    runtime_modules = ("torch.export",)
    export_options = (TargetOption("strict_trace", "pt2: trace with torch.export's strict mode", bool),)
    runtime_options = (TargetOption("pt2_threads", "pt2: torch intra-op threads", int),)

    def write_graphs(self, model, request, out_dir, strict_trace=False):
        specs = []
        for role in ROLES:
            graph = deploy_graph(model, request.img_size, role)
            example = graph.example_inputs()
            program = torch.export.export(graph, example, strict=bool(strict_trace))
            torch.export.save(program, out_dir / f"{role}.pt2")
            outputs = graph(*example)
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            specs.append(GraphSpec(role, f"{role}.pt2", _specs(IO_NAMES[role][0], example),
                                   _specs(IO_NAMES[role][1], outputs)))
        return specs

    def make_runner(self, artifact_dir, manifest, label=None, pt2_threads=None):
        if pt2_threads:
            torch.set_num_threads(pt2_threads)
        return Pt2Runner(artifact_dir, manifest, label or "pt2-fp32")


class Pt2Runner(DeployFormRunner):
    def __init__(self, artifact_dir, manifest, label):
        super().__init__(manifest, label)
        self.graphs = {role: torch.export.load(Path(artifact_dir) / manifest.graph(role).file).module()
                       for role in ROLES}

    @torch.inference_mode()
    def run_encoder(self, image):
        return self.graphs["encoder"](torch.from_numpy(image)).numpy()

    @torch.inference_mode()
    def run_context(self, embedding):
        return [t.numpy() for t in self.graphs["context"](torch.from_numpy(embedding))]

    @torch.inference_mode()
    def run_decoder(self, context, coords, labels):
        inputs = (torch.from_numpy(np.asarray(a, np.float32)) for a in (*context, coords, labels))
        logits, iou = self.graphs["decoder"](*inputs)
        return logits.numpy(), iou.numpy()
'''


@pytest.fixture
def pt2_runtime(tmp_path, monkeypatch):
    """The new runtime's package on the path, and its one registry line."""
    package = tmp_path / "pt2_runtime"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "target.py").write_text(textwrap.dedent(PT2_PACKAGE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.TARGETS, "pt2", "pt2_runtime.target:Pt2Target")  # the registry line
    yield "pt2"
    sys.modules.pop("pt2_runtime.target", None)
    sys.modules.pop("pt2_runtime", None)


def _help(command: str) -> str:
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    return subparsers.choices[command].format_help()


def test_new_runtime_flags_appear_in_the_cli(pt2_runtime):
    assert "--strict-trace" in _help("export") and "pt2: trace with torch.export" in _help("export")
    assert "--pt2-threads" in _help("validate") and "--pt2-threads" in _help("bench")
    assert "pt2" in _help("export")  # a --target choice


def test_new_runtime_exports_loads_and_matches_pytorch(pt2_runtime, tmp_path, make_tiny_model, dogs, capsys):
    model = make_tiny_model()
    checkpoint = tmp_path / "tiny.safetensors"
    from edge_sam.checkpoint import save_model

    save_model(model, checkpoint)
    out = tmp_path / "pt2-fp32"
    code = main(["export", "--target", "pt2", "--checkpoint", str(checkpoint), "--out", str(out), "--strict-trace"])
    assert code == 0, capsys.readouterr().err
    runner = load_runner(out, pt2_threads=1)
    reference = TorchRunner(model)
    points, labels = prompt_to_points(Prompt(np.array([[300.0, 200.0]]), np.array([1.0])), dogs.shape[:2], 6)
    ours = runner.decode(runner.encode(dogs), points, labels, dogs.shape[:2])
    theirs = reference.decode(reference.encode(dogs), points, labels, dogs.shape[:2])
    np.testing.assert_allclose(ours[0], theirs[0], atol=1e-4)
    np.testing.assert_allclose(ours[1], theirs[1], atol=1e-4)


def test_new_runtime_refuses_options_it_does_not_declare(pt2_runtime, tmp_path, capsys, make_tiny_model):
    code = main(["export", "--target", "pt2", "--int8-io", "--out", str(tmp_path / "art")])
    err = capsys.readouterr().err
    assert code == 2 and "--int8-io applies to target tflite only, not pt2" in err
    with pytest.raises(EdgeSamError, match="takes no export option unknown_flag"):
        get_target("pt2").export(make_tiny_model(), "fp32", None, tmp_path / "x", unknown_flag=True)
    assert not (tmp_path / "x").exists()
