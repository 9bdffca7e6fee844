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

    def __reduce__(self):  # raised in a worker process, re-raised here whole (not just its message)
        return InputError, (self.what, self.path, self.fix)

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

    Third-party chatter is kept off the command's screen (core/third_party.py). ``--verbose`` anywhere on the command
    line, or INSTANCE_NERFACTO_VERBOSE=1, shows it and re-raises with the full traceback.
    """
    from instance_nerfacto.core.third_party import quiet_third_party, verbose_requested

    args = list(sys.argv[1:] if argv is None else argv)
    verbose = verbose_requested(args)
    if not verbose:
        quiet_third_party()
    if "--verbose" in args and argv is None:
        sys.argv = [sys.argv[0]] + [a for a in args if a != "--verbose"]
    name = prog or Path(sys.argv[0]).name
    try:
        main()
    except InputError as err:
        if verbose:
            raise
        _say_error(f"{name}: error: {err.line()}")
        sys.exit(2)
    except KeyboardInterrupt:
        _say_error(f"{name}: interrupted")
        sys.exit(130)


def _say_error(line: str) -> None:
    from instance_nerfacto.core.console import say  # imported when needed: every command imports this module

    say(line, err=True)


def install_excepthook() -> None:
    """Make an :class:`InputError` raised inside a program we do not own (``ns-train`` loading our datamanager)
    print its one line and exit 2 instead of a traceback. Other exceptions keep Python's default handling."""
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        from instance_nerfacto.core.third_party import verbose_requested

        if issubclass(exc_type, InputError) and not verbose_requested():
            _say_error(f"{Path(sys.argv[0]).name}: error: {exc.line()}")
            sys.stderr.flush()
            import os

            os._exit(2)  # nerfstudio's threads (viewer, writers) must not keep the process alive
        previous(exc_type, exc, tb)

    sys.excepthook = hook
