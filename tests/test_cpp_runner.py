"""The native ExecuTorch runner (apps/cpp): CMake builds it against the installed executorch wheel,
ctest runs it, and its masks equal the Python runtime's on the same .pte files and image."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from conftest import require_programs, require_toolchain

from edge_sam.eval.metrics import mask_iou
from edge_sam.targets import get_target, image_folder, load_runner
from edge_sam.targets.validation.drift import full_size_masks
from edge_sam.targets.core.manifest import MANIFEST_NAME
from edge_sam.transforms import write_image

require_toolchain("executorch.runtime")
require_toolchain("torchao")
require_programs(("cmake",), ("c++", "g++", "clang++"))  # the native runner needs CMake and a C++17 compiler

from edge_sam.targets.executorch.native import NativeRunnerError, build_runner, run_runner  # noqa: E402

POINT = (300.0, 200.0, 1.0)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, make_tiny_model, dogs):
    """An INT8 artifact (int8 XNNPACK encoder, fp32 decoder), so both kernel kinds run natively."""
    root = tmp_path_factory.mktemp("native")
    calib = root / "calib"
    calib.mkdir()
    write_image(calib / "dogs.png", dogs[::2, ::2])
    model = make_tiny_model(seed=7)
    return get_target("executorch").export(model, "int8", None, root / "int8", calibration=image_folder(calib))


@pytest.fixture(scope="module")
def build(tmp_path_factory, artifact, image_ppm):
    build_dir = tmp_path_factory.mktemp("build")
    binary = build_runner(build_dir, cmake_args=(
        f"-DEDGE_SAM_TEST_ARTIFACT={artifact}", f"-DEDGE_SAM_TEST_IMAGE={image_ppm}",
        f"-DEDGE_SAM_TEST_POINT={POINT[0]},{POINT[1]}",
    ))
    return build_dir, binary


def _python_mask(artifact, image, points, labels) -> np.ndarray:
    """The Python runtime's mask: same programs, the output with the highest predicted IoU."""
    runner = load_runner(artifact)
    points, labels = np.asarray(points, np.float32), np.asarray(labels, np.float32)
    low_res, iou = runner.decode(runner.encode(image), points, labels, image.shape[:2])
    return full_size_masks(low_res, image.shape[:2])[int(np.argmax(iou))]


def test_ctest_runs_the_runner_end_to_end(build, artifact, dogs):
    build_dir, _ = build
    done = subprocess.run(["ctest", "--output-on-failure"], cwd=build_dir, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "3/3 Test" in done.stdout  # usage, missing program, end-to-end
    from edge_sam.targets.executorch.native import read_pgm

    assert read_pgm(build_dir / "ctest_mask.pgm").shape == dogs.shape[:2]


@pytest.mark.parametrize("points, box", [([POINT, (650.0, 350.0, 1.0)], None), ([], (420.0, 150.0, 900.0, 560.0))])
def test_native_mask_equals_the_python_runtime(build, artifact, image_ppm, dogs, tmp_path, points, box):
    _, binary = build
    result = run_runner(binary, artifact, image_ppm, tmp_path / "mask.pgm", points=points, box=box, runs=2)
    xy = [p[:2] for p in points] + ([box[:2], box[2:]] if box else [])
    labels = [p[2] for p in points] + ([2.0, 3.0] if box else [])
    reference = _python_mask(artifact, dogs, xy, labels)
    assert reference.any() and mask_iou(result.mask, reference) >= 0.999
    assert result.encoder_ms[0] > 0 and result.context_ms[0] > 0 and result.decoder_ms[0] > 0


def test_native_runner_errors_are_one_line(build, artifact, image_ppm, tmp_path):
    _, binary = build
    with pytest.raises(NativeRunnerError, match="is not a binary RGB PPM"):
        run_runner(binary, artifact, artifact / MANIFEST_NAME, tmp_path / "m.pgm", points=[POINT])
    with pytest.raises(NativeRunnerError, match="the decoder takes at most 6"):
        run_runner(binary, artifact, image_ppm, tmp_path / "m.pgm", points=[POINT] * 7)
    other = shutil.copytree(artifact, tmp_path / "other-size")
    manifest = json.loads((other / MANIFEST_NAME).read_text())
    manifest["img_size"] = 128
    (other / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(NativeRunnerError, match=r"input has shape \[1,3,64,64\] but the manifest implies \[1,3,128,128\]"):
        run_runner(binary, other, image_ppm, tmp_path / "m.pgm", points=[POINT])
    assert not (tmp_path / "m.pgm").exists()


def test_a_build_folder_configured_elsewhere_is_found(tmp_path):
    """A moved build folder (an emulated place copied to another disk, a renamed checkout) keeps a
    CMakeCache.txt naming its old paths, and CMake refuses it: build_runner must see that and
    configure afresh. Configured for real with CMake on a one-file project, then moved."""
    from edge_sam.targets.executorch.native import configured_elsewhere

    source, build = tmp_path / "a" / "src", tmp_path / "a" / "build"
    source.mkdir(parents=True)
    (source / "CMakeLists.txt").write_text("cmake_minimum_required(VERSION 3.16)\nproject(probe NONE)\n")
    subprocess.run(["cmake", "-S", str(source), "-B", str(build)], check=True, capture_output=True)
    assert configured_elsewhere(build, source) == ""
    assert configured_elsewhere(build, tmp_path / "other-src") == f"for {source}"  # another source tree
    shutil.move(tmp_path / "a", tmp_path / "b")
    moved_source, moved_build = tmp_path / "b" / "src", tmp_path / "b" / "build"
    assert configured_elsewhere(moved_build, moved_source).startswith(f"in {build}")
    refused = subprocess.run(["cmake", "-S", str(moved_source), "-B", str(moved_build)], capture_output=True, text=True)
    assert refused.returncode != 0 and "CMakeCache.txt" in refused.stderr + refused.stdout
