"""Shared fixtures: the parity checkpoint and its reference outputs, tiny models, the sample photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import edge_sam
from edge_sam.modeling import EfficientSam, EfficientSamConfig, build_efficient_sam
from edge_sam.transforms import read_image

DATA = Path(__file__).parent / "data"
PARITY_DIR = DATA / "parity"
PARITY_CKPT = PARITY_DIR / "efficient_sam_vitt_random_seed1234.pt"
PARITY_OUTPUTS = PARITY_DIR / "efficient_sam_vitt_random_seed1234_outputs.npz"
SAMPLE_IMAGE = Path(edge_sam.__file__).parent / "assets" / "dogs.jpg"


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
def _two_threads():
    torch.set_num_threads(2)
