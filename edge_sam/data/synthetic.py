"""Synthetic SA-1B-format data: photo-textured scenes of occluding objects with exact masks.

Why synthetic: the tests, the quantization calibration and the training smoke runs need images with
pixel-exact masks and no download. The scenes are built so that a model cannot succeed by colour
alone: backgrounds and object fills are crops of real photos (colour-jittered, rescaled, flipped),
some objects are filled with the background's own texture, and objects occlude each other, so the
boundary is the signal. Each stored mask is the VISIBLE part of its object.

Every image is rendered from its own generator seeded by (seed, split, index), so any image can be
re-rendered on its own (the tests compare the written files with a re-rendered sample) and the
splits never share images.
"""

from __future__ import annotations

import multiprocessing
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from edge_sam.data.codec import make_annotation, read_image_rgb
from edge_sam.data.errors import DatasetError
from edge_sam.data.prompts import mask_center_point
from edge_sam.data.sa1b import write_sa1b_sample
from edge_sam.data.types import Sample
from edge_sam.staging import staged_dir

MIN_OBJECTS, MAX_OBJECTS = 3, 8
# Objects left with fewer visible pixels than this after occlusion are dropped.
MIN_VISIBLE_PIXELS = 30
# Object area as a fraction of the image, sampled log-uniformly: ~0.1% (tiny) to half the image.
MIN_AREA_FRACTION, MAX_AREA_FRACTION = 0.001, 0.5
# Extra objects drawn when occlusion leaves fewer than MIN_OBJECTS (bounded), mid-sized so they survive.
MAX_EXTRA_OBJECTS = 12
EXTRA_OBJECT_AREA_FRACTIONS = (0.003, 0.05)
UNIFORM_BYTE_STD = 73.9  # standard deviation of uniform random bytes 0..255

Array = np.ndarray


# --------------------------------------------------------------------------- photos and textures


def default_background_photos() -> list[Path]:
    """The sample photos (JPEGs) shipped in edge_sam/assets."""
    assets = Path(__file__).resolve().parents[1] / "assets"
    return sorted(p for p in assets.glob("*") if p.suffix.lower() in (".jpg", ".jpeg"))


def _color_jitter_matrix(rng: np.random.Generator, mean_rgb: Array) -> Array:
    """A 3x4 affine colour map: channel permutation, saturation, contrast, per-channel gain, brightness.

    All of these are affine in RGB, so they compose into one matrix applied with one cv2.transform;
    one photo then yields many colours at little cost.
    """
    matrix = np.eye(3)[rng.permutation(3)] if rng.random() < 0.5 else np.eye(3)
    saturation = rng.uniform(0.2, 1.4)
    matrix = (saturation * np.eye(3) + (1.0 - saturation) / 3.0) @ matrix
    contrast, gains = rng.uniform(0.6, 1.3), rng.uniform(0.75, 1.25, 3)
    mean = float((matrix @ mean_rgb).mean())
    offset = gains * (1.0 - contrast) * mean + rng.uniform(-35, 35)
    return np.concatenate([(contrast * gains)[:, None] * matrix, offset[:, None]], axis=1).astype(np.float32)


