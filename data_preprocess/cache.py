"""hloc-style cache of intermediate results: ``<output>/.cache/<stage>-<hash>.npz``, keyed by parameters and inputs.

A stage whose cache file exists for the same parameters and the same input files (path, size, mtime) is skipped, so a
rerun, or a run after an interruption, resumes where the last one stopped. Files are written atomically, so an
interrupted write never leaves a half file that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, Iterable, Optional

import numpy as np

from instance_nerfacto.core.files import atomic_save_npz


def file_fingerprint(paths: Iterable[Optional[Path]]) -> list:
    """(name, size, mtime_ns) of every input file, so an edited input invalidates the cache."""
    out = []
    for p in paths:
        if p is None:
            out.append(None)
            continue
        st = Path(p).stat()
        out.append([Path(p).name, st.st_size, st.st_mtime_ns])
    return out


def cache_key(stage: str, params: Dict, inputs: list) -> str:
    blob = json.dumps({"stage": stage, "params": params, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


class StageCache:
    """Load/save one stage's arrays under ``<root>/.cache``; disabled when ``root`` is None."""

    def __init__(self, root: Optional[Path]) -> None:
        self.dir = Path(root) / ".cache" if root is not None else None

    def path(self, stage: str, key: str) -> Optional[Path]:
        return self.dir / f"{stage}-{key}.npz" if self.dir is not None else None

    def load(self, stage: str, key: str) -> Optional[Dict[str, np.ndarray]]:
        path = self.path(stage, key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except Exception:  # a damaged cache file is recomputed, never trusted
            return None

    def save(self, stage: str, key: str, **arrays: np.ndarray) -> None:
        path = self.path(stage, key)
        if path is not None:
            atomic_save_npz(path, **arrays)
