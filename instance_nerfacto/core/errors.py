"""One-line, actionable errors for bad input, and the CLI wrapper that prints them.

Every command of the project raises :class:`InputError` for a problem the user can fix (a missing file, a size
mismatch, a corrupt PNG, ...). :func:`run_cli` turns it into a single line on stderr and exit code 2; a traceback is
shown only with ``--verbose``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, NoReturn, Optional, Sequence


class InputError(Exception):
    """A problem with the user's input: says what is wrong, which file, and what to do."""

    def __init__(self, what: str, path: Optional[Path | str] = None, fix: Optional[str] = None) -> None:
        self.what = what
        self.path = Path(path) if path is not None else None
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        parts = [self.what]
        if self.path is not None:
            parts[0] = f"{self.what}: {self.path}"
        if self.fix:
            parts.append(self.fix)
        return " - ".join(parts)


def fail(what: str, path: Optional[Path | str] = None, fix: Optional[str] = None) -> NoReturn:
    raise InputError(what, path, fix)


def run_cli(main: Callable[[], object], argv: Optional[Sequence[str]] = None, prog: str = "") -> None:
    """Run ``main()`` and turn an :class:`InputError` into one line on stderr and exit code 2.

    ``--verbose`` anywhere on the command line re-raises with the full traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args
    if not verbose:  # torch/nerfstudio deprecation chatter would bury the one line that matters
        import warnings

        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
    if verbose and argv is None:
        sys.argv = [sys.argv[0]] + [a for a in args if a != "--verbose"]
    name = prog or Path(sys.argv[0]).name
    try:
        main()
    except InputError as err:
        if verbose:
            raise
        print(f"{name}: error: {err.line()}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        sys.exit(130)


def install_excepthook() -> None:
    """Make an :class:`InputError` raised inside a program we do not own (``ns-train`` loading our datamanager)
    print its one line and exit 2 instead of a traceback. Other exceptions keep Python's default handling."""
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        if issubclass(exc_type, InputError) and "--verbose" not in sys.argv:
            print(f"{Path(sys.argv[0]).name}: error: {exc.line()}", file=sys.stderr)
            sys.stderr.flush()
            import os

            os._exit(2)  # nerfstudio's threads (viewer, writers) must not keep the process alive
        previous(exc_type, exc, tb)

    sys.excepthook = hook
