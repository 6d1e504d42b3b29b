"""The calls every way of running the model answers: encode an image, decode prompts.

:class:`Runner` lives here, beside the model, so the Predictor and everything-mode take any
runner without importing a deployment toolchain; the runners of exported artifacts subclass it
in :mod:`edge_sam.targets`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .errors import EdgeSamError
from .modeling import EfficientSam, build_efficient_sam
from .transforms import image_to_tensor


def model_at_size(model: EfficientSam, img_size: int) -> EfficientSam:
    """The same weights at another input size (the position table is resized on the fly)."""
    if model.image_encoder.img_size == img_size:
        return model
    resized = build_efficient_sam(dataclasses.replace(model.config, img_size=img_size))
    resized.load_state_dict(model.state_dict())
    return resized.to(next(model.parameters()).device).eval()


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch's intra-op pool at one thread inside the block, restored after (per calling thread:
    torch reads its OpenMP thread count per thread).

    After each parallel op torch's idle OpenMP workers spin for milliseconds; next to another
    runtime's threads on a small CPU they take its cores (on 2 cores a 256-px LiteRT encoder ran
    1.5x slower right after a two-thread preprocessing op, and LiteRT's decoder 1.3x slower in
    everything-mode's grid loop). One thread makes no workers to spin.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Runner(ABC):
    """Runs the model (PyTorch, or an exported artifact of any runtime) behind the same calls.

    ``encode`` takes an HxWx3 uint8 RGB image and returns the image embedding [1, C, h, w];
    ``decode`` takes that embedding and one query's prompts in image pixels and returns the
    low-res mask logits [1, 3, 4h, 4w] and IoU predictions [1, 3]; ``decode_batch`` does the
    same for Q queries at once. The drift report, the Predictor and everything-mode only see
    these calls. A runner does not validate prompts: :func:`edge_sam.predictor.prompt_to_points`
    does, once, for every runner.
    """

    label: str
    img_size: int
    # Whether decode keeps the decoder's per-image context for the last embedding it saw, so a
    # prompt pays only the per-prompt FLOPs (edge_sam.flops.decoder_flops(cached=True)).
    keeps_decoder_context: bool = False
    # Whether its decoder folds the cross-attentions' image-side projections into the prompt
    # tokens (the deploy form's, edge_sam.flops.decoder_flops(factored=True)): fewer FLOPs per prompt.
    folds_decoder_attention: bool = False
    max_prompt_points: int  # decoder prompt slots (a box takes two)
    mask_threshold: float = 0.0  # logits above it are the object
    # Only the PyTorch model keeps the single-mask output token: every exported decoder graph
    # returns the three multimask outputs.
    single_mask_output: bool = False
    # Runs on torch's own thread pool. Other runners bring their runtime's threads, which torch's
    # host-side ops between their calls compete with (:meth:`host_side`).
    uses_torch_threads: bool = False

    def host_side(self) -> contextlib.AbstractContextManager:
        """The context for host-side torch work next to this runner's calls (preprocessing,
        everything-mode's filters): one torch thread, unless the runner runs on torch's pool."""
        return contextlib.nullcontext() if self.uses_torch_threads else one_torch_thread()

    @abstractmethod
    def encode(self, image: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def decode(
        self, embedding: np.ndarray, points: np.ndarray, labels: np.ndarray, image_hw: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def decode_batch(
        self,
        embedding: np.ndarray,
        points: np.ndarray,
        labels: np.ndarray,
        image_hw: tuple[int, int],
        multimask_output: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Q queries: points [Q, N, 2] and labels [Q, N] (pad with (-1, -1) and label -1) ->
        low-res logits [Q, M, 4h, 4w] and IoU predictions [Q, M]; M is 3, or 1 for the
        single-mask output where the runner has it.

        This default decodes one query at a time; runners whose graph takes a batch override it.
        """
        self.check_multimask(multimask_output)
        outputs = [self.decode(embedding, p, l, image_hw) for p, l in zip(points, labels)]
        return np.concatenate([low for low, _ in outputs]), np.concatenate([iou for _, iou in outputs])

    def check_multimask(self, multimask_output: bool) -> None:
        """One clear error when the single-mask output is asked of a runner without it."""
        if not multimask_output and not self.single_mask_output:
            raise EdgeSamError(
                f"{self.label} returns the 3 multimask outputs only (exported decoders have no single-mask "
                "output): use multimask_output=True and pick a mask by its predicted IoU"
            )

    def describe(self) -> dict[str, Any]:
        """What the report prints about this runner."""
        return {"label": self.label, "img_size": self.img_size}

    def last_call_seconds(self) -> float | None:
        """Seconds the last encode/decode took where it ran, for a runner that times itself (a
        remote device reporting its own timings); None: the caller's wall clock is the time."""
        return None

    def measured_memory(self) -> dict[str, float] | None:
        """Peak memory the runner measured itself (GPU memory, a device's RSS); None: the report
        measures it (a subprocess probe of the process's RSS)."""
        return None


