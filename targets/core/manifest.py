"""The artifact manifest: everything a runner needs to use an artifact, and to trust it.

``manifest.json`` sits beside the exported files. It records what was exported (target,
backend, precision, recipe, model size), how to feed it (preprocessing constants, input and
output names, shapes and dtypes), and where it came from (sha256 of the source checkpoint and
of every file, toolchain versions, calibration set). A runner is built from the manifest
alone, and refuses an artifact whose files no longer match the hashes recorded here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from edge_sam.errors import EdgeSamError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
_HASH_CHUNK = 1 << 20


class ArtifactError(EdgeSamError, ValueError):
    """An artifact that is missing, tampered with, or does not match what its manifest says."""


def first_line(exc: BaseException) -> str:
    """The first line of a toolchain's error (they carry pages of MLIR or C++ context), or its
    type when it says nothing: what a one-line ArtifactError or EdgeSamError quotes."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_path(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a directory (a Core ML .mlpackage): each file's relative path and
    sha256 in sorted order, so editing, adding or renaming any file inside changes it."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def size_bytes(path: str | os.PathLike) -> int:
    """Size of a file, or the total of the files under a directory."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def toolchain_versions(*distributions: str) -> dict[str, str]:
    """Installed versions of the named distributions (absent ones are left out)."""
    versions = {}
    for name in distributions:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output. A str in ``shape`` names a dynamic axis.

    ``quantization`` ({"scale", "zero_point"}) is set for integer I/O, so a runner in another
    language (Android, C++) can quantize inputs and dequantize outputs from the manifest alone.
    """

    name: str
    shape: tuple[int | str, ...]
    dtype: str
    quantization: dict[str, float | int] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TensorSpec":
        return cls(name=data["name"], shape=tuple(data["shape"]), dtype=data["dtype"],
                   quantization=data.get("quantization"))


@dataclass(frozen=True)
class GraphSpec:
    """One exported program (the encoder or the decoder) and its I/O contract."""

    role: str
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GraphSpec":
        return cls(
            role=data["role"],
            file=data["file"],
            inputs=tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
        )


@dataclass(frozen=True)
class Manifest:
    target: str
    backend: str
    interface: str
    precision: str
    recipe: dict[str, Any] | None
    img_size: int
    model_config: dict[str, Any]
    preprocessing: dict[str, Any]
    prompts: dict[str, Any]
    graphs: tuple[GraphSpec, ...]
    source_checkpoint: dict[str, Any]
    toolchain: dict[str, str]
    calibration: dict[str, Any] | None
    # The target's declared export options as applied (defaults it filled in included).
    export_options: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    created_at: str = ""
    format_version: int = FORMAT_VERSION

    def graph(self, role: str) -> GraphSpec:
        for graph in self.graphs:
            if graph.role == role:
                return graph
        raise ArtifactError(f"manifest lists no '{role}' graph (has: {', '.join(g.role for g in self.graphs)})")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["graphs"] = tuple(GraphSpec.from_dict(g) for g in data["graphs"])
        return cls(**values)


def check_io_names(
    path: str | os.PathLike, spec: "GraphSpec", inputs: list[str], outputs: list[str], ordered: bool = True
) -> None:
    """Refuse a graph file whose input and output names (as its runtime lists them) are not the
    ones its manifest records; ``ordered=False`` where the runtime binds them by name only."""
    actual = (list(inputs), list(outputs))
    recorded = ([t.name for t in spec.inputs], [t.name for t in spec.outputs])
    same = actual == recorded if ordered else all(sorted(a) == sorted(r) for a, r in zip(actual, recorded))
    if not same:
        raise ArtifactError(f"{path} has inputs/outputs {actual}, but its manifest records {recorded}")


def artifact_label(artifact_dir: str | os.PathLike, manifest: Manifest, variant: str | None = None) -> str:
    """A report row label: target[-variant]-precision[-recipe] (folder name).

    ``variant`` is what tells a target's artifacts apart beyond precision and recipe (the ONNX
    interface, the ExecuTorch delegate); targets with one form pass none.
    """
    parts = [manifest.target] + ([variant] if variant else []) + [manifest.precision]
    if manifest.recipe:
        parts.append(manifest.recipe["name"])
    return f"{'-'.join(parts)} ({Path(artifact_dir).name})"


def hash_files(artifact_dir: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    return {name: {"sha256": sha256_path(artifact_dir / name), "bytes": size_bytes(artifact_dir / name)} for name in names}


def write_manifest(artifact_dir: Path, manifest: Manifest) -> Manifest:
    """Hash every graph file (plus any extra files already listed) and write manifest.json."""
    names = sorted({g.file for g in manifest.graphs} | set(manifest.files))
    stamped = dataclasses.replace(
        manifest,
        files=hash_files(artifact_dir, names),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    (artifact_dir / MANIFEST_NAME).write_text(json.dumps(stamped.to_dict(), indent=2) + "\n")
    return stamped


def read_manifest(artifact_dir: str | os.PathLike) -> Manifest:
    """Parse manifest.json, or raise one ArtifactError saying what is wrong with it."""
    artifact_dir = Path(artifact_dir)
    path = artifact_dir / MANIFEST_NAME
    if not artifact_dir.is_dir():
        raise ArtifactError(f"artifact directory not found: {artifact_dir}")
    if not path.is_file():
        raise ArtifactError(f"{artifact_dir} has no {MANIFEST_NAME}: not an edge_sam artifact")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} does not hold a JSON object")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{path} has format_version {version!r}; this edge_sam reads version {FORMAT_VERSION}")
    required = [f.name for f in dataclasses.fields(Manifest) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        raise ArtifactError(f"{path} is missing field(s): {', '.join(missing)}")
    try:
        return Manifest.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{path} has a malformed field: {exc!r}") from None


def verify_files(artifact_dir: str | os.PathLike, manifest: Manifest) -> None:
    """Refuse an artifact whose files are missing or differ from the hashes in its manifest."""
    artifact_dir = Path(artifact_dir)
    graph_files = {g.file for g in manifest.graphs}
    unlisted = sorted(graph_files - set(manifest.files))
    if unlisted:
        raise ArtifactError(f"{artifact_dir}: manifest has no hash for {', '.join(unlisted)}")
    for name, recorded in sorted(manifest.files.items()):
        path = artifact_dir / name
        if not path.exists():
            raise ArtifactError(f"{artifact_dir}: {name} is missing (listed in {MANIFEST_NAME})")
        actual = sha256_path(path)
        if actual != recorded.get("sha256"):
            raise ArtifactError(
                f"{artifact_dir}: {name} does not match its manifest hash "
                f"(sha256 {actual[:12]}... vs recorded {str(recorded.get('sha256'))[:12]}...); "
                "the file was modified or replaced, re-export the artifact"
            )
