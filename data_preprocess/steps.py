"""Run bookkeeping of ``instance-map``: wall time and the process's peak RSS after each stage and step."""

from __future__ import annotations

import resource
import time
from typing import Dict


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class Steps:
    """Records the wall time since the previous step and the process's peak RSS so far as ``<stage>.<step>``."""

    def __init__(self, stage: str, timings: Dict[str, float], memory_mb: Dict[str, float]) -> None:
        self.stage, self.timings, self.memory_mb, self.t = stage, timings, memory_mb, time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[f"{self.stage}.{name}"] = now - self.t
        self.memory_mb[f"{self.stage}.{name}"] = peak_rss_mb()
        self.t = now
