"""Peak resident memory of this process, measured the way that survives fork and exec."""

from __future__ import annotations

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
