"""instance-nerfacto: 3D instance mapping and localization with neural fields (3DIML) for nerfstudio."""

import os
import sys

# ultralytics performs DNS look-ups and settings sync at import unless told it is offline; this project never needs
# the network, so default to offline before anything imports it (a user can still override the variable).
os.environ.setdefault("YOLO_OFFLINE", "1")

DEFAULT_CPU_THREADS = 1
"""torch/OpenMP threads when the user sets no OMP_NUM_THREADS. Training works on a few thousand samples per step, split
into thousands of short parallel regions; with one thread per core, every region waits at a barrier for the slowest
thread, and a thread that loses its core to any other process stalls the whole step (one busy loop beside
``ns-train instance-nerfacto-small``: 4x slower with 2 threads; a loaded machine: 15-25x). One thread does not wait
on anyone: see docs/benchmarks.md (speed on shared CPUs) and ``benchmarks/lift_load.py`` for the measurements."""


def _thread_defaults() -> None:
    """Apply the thread defaults for every entry point that imports this package.

    Our own commands import this package before torch, so the environment reaches OpenMP when torch loads it (OpenMP
    reads OMP_* once, at load). ns-train imports torch first and this package later (plugin discovery), so the thread
    count is also set through torch; OMP_WAIT_POLICY then no longer applies, which does not matter with one thread."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # a waiting thread sleeps instead of spinning on the core
    if os.environ.get("OMP_NUM_THREADS"):
        return  # the user's choice (the Makefile, a shell profile, a scheduler)
    os.environ["OMP_NUM_THREADS"] = str(DEFAULT_CPU_THREADS)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(DEFAULT_CPU_THREADS)


_thread_defaults()

__version__ = "0.1.0"
