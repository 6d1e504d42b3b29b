"""Process memory: the peak resident set (for the memory probes) and handing freed heap back to
the OS (for the everything-mode loop). One module, so there is one place for both."""

from __future__ import annotations

import ctypes
import resource
import sys


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark, in MiB.

    On Linux it is read from VmHWM: ``ru_maxrss`` of a child starts at its parent's peak (it
    survives fork and exec), which would credit a parent's gigabytes to the child.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KiB elsewhere


def _glibc():
    """glibc when this process runs on it (``malloc_trim`` is a glibc extension), else None."""
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl and other C libraries have no libc.so.6
        return None
    return libc if hasattr(libc, "malloc_trim") else None


_GLIBC = _glibc()


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim(0)``); a no-op off glibc.

    Why: everything-mode decodes a grid in chunks, and each chunk allocates and frees a few
    hundred MB of decoder activations. glibc keeps freed blocks in its arenas, so over a 32x32
    grid the process grew to 1.3 GB peak RSS although one chunk needs about 0.6 GB; trimming
    between chunks keeps the peak at what one chunk needs. macOS and musl return large blocks on
    their own, and have no ``malloc_trim``.
    """
    if _GLIBC is not None:
        _GLIBC.malloc_trim(0)