class PhotoBank:
    """Decoded background photos with a 2x pyramid, so a crop is never shrunk more than 2x by a resize."""

    def __init__(self, photos: Sequence[Array]):
        self.pyramids = []
        for photo in photos:
            levels = [photo]
            while min(levels[-1].shape[:2]) >= 128:
                levels.append(cv2.pyrDown(levels[-1]))
            self.pyramids.append(levels)

    def patch(self, rng: np.random.Generator, out_hw: tuple[int, int]) -> Array:
        """A random crop of a random photo, rescaled to ``out_hw``, flipped and colour-jittered (float32 RGB)."""
        levels = self.pyramids[int(rng.integers(len(self.pyramids)))]
        ph, pw = levels[0].shape[:2]
        oh, ow = out_hw
        scale = rng.uniform(0.12, 1.0)
        aspect = (ow / oh) * np.exp(rng.uniform(-0.3, 0.3))
        ch = int(np.clip(min(ph, pw / aspect) * scale, 8, ph))
        cw = int(np.clip(ch * aspect, 8, pw))
        y0, x0 = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
        level = 0
        while level + 1 < len(levels) and ch >> (level + 1) >= 2 * oh and cw >> (level + 1) >= 2 * ow:
            level += 1
        crop = levels[level][y0 >> level : (y0 + ch) >> level, x0 >> level : (x0 + cw) >> level]
        patch = cv2.resize(crop, (ow, oh), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        if rng.random() < 0.15:
            patch = patch[::-1]
        patch = np.ascontiguousarray(patch)
        mean_rgb = np.array(cv2.mean(patch)[:3])
        return cv2.transform(patch, _color_jitter_matrix(rng, mean_rgb))


def _random_color(rng: np.random.Generator) -> Array:
    return rng.uniform(0, 255, 3).astype(np.float32)


def _procedural_texture(rng: np.random.Generator, out_hw: tuple[int, int]) -> Array:
    """Stripes, checks, a gradient or smooth colour noise between two random colours (float32 RGB)."""
    h, w = out_hw
    c1, c2 = _random_color(rng), _random_color(rng)
    kind = int(rng.integers(4))
    if kind == 3:
        grid = rng.uniform(0, 255, (int(rng.integers(2, 9)), int(rng.integers(2, 9)), 3)).astype(np.float32)
        return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    along = xs * np.cos(angle) + ys * np.sin(angle)
    if kind == 0:
        period = rng.uniform(3, 24)
        weight = 0.5 + 0.5 * np.sin(along * (2 * np.pi / period))
        if rng.random() < 0.5:
            weight = (weight > 0.5).astype(np.float32)
    elif kind == 1:
        cell = rng.uniform(3, 16)
        across = -xs * np.sin(angle) + ys * np.cos(angle)
        weight = ((np.floor(along / cell) + np.floor(across / cell)) % 2).astype(np.float32)
    else:
        weight = (along - along.min()) / max(float(np.ptp(along)), 1.0)
    return c1 + weight[..., None] * (c2 - c1)


def _object_fill(rng: np.random.Generator, photos: PhotoBank, canvas: Array, box: tuple[int, int, int, int]) -> Array:
    """Pixels for an object's bounding box: another photo crop, a procedural texture, or camouflage.

    Camouflage (about a quarter of objects) takes the background's own texture from elsewhere in the
    image, or a photo crop re-centred on the local background colour, so the object differs from
    its surroundings mainly at its boundary.
    """
    x0, y0, x1, y1 = box
    hw = (y1 - y0, x1 - x0)
    choice = rng.random()
    if choice < 0.45:
        fill = photos.patch(rng, hw)
    elif choice < 0.75:
        fill = _procedural_texture(rng, hw)
    elif choice < 0.87:
        size = canvas.shape[0]
        sy, sx = int(rng.integers(0, size - hw[0] + 1)), int(rng.integers(0, size - hw[1] + 1))
        fill = canvas[sy : sy + hw[0], sx : sx + hw[1]] * rng.uniform(0.8, 1.2)
        if rng.random() < 0.5:
            fill = fill[:, ::-1]
    else:
        fill = photos.patch(rng, hw)
        local_mean = canvas[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
        fill = fill - fill.reshape(-1, 3).mean(axis=0) + local_mean * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    return _shade(fill, rng)


def _shade(fill: Array, rng: np.random.Generator) -> Array:
    """A linear brightness ramp across the object, as if lit from one side."""
    h, w = fill.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.arange(w, dtype=np.float32)[None, :] - w / 2) * np.cos(angle) / max(w, 1) + (
        np.arange(h, dtype=np.float32)[:, None] - h / 2
    ) * np.sin(angle) / max(h, 1)
    return fill * (1.0 + rng.uniform(0.0, 0.6) * ramp)[..., None]


# --------------------------------------------------------------------------- shapes


def _star_polygon(rng: np.random.Generator, center: Array, radii: Array, spiky: bool) -> Array:
    n = int(rng.integers(3, 11))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    scale = rng.uniform(0.3 if spiky else 0.7, 1.0, n)
    rotation = rng.uniform(0, 2 * np.pi)
    cos, sin = np.cos(rotation), np.sin(rotation)
    px, py = radii[0] * scale * np.cos(angles), radii[1] * scale * np.sin(angles)
    points = np.stack([center[0] + px * cos - py * sin, center[1] + px * sin + py * cos], axis=1)
    return np.round(points).astype(np.int32)


def _draw_polygon(mask: Array, rng: np.random.Generator, center: Array, radii: Array) -> None:
    cv2.fillPoly(mask, [_star_polygon(rng, center, radii, spiky=rng.random() < 0.5)], 1)


def _draw_ellipse(mask: Array, rng: np.random.Generator, center: Array, radii: Array) -> None:
    axes = (max(1, int(radii[0])), max(1, int(radii[1])))
    cv2.ellipse(mask, (int(center[0]), int(center[1])), axes, rng.uniform(0, 180), 0, 360, 1, -1)


def _draw_blob(mask: Array, rng: np.random.Generator, center: Array, radii: Array) -> None:
    """Thresholded smooth noise under an elliptical window; the largest piece is kept."""
    rx, ry = max(2, int(radii[0] * 1.3)), max(2, int(radii[1] * 1.3))
    grid = rng.random((int(rng.integers(3, 7)), int(rng.integers(3, 7)))).astype(np.float32)
    noise = cv2.resize(grid, (2 * rx, 2 * ry), interpolation=cv2.INTER_CUBIC)
    ys, xs = np.ogrid[-ry:ry, -rx:rx]
    window = np.clip(1.0 - (xs / rx) ** 2 - (ys / ry) ** 2, 0.0, None)
    local = ((noise * window) > rng.uniform(0.15, 0.35)).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(local, connectivity=8)
    if count < 2:
        return
    local = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    _paste(mask, local, int(center[0]) - rx, int(center[1]) - ry)


def _draw_with_hole(mask: Array, rng: np.random.Generator, center: Array, radii: Array) -> None:
    (_draw_ellipse if rng.random() < 0.5 else _draw_polygon)(mask, rng, center, radii)
    hole_center = center + rng.uniform(-0.2, 0.2, 2) * radii
    hole = np.zeros_like(mask)
    hole_radii = radii * rng.uniform(0.25, 0.55)
    (_draw_ellipse if rng.random() < 0.5 else _draw_polygon)(hole, rng, hole_center, hole_radii)
    mask[hole > 0] = 0


def _thickness(rng: np.random.Generator, size: int) -> int:
    return max(2, int(round(rng.uniform(0.008, 0.035) * size)))


def _draw_curve(mask: Array, rng: np.random.Generator, center: Array, target_area: float) -> None:
    """A thick smooth curve (a random walk with smoothly turning heading) whose area is about the target."""
    size = mask.shape[0]
    thickness = _thickness(rng, size)
    length = float(np.clip(target_area / thickness, 8, 2.5 * size))
    steps = max(4, int(length / 2))
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.12, steps))
    points = np.cumsum(np.stack([np.cos(heading), np.sin(heading)], axis=1) * (length / steps), axis=0)
    extent = max(float(np.ptp(points, axis=0).max()), 1.0)
    points *= min(1.0, 0.9 * size / extent)
    points += center - points.mean(axis=0)
    cv2.polylines(mask, [np.round(points).astype(np.int32)], False, 1, thickness)


