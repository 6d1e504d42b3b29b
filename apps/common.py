"""Argument types and options shared by the command modules."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _sample_image() -> Path:
    from importlib.resources import files

    return Path(str(files("edge_sam") / "assets" / "dogs.jpg"))


def parse_point(text: str) -> tuple[float, float, float]:
    """``X,Y`` (foreground) or ``X,Y,LABEL``."""
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (2, 3):
        raise argparse.ArgumentTypeError(f"expected X,Y or X,Y,LABEL, got {text!r}")
    return (values[0], values[1], values[2] if len(values) == 3 else 1.0)


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``X0,Y0,X1,Y1`` in image pixels."""
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected X0,Y0,X1,Y1, got {text!r}")
    return values  # type: ignore[return-value]


DEFAULT_CHECKPOINT = "reference"


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        default=DEFAULT_CHECKPOINT,
        help="checkpoint path (.pt, .pt.zip, .safetensors) or 'reference' for the bundled model (default)",
    )


def add_image_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "image", nargs="?", default=None, help="RGB image file (default: the bundled sample photo dogs.jpg)"
    )


def image_path(arg: str | None) -> Path:
    return Path(arg) if arg else _sample_image()


def points_and_labels(points: list[tuple[float, float, float]] | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    if not points:
        return None, None
    array = np.asarray(points, dtype=np.float32)
    return array[:, :2], array[:, 2]
