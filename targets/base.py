"""What every target implements, and everything targets share.

A target module is only its export and runner glue: it subclasses :class:`Target` (write the
graph files, build a runner from a verified manifest) and :class:`DeployFormRunner` (run the
encoder and decoder graphs on already prepared arrays). Staging the artifact in a temp
directory, hashing, the manifest, resolving the precision and recipe, preprocessing and prompt
padding all live here, once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from edge_sam.checkpoint import resolve_checkpoint
from edge_sam.deploy import pad_prompts
from edge_sam.errors import EdgeSamError, require
from edge_sam.staging import staged_dir
from edge_sam.modeling import EfficientSam, build_efficient_sam
from edge_sam.transforms import IMAGENET_MEAN, IMAGENET_STD, image_to_tensor, preprocess
from edge_sam.quantize.recipes import DEFAULT_RECIPE, QuantRecipe, RecipeError, get_recipe

from .calibration import ImageSource
from .prompts import grid_prompts
from .manifest import (
    ArtifactError,
    GraphSpec,
    Manifest,
    read_manifest,
    sha256_file,
    toolchain_versions,
    verify_files,
    write_manifest,
)

PRECISIONS = ("fp32", "fp16", "int8")
INTERFACES = ("deploy", "official")


def preprocessing_contract(in_graph: bool) -> dict[str, Any]:
    """The preprocessing every artifact expects, as data a runner in any language can follow.

    The numbers come from the same constants :func:`edge_sam.transforms.preprocess` uses, and a
    runner refuses an artifact whose recorded contract differs from this one.
    """
    return {
        "in_graph": in_graph,
        "color": "RGB",
        "layout": "NCHW",
        "input_range": [0.0, 1.0],
        "input_scale": "uint8 / 255",
        "resize": "bilinear, align_corners=False, no antialias, stretched to a square (no aspect padding)",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
    }


def prompt_contract(model: EfficientSam, in_graph: bool) -> dict[str, Any]:
    return {
        "coordinates": "image pixels (x, y)" if in_graph else "model pixels: x * img_size / W, y * img_size / H",
        "slots": model.decoder_max_num_input_points,
        "padding": {"point": [-1.0, -1.0], "label": -1},
        "labels": {"0": "background point", "1": "foreground point", "2": "box top-left", "3": "box bottom-right"},
        "multimask_outputs": model.config.num_multimask_outputs,
    }


def state_dict_sha256(model: torch.nn.Module) -> str:
    """A digest of the weights themselves, so an artifact can be matched to any checkpoint file
    (or in-memory model) holding the same numbers."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        array = tensor.detach().to("cpu", torch.float32 if tensor.is_floating_point() else tensor.dtype).contiguous()
        digest.update(f"{name}:{tuple(array.shape)}:{array.dtype};".encode())
        digest.update(array.numpy().tobytes())
    return digest.hexdigest()


def source_fingerprint(model: EfficientSam, checkpoint: str | os.PathLike | None) -> dict[str, Any]:
    """sha256 of the checkpoint file (when there is one) and of the weights as loaded."""
    record: dict[str, Any] = {"state_dict_sha256": state_dict_sha256(model)}
    if checkpoint is not None:
        path = resolve_checkpoint(checkpoint)
        record.update(name=str(checkpoint), file=path.name, sha256=sha256_file(path))
    return record


def check_source(manifest: Manifest, model: EfficientSam, artifact_dir: str | os.PathLike) -> None:
    """Refuse to compare an artifact against a model it was not exported from."""
    recorded = manifest.source_checkpoint.get("state_dict_sha256")
    actual = state_dict_sha256(model)
    if recorded != actual:
        raise ArtifactError(
            f"{artifact_dir} was exported from different weights (state dict sha256 {str(recorded)[:12]}... "
            f"vs {actual[:12]}... for the given checkpoint)"
        )


def model_at_size(model: EfficientSam, img_size: int) -> EfficientSam:
    """The same weights at another input size (the position table is resized on the fly)."""
    if model.image_encoder.img_size == img_size:
        return model
    resized = build_efficient_sam(dataclasses.replace(model.config, img_size=img_size))
    resized.load_state_dict(model.state_dict())
    return resized.eval()


def resolve_recipe(precision: str, recipe: str | QuantRecipe | None) -> QuantRecipe | None:
    """fp32/fp16 take no recipe; int8 takes the named recipe or the default static one."""
    if precision not in PRECISIONS:
        raise EdgeSamError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    if precision != "int8":
        if recipe is not None:
            raise RecipeError(f"a quantization recipe applies to int8 only, not {precision}")
        return None
    if isinstance(recipe, QuantRecipe):
        return recipe
    return get_recipe(recipe or DEFAULT_RECIPE)


@dataclass(frozen=True)
class ExportRequest:
    """The validated options of one export, handed to the target's graph writer."""

    precision: str
    recipe: QuantRecipe | None
    img_size: int
    interface: str
    calibration: ImageSource | None


