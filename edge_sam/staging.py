"""Write a folder of results all at once: into a temp folder beside it, renamed into place on success.

Every command that writes a folder (export, validate, everything, demo) goes through here, so
a failure never leaves a half-written folder, and an existing one is replaced only on request
and only after the new one is complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edge_sam.errors import EdgeSamError


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
        if tmp.exists():
            shutil.rmtree(tmp)