# What TorchRunner computes in: fp32 (TF32 off), tf32 (CUDA matmuls and convolutions on TF32
# tensor cores), fp16 / bf16 (autocast: matmuls and convolutions in 16 bits, norms, softmax and
# reductions in fp32, as torch's autocast lists decide).
TORCH_PRECISIONS = ("fp32", "tf32", "fp16", "bf16")


def torch_device(device: str | torch.device) -> torch.device:
    """``device`` checked: CUDA asked where there is none is one clear line."""
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise EdgeSamError(f"unknown torch device '{device}' (e.g. cpu, cuda, cuda:1)") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise EdgeSamError(f"device '{device}' asked, but {build} (torch {torch.__version__})")
        index = resolved.index if resolved.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise EdgeSamError(f"device '{device}' asked, but only {torch.cuda.device_count()} CUDA device(s) are visible")
        resolved = torch.device("cuda", index)
    elif resolved.type != "cpu":
        raise EdgeSamError(f"torch device '{device}' is not supported here (use cpu or cuda)")
    return resolved


def check_torch_precision(precision: str, device: torch.device) -> None:
    """One clear line for a precision the device cannot compute in."""
    if precision not in TORCH_PRECISIONS:
        raise EdgeSamError(f"unknown torch precision '{precision}' (choose from {', '.join(TORCH_PRECISIONS)})")
    if device.type == "cpu" and precision == "tf32":
        raise EdgeSamError("tf32 is a CUDA precision (Ampere and newer GPUs); on the CPU use fp32, bf16 or fp16")
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if precision == "tf32" and major < 8:
            raise EdgeSamError(f"tf32 needs an Ampere or newer GPU (compute capability 8.0); "
                               f"{torch.cuda.get_device_name(device)} is {major}.{minor}")
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise EdgeSamError(f"{torch.cuda.get_device_name(device)} does not compute in bf16; use fp16")


