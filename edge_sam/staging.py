"""Write a folder of results all at once: into a temp folder beside it, renamed into place on success.

Every command that writes a folder (export, validate, everything, demo) goes through here, so
a failure never leaves a half-written folder, and an existing one is replaced only on request
and only after the new one is complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edge_sam.errors import EdgeSamError


# Each staged temp folder in use (absolute) -> the folder it becomes, for :func:`final_path`.
_becomes: dict[str, Path] = {}
_lock = threading.Lock()


def final_path(path: str | os.PathLike) -> Path:
    """Where ``path`` will be once the staged folders it is in are renamed into place: a path
    inside a temp folder of :func:`staged_dir` (nested ones too, e.g. an export staged inside
    deploy's staging of that artifact) mapped to the final folder. Other paths come back as
    they are. For messages that name a file the user should open after the command."""
    path = Path(path)
    for _ in range(16):  # a chain of nested staging is a few deep
        absolute = os.path.abspath(path)
        with _lock:
            match = next(((tmp, final) for tmp, final in _becomes.items()
                          if absolute == tmp or absolute.startswith(tmp + os.sep)), None)
        if match is None:
            return path
        path = match[1] / os.path.relpath(absolute, match[0])
    return path


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


@contextmanager
def staged_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside ``path``; on success it becomes ``path``.

    An existing empty folder counts as absent; anything else there is an error unless
    ``overwrite``, and is then swapped out only once the new folder is complete.
    """
    path = Path(path)
    if path.exists() and not overwrite and not _is_empty_dir(path):
        raise EdgeSamError(f"{path} already exists and is not empty (pass overwrite=True / --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    with _lock:
        _becomes[os.path.abspath(tmp)] = path
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        with _lock:
            _becomes.pop(os.path.abspath(tmp), None)
        if tmp.exists():
            shutil.rmtree(tmp)