class Runner(ABC):
    """Runs one artifact (or the PyTorch model) behind the same two calls.

    ``encode`` takes an HxWx3 uint8 RGB image and returns the image embedding [1, C, h, w];
    ``decode`` takes that embedding and prompts in image pixels and returns the low-res mask
    logits [1, 3, 4h, 4w] and IoU predictions [1, 3]. The drift report only sees these calls.
    """

    label: str
    img_size: int
    manifest: Manifest | None = None

    @abstractmethod
    def encode(self, image: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def decode(
        self, embedding: np.ndarray, points: np.ndarray, labels: np.ndarray, image_hw: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def describe(self) -> dict[str, Any]:
        """What the report prints about this runner."""
        if self.manifest is None:
            return {"label": self.label, "img_size": self.img_size}
        m = self.manifest
        return {
            "label": self.label,
            "target": m.target,
            "backend": m.backend,
            "interface": m.interface,
            "precision": m.precision,
            "recipe": m.recipe["name"] if m.recipe else None,
            "img_size": m.img_size,
            "bytes": sum(f["bytes"] for f in m.files.values()),
        }


class TorchRunner(Runner):
    """The fp32 PyTorch model through its own public methods: the reference every number uses."""

    def __init__(self, model: EfficientSam, img_size: int | None = None, label: str = "pytorch-fp32") -> None:
        self.model = model_at_size(model, img_size or model.image_encoder.img_size)
        self.img_size = self.model.image_encoder.img_size
        self.label = label

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> np.ndarray:
        return self.model.get_image_embeddings(image_to_tensor(image)).numpy()

    @torch.inference_mode()
    def decode(self, embedding, points, labels, image_hw):
        points = torch.as_tensor(np.asarray(points, np.float32)).reshape(1, 1, -1, 2)
        labels = torch.as_tensor(np.asarray(labels, np.float32)).reshape(1, 1, -1)
        masks, iou = self.model.predict_masks(
            torch.as_tensor(embedding), points, labels, True, input_h=image_hw[0], input_w=image_hw[1]
        )
        return masks[:, 0].numpy(), iou[:, 0].numpy()

    def describe(self) -> dict[str, Any]:
        params = sum(p.numel() for p in self.model.parameters())
        return {"label": self.label, "target": "pytorch", "backend": f"torch {torch.__version__}", "interface": "eager",
                "precision": "fp32", "recipe": None, "img_size": self.img_size, "bytes": params * 4}


def decoder_calibration_batches(
    model: EfficientSam, source: ImageSource, img_size: int
) -> tuple[Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], int]:
    """Decoder calibration inputs and their count: the fp32 embedding of each image with the
    validation grid prompts (what the decoder sees in the drift report), for PT2E quantizers."""
    reference = TorchRunner(model, img_size)
    slots = model.decoder_max_num_input_points

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for image in source.images():
            embedding = torch.from_numpy(reference.encode(image))
            for prompt in grid_prompts(image.shape[:2]):
                coords, labels = pad_prompts(prompt.points, prompt.labels, image.shape[:2], img_size, slots)
                yield embedding, torch.from_numpy(coords[None]), torch.from_numpy(labels[None])

    return batches(), len(source) * len(grid_prompts((1, 1)))


class DeployFormRunner(Runner):
    """A runner for deploy-form graphs: the host resizes and normalizes the image and pads the
    prompts to the decoder's slots (both via edge_sam, so every target preprocesses the same way);
    a target only runs the two graphs."""

    def __init__(self, manifest: Manifest, label: str) -> None:
        self.manifest = manifest
        self.img_size = manifest.img_size
        self.slots = manifest.prompts["slots"]
        self.label = label

    def encode(self, image: np.ndarray) -> np.ndarray:
        x = preprocess(image_to_tensor(image), self.img_size).numpy()
        return self.run_encoder(np.ascontiguousarray(x, dtype=np.float32))

    def decode(self, embedding, points, labels, image_hw):
        coords, padded = pad_prompts(points, labels, image_hw, self.img_size, self.slots)
        return self.run_decoder(np.asarray(embedding, np.float32), coords[None], padded[None])

    @abstractmethod
    def run_encoder(self, image: np.ndarray) -> np.ndarray:
        """[1, 3, S, S] normalized float32 -> [1, C, S/16, S/16]."""

    @abstractmethod
    def run_decoder(self, embedding: np.ndarray, coords: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[1, C, h, w], [1, slots, 2] model px, [1, slots] -> ([1, 3, 4h, 4w], [1, 3])."""


class Target(ABC):
    """One runtime: exports artifacts and loads them back as runners."""

    name: ClassVar[str]
    backend: ClassVar[str]
    extra: ClassVar[str]  # the pip extra that installs the toolchain
    distributions: ClassVar[tuple[str, ...]]  # recorded in the manifest's toolchain versions
    precisions: ClassVar[tuple[str, ...]] = PRECISIONS
    interfaces: ClassVar[tuple[str, ...]] = ("deploy",)

    def require(self, module: str):
        """Import a toolchain module, or raise one line naming ``pip install 'edge-sam[<extra>]'``."""
        return require(module, self.extra)

    # -- export -------------------------------------------------------------------------------
    def export(
        self,
        model: EfficientSam,
        precision: str,
        recipe: str | QuantRecipe | None,
        out_dir: str | os.PathLike,
        calibration: ImageSource | None = None,
        img_size: int | None = None,
        *,
        interface: str = "deploy",
        checkpoint: str | os.PathLike | None = None,
        overwrite: bool = False,
        calibration_images: int | None = None,
        **opts: Any,
    ) -> Path:
        """Write an artifact directory (graph files + manifest.json) and return its path.

        ``checkpoint`` (the file the model came from) is hashed into the manifest;
        static recipes calibrate on the first ``calibration_images`` of ``calibration``
        (default: the recipe's count).
        """
        if precision not in self.precisions:
            raise EdgeSamError(f"target {self.name} exports {', '.join(self.precisions)}, not {precision}")
        if interface not in self.interfaces:
            raise EdgeSamError(f"target {self.name} has interfaces {', '.join(self.interfaces)}, not {interface}")
        resolved = resolve_recipe(precision, recipe)
        if resolved is not None and resolved.needs_calibration and calibration is None:
            raise EdgeSamError(f"int8 recipe '{resolved.name}' is static: it needs calibration images (--calibration DIR)")
        size = img_size or model.image_encoder.img_size
        if size % model.image_encoder.patch_size:
            raise EdgeSamError(f"img_size {size} is not a multiple of the patch size {model.image_encoder.patch_size}")
        if resolved is not None and resolved.needs_calibration:
            calibration = calibration.limited(calibration_images or resolved.calibration_images)
        else:
            calibration = None
        request = ExportRequest(precision, resolved, size, interface, calibration)
        self.check_toolchain()
        fingerprint = source_fingerprint(model, checkpoint)
        with staged_dir(out_dir, overwrite) as tmp:
            graphs = self.write_graphs(model.eval(), request, tmp, **opts)
            manifest = Manifest(
                target=self.name,
                backend=self.backend,
                interface=interface,
                precision=precision,
                recipe=resolved.describe() if resolved else None,
                img_size=size,
                model_config=dataclasses.replace(model.config, img_size=size).to_dict(),
                preprocessing=preprocessing_contract(in_graph=interface == "official"),
                prompts=prompt_contract(model, in_graph=interface == "official"),
                graphs=tuple(graphs),
                source_checkpoint=fingerprint,
                toolchain=toolchain_versions("edge-sam", "torch", *self.distributions),
                calibration=request.calibration.describe() if request.calibration else None,
            )
            write_manifest(tmp, manifest)
        return Path(out_dir)

    def check_toolchain(self) -> None:
        """Import every toolchain module up front, so a missing one fails before any work."""
        for module in self.toolchain_modules():
            self.require(module)

    @abstractmethod
    def toolchain_modules(self) -> tuple[str, ...]:
        """Python modules this target's export and runner import."""

    @abstractmethod
    def write_graphs(self, model: EfficientSam, request: ExportRequest, out_dir: Path, **opts: Any) -> list[GraphSpec]:
        """Write the encoder and decoder files into ``out_dir`` and describe their I/O."""

    # -- load ---------------------------------------------------------------------------------
    def load(self, artifact_dir: str | os.PathLike, **runtime_opts: Any) -> Runner:
        """Verify an artifact against its manifest and return a runner for it."""
        manifest = verify_artifact(artifact_dir, expected_target=self.name)
        self.check_toolchain()
        return self.make_runner(Path(artifact_dir), manifest, **runtime_opts)

    @abstractmethod
    def make_runner(self, artifact_dir: Path, manifest: Manifest, **runtime_opts: Any) -> Runner:
        """A runner for a verified artifact."""

    def layer_drift(self, artifact_dir: Path, runner: Runner, model: EfficientSam, images: list[np.ndarray]) -> list[dict] | None:
        """Per-layer SQNR between the artifact and an fp32 export of ``model``; None where the
        target has no per-layer tool or the artifact is fp32 already."""
        return None


def verify_artifact(artifact_dir: str | os.PathLike, expected_target: str | None = None) -> Manifest:
    """Read the manifest, check it belongs to this target and this edge_sam, and check every hash."""
    manifest = read_manifest(artifact_dir)
    if expected_target is not None and manifest.target != expected_target:
        raise ArtifactError(f"{artifact_dir} is a '{manifest.target}' artifact, not '{expected_target}'")
    expected = preprocessing_contract(manifest.preprocessing.get("in_graph", False))
    for key in ("mean", "std", "input_range", "color"):
        if manifest.preprocessing.get(key) != expected[key]:
            raise ArtifactError(
                f"{artifact_dir}: manifest preprocessing {key}={manifest.preprocessing.get(key)} "
                f"differs from this edge_sam's {expected[key]}"
            )
    verify_files(artifact_dir, manifest)
    return manifest
