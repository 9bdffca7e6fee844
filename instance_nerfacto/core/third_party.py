"""What third-party libraries print, kept off the screen of the project's commands (``--verbose`` shows it all).

A command's screen is its own output: its progress and its result. Without this, loading a trained run printed
nerfstudio's "Install tcnn for speedups" block once per field component (14-16 times on a CPU, where tiny-cuda-nn
cannot be used anyway), the dataparser's train/val indices, the checkpoint path, and torch's and nerfstudio's
deprecation warnings, before the one line that answers the user.

Only the project's commands call :func:`quiet_third_party` (through :func:`instance_nerfacto.core.errors.run_cli`):
``ns-train``, ``ns-render`` and ``ns-viewer`` print what nerfstudio prints. ``--verbose`` on any command, or
``INSTANCE_NERFACTO_VERBOSE=1`` in the environment, leaves everything on screen (and shows tracebacks).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import Iterator, Optional, Sequence

VERBOSE_ENV = "INSTANCE_NERFACTO_VERBOSE"
"""Environment variable that shows third-party output and tracebacks in every command, as ``--verbose`` does."""

PROJECT_MODULES = r"(instance_nerfacto|data_preprocess|tests|benchmarks|scripts)(\.|$)"
"""This project's modules: their warnings are never filtered."""

USER_WARNING_MODULES = r"(nerfstudio|torch|torchvision|torchmetrics)(\.|$)"
"""Third-party modules whose UserWarnings are known to be harmless here: non-tuple indexing (nerfstudio's cameras,
raised inside torch) and the offline LPIPS stand-in (core/compat.py; attributed to nerfstudio's nerfacto, which
builds it). Other libraries' UserWarnings may matter and are shown. FutureWarnings and DeprecationWarnings of every
third-party module are filtered: they tell library authors of API changes (seen: torch.cuda.amp.custom_fwd/bwd in
nerfstudio, torch.jit.script, websockets.legacy under viser), not users of a command."""

_quiet = False


def verbose_requested(argv: Optional[Sequence[str]] = None) -> bool:
    """``--verbose`` on the command line (``argv``, default ``sys.argv``) or INSTANCE_NERFACTO_VERBOSE set to a true
    value."""
    args = sys.argv[1:] if argv is None else argv
    return "--verbose" in args or os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def quiet_third_party() -> None:
    """Filter the known-harmless warnings of third-party modules and nerfstudio's tcnn notice (idempotent: Python
    keeps one copy of an equal filter)."""
    global _quiet
    third_party = f"(?!{PROJECT_MODULES})"
    warnings.filterwarnings("ignore", category=FutureWarning, module=third_party)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=third_party)
    warnings.filterwarnings("ignore", category=UserWarning, module=USER_WARNING_MODULES)
    silence_tcnn_notice()
    _quiet = True


def silence_tcnn_notice() -> None:
    """Replace nerfstudio's ``print_tcnn_speed_warning`` with a no-op, in nerfstudio's printing module and in every
    nerfstudio module already imported that took it by name (field_components.encodings and .mlp do, at import): the
    block says that tiny-cuda-nn is not installed, once per encoding and MLP built, and the CPU runs of this project
    never use it. Modules imported later take the no-op from the printing module."""
    from nerfstudio.utils import printing

    original = printing.print_tcnn_speed_warning
    if getattr(original, "silenced", False):
        return

    def print_tcnn_speed_warning(module_name: str) -> None:
        return None

    print_tcnn_speed_warning.silenced = True
    for name, module in list(sys.modules.items()):
        if name.startswith("nerfstudio") and getattr(module, "print_tcnn_speed_warning", None) is original:
            module.print_tcnn_speed_warning = print_tcnn_speed_warning


@contextlib.contextmanager
def nerfstudio_console_captured() -> Iterator[None]:
    """Keep what nerfstudio's console prints inside the block (eval_setup: the dataparser's train/val indices,
    "Loading latest checkpoint", the checkpoint path) off the screen of a quiet command; on an error, print it to
    stderr after all, as it may explain the error."""
    if not _quiet:
        yield
        return
    from nerfstudio.utils.rich_utils import CONSOLE

    failed = True
    try:
        with CONSOLE.capture() as capture:
            yield
        failed = False
    finally:
        if failed:
            sys.stderr.write(capture.get())


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Silence what native code writes to the stderr file descriptor inside the block, in a quiet command (pybullet
    prints its build time when imported). Python exceptions still propagate and are printed after the block."""
    if not _quiet:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
