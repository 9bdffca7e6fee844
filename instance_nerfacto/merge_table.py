"""The merge table (label -> merged label) and the hand-edit file applied on top of it.

``<run dir>/merge_table.json`` is written by label merging (``instance-merge`` or the end-of-training callback)::

    {"merge": {"3": 1, "7": 5}, ...}

Labels not listed keep their id. The hand-edit file (the paper leaves remaining ambiguities to "sparse human
annotation") is plain text, one ``A B`` pair per line, ``#`` starts a comment::

    # label 12 is the same chair as label 4
    12 4
    9 0      # label 9 is noise: unlabelled

"label A becomes label B": A's whole merged group joins B's group, applied after the merge table, in file order.
Every consumer (instance-render, instance-loc, ns-render outputs, the viewer) goes through :func:`apply_merge`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
from jaxtyping import Integer

from instance_nerfacto.dataset_io import atomic_write_json
from instance_nerfacto.errors import fail

MERGE_TABLE_NAME = "merge_table.json"
EDITS_NAME = "merge_edits.txt"  # looked up beside the merge table when no edit file is given
MAX_LABEL = 65535


def resolve(table: Mapping[int, int]) -> Dict[int, int]:
    """Follow chains (3 -> 5, 5 -> 1 gives 3 -> 1) so every label maps to its final id in one step; cycles are
    broken by mapping the whole cycle to its smallest id."""
    out: Dict[int, int] = {}
    for start in table:
        seen: List[int] = []
        cur = start
        while cur in table and table[cur] != cur and cur not in seen:
            seen.append(cur)
            cur = table[cur]
        if cur in seen:  # a cycle: everything on it becomes its smallest member
            cur = min(seen[seen.index(cur):])
        out[int(start)] = int(cur)
    return {k: v for k, v in out.items() if k != v}


def parse_edits(text: str, path: Optional[Path] = None) -> List[Tuple[int, int]]:
    """Parse the hand-edit file: one ``A B`` pair of non-negative integer ids per line, ``#`` comments."""
    pairs: List[Tuple[int, int]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{path}:{lineno}" if path is not None else f"line {lineno}"
        fields = line.replace(",", " ").split()
        if len(fields) != 2:
            fail(f"edit line {lineno} has {len(fields)} fields ('{raw.strip()}')", where,
                 "write one pair per line: 'A B' means label A becomes label B")
        try:
            a, b = int(fields[0]), int(fields[1])
        except ValueError:
            fail(f"edit line {lineno} is not two integer label ids ('{raw.strip()}')", where,
                 "write one pair per line: 'A B' means label A becomes label B")
        if not (0 < a <= MAX_LABEL and 0 <= b <= MAX_LABEL):
            fail(f"edit line {lineno} uses an id outside 1..{MAX_LABEL} (A) / 0..{MAX_LABEL} (B)", where,
                 "write 'A B' with A a label id and B a label id or 0 (unlabelled)")
        pairs.append((a, b))
    return pairs


def read_edits(path: Path | str) -> List[Tuple[int, int]]:
    path = Path(path)
    if not path.is_file():
        fail("edit file does not exist", path, "give a text file with one 'A B' label pair per line")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        fail("edit file is not text", path, "give a text file with one 'A B' label pair per line")
    return parse_edits(text, path)


def apply_edits(table: Mapping[int, int], edits: List[Tuple[int, int]]) -> Dict[int, int]:
    """Apply hand edits on top of a merge table: for each ``A B``, every label now ending at A's final id moves to
    B's final id (so edits can name either raw or already-merged ids)."""
    final = resolve(table)
    for a, b in edits:
        fa = final.get(a, a)
        fb = final.get(b, b)
        if fa == fb:
            continue
        for k, v in list(final.items()):
            if v == fa:
                final[k] = fb
        final[a] = fb
        if fa != a:
            final[fa] = fb
    return {k: v for k, v in final.items() if k != v}


def table_from_json(obj: Mapping, path: Optional[Path] = None) -> Dict[int, int]:
    merge = obj.get("merge") if isinstance(obj, Mapping) else None
    if not isinstance(merge, Mapping):
        fail("merge table has no 'merge' object", path, "regenerate it with instance-merge --load-config CFG")
    try:
        return resolve({int(k): int(v) for k, v in merge.items()})
    except (TypeError, ValueError):
        fail("merge table maps something that is not an integer label id", path,
             "regenerate it with instance-merge --load-config CFG")


def load_merge_table(path: Path | str, edits: Optional[Path | str] = None) -> Dict[int, int]:
    """Load ``merge_table.json`` (if it exists) and apply the hand-edit file on top.

    With ``edits=None``, ``merge_edits.txt`` beside the table is applied when present. A missing table is an empty
    table (a run trained without merging); a missing explicit edit file is an error.
    """
    path = Path(path)
    table: Dict[int, int] = {}
    if path.is_file():
        try:
            obj = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            fail(f"merge table is not valid JSON ({err})", path, "regenerate it with instance-merge --load-config CFG")
        table = table_from_json(obj, path)
    if edits is None:
        default_edits = path.parent / EDITS_NAME
        edits = default_edits if default_edits.is_file() else None
    if edits is not None:
        table = apply_edits(table, read_edits(edits))
    return table


def load_run_merge_table(config_path: Path | str, edits: Optional[Path | str] = None) -> Dict[int, int]:
    """The merge table of a training run, given its ``config.yml``."""
    return load_merge_table(Path(config_path).parent / MERGE_TABLE_NAME, edits)


def save_merge_table(path: Path | str, table: Mapping[int, int], **extra) -> None:
    """Write ``{"merge": {...}, **extra}`` atomically (keys sorted numerically)."""
    merge = {str(k): int(v) for k, v in sorted(resolve(table).items())}
    atomic_write_json(path, {"merge": merge, **extra})


def lookup_table(table: Mapping[int, int], max_id: int) -> np.ndarray:
    """uint16 LUT of size ``max_id + 1`` with lut[i] = merged id of i (0 stays 0)."""
    lut = np.arange(max_id + 1, dtype=np.int64)
    for k, v in table.items():
        if 0 < k <= max_id:
            lut[k] = v
    return lut.astype(np.uint16)


def apply_merge(ids: Integer[np.ndarray, "..."], table: Optional[Mapping[int, int]]) -> np.ndarray:
    """Map an id array (any shape, uint16 or other integers) through the merge table; dtype is kept."""
    ids = np.asarray(ids)
    if not table or ids.size == 0:
        return ids.copy()
    max_id = int(max(int(ids.max()), max(table)))
    lut = lookup_table(table, max_id)
    return lut[ids.astype(np.int64)].astype(ids.dtype)


def apply_merge_torch(ids, table: Optional[Mapping[int, int]]):
    """Same as :func:`apply_merge` for a torch integer tensor (the viewer and ns-render outputs)."""
    import torch

    if not table or ids.numel() == 0:
        return ids.clone()
    max_id = int(max(int(ids.max()), max(table)))
    lut = torch.from_numpy(lookup_table(table, max_id).astype(np.int64)).to(ids.device)
    return lut[ids.long()].to(ids.dtype)


class MergeTable:
    """A loaded merge table (+ hand edits) with ``apply`` for numpy arrays and torch tensors."""

    def __init__(self, table: Optional[Mapping[int, int]] = None) -> None:
        self.table: Dict[int, int] = resolve(table or {})

    def __bool__(self) -> bool:
        return bool(self.table)

    def __len__(self) -> int:
        return len(self.table)

    def apply(self, ids):
        """Merged ids, same type, shape and dtype as ``ids`` (numpy array or torch tensor)."""
        if hasattr(ids, "numel"):
            return apply_merge_torch(ids, self.table)
        return apply_merge(ids, self.table)


def load_merge_for_run(run_dir: Path | str, edits: Optional[Path | str] = None) -> MergeTable:
    """The merge table of a training run folder (the folder of config.yml); empty when the run has none."""
    return MergeTable(load_merge_table(Path(run_dir) / MERGE_TABLE_NAME, edits))