class TorchRunner(Runner):
    """The PyTorch model through its own public methods; fp32 on the CPU, it is the reference
    every number uses.

    It runs on the device the model's weights are on, or on ``device`` (a copy of the model is
    moved there; "cuda" where torch has a GPU), in ``precision`` (:data:`TORCH_PRECISIONS`),
    optionally through ``torch.compile`` (``compile=True`` for the default backend, or a backend
    name such as "cudagraphs" or "eager"). Inputs and outputs are host numpy arrays in float32;
    on CUDA every call ends synchronized (the outputs are copied to the host), so wall-clock
    timing of a call is its GPU time plus the transfers, and :meth:`measured_memory` reports the
    peak GPU memory of the weights plus the largest call.
    """

    keeps_decoder_context = True

    uses_torch_threads = True

    single_mask_output = True

    def __init__(
        self, model: EfficientSam, img_size: int | None = None, *, label: str | None = None,
        device: str | torch.device | None = None, precision: str = "fp32", compile: bool | str = False,
    ) -> None:
        target = torch_device(device) if device is not None else next(model.parameters()).device
        check_torch_precision(precision, target)
        if target != next(model.parameters()).device or compile:
            model = copy.deepcopy(model).to(target)  # the caller's model stays where it is, uncompiled
        allocated_before = torch.cuda.memory_allocated(target) if target.type == "cuda" else 0
        self.model = model_at_size(model, img_size or model.image_encoder.img_size)
        self.img_size = self.model.image_encoder.img_size
        self.max_prompt_points = self.model.decoder_max_num_input_points
        self.mask_threshold = self.model.mask_threshold
        self.device = next(self.model.parameters()).device
        self.precision, self.compile = precision, compile
        if compile:
            backend = {} if compile is True else {"backend": compile}
            self.model.image_encoder = torch.compile(self.model.image_encoder, **backend)
            self.model.mask_decoder = torch.compile(self.model.mask_decoder, **backend)
        default = precision == "fp32" and self.device.type == "cpu" and not compile
        self.label = label or ("pytorch-fp32" if default else
                               f"pytorch-{precision}-{self.device.type}{'-compiled' if compile else ''}")
        self._weights_bytes = (torch.cuda.memory_allocated(self.device) - allocated_before) if self.device.type == "cuda" else 0
        self._peak_call_bytes = 0
        # The last embedding encode returned, and its copy on the device: decoding many prompts
        # against one image does not upload the embedding again for each.
        self._embedding_on_device: tuple[np.ndarray | None, torch.Tensor | None] = (None, None)
        self._decoder_context = None  # MaskDecoder.image_context of that embedding, once decoded

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> np.ndarray:
        with self._numerics():
            embedding = self.model.get_image_embeddings(image_to_tensor(image).to(self.device))
        host = embedding.float().cpu().numpy()
        self._embedding_on_device = (host, embedding)
        self._decoder_context = None
        return host

    def decode(self, embedding, points, labels, image_hw):
        points = np.asarray(points, np.float32).reshape(1, -1, 2)
        labels = np.asarray(labels, np.float32).reshape(1, -1)
        return tuple(out[0][None] for out in self.decode_batch(embedding, points, labels, image_hw))

    @torch.inference_mode()
    def decode_batch(self, embedding, points, labels, image_hw, multimask_output=True):
        """All Q queries in one decoder call (the batch is the query axis)."""
        points = torch.as_tensor(np.asarray(points, np.float32)).reshape(1, len(points), -1, 2)
        labels = torch.as_tensor(np.asarray(labels, np.float32)).reshape(1, len(points[0]), -1)
        with self._numerics():
            on_device, context = self._on_device(embedding)
            masks, iou = self.model.predict_masks(
                on_device, points.to(self.device), labels.to(self.device), multimask_output,
                input_h=image_hw[0], input_w=image_hw[1], image_context=context,
            )
        return masks[0].float().cpu().numpy(), iou[0].float().cpu().numpy()

    @contextlib.contextmanager
    def _numerics(self) -> Iterator[None]:
        """The precision's settings around one call (autocast; TF32 on or off on CUDA, restored
        after), and on CUDA the call's peak memory above what was allocated before it."""
        with contextlib.ExitStack() as stack:
            if self.precision in ("fp16", "bf16"):
                dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
                stack.enter_context(torch.autocast(self.device.type, dtype=dtype))
            if self.device.type == "cuda":
                stack.enter_context(_tf32(self.precision == "tf32"))
                torch.cuda.reset_peak_memory_stats(self.device)
                before = torch.cuda.memory_allocated(self.device)
            yield
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
                peak = torch.cuda.max_memory_allocated(self.device) - before
                self._peak_call_bytes = max(self._peak_call_bytes, peak)

    def measured_memory(self) -> dict[str, float] | None:
        """On CUDA: peak GPU MiB (weights + the largest call's working memory); None on the CPU."""
        if self.device.type != "cuda":
            return None
        return {"gpu_peak_mb": round((self._weights_bytes + self._peak_call_bytes) / 2**20, 1)}

    def _on_device(self, embedding: np.ndarray) -> tuple[torch.Tensor, Any]:
        """The embedding on the device and, for the one ``encode`` returned last, the decoder's
        per-image context (computed at its first decode, then reused for every prompt)."""
        host, on_device = self._embedding_on_device
        if embedding is host:
            if self._decoder_context is None:
                self._decoder_context = self.model.decoder_context(on_device)
            return on_device, self._decoder_context
        return torch.as_tensor(np.asarray(embedding, np.float32)).to(self.device), None

    def describe(self) -> dict[str, Any]:
        params = sum(p.numel() for p in self.model.parameters())
        interface = "eager" if not self.compile else f"compiled ({'inductor' if self.compile is True else self.compile})"
        device = str(self.device) if self.device.type != "cuda" else f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        return {"label": self.label, "target": "pytorch", "backend": f"torch {torch.__version__}", "interface": interface,
                "precision": self.precision, "recipe": None, "img_size": self.img_size, "bytes": params * 4,
                "device": device, "torch_options": self.options()}

    def options(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this runner from the same model (the memory probe's)."""
        return {"device": str(self.device), "precision": self.precision, "compile": self.compile}


@contextlib.contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    """TF32 for CUDA matmuls and cuDNN convolutions on or off, restored afterwards (the legacy
    flags, which edge_sam's training also sets: torch refuses a mix of the two APIs)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