def _draw_ring(mask: Array, rng: np.random.Generator, center: Array, target_area: float) -> None:
    """An elliptical ring or open arc of about the target area."""
    size = mask.shape[0]
    thickness = _thickness(rng, size)
    span = 360.0 if rng.random() < 0.6 else rng.uniform(180, 330)
    radius = float(np.clip(target_area / (np.radians(span) * thickness), thickness, 0.45 * size))
    aspect = np.exp(rng.uniform(-0.5, 0.5))
    axes = (max(1, int(radius * aspect)), max(1, int(radius / aspect)))
    start = rng.uniform(0, 360)
    cv2.ellipse(mask, (int(center[0]), int(center[1])), axes, rng.uniform(0, 180), start, start + span, 1, thickness)


def _paste(mask: Array, local: Array, x0: int, y0: int) -> None:
    """OR a local mask into the image mask at (x0, y0), clipped to the image."""
    h, w = mask.shape
    lh, lw = local.shape
    sx0, sy0 = max(0, -x0), max(0, -y0)
    dx0, dy0 = max(0, x0), max(0, y0)
    dx1, dy1 = min(w, x0 + lw), min(h, y0 + lh)
    if dx1 > dx0 and dy1 > dy0:
        mask[dy0:dy1, dx0:dx1] |= local[sy0 : sy0 + dy1 - dy0, sx0 : sx0 + dx1 - dx0]


