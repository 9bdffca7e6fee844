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
