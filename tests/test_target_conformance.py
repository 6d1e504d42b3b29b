"""Every registered target refuses a broken artifact with one line, the same way: a graph file
tampered with or missing, a manifest of another target, with other preprocessing, whose graph
I/O disagrees with the graph, or from other weights.

Parametrized over the registry (``target_names()``), so a new target is held to these checks
without a test of its own; each target's module keeps the refusals only its format has (a
flatbuffer, a .pte or an ML program the runtime cannot load). One fp32 export of a tiny model per
target, made once for the module.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import require_toolchain

from edge_sam.targets.core.manifest import MANIFEST_NAME, ArtifactError, read_manifest
from edge_sam.targets.core.registry import get_target, load_runner, target_names
from edge_sam.targets.core.target import check_source

pytestmark = pytest.mark.torch_threads(1)


MODEL_SEED = 3  # the tiny weights of conftest's module-scoped `model` fixture


@pytest.fixture(scope="module", params=target_names())
def exported(request, tmp_path_factory, model) -> Path:
    """An fp32 artifact of the tiny model for each registered target (skipped without its toolchain)."""
    target = get_target(request.param)
    for module in (*target.export_modules, *target.runtime_modules):
        require_toolchain(module)
    return target.export(model, "fp32", None, tmp_path_factory.mktemp(request.param) / "fp32")


@pytest.fixture
def artifact(exported, tmp_path) -> Path:
    """A copy of the module's artifact, for one test to break."""
    return shutil.copytree(exported, tmp_path / exported.name)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(exc.value)
    return str(exc.value)


def _graph_file(artifact: Path, role: str) -> str:
    return read_manifest(artifact).graph(role).file


def _edit_manifest(artifact: Path, edit) -> None:
    data = json.loads((artifact / MANIFEST_NAME).read_text())
    edit(data)
    (artifact / MANIFEST_NAME).write_text(json.dumps(data))


def test_tampered_file_is_refused(artifact):
    name = _graph_file(artifact, "decoder")
    path = artifact / name
    if path.is_dir():  # a package (Core ML): its largest file
        path = max((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    with open(path, "r+b") as handle:
        handle.seek(-16, 2)
        handle.write(b"\x00" * 16)
    with pytest.raises(ArtifactError) as exc:
        load_runner(artifact)
    assert f"{name} does not match its manifest hash" in _one_line(exc)


def test_missing_file_is_refused(artifact):
    name = _graph_file(artifact, "encoder")
    path = artifact / name
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(ArtifactError) as exc:
        load_runner(artifact)
    assert f"{name} is missing" in _one_line(exc)


def test_manifest_of_another_target_is_refused(artifact):
    this = read_manifest(artifact).target
    other = next(name for name in target_names() if name != this)
    _edit_manifest(artifact, lambda data: data.update(target=other))
    with pytest.raises(ArtifactError) as exc:
        get_target(this).load(artifact)
    assert f"is a '{other}' artifact, not '{this}'" in _one_line(exc)


def test_manifest_with_other_preprocessing_is_refused(artifact):
    _edit_manifest(artifact, lambda data: data["preprocessing"].update(mean=[0.5, 0.5, 0.5]))
    with pytest.raises(ArtifactError) as exc:
        load_runner(artifact)
    assert "preprocessing mean" in _one_line(exc)


def test_manifest_with_wrong_io_is_refused(artifact):
    """The manifest's first encoder input renamed and reshaped: each target checks what its format
    keeps (names in ONNX, LiteRT signatures and ML programs; shapes in a .pte)."""
    def edit(data):
        encoder_input = data["graphs"][0]["inputs"][0]
        encoder_input.update(name="pixel_values", shape=[1, 3, 128, 128])

    _edit_manifest(artifact, edit)
    with pytest.raises(ArtifactError) as exc:
        load_runner(artifact)
    assert "but its manifest records" in _one_line(exc)


def test_artifact_from_other_weights_is_refused(exported, make_tiny_model):
    with pytest.raises(ArtifactError, match="exported from different weights"):
        check_source(read_manifest(exported), make_tiny_model(seed=4), exported)
