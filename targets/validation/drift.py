"""Drift of exported artifacts against the fp32 PyTorch model, on the same images and prompts.

The reference (:class:`~edge_sam.runner.TorchRunner`) encodes every image and decodes its
prompts first; then each runner in turn, loaded only for its pass, does the same on the same
images and prompts. Per runner we record:

- image embedding cosine similarity and SQNR (dB) against fp32;
- mask IoU against the fp32 mask, per prompt: the multimask output fp32 ranks first (highest
  predicted IoU), upsampled to the image and thresholded at 0 in both; plus how often the
  runner ranks the same output first, and |delta IoU prediction| (max over the outputs);
- mIoU against ground truth when the dataset has masks (box and 1-click, each runner's own
  highest-IoU output, the protocol of :mod:`edge_sam.eval`);
- encoder latency per image and decoder latency per prompt (after one untimed warm-up), file
  size, peak RSS of the runner alone (measured in a subprocess, see :mod:`.subprocess_rss`);
- for artifacts whose target has a per-layer tool, per-node SQNR against an fp32 export.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from edge_sam.eval.metrics import mask_iou, sqnr_db
from edge_sam.machine import machine_info
from edge_sam.transforms import upscale_logits
from edge_sam.visualize import draw_prompts, overlay_masks

from edge_sam.runner import Runner, TorchRunner
from edge_sam.image_sources import ImageSource
from edge_sam.fixed_prompts import Prompt, prompts_for

WORST_KEPT = 3
PROMPT_GRID = 3  # grid x grid clicks on images without annotations
LAYER_DRIFT_IMAGES = 2
_OVERLAY_WIDTH = 360


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    denominator = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denominator) if denominator else float(np.array_equal(a, b))


def full_size_masks(low_res: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """[1, M, h, w] logits -> [M, H, W] bool, upsampled the way the reference does."""
    return (upscale_logits(torch.from_numpy(np.asarray(low_res[0], np.float32)), image_hw) > 0).numpy()


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else (values[0] if values else None)


@dataclass(order=True)
class WorstPrompt:
    """One of the prompts where a runner's mask differs most from fp32, with a rendered overlay."""

    mask_iou: float
    image_id: str = field(compare=False)
    prompt: dict = field(compare=False)
    overlay_png: bytes = field(compare=False, repr=False)


@dataclass
class RunnerDrift:
    """Everything measured for one runner; ``summary`` condenses it to one report row."""

    info: dict[str, Any]
    artifact_dir: str | None = None
    embedding_cosine: list[float] = field(default_factory=list)
    embedding_sqnr_db: list[float] = field(default_factory=list)
    mask_iou: list[float] = field(default_factory=list)
    top_choice_agrees: list[bool] = field(default_factory=list)
    iou_prediction_delta: list[float] = field(default_factory=list)
    gt_iou: dict[str, list[float]] = field(default_factory=dict)
    encoder_s: list[float] = field(default_factory=list)
    decoder_s: list[float] = field(default_factory=list)
    memory: dict[str, float] | None = None
    layers: list[dict] | None = None
    worst: list[WorstPrompt] = field(default_factory=list)

    def keep_if_worst(self, candidate_iou: float, render) -> None:
        """Keep the WORST_KEPT lowest-IoU prompts; render an overlay only for those."""
        if len(self.worst) < WORST_KEPT or candidate_iou < -self.worst[0][0]:
            entry = (-candidate_iou, len(self.mask_iou), render())
            if len(self.worst) < WORST_KEPT:
                heapq.heappush(self.worst, entry)
            else:
                heapq.heapreplace(self.worst, entry)

    def worst_prompts(self) -> list[WorstPrompt]:
        return sorted(entry[2] for entry in self.worst)

    def summary(self) -> dict[str, Any]:
        return {
            **self.info,
            "artifact_dir": self.artifact_dir,
            "embedding_cosine_mean": _mean(self.embedding_cosine),
            "embedding_cosine_min": min(self.embedding_cosine, default=None),
            "embedding_sqnr_db_mean": _mean(self.embedding_sqnr_db),
            "embedding_sqnr_db_min": min(self.embedding_sqnr_db, default=None),
            "mask_iou_mean": _mean(self.mask_iou),
            "mask_iou_p5": _percentile(self.mask_iou, 5),
            "mask_iou_worst": min(self.mask_iou, default=None),
            "top_choice_agreement": float(np.mean(self.top_choice_agrees)) if self.top_choice_agrees else None,
            "iou_prediction_delta_mean": _mean(self.iou_prediction_delta),
            "iou_prediction_delta_max": max(self.iou_prediction_delta, default=None),
            "gt_miou": {kind: _mean(values) for kind, values in self.gt_iou.items()},
            "encoder_p50_s": _percentile(self.encoder_s, 50),
            "encoder_p90_s": _percentile(self.encoder_s, 90),
            "decoder_p50_s": _percentile(self.decoder_s, 50),
            "decoder_p90_s": _percentile(self.decoder_s, 90),
            "memory": self.memory,
            "n_prompts": len(self.mask_iou),
        }


