"""Helpers for bad-input tests: snapshot a folder's checksums, run a CLI, assert the one-line error contract.

The contract (issue 8, DESIGN.md "Bad input"): a non-zero exit, exactly one non-empty stderr line that names the
offending file and says what to do (``<prog>: error: <what>: <path> - <fix>``, see ``instance_nerfacto.core.errors``),
no traceback, and every input file unchanged (no file modified, removed or added, cache folders aside).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

# modules of the project's CLIs (the console scripts point at the same entrypoints)
SEGMENT = "data_preprocess.segment"
MAP = "data_preprocess.instance_map"
RENDER = "instance_nerfacto.render.cli"
LOC = "instance_nerfacto.loc.cli"
EVAL = "instance_nerfacto.eval.cli"
EXPORT = "instance_nerfacto.export.cli"
MERGE = "instance_nerfacto.merge.cli"
SYNTH = "data_preprocess.synth.cli"


def cli_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["YOLO_OFFLINE"] = "1"  # ultralytics does DNS look-ups at import otherwise
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_cli(module: str, *args: object, timeout: float = 300,
            cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """Run ``module``'s entrypoint in a fresh interpreter (works whether or not the console scripts are installed)."""
    cmd = [sys.executable, "-c", f"from {module} import entrypoint; entrypoint()", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=cli_env(), cwd=cwd)


def snapshot(*roots: Path) -> Dict[str, str]:
    """sha1 of every file under ``roots`` keyed by path (symlinked files read through)."""
    out: Dict[str, str] = {}
    for root in roots:
        root = Path(root)
        if root.is_file():
            out[str(root)] = hashlib.sha1(root.read_bytes()).hexdigest()
            continue
        for dirpath, _, files in os.walk(root):
            for name in files:
                p = Path(dirpath) / name
                try:
                    out[str(p)] = hashlib.sha1(p.read_bytes()).hexdigest()
                except OSError:  # a dangling symlink is part of some bad inputs
                    out[str(p)] = "unreadable"
    return out


def assert_unchanged(before: Dict[str, str], roots: Sequence[Path], allow_new: Iterable[str] = (".cache",)) -> None:
    """No input file modified or removed; no file added except under a folder named in ``allow_new``."""
    after = snapshot(*roots)
    changed = sorted(p for p in before if before[p] != after.get(p))
    assert not changed, f"input files modified or removed: {changed[:5]}"
    allowed = set(allow_new)
    added = sorted(p for p in after if p not in before and not (set(Path(p).parts) & allowed))
    assert not added, f"files left behind by a failed run: {added[:5]}"


def error_lines(proc: subprocess.CompletedProcess) -> List[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.strip()]


def assert_one_line_error(proc: subprocess.CompletedProcess, names: str, *, last_line_only: bool = False) -> str:
    """Non-zero exit; one stderr line ``prog: error: ... <names> ... - <fix>``; no traceback. Returns the line.

    ``last_line_only`` is for commands whose host framework (nerfstudio) prints its own banners on stderr: then the
    last stderr line must be ours and no traceback may appear anywhere.
    """
    lines = error_lines(proc)
    assert proc.returncode not in (0, None), f"exit 0 on bad input; stderr: {proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, f"traceback instead of one line:\n{proc.stderr[-3000:]}"
    assert lines, f"exit {proc.returncode} with empty stderr; stdout: {proc.stdout[-1000:]}"
    if not last_line_only:
        assert len(lines) == 1, f"{len(lines)} stderr lines, want 1:\n" + "\n".join(lines[-20:])
    line = lines[-1]
    if not last_line_only:  # a host framework's excepthook may not control the exit status
        assert proc.returncode == 2, f"exit {proc.returncode}, want 2 (InputError): {line}"
    assert ": error: " in line, f"not an InputError line: {line}"
    assert names in line, f"error line does not name {names!r}: {line}"
    assert " - " in line and len(line.rsplit(" - ", 1)[1].strip()) > 5, f"error line says no fix: {line}"
    return line


def check_bad_input(module: str, args: Sequence[object], inputs: Sequence[Path], names: str,
                    timeout: float = 300, **kwargs) -> str:
    """Run ``module`` on bad input and assert the whole contract (one line naming ``names``, inputs untouched)."""
    before = snapshot(*inputs)
    proc = run_cli(module, *args, timeout=timeout)
    line = assert_one_line_error(proc, names, **kwargs)
    assert_unchanged(before, inputs)
    return line
