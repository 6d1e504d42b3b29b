"""The images ``deploy`` calibrates on and the images it measures on: one folder, split once.

The split is deterministic (same folder, same counts: same split) and the two sets never share
an image, so no fidelity number is measured on an image an artifact was calibrated on. The
chosen images are copied into ``OUT/images/calibration`` and ``OUT/images/held_out``: the
manifests and the report then name exactly what was used, and a later run can see whether the
calibration set changed.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from edge_sam.errors import EdgeSamError
from edge_sam.staging import staged_dir
from edge_sam.transforms import read_image

from edge_sam.targets.core.calibration import IMAGE_SUFFIXES, ImageSource, image_folder

CALIBRATION_DIR = "calibration"
HELD_OUT_DIR = "held_out"


def bundled_images() -> Path:
    """The images the package carries for ``deploy`` without ``--images``: synthetic scenes
    (``edge-sam data synth``, 256 px) and crops of the sample photo."""
    return Path(str(files("edge_sam") / "assets" / "deploy_images"))


@dataclass(frozen=True)
class ImageSplit:
    """Which files of ``folder`` calibrate and which are held out for validation."""

    folder: Path
    calibration: tuple[Path, ...]
    held_out: tuple[Path, ...]


def split_images(folder: str | os.PathLike, calibration: int, held_out: int) -> ImageSplit:
    """Pick ``calibration + held_out`` images spread evenly over the folder (sorted by name) and
    deal them alternately to the two sets, so both see every part of the folder (the synthetic
    scenes and the photo crops of the bundled set alike).

    Every chosen image is decoded once here: an unreadable file is one error before any work.
    """
    folder = Path(folder)
    if calibration < 1 or held_out < 1:
        raise EdgeSamError(f"deploy needs at least 1 calibration and 1 held-out image (got {calibration} and {held_out})")
    if not folder.is_dir():
        raise EdgeSamError(f"image folder not found: {folder}")
    names = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    need = calibration + held_out
    if len(names) < need:
        raise EdgeSamError(
            f"{folder} holds {len(names)} image(s); deploy needs {need} ({calibration} to calibrate, {held_out} held out "
            "for validation, never the same): add images or lower --calibration-images / --held-out-images"
        )
    chosen = [names[int(i)] for i in np.linspace(0, len(names) - 1, need).round()]
    calibration_set: list[Path] = []
    held_out_set: list[Path] = []
    for path in chosen:
        # The set further behind its quota takes the next image; a tie goes to calibration.
        calibration_behind = len(calibration_set) * held_out <= len(held_out_set) * calibration
        if len(calibration_set) < calibration and (calibration_behind or len(held_out_set) >= held_out):
            calibration_set.append(path)
        else:
            held_out_set.append(path)
    for path in chosen:
        read_image(path)  # ImageError: "cannot decode image: <path>"
    return ImageSplit(folder, tuple(calibration_set), tuple(held_out_set))


def stage_split(split: ImageSplit, images_dir: str | os.PathLike) -> tuple[ImageSource, ImageSource]:
    """Copy the split into ``images_dir/calibration`` and ``images_dir/held_out`` (replacing an
    earlier copy only once the new one is complete) and open both as image sources."""
    images_dir = Path(images_dir)
    with staged_dir(images_dir, overwrite=True) as tmp:
        for sub, paths in ((CALIBRATION_DIR, split.calibration), (HELD_OUT_DIR, split.held_out)):
            (tmp / sub).mkdir()
            for path in paths:
                shutil.copyfile(path, tmp / sub / path.name)
    return image_folder(images_dir / CALIBRATION_DIR), image_folder(images_dir / HELD_OUT_DIR)