@dataclass
class DriftReport:
    source: dict[str, Any]
    n_images: int
    n_prompts: int
    reference: RunnerDrift
    runners: list[RunnerDrift]
    machine: dict[str, Any]
    settings: dict[str, Any]

    def rows(self) -> list[RunnerDrift]:
        return [self.reference, *self.runners]

    def below(self, min_mask_iou: float) -> list[RunnerDrift]:
        """Runners whose mean mask IoU vs fp32 is under ``min_mask_iou``."""
        return [r for r in self.runners if (r.summary()["mask_iou_mean"] or 0.0) < min_mask_iou]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "n_images": self.n_images,
            "n_prompts": self.n_prompts,
            "machine": self.machine,
            "settings": self.settings,
            "rows": [r.summary() for r in self.rows()],
            "layers": {r.info["label"]: r.layers for r in self.runners if r.layers},
            "worst_prompts": {
                r.info["label"]: [{"mask_iou": w.mask_iou, "image_id": w.image_id, "prompt": w.prompt} for w in r.worst_prompts()]
                for r in self.runners
            },
        }


def _timed(call, *args):
    """(result, seconds) of a runner's bound method: the runner's own timing where it reports
    one (a remote device), else the wall clock here."""
    start = time.perf_counter()
    result = call(*args)
    elapsed = time.perf_counter() - start
    reported = call.__self__.last_call_seconds() if isinstance(getattr(call, "__self__", None), Runner) else None
    return result, elapsed if reported is None else reported


def _focus_box(image_hw: tuple[int, int], prompt: Prompt, *masks: np.ndarray) -> tuple[int, int, int, int]:
    """The region around the prompt and both masks (plus a margin), so small objects stay visible."""
    h, w = image_hw
    ys, xs = np.nonzero(np.logical_or.reduce(masks))
    xs = np.concatenate([xs, prompt.points[:, 0]])
    ys = np.concatenate([ys, prompt.points[:, 1]])
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    margin = max(32.0, 0.25 * max(x1 - x0, y1 - y0))
    return (int(max(0, x0 - margin)), int(max(0, y0 - margin)), int(min(w, x1 + margin + 1)), int(min(h, y1 + margin + 1)))


