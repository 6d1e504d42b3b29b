"""Wall-clock timing of repeated calls, shared by `edge-sam bench` and the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def time_calls(call: Callable[[], object], runs: int, warmup: int = 1) -> list[float]:
    """Seconds of each of ``runs`` calls, after ``warmup`` untimed ones (session set-up, caches)."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def median_seconds(call: Callable[[], object], runs: int, warmup: int = 1) -> float:
    return statistics.median(time_calls(call, runs, warmup))
