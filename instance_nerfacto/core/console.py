"""The project's console: what every command tells the user, and its progress bars, go through rich (as nerfstudio's
output does).

Messages are written verbatim: users and tests grep them from logs (e.g. the viewer's "instance-nerfacto viewer
render (fast): WxH px in S s"), so there is no markup (paths hold brackets), no highlighting, no emoji codes and no
wrapping at the terminal's width (one message stays one line). Both consoles look up sys.stdout / sys.stderr at each
print, so redirected and captured streams receive the text.
"""

from __future__ import annotations

from typing import Iterable, Optional, TypeVar

from rich.console import Console

T = TypeVar("T")

CONSOLE = Console(soft_wrap=True, markup=False, highlight=False, emoji=False)
"""stdout: what a command did (summaries, notes)."""
ERROR_CONSOLE = Console(stderr=True, soft_wrap=True, markup=False, highlight=False, emoji=False)
"""stderr: error lines, progress bars, and the summaries of the preprocess commands (which write them there)."""


def say(text: str, err: bool = False) -> None:
    """Print one message verbatim, on stdout (or stderr with ``err``)."""
    (ERROR_CONSOLE if err else CONSOLE).print(text)


def track(items: Iterable[T], description: str, total: Optional[int] = None, quiet: bool = False) -> Iterable[T]:
    """``items`` with a progress bar on stderr that disappears when done (``quiet``: none). No bar when stderr is not
    a terminal (rich would still end it with an empty line there), so logs and the one-line errors stay clean."""
    from rich.progress import track as rich_track

    return rich_track(items, description=description, total=total, transient=True,
                      disable=quiet or not ERROR_CONSOLE.is_terminal, console=ERROR_CONSOLE)