def _render_pair(image: np.ndarray, prompt: Prompt, reference: np.ndarray, test: np.ndarray, labels: tuple[str, str]) -> bytes:
    """fp32 mask | runner mask, side by side with the prompt drawn, cropped to the object, as PNG."""
    x0, y0, x1, y1 = _focus_box(image.shape[:2], prompt, reference, test)
    panels = []
    for mask, label in zip((reference, test), labels):
        box = prompt.points.reshape(-1) if prompt.kind == "box" else None
        points = None if prompt.kind == "box" else prompt.points
        panel = draw_prompts(overlay_masks(image, [mask]), points, prompt.labels if points is not None else None, box)
        panel = panel[y0:y1, x0:x1]
        scale = _OVERLAY_WIDTH / panel.shape[1]
        panel = cv2.resize(panel, (_OVERLAY_WIDTH, max(1, round(panel.shape[0] * scale))), interpolation=cv2.INTER_AREA)
        (text_w, text_h), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        cv2.rectangle(panel, (0, 0), (text_w + 10, text_h + 12), (0, 0, 0), -1)
        cv2.putText(panel, label, (5, text_h + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        panels.append(panel)
    _, png = cv2.imencode(".png", cv2.cvtColor(np.hstack(panels), cv2.COLOR_RGB2BGR))
    return png.tobytes()


def _short_name(info: dict[str, Any]) -> str:
    """e.g. "onnx int8 static-conv-linear": fits above a 360-pixel panel."""
    return " ".join(str(v) for v in (info.get("target"), info.get("precision"), info.get("recipe")) if v) or info["label"]


def warm_up_prompt(image_hw: tuple[int, int]) -> Prompt:
    """The untimed first query of every runner: a click at the image centre."""
    h, w = image_hw
    return Prompt(np.array([[w / 2, h / 2]], np.float32), np.array([1.0], np.float32))


def _warm_up(runner: Runner, image: np.ndarray) -> None:
    prompt = warm_up_prompt(image.shape[:2])
    runner.decode(runner.encode(image), prompt.points, prompt.labels, image.shape[:2])


RunnerLoader = Callable[[], Runner]


@dataclass
class _ReferenceImage:
    """What the fp32 pass leaves for every runner's pass over one image: its embedding, and per
    prompt the mask fp32 ranks first (bit-packed) with fp32's IoU predictions."""

    embedding: np.ndarray
    prompts: list[Prompt]
    top_masks: list[np.ndarray]
    ious: list[np.ndarray]


def _pack(mask: np.ndarray) -> np.ndarray:
    return np.packbits(mask, axis=None)


def _unpack(packed: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return np.unpackbits(packed, count=shape[0] * shape[1]).reshape(shape).astype(bool)


def measure_drift(
    reference: TorchRunner,
    runners: Sequence[Runner | RunnerLoader],
    source: ImageSource,
    artifact_dirs: list[str | None] | None = None,
    grid: int = PROMPT_GRID,
    max_objects: int | None = 8,
    measure_memory: bool = True,
    checkpoint: str | None = None,
    layer_drift=None,
) -> DriftReport:
    """Run the reference, then each runner in turn, over ``source`` and collect the drift measurements.

    A runner may be given as a loader (``() -> Runner``): it is loaded when its turn comes and
    released after it, so only one artifact is in memory at a time (at 1024, six loaded at once
    held 3.9 GB). The fp32 pass runs first and keeps, per prompt, only what the comparison reads.
    ``layer_drift(runner_index, runner, images) -> rows | None`` adds per-layer tables (the CLI
    passes the target's tool); ``checkpoint`` lets the memory probe load the reference in a subprocess.
    """
    artifact_dirs = artifact_dirs or [None] * len(runners)
    ref_drift = RunnerDrift(reference.describe())
    references: list[_ReferenceImage] = []
    first_image = None
    layer_images: list[np.ndarray] = []
    for sample in tqdm(source.samples(), total=len(source), desc="validating fp32", unit="img"):
        image, image_hw = sample.image, sample.image.shape[:2]
        if first_image is None:
            first_image = image
            _warm_up(reference, image)
        if len(layer_images) < LAYER_DRIFT_IMAGES:
            layer_images.append(image)
        prompts = prompts_for(sample, grid, max_objects)
        embedding, seconds = _timed(reference.encode, image)
        ref_drift.encoder_s.append(seconds)
        kept = _ReferenceImage(embedding, prompts, [], [])
        for prompt in prompts:
            (low_res, iou), seconds = _timed(reference.decode, embedding, prompt.points, prompt.labels, image_hw)
            ref_drift.decoder_s.append(seconds)
            masks = full_size_masks(low_res, image_hw)
            kept.top_masks.append(_pack(masks[int(np.argmax(iou[0]))]))
            kept.ious.append(iou[0])
            _score_ground_truth(ref_drift, sample, prompt, masks, iou[0])
        references.append(kept)
    if first_image is None:
        raise ValueError("no images to validate on")
    if measure_memory:
        ref_drift.memory = reference.measured_memory() or (
            _measure_memory(first_image, ref_drift, checkpoint, reference.img_size) if checkpoint else None)
    drifts = []
    for index, (item, artifact_dir) in enumerate(zip(runners, artifact_dirs)):
        runner = item if isinstance(item, Runner) else item()
        drift = RunnerDrift(runner.describe(), artifact_dir)
        _warm_up(runner, first_image)
        samples = zip(source.samples(), references)
        for sample, kept in tqdm(samples, total=len(source), desc=f"validating {drift.info['label']}", unit="img"):
            _compare_image(runner, drift, sample, kept)
        if layer_drift is not None:
            drift.layers = layer_drift(index, runner, layer_images)
        own = runner.measured_memory() if measure_memory else None  # GPU memory, a remote device's RSS
        del runner  # a loaded artifact is released before the next one loads
        if own is not None:
            drift.memory = own
        elif measure_memory and (drift.artifact_dir or checkpoint):
            drift.memory = _measure_memory(first_image, drift, checkpoint, reference.img_size)
        drifts.append(drift)
    return DriftReport(
        source=source.describe(), n_images=len(source), n_prompts=sum(len(k.prompts) for k in references),
        reference=ref_drift, runners=drifts, machine=machine_info(),
        settings={"grid": grid, "max_objects": max_objects, "worst_kept": WORST_KEPT},
    )


def _compare_image(runner: Runner, drift: RunnerDrift, sample, kept: _ReferenceImage) -> None:
    """One image through ``runner``: its embedding and every prompt's mask against fp32's."""
    image, image_hw = sample.image, sample.image.shape[:2]
    embedding, seconds = _timed(runner.encode, image)
    drift.encoder_s.append(seconds)
    drift.embedding_cosine.append(cosine(kept.embedding, embedding))
    drift.embedding_sqnr_db.append(sqnr_db(kept.embedding, embedding))
    for prompt, packed, ref_iou in zip(kept.prompts, kept.top_masks, kept.ious):
        (low_res, iou), seconds = _timed(runner.decode, embedding, prompt.points, prompt.labels, image_hw)
        drift.decoder_s.append(seconds)
        masks, iou = full_size_masks(low_res, image_hw), iou[0]
        top = int(np.argmax(ref_iou))
        ref_mask = _unpack(packed, image_hw)
        value = mask_iou(masks[top], ref_mask)
        drift.keep_if_worst(value, lambda: WorstPrompt(
            value, sample.image_id, prompt.describe(),
            _render_pair(image, prompt, ref_mask, masks[top], ("fp32", _short_name(drift.info)))))
        drift.mask_iou.append(value)
        drift.top_choice_agrees.append(int(np.argmax(iou)) == top)
        drift.iou_prediction_delta.append(float(np.max(np.abs(iou - ref_iou))))
        _score_ground_truth(drift, sample, prompt, masks, iou)


def _score_ground_truth(drift: RunnerDrift, sample, prompt: Prompt, masks: np.ndarray, iou: np.ndarray) -> None:
    if prompt.object_index is None:
        return
    gt = sample.annotations[prompt.object_index].mask
    kind = "box" if prompt.kind == "box" else "1-click"
    drift.gt_iou.setdefault(kind, []).append(mask_iou(masks[int(np.argmax(iou))], gt))


def _measure_memory(image, drift: RunnerDrift, checkpoint, img_size) -> dict[str, float]:
    from edge_sam.targets.validation.subprocess_rss import measure_peak_rss

    if drift.artifact_dir:
        return measure_peak_rss(image, artifact_dir=drift.artifact_dir)
    return measure_peak_rss(image, checkpoint=checkpoint, img_size=img_size, runtime_opts=drift.info.get("torch_options"))