# Filled shapes: (draw function, area relative to the ellipse with the same radii).
_FILLED_SHAPES: list[tuple[Callable, float]] = [
    (_draw_polygon, 0.6),
    (_draw_ellipse, 1.0),
    (_draw_blob, 0.6),
    (_draw_with_hole, 0.75),
]
_THIN_SHAPES: list[Callable] = [_draw_curve, _draw_ring]


def _draw_object_mask(rng: np.random.Generator, size: int, target_area: float) -> Array:
    """One object's full (unoccluded) mask, uint8 SxS; may extend past the image edge."""
    mask = np.zeros((size, size), np.uint8)
    center = rng.uniform(0, size, 2)
    if rng.random() < 0.2:
        _THIN_SHAPES[int(rng.integers(len(_THIN_SHAPES)))](mask, rng, center, target_area)
        return mask
    draw, relative_area = _FILLED_SHAPES[int(rng.integers(len(_FILLED_SHAPES)))]
    aspect = np.exp(rng.uniform(-0.7, 0.7))
    radius = np.sqrt(target_area / (np.pi * relative_area))
    radii = np.minimum(np.array([radius * np.sqrt(aspect), radius / np.sqrt(aspect)]), 0.75 * size)
    draw(mask, rng, center, radii)
    return mask


# --------------------------------------------------------------------------- scenes


def _sample_object_areas(rng: np.random.Generator, size: int) -> list[float]:
    """Target areas, mostly largest first so that big objects rarely bury the small ones."""
    count = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    fractions = np.exp(rng.uniform(np.log(MIN_AREA_FRACTION), np.log(MAX_AREA_FRACTION), count))
    fractions = np.sort(fractions)[::-1] if rng.random() < 0.75 else fractions
    return [float(f) * size * size for f in fractions]


def _visible_masks(owner: Array, n_objects: int) -> list[Array]:
    masks = [owner == k for k in range(n_objects)]
    return [m for m in masks if int(m.sum()) >= MIN_VISIBLE_PIXELS]


def _camera_effects(image: Array, rng: np.random.Generator) -> Array:
    """Lighting gradient, colour cast, blur and sensor noise over the whole scene (in place on float32)."""
    size = image.shape[0]
    angle = rng.uniform(0, 2 * np.pi)
    coords = (np.arange(size, dtype=np.float32) - size / 2) / size
    light = 1.0 + rng.uniform(0.0, 0.5) * (coords[None, :] * np.cos(angle) + coords[:, None] * np.sin(angle))
    cast = rng.uniform(0.9, 1.1, 3).astype(np.float32)
    image *= light[..., None] * cast
    if rng.random() < 0.4:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 1.2))
    if rng.random() < 0.7:
        # Uniform noise from random bytes: looks like sensor noise and costs a tenth of Gaussian sampling.
        noise = np.frombuffer(rng.bytes(image.size), np.uint8).reshape(image.shape).astype(np.float32)
        noise -= 127.5
        noise *= rng.uniform(1.0, 8.0) / UNIFORM_BYTE_STD
        image += noise
    return image


