"""Compatibility fixes applied when the plugin is imported (call :func:`apply`; idempotent).

torch >= 2.6 loads checkpoints with ``weights_only=True``. nerfstudio 1.1.5 checkpoints hold numpy scalars (the
schedulers' and grad scaler's state), so ``ns-render``, ``ns-viewer``, ``ns-eval`` and ``--load-dir`` fail with
"Unsupported global: GLOBAL numpy.core.multiarray.scalar". Allow-listing exactly those numpy types keeps the safe
loader (no arbitrary code execution) and needs no environment variable. nerfstudio imports the plugin (through the
``_target`` classes in ``config.yml``) before it loads the checkpoint, so the fix is in place in time.
"""

from __future__ import annotations

_applied = False


def numpy_checkpoint_globals() -> list:
    """The numpy objects that nerfstudio checkpoints pickle: scalar reconstruction, dtypes and their classes."""
    import numpy as np

    try:
        from numpy.core.multiarray import scalar  # numpy < 2 (nerfstudio 1.1.5 pins numpy < 2)
    except ImportError:  # pragma: no cover - numpy 2 moved it
        from numpy._core.multiarray import scalar
    dtype_classes = [type(np.dtype(name)) for name in ("float64", "float32", "float16", "int64", "int32", "bool")]
    return [scalar, np.dtype, *dtype_classes]


def apply() -> None:
    """Allow-list numpy scalars/dtypes for ``torch.load(weights_only=True)``."""
    global _applied
    if _applied:
        return
    import torch

    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is not None:  # torch < 2.4 has no weights_only default to work around
        add_safe_globals(numpy_checkpoint_globals())
    _applied = True
