"""The header every benchmark record carries: which command, on which commit, when, on what machine.

Taken when the script starts (the commit and the load then are what the numbers belong to), and
written beside the numbers as JSON, so a number quoted in the docs can be traced to its run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edge_sam.machine import machine_info

REPO = Path(__file__).resolve().parents[1]


def record_header() -> dict[str, Any]:
    """command (as typed from the repository root), git commit, date, machine (CPU model, flags, load)."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(REPO) if script.is_relative_to(REPO) else script.name
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"command": " ".join(["python", str(shown), *sys.argv[1:]]), "git_commit": commit or None,
            "date": time.strftime("%Y-%m-%d"), "machine": machine_info()}


def repo_relative(value: Any) -> Any:
    """A path inside the repository as the repository's path (a record says where a file is in the
    project, not on the machine that ran it); anything else unchanged, lists and dicts item by item."""
    if isinstance(value, dict):
        return {key: repo_relative(item) for key, item in value.items()}
    if isinstance(value, list):
        return [repo_relative(item) for item in value]
    if isinstance(value, (str, Path)) and Path(value).is_absolute() and Path(value).resolve().is_relative_to(REPO):
        return str(Path(value).resolve().relative_to(REPO))
    return value


def write_record(path: str | Path, record: dict[str, Any]) -> None:
    """The record as JSON at ``path`` (its folder made if missing), every path inside the
    repository said as the repository's path (:func:`repo_relative`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(repo_relative(record), indent=1, default=str) + "\n")
