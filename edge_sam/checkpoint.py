"""Checkpoint I/O: the official .pt / .pt.zip files, and safetensors with the config inside.

Loading is strict: a state dict that does not match the architecture raises one
:class:`CheckpointError` naming the first missing and unexpected keys and shape mismatches,
instead of silently leaving weights at their initial values.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import torch

from .errors import CheckpointError
from .modeling import EfficientSam, EfficientSamConfig, build_efficient_sam

WEIGHTS_DIR = Path(__file__).parent / "weights"
# Names that work wherever a checkpoint path is asked for.
NAMED_CHECKPOINTS: dict[str, Path] = {
    "reference": WEIGHTS_DIR / "reference_vitt_256.safetensors",
}
CONFIG_METADATA_KEY = "edge_sam_config"
# The model file a training or QAT run folder holds: the folder itself works as a checkpoint path.
RUN_MODEL_FILE = "model.safetensors"
_SHOWN_KEYS = 5


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A checkpoint name (``reference``), file, or run folder (its ``model.safetensors``) -> an
    existing file, or one clear error."""
    text = str(name_or_path)
    path = NAMED_CHECKPOINTS.get(text, Path(text))
    if path.is_dir():
        if not (path / RUN_MODEL_FILE).is_file():
            raise CheckpointError(f"{path} is a folder without {RUN_MODEL_FILE} (not a finished training or QAT run)")
        return path / RUN_MODEL_FILE
    if not path.is_file():
        if text in NAMED_CHECKPOINTS:
            raise CheckpointError(f"the '{text}' model is missing from this install (expected {path})")
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def _torch_load(source: str | os.PathLike | io.BytesIO, label: str) -> object:
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure of an untrusted file is the same user error
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{label} is not a readable PyTorch checkpoint: {first_line}") from None


def _read_zipped_pt(path: Path) -> object | None:
    """The official ViT-S checkpoint ships as a plain zip around the .pt file.

    A torch checkpoint is itself a zip (with a data.pkl inside); only a zip without one that
    holds a .pt/.pth member is unwrapped here.
    """
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if any(name.endswith("data.pkl") for name in names):
            return None
        inner = [n for n in names if n.endswith((".pt", ".pth")) and not n.startswith("__MACOSX")]
        if len(inner) != 1:
            raise CheckpointError(f"{path} is a zip without exactly one .pt/.pth inside (found {inner or names[:5]})")
        return _torch_load(io.BytesIO(archive.read(inner[0])), f"{path}:{inner[0]}")


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], EfficientSamConfig | None]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None
    config = None
    if CONFIG_METADATA_KEY in metadata:
        config = EfficientSamConfig.from_dict(json.loads(metadata[CONFIG_METADATA_KEY]))
    return state, config


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], EfficientSamConfig | None]:
    """Read any supported checkpoint file into (state dict, config if the file carries one)."""
    path = resolve_checkpoint(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    loaded = _read_zipped_pt(path)
    if loaded is None:
        loaded = _torch_load(path, str(path))
    if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict):
        loaded = loaded["model"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"{path} holds no state dict (expected a dict of tensors or {{'model': state_dict}})")
    return loaded, None


def infer_config(state: dict[str, torch.Tensor], img_size: int = 1024) -> EfficientSamConfig:
    """Ti vs S (or any width) from the tensor shapes of an official-layout state dict."""
    try:
        dim = state["image_encoder.pos_embed"].shape[-1]
        neck_dim = state["image_encoder.neck.0.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"not an EfficientSAM state dict: key {exc} is missing") from None
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    # Both official encoders use 64-wide heads (Ti: 192/3, S: 384/6).
    return EfficientSamConfig(
        img_size=img_size, encoder_dim=dim, encoder_heads=max(1, dim // 64), encoder_depth=depth, neck_dim=neck_dim
    )


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise one CheckpointError that names what does not match; silent when it all fits."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            more = f" (+{len(items) - _SHOWN_KEYS} more)" if len(items) > _SHOWN_KEYS else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:_SHOWN_KEYS])}{more}")
    if problems:
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(problems))


def load_model(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    config: EfficientSamConfig | None = None,
) -> EfficientSam:
    """Build EfficientSAM from a checkpoint (path or a name such as ``reference``), in eval mode.

    The config comes from, in order: the ``config`` argument, the checkpoint's own metadata
    (safetensors written by :func:`save_model`), or the tensor shapes (official .pt files).
    fp16 weights are cast to fp32: every number this toolkit reports is against fp32.
    """
    state, stored_config = read_state_dict(path)
    config = config or stored_config or infer_config(state)
    model = build_efficient_sam(config)
    check_state_dict(model, state, str(path))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def save_model(model: EfficientSam, path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Path:
    """Write safetensors with the config in its metadata; atomic (temp file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype).contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {CONFIG_METADATA_KEY: json.dumps(model.config.to_dict()), "format": "pt"}
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a model file is meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def build_efficient_sam_vitt(checkpoint: str | os.PathLike | None = None) -> EfficientSam:
    """EfficientSAM-Ti; random weights unless a checkpoint is given."""
    return load_model(checkpoint, config=EfficientSamConfig.vitt()) if checkpoint else build_efficient_sam(EfficientSamConfig.vitt())


def build_efficient_sam_vits(checkpoint: str | os.PathLike | None = None) -> EfficientSam:
    """EfficientSAM-S; random weights unless a checkpoint is given (.pt or the official .pt.zip)."""
    return load_model(checkpoint, config=EfficientSamConfig.vits()) if checkpoint else build_efficient_sam(EfficientSamConfig.vits())


def state_dict_sha256(model: torch.nn.Module) -> str:
    """A digest of the weights themselves, so an artifact can be matched to any checkpoint file
    (or in-memory model) holding the same numbers."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        array = tensor.detach().to("cpu", torch.float32 if tensor.is_floating_point() else tensor.dtype).contiguous()
        digest.update(f"{name}:{tuple(array.shape)}:{array.dtype};".encode())
        digest.update(array.numpy().tobytes())
    return digest.hexdigest()
