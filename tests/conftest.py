"""Shared fixtures: the parity checkpoint and its reference outputs, tiny models, the sample photo;
and how a test asks for a toolchain (``require_toolchain``, ``require_programs``)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import edge_sam
from edge_sam.data import generate_synthetic
from edge_sam.image_sources import ImageSource, image_folder
from edge_sam.modeling import EfficientSam, EfficientSamConfig, build_efficient_sam
from edge_sam.transforms import read_image, write_image

DATA = Path(__file__).parent / "data"
PARITY_DIR = DATA / "parity"
PARITY_CKPT = PARITY_DIR / "efficient_sam_vitt_random_seed1234.pt"
PARITY_OUTPUTS = PARITY_DIR / "efficient_sam_vitt_random_seed1234_outputs.npz"
SAMPLE_IMAGE = Path(edge_sam.__file__).parent / "assets" / "dogs.jpg"
# CI sets it (.ci/run): every extra is installed there, so a missing toolchain is a broken install,
# and a test that would skip for it fails instead, naming what is missing.
STRICT_TOOLCHAINS = "EDGE_SAM_REQUIRE_TOOLCHAINS"


def strict_toolchains() -> bool:
    return os.environ.get(STRICT_TOOLCHAINS, "") not in ("", "0")


def toolchain_missing(what: str) -> None:
    """Skip the test (or the whole module, when called at import), or fail it in strict mode."""
    if strict_toolchains():
        pytest.fail(f"{STRICT_TOOLCHAINS}=1 and {what}", pytrace=False)
    raise pytest.skip.Exception(what, allow_module_level=True)


@cache
def _extras() -> dict[str, str]:
    """Top-level toolchain module -> the pip extra that installs it, from what the targets declare."""
    from edge_sam.targets.core.registry import get_target, target_names

    extras = {}
    for name in target_names():
        target = get_target(name)
        for module in (*target.export_modules, *target.runtime_modules):
            extras.setdefault(module.split(".")[0], target.extra)
    return extras


def ort_int8_saturates() -> bool:
    """Whether ONNX Runtime's int8 kernels on this CPU saturate: on x86 without VNNI or AMX (AVX2 alone)
    its u8s8 GEMM / conv multiply with VPMADDUBSW, whose int16 pair sums saturate (onnxruntime's
    quantization docs), so an int8 ONNX artifact drifts further from its simulation there than on
    a VNNI / AMX CPU or on ARM. Measured on an AVX2-only EPYC (2026-12-08): the tiny model's mixed
    recipe, 0.991 / 0.988 mask IoU simulated, ran at 0.960 / 0.955 in onnxruntime."""
    from edge_sam.machine import cpu_flags, has_int8_dot_products

    return "avx2" in cpu_flags().split() and not has_int8_dot_products()


def require_toolchain(module: str):
    """``module`` imported, for a test that needs a toolchain; else skip, naming the extra to install
    (fail under EDGE_SAM_REQUIRE_TOOLCHAINS=1). Use it instead of ``pytest.importorskip``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = _extras().get(module.split(".")[0], "all")
        toolchain_missing(f"{module} is not importable: pip install 'edge-sam[{extra}]' ({exc})")


def pytest_configure(config) -> None:
    """In strict mode a stray ``pytest.importorskip`` fails too, like :func:`require_toolchain`."""
    if strict_toolchains() and not getattr(pytest.importorskip, "strict", False):
        skip_if_missing = pytest.importorskip

        def strict_importorskip(modname: str, *args, **kwargs):
            try:
                return skip_if_missing(modname, *args, **kwargs)
            except pytest.skip.Exception as exc:
                pytest.fail(f"{STRICT_TOOLCHAINS}=1 and {exc.msg}", pytrace=False)

        strict_importorskip.strict = True
        pytest.importorskip = strict_importorskip


def require_programs(*alternatives: tuple[str, ...]) -> list[str]:
    """One program on PATH from each group of alternatives (e.g. ("cmake",), ("c++", "g++")), their
    paths; else skip naming the missing ones (fail under EDGE_SAM_REQUIRE_TOOLCHAINS=1)."""
    found = [next((shutil.which(name) for name in group if shutil.which(name)), None) for group in alternatives]
    missing = [" or ".join(group) for group, path in zip(alternatives, found) if path is None]
    if missing:
        toolchain_missing(f"{', '.join(missing)} not found on PATH")
    return found


