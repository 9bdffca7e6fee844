"""Compatibility fixes applied when the plugin is imported (call :func:`apply`; idempotent).

Every ``ns-*`` command imports this plugin (nerfstudio discovers methods through entry points), so the fixes below
cover stock methods too (``ns-train nerfacto`` on an offline machine).

LPIPS: nerfstudio's models build torchmetrics' LPIPS in ``populate_modules``, which downloads AlexNet weights and
crashes offline. When the weights are not in the torch hub cache, the class is replaced by a stand-in that warns once
and returns NaN (the lpips metric is skipped); with the weights present, the real LPIPS is built.

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


def lpips_weights_available() -> bool:
    """True when LPIPS can be built without a download (torchvision AlexNet weights in the torch hub cache)."""
    from pathlib import Path

    import torch

    return (Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth").is_file()


def offline_lpips() -> None:
    """Make torchmetrics' LPIPS constructor safe offline (see the module docstring)."""
    import warnings

    import torch
    import torchmetrics.image.lpip as lpip_module

    original = lpip_module.LearnedPerceptualImagePatchSimilarity
    if getattr(original, "_offline_safe", False):
        return

    class OfflineSafeLPIPS(torch.nn.Module):
        """LPIPS when its weights are cached locally; otherwise a NaN-returning stand-in (one warning)."""

        _offline_safe = True
        _warned = False

        def __new__(cls, *args, **kwargs):
            if lpips_weights_available():
                return original(*args, **kwargs)
            if not cls._warned:
                warnings.warn("LPIPS weights (AlexNet) are not in the torch hub cache and cannot be downloaded here: "
                              "the lpips metric is skipped (NaN)", stacklevel=2)
                cls._warned = True
            return super().__new__(cls)

        def __init__(self, *args, **kwargs) -> None:
            super().__init__()

        def forward(self, *args, **kwargs):
            return torch.tensor(float("nan"))

    lpip_module.LearnedPerceptualImagePatchSimilarity = OfflineSafeLPIPS


def lpips_skipped(metric) -> bool:
    """Whether a model's LPIPS is the offline stand-in (its metric is NaN and left out of the image metrics)."""
    return bool(getattr(metric, "_offline_safe", False))


def apply() -> None:
    """Allow-list numpy scalars/dtypes for ``torch.load(weights_only=True)``; offline-safe LPIPS."""
    global _applied
    if _applied:
        return
    import torch

    offline_lpips()

    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is not None:  # torch < 2.4 has no weights_only default to work around
        add_safe_globals(numpy_checkpoint_globals())
    _applied = True
