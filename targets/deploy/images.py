"""The images ``deploy`` calibrates on, chooses on and measures on: one folder, split once.

Three disjoint sets: *calibration* (static INT8's activation ranges), *search* (where each
target's INT8 ladder is climbed and the mixed-precision recipe is chosen) and *held out* (where
every shipped number is measured, touched by nothing else). A choice measured on the images it
was made on flatters it; a number measured on the images a recipe was searched on does too. The
split is deterministic (same folder, same counts: same split). The chosen images are copied into
``OUT/images/<set>``: the manifests and the report then name exactly what was used, and a later
run can see whether a set changed.
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

from edge_sam.image_sources import IMAGE_SUFFIXES, ImageSource, image_folder

CALIBRATION_DIR = "calibration"
SEARCH_DIR = "search"
HELD_OUT_DIR = "held_out"


def bundled_images() -> Path:
    """The images the package carries for ``deploy`` without ``--images``: synthetic scenes
    (``edge-sam data synth``, 256 px) and crops of the sample photo."""
    return Path(str(files("edge_sam") / "assets" / "deploy_images"))


@dataclass(frozen=True)
class ImageSplit:
    """Which files of ``folder`` calibrate, which the INT8 search chooses on, which are held out."""

    folder: Path
    calibration: tuple[Path, ...]
    search: tuple[Path, ...]
    held_out: tuple[Path, ...]

    def sets(self) -> tuple[tuple[str, tuple[Path, ...]], ...]:
        return ((CALIBRATION_DIR, self.calibration), (SEARCH_DIR, self.search), (HELD_OUT_DIR, self.held_out))


def split_images(folder: str | os.PathLike, calibration: int, search: int, held_out: int) -> ImageSplit:
    """Pick ``calibration + search + held_out`` images spread evenly over the folder (sorted by
    name) and deal each to the set furthest behind its quota, so every set sees every part of the
    folder (the synthetic scenes and the photo crops of the bundled set alike).

    Every chosen image is decoded once here: an unreadable file is one error before any work.
    """
    folder = Path(folder)
    quotas = {CALIBRATION_DIR: calibration, SEARCH_DIR: search, HELD_OUT_DIR: held_out}
    if min(quotas.values()) < 1:
        raise EdgeSamError(f"deploy needs at least 1 calibration, 1 search and 1 held-out image (got {calibration}, "
                           f"{search} and {held_out})")
    if not folder.is_dir():
        raise EdgeSamError(f"image folder not found: {folder}")
    names = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    need = sum(quotas.values())
    if len(names) < need:
        raise EdgeSamError(
            f"{folder} holds {len(names)} image(s); deploy needs {need} in three sets that never share an image "
            f"({calibration} to calibrate, {search} to choose the INT8 form on, {held_out} held out to measure what "
            f"ships): add {need - len(names)} image(s) or lower --calibration-images / --search-images / --held-out-images"
        )
    chosen = [names[int(i)] for i in np.linspace(0, len(names) - 1, need).round()]
    dealt: dict[str, list[Path]] = {name: [] for name in quotas}
    for path in chosen:
        # The set with the smallest share of its quota filled takes the next image; ties go in set order.
        open_sets = [name for name in quotas if len(dealt[name]) < quotas[name]]
        dealt[min(open_sets, key=lambda name: len(dealt[name]) / quotas[name])].append(path)
    for path in chosen:
        read_image(path)  # ImageError: "cannot decode image: <path>"
    return ImageSplit(folder, *(tuple(dealt[name]) for name in quotas))


def stage_split(split: ImageSplit, images_dir: str | os.PathLike) -> tuple[ImageSource, ImageSource, ImageSource]:
    """Copy the split into ``images_dir/<set>`` (replacing an earlier copy only once the new one is
    complete) and open the calibration, search and held-out sets as image sources."""
    images_dir = Path(images_dir)
    with staged_dir(images_dir, overwrite=True) as tmp:
        for sub, paths in split.sets():
            (tmp / sub).mkdir()
            for path in paths:
                shutil.copyfile(path, tmp / sub / path.name)
    calibration, search, held_out = (image_folder(images_dir / sub) for sub, _ in split.sets())
    return calibration, search, held_out