@pytest.fixture(scope="session")
def parity_model() -> EfficientSam:
    return edge_sam.load_model(PARITY_CKPT)


@pytest.fixture(scope="session")
def parity_outputs() -> dict[str, np.ndarray]:
    with np.load(PARITY_OUTPUTS) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="session")
def dogs() -> np.ndarray:
    return read_image(SAMPLE_IMAGE)


@pytest.fixture(scope="session")
def image_ppm(tmp_path_factory, dogs) -> Path:
    """dogs.jpg as the binary PPM the C++ runners read."""
    from edge_sam.targets.executorch.native import write_ppm

    path = tmp_path_factory.mktemp("images") / "dogs.ppm"
    write_ppm(path, dogs)
    return path


def _make_tiny_model(seed: int = 0, **overrides) -> EfficientSam:
    torch.manual_seed(seed)
    model = build_efficient_sam(EfficientSamConfig.tiny(**overrides))
    # Random init leaves the position table and token embeddings at zero/N(0,1); give every
    # parameter a non-trivial value so parity tests exercise every weight.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


@pytest.fixture(scope="session")
def make_tiny_model():
    """Factory: ``make_tiny_model(seed=0, **config_overrides)``."""
    return _make_tiny_model


@pytest.fixture
def tiny_model() -> EfficientSam:
    return _make_tiny_model()


@pytest.fixture(scope="module")
def model(request) -> EfficientSam:
    """The test module's tiny model, made once per module from its ``MODEL_SEED`` (and
    ``MODEL_CONFIG`` overrides): each module keeps the weights its expected values were measured on."""
    return _make_tiny_model(seed=request.module.MODEL_SEED, **getattr(request.module, "MODEL_CONFIG", {}))


@pytest.fixture(scope="session")
def photo_views(tmp_path_factory, dogs):
    """Factory: ``photo_views(count, shrink)``, a calibration folder cut from the sample photo (its
    halves, its centre, then the whole photo mirrored), each view shrunk ``shrink`` times."""
    def make(count: int, shrink: int) -> ImageSource:
        folder = tmp_path_factory.mktemp("calib")
        h, w = dogs.shape[:2]
        views = [dogs[:, : w // 2], dogs[:, w // 2 :], dogs[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4], dogs[:, ::-1]]
        for index, view in enumerate(views[:count]):
            size = (view.shape[1] // shrink, view.shape[0] // shrink)
            write_image(folder / f"view_{index}.png", cv2.resize(np.ascontiguousarray(view), size, interpolation=cv2.INTER_AREA))
        return image_folder(folder)
    return make


@pytest.fixture(scope="module")
def calibration(request, photo_views) -> ImageSource:
    """The test module's calibration folder: ``photo_views`` of its ``CALIBRATION_VIEWS`` (count, shrink)."""
    count, shrink = request.module.CALIBRATION_VIEWS
    return photo_views(count=count, shrink=shrink)


TINY_IMG = 64  # the image size of the tiny training tests


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """Factory: ``tiny_synthetic(train=8, val=2)``, a synthetic SA-1B-format data set of TINY_IMG-px
    images (seed 0), made once per set of counts."""
    made: dict[tuple, Path] = {}

    def make(**counts: int) -> Path:
        key = tuple(sorted(counts.items()))
        if key not in made:
            made[key] = tmp_path_factory.mktemp("synth")
            generate_synthetic(made[key], counts=counts, img_size=TINY_IMG, seed=0, progress=False)
        return made[key]
    return make


def benchmark_script(name: str):
    """benchmarks/NAME.py as a module (benchmarks/ holds scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def parity_errors():
    """benchmarks/parity_errors.py: it measures, the parity tests bound what it measures (one
    measurement, two uses)."""
    return benchmark_script("parity_errors")


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return PARITY_DIR


@pytest.fixture(scope="session")
def parity_checkpoint() -> Path:
    return PARITY_CKPT


@pytest.fixture(scope="session")
def sample_image_path() -> Path:
    return SAMPLE_IMAGE


@pytest.fixture(autouse=True)
def _torch_threads(request):
    """Two torch threads (the machine's cores), or what ``@pytest.mark.torch_threads(n)`` on the test
    or its module asks for: tiny models on a shared 2-core CPU run fastest on one, since a second
    OpenMP thread only adds waiting (a drift run took 104 s with two threads, 1.2 s with one)."""
    marker = request.node.get_closest_marker("torch_threads")
    torch.set_num_threads(marker.args[0] if marker else 2)