def render_synthetic_sample(
    seed: int, split: str, index: int, img_size: int, photos: PhotoBank
) -> Sample:
    """Render image ``index`` of ``split``: deterministic in (seed, split, index, img_size, photos).

    Objects are drawn in order onto an owner map; each annotation is the visible part of one object
    (with at least MIN_VISIBLE_PIXELS pixels), and images keep MIN_OBJECTS..MAX_OBJECTS objects.
    """
    rng = np.random.default_rng([seed, zlib.crc32(split.encode("utf-8")), index])
    size = img_size
    canvas = photos.patch(rng, (size, size))
    owner = np.full((size, size), -1, np.int16)
    areas = _sample_object_areas(rng, size)
    n_drawn = 0
    while True:
        if n_drawn < len(areas):
            target = areas[n_drawn]
        else:
            target = float(np.exp(rng.uniform(*np.log(EXTRA_OBJECT_AREA_FRACTIONS)))) * size * size
        object_mask = _draw_object_mask(rng, size, target).astype(bool)
        if object_mask.any():
            rows, cols = np.flatnonzero(object_mask.any(axis=1)), np.flatnonzero(object_mask.any(axis=0))
            box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
            fill = _object_fill(rng, photos, canvas, box)
            region = object_mask[box[1] : box[3], box[0] : box[2]]
            canvas[box[1] : box[3], box[0] : box[2]][region] = fill[region]
            owner[object_mask] = n_drawn
        n_drawn += 1
        if n_drawn >= len(areas):
            enough = len(_visible_masks(owner, n_drawn)) >= MIN_OBJECTS
            if enough or n_drawn >= len(areas) + MAX_EXTRA_OBJECTS:
                break
    image = np.clip(_camera_effects(canvas, rng), 0, 255).astype(np.uint8)
    annotations = [make_annotation(m, point_coords=[mask_center_point(m)]) for m in _visible_masks(owner, n_drawn)]
    return Sample(image=image, annotations=annotations, image_id=f"synth_{split}_{index:06d}")


def load_photos(paths: Sequence[str | Path] | None = None) -> PhotoBank:
    """Decode the background photos once; DatasetError when there are none or one cannot be read."""
    paths = list(paths) if paths else default_background_photos()
    if not paths:
        raise DatasetError("no background photos found (edge_sam/assets is empty); pass background_images")
    return PhotoBank([read_image_rgb(Path(p)) for p in paths])


# A pool worker's photo bank, decoded once per worker process.
_WORKER_PHOTOS: list[PhotoBank] = []


def _init_worker(background_images: Sequence[str | Path] | None) -> None:
    _WORKER_PHOTOS.append(load_photos(background_images))


def _render_and_write(job: tuple[int, str, int, int, Path], photos: PhotoBank | None = None) -> None:
    seed, split, index, img_size, folder = job
    sample = render_synthetic_sample(seed, split, index, img_size, photos or _WORKER_PHOTOS[0])
    write_sa1b_sample(sample, folder, sample.image_id, image_id=index)


def generate_synthetic(
    out_root: str | Path,
    counts: dict[str, int] | None = None,
    img_size: int = 256,
    seed: int = 0,
    background_images: Sequence[str | Path] | None = None,
    progress: bool = True,
    overwrite: bool = False,
    workers: int = 1,
) -> dict[str, Path]:
    """Write SA-1B-format splits to ``out_root/<split>/`` and return the split folders.

    Each split is written into a hidden temporary folder and renamed into place when complete, so
    an interrupted run leaves no half-written split. An existing split folder is an error unless
    ``overwrite``. ``workers`` > 1 renders in that many processes; every image depends only on
    (seed, split, index), so the files are the same for any number of workers.
    """
    counts = {"train": 100, "val": 20, "test": 20} if counts is None else dict(counts)
    if workers < 1:
        raise DatasetError(f"workers must be at least 1, got {workers}")
    if img_size < 32:
        raise DatasetError(f"img_size must be at least 32, got {img_size}")
    for split, n in counts.items():
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise DatasetError(f"image count for split '{split}' must be a non-negative integer, got {n!r}")
    out_root = Path(out_root)
    targets = {split: out_root / split for split, n in counts.items() if n > 0}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not overwrite:
        raise DatasetError(f"{', '.join(existing)} already exists; pass overwrite=True (--overwrite) to replace it")
    photos = load_photos(background_images)
    out_root.mkdir(parents=True, exist_ok=True)
    for split, folder in targets.items():
        # The up-front check above enforces ``overwrite``; staged_dir swaps a split in only once complete.
        with staged_dir(folder, overwrite=True) as partial, tqdm(
            total=counts[split], desc=f"synth {split}", unit="img", disable=not progress
        ) as bar:
            jobs = [(seed, split, index, img_size, partial) for index in range(counts[split])]
            if workers > 1 and len(jobs) > 1:
                with multiprocessing.get_context("spawn").Pool(
                    min(workers, len(jobs)), initializer=_init_worker, initargs=(background_images,)
                ) as pool:
                    for _ in pool.imap_unordered(_render_and_write, jobs, chunksize=16):
                        bar.update(1)
            else:
                for job in jobs:
                    _render_and_write(job, photos)
                    bar.update(1)
    return targets
