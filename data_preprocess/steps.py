"""Run bookkeeping of ``instance-map``: wall time and the process's peak RSS after each stage and step."""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import time
from typing import Dict


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def stage_end_mb() -> float:
    """The peak RSS so far, at the end of a stage, after handing the heap's free pages back to the system (glibc's
    ``malloc_trim``; elsewhere a no-op). Arrays freed in a stage leave holes in the heap that the allocator keeps:
    at 10,000 frames reading every frame's stereo depth for the pair stage's planes left 376 MB of them, carried
    through every later stage and its peak."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    return peak_rss_mb()


class Steps:
    """Records the wall time since the previous step and the process's peak RSS so far as ``<stage>.<step>``."""

    def __init__(self, stage: str, timings: Dict[str, float], memory_mb: Dict[str, float]) -> None:
        self.stage, self.timings, self.memory_mb, self.t = stage, timings, memory_mb, time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[f"{self.stage}.{name}"] = now - self.t
        self.memory_mb[f"{self.stage}.{name}"] = stage_end_mb()
        self.t = now
