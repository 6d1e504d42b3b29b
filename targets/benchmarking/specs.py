"""What a benchmark times: its paths (the reference eager model, our PyTorch model, exported
artifacts) and the ``TARGET:PRECISION[:RECIPE]`` specs of artifacts it exports before timing them
(each export in its own ``edge-sam export`` process, so no toolchain stays loaded in the bench)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_sam.errors import EdgeSamError

REFERENCE_LABEL = "reference eager (materialized attention)"
PYTORCH_GROUP = "pytorch"


@dataclass(frozen=True)
class BenchPath:
    """One row: ``kind`` "reference" (eager, materialized attention), "pytorch" (TorchRunner with
    ``torch_options``) or "artifact" (an exported folder, loaded with ``runtime_options``)."""

    label: str
    kind: str
    group: str  # the worker process: "pytorch" or the artifact's target
    artifact: str | None = None
    torch_options: dict[str, Any] = field(default_factory=dict)
    runtime_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def reference(cls) -> "BenchPath":
        return cls(REFERENCE_LABEL, "reference", PYTORCH_GROUP)

    @classmethod
    def pytorch(cls, precision: str = "fp32", compile: bool | str = False) -> "BenchPath":
        label = f"pytorch {precision}" + (f" compiled ({'inductor' if compile is True else compile})" if compile else "")
        return cls(label, "pytorch", PYTORCH_GROUP, torch_options={"precision": precision, "compile": compile})

    @classmethod
    def for_artifact(cls, artifact: str | os.PathLike, threads: int | None = None) -> "BenchPath":
        """An artifact folder; ``threads`` is passed where the target declares a threads option."""
        from edge_sam.targets.core.manifest import read_manifest
        from edge_sam.targets.core.registry import threads_option

        manifest = read_manifest(artifact)
        options = threads_option(manifest.target, threads)
        parts = [manifest.target, manifest.precision] + ([manifest.recipe["name"]] if manifest.recipe else [])
        parts += [f"{k}={v}" for k, v in sorted(manifest.export_options.items())]
        if manifest.img_size != manifest.model_config.get("img_size"):
            parts.append(f"@{manifest.img_size}")
        return cls(" ".join(parts) + f" ({Path(artifact).name})", "artifact", manifest.target, str(artifact),
                   runtime_options=options)


@dataclass(frozen=True)
class ExportSpec:
    """``TARGET:PRECISION[:RECIPE][:KEY=VALUE...]``, e.g. ``onnx:int8:dynamic-linear:attention=fused``
    or ``tflite:fp32:img_size=512``: an artifact the bench exports before timing it."""

    target: str
    precision: str
    recipe: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> "ExportSpec":
        parts = [p for p in text.split(":") if p]
        options = tuple(tuple(p.split("=", 1)) for p in parts[2:] if "=" in p)
        plain = [p for p in parts if "=" not in p]
        if len(plain) not in (2, 3) or len(plain) + len(options) != len(parts):
            raise EdgeSamError(f"bad --export {text!r}: expected TARGET:PRECISION[:RECIPE][:KEY=VALUE...], "
                               "e.g. onnx:int8:dynamic-linear or onnx:fp32:attention=fused")
        return cls(plain[0], plain[1], plain[2] if len(plain) == 3 else None, options)  # type: ignore[arg-type]

    @property
    def folder(self) -> str:
        return "-".join([self.target, self.precision] + ([self.recipe] if self.recipe else [])
                        + [f"{k}-{v}" for k, v in self.options])

    def cli_args(self) -> list[str]:
        """The ``edge-sam export`` flags of this spec: ``img_size=N`` is ``--img-size N``, other
        options go through the target's declared flags."""
        from edge_sam.targets.core.registry import get_target

        declared = {option.name: option for option in get_target(self.target).export_options}
        args = ["--target", self.target, "--precision", self.precision] + (["--recipe", self.recipe] if self.recipe else [])
        for key, value in self.options:
            if key.replace("-", "_") == "img_size":
                args += ["--img-size", value]
                continue
            option = declared.get(key.replace("-", "_"))
            if option is None:
                raise EdgeSamError(f"target {self.target} has no export option {key!r} "
                                   f"(its options: {', '.join(declared) or 'none'})")
            if option.kind is bool:
                if value.lower() in ("1", "true", "yes"):
                    args.append(option.flag)
            else:
                args += [option.flag, value]
        return args


def export_artifacts(specs: list[ExportSpec], checkpoint: str, folder: Path, img_size: int | None,
                     calibration: str | None, reuse: bool) -> list[Path]:
    """Export each spec with ``edge-sam export`` in its own process (no toolchain stays loaded
    here), into ``folder``/<spec>; with ``reuse`` an existing artifact folder is kept."""
    from edge_sam.targets.core.target import verify_artifact

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for spec in specs:
        target_dir = folder / (spec.folder + (f"-{img_size}" if img_size else ""))
        if reuse and (target_dir / "manifest.json").is_file():
            verify_artifact(target_dir, expected_target=spec.target)
            out.append(target_dir)
            continue
        command = [sys.executable, "-m", "edge_sam.apps.cli", "export", *spec.cli_args(), "--checkpoint", checkpoint,
                   "--out", str(target_dir), "--overwrite"]
        command += ["--img-size", str(img_size)] if img_size else []
        command += ["--calibration", calibration] if calibration else []
        print(f"exporting {spec.folder} ...", file=sys.stderr, flush=True)
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise EdgeSamError(f"export {spec.folder} failed: {last}")
        out.append(target_dir)
    return out
