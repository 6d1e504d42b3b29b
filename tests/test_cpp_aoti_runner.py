"""The native runner built against libtorch (apps/cpp with -DEDGE_SAM_AOTI=ON: edge_sam_aoti_runner,
torch::inductor::AOTIModelPackageLoader): CMake builds it against the installed torch wheel,
ctest runs it, and its outputs equal the Python runtime's on the same .pt2 packages and image.

Slow by nature: compiling the tiny model's two packages and building against the libtorch
headers each take one to two minutes on the shared 2-core machine.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import require_programs, require_toolchain

from edge_sam.eval.metrics import mask_iou
from edge_sam.targets import get_target, load_runner
from edge_sam.targets.executorch.native import NativeRunnerError, run_runner
from edge_sam.targets.validation.drift import full_size_masks

require_toolchain("torch._inductor")
require_programs(("cmake",), ("c++", "g++", "clang++"))

pytestmark = pytest.mark.torch_threads(1)
SOURCE_DIR = Path(__file__).resolve().parents[1]
POINTS = [(300.0, 200.0, 1.0), (650.0, 350.0, 1.0)]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, make_tiny_model):
    return get_target("aoti").export(make_tiny_model(seed=7), "fp32", None, tmp_path_factory.mktemp("aoti") / "fp32")


@pytest.fixture(scope="module")
def build(tmp_path_factory, artifact, image_ppm) -> Path:
    import torch.utils

    build_dir = tmp_path_factory.mktemp("build-aoti")
    configure = ["cmake", "-S", str(SOURCE_DIR), "-B", str(build_dir), "-DEDGE_SAM_AOTI=ON",
                 f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}", f"-DEDGE_SAM_TEST_ARTIFACT={artifact}",
                 f"-DEDGE_SAM_TEST_IMAGE={image_ppm}", f"-DEDGE_SAM_TEST_POINT={POINTS[0][0]},{POINTS[0][1]}"]
    for step in (configure, ["cmake", "--build", str(build_dir), "--parallel"]):
        done = subprocess.run(step, capture_output=True, text=True)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return build_dir


def test_ctest_runs_the_aoti_runner_end_to_end(build):
    done = subprocess.run(["ctest", "--output-on-failure"], cwd=build, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "3/3 Test" in done.stdout and "edge_sam_aoti_runner_segments" in done.stdout


def test_native_outputs_equal_the_python_runtime(build, artifact, image_ppm, dogs, tmp_path):
    binary = build / "apps" / "cpp" / "edge_sam_aoti_runner"
    result = run_runner(binary, artifact, image_ppm, tmp_path / "mask.pgm", points=POINTS, runs=2)
    assert result.output.startswith("AOTInductor (libtorch):") and result.encoder_ms[0] > 0
    runner = load_runner(artifact)
    points = np.array([p[:2] for p in POINTS], np.float32)
    labels = np.array([p[2] for p in POINTS], np.float32)
    low_res, iou = runner.decode(runner.encode(dogs), points, labels, dogs.shape[:2])
    reference = full_size_masks(low_res, dogs.shape[:2])[int(np.argmax(iou))]
    assert reference.any() and mask_iou(result.mask, reference) >= 0.999


def test_a_corrupt_package_is_refused_in_one_line(build, artifact, image_ppm, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("manifest.json", "context.pt2", "decoder.pt2"):
        (broken / name).write_bytes((artifact / name).read_bytes())
    (broken / "encoder.pt2").write_bytes(b"not a zip archive")
    with pytest.raises(NativeRunnerError, match="cannot load .*encoder.pt2: not an AOTInductor package"):
        run_runner(build / "apps" / "cpp" / "edge_sam_aoti_runner", broken, image_ppm, tmp_path / "m.pgm", points=POINTS)
