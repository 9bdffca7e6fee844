"""The merge table (label -> merged label): its one in-memory type, its one store, and the hand-edit format.

Where it lives: in the trained model, as the ``merge_lut`` buffer of the checkpoint. ``ns-render``, the viewer,
``instance-render``, ``instance-loc`` and ``instance-export`` all read that buffer (``MergeTable.from_lut``), so they
cannot disagree. Label merging (the end-of-training callback, ``instance-merge``, ``instance-merge --edits``) writes
it with :func:`store_merge_table`, which updates the latest checkpoint atomically and writes a readable record beside
config.yml::

    <run dir>/merge_table.json   {"merge": {"3": 1}, "edits": [[12, 4]], "final": {"3": 1, "12": 4}, ...}

``merge`` is what automatic merging found, ``edits`` the hand edits applied on top, ``final`` what the model holds.
Labels not listed keep their id. Hand edits (the paper leaves remaining ambiguities to "sparse human
annotation") come from the edit file that :mod:`instance_nerfacto.edit.edits` reads and writes; its merges (``A B``:
label A's whole merged group joins B's group) apply after the merge table, in file order (:func:`apply_edits`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
from jaxtyping import Integer

from instance_nerfacto.core.errors import fail
from instance_nerfacto.core.files import atomic_write_bytes, atomic_write_json
from instance_nerfacto.core.runs import latest_checkpoint

MERGE_TABLE_NAME = "merge_table.json"


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


def lookup_table(table: Mapping[int, int], max_id: int) -> np.ndarray:
    """int64 LUT of size ``max_id + 1`` with lut[i] = merged id of i (0 stays 0)."""
    lut = np.arange(max_id + 1, dtype=np.int64)
    for k, v in table.items():
        if 0 < k <= max_id:
            lut[k] = v
    return lut


class MergeTable:
    """A merge table (automatic merges and hand edits, resolved): ``apply`` maps ids of numpy arrays and torch
    tensors."""

    def __init__(self, table: Optional[Mapping[int, int]] = None) -> None:
        self.table: Dict[int, int] = resolve({int(k): int(v) for k, v in (table or {}).items()})

    def __bool__(self) -> bool:
        return bool(self.table)

    def __len__(self) -> int:
        return len(self.table)

    def __eq__(self, other) -> bool:
        return isinstance(other, MergeTable) and self.table == other.table

    def __repr__(self) -> str:
        return f"MergeTable({self.table})"

    @classmethod
    def from_lut(cls, lut: Integer[np.ndarray, "K1"]) -> "MergeTable":
        """From the model's ``merge_lut`` buffer (lut[i] = merged id of label i)."""
        lut = np.asarray(lut).astype(np.int64)
        return cls({i: int(v) for i, v in enumerate(lut.tolist()) if i != v and i > 0})

    def lut(self, num_labels: int) -> Integer[np.ndarray, "K1"]:
        """The lookup table of labels 0..num_labels, as the model stores it."""
        return lookup_table(self.table, num_labels)

    def with_edits(self, edits: List[Tuple[int, int]]) -> "MergeTable":
        """This table with hand edits applied on top."""
        return MergeTable(apply_edits(self.table, edits))

    def apply(self, ids, points=None):
        """Merged ids, same type, shape and dtype as ``ids`` (numpy array or torch tensor). ``points`` is ignored (a
        merge table does not depend on where an id was read; it is accepted so that a table and the label map of
        :mod:`instance_nerfacto.edit.label_map` are called alike)."""
        if not self.table:
            return ids.clone() if hasattr(ids, "clone") else np.array(ids, copy=True)
        if hasattr(ids, "numel"):
            import torch

            if ids.numel() == 0:
                return ids.clone()
            lut = torch.from_numpy(lookup_table(self.table, max(int(ids.max()), max(self.table)))).to(ids.device)
            return lut[ids.long()].to(ids.dtype)
        ids = np.asarray(ids)
        if ids.size == 0:
            return ids.copy()
        lut = lookup_table(self.table, max(int(ids.max()), max(self.table)))
        return lut[ids.astype(np.int64)].astype(ids.dtype)


def read_record(run_dir: Path | str) -> Dict:
    """``merge_table.json`` of a run as a dict (empty when there is none); InputError when it is corrupt."""
    path = Path(run_dir) / MERGE_TABLE_NAME
    if not path.is_file():
        return {}
    try:
        obj = json.loads(path.read_text())
        auto = {int(k): int(v) for k, v in obj.get("merge", {}).items()}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError, ValueError) as err:
        fail(f"merge table is not a valid record ({err.__class__.__name__})", path,
             "delete it and run instance-merge --load-config CFG")
    return {**obj, "merge": auto}


def write_record(run_dir: Path | str, automatic: Mapping[int, int], edits: List[Tuple[int, int]], final: MergeTable,
                 checkpoint_name: str, **extra) -> None:
    """``merge_table.json``: what automatic merging found, the hand edits, and what the checkpoint holds."""
    record = {"merge": {str(k): int(v) for k, v in sorted(resolve(automatic).items())},
              "edits": [[int(a), int(b)] for a, b in edits],
              "final": {str(k): int(v) for k, v in sorted(final.table.items())},
              "checkpoint": checkpoint_name, **extra}
    atomic_write_json(Path(run_dir) / MERGE_TABLE_NAME, record)


def store_merge_table(run_dir: Path | str, automatic: Mapping[int, int], edits: List[Tuple[int, int]],
                      model_state: Optional[Mapping[str, object]] = None, **extra) -> MergeTable:
    """Store a merge table: into the latest checkpoint's ``merge_lut`` (what every consumer reads), then the record
    ``merge_table.json``. Both are written to a temporary name and renamed into place. ``model_state`` sets more
    entries of the model's state in the same write (name relative to the model, e.g. the label edit program)."""
    import io

    import torch

    final = MergeTable(automatic).with_edits(edits)
    checkpoint = latest_checkpoint(run_dir)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    keys = [k for k in state.get("pipeline", {}) if k.endswith("_model.merge_lut")]
    if not keys:
        fail("checkpoint has no merge table buffer (trained by an older version)", checkpoint,
             "re-train the run with this version of instance-nerfacto")
    for key in keys:
        old = state["pipeline"][key]
        state["pipeline"][key] = torch.from_numpy(final.lut(len(old) - 1)).to(old.dtype)
        for name, value in (model_state or {}).items():
            state["pipeline"][key[: -len("merge_lut")] + name] = value
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(checkpoint, buffer.getvalue())
    write_record(run_dir, automatic, edits, final, checkpoint.name, **extra)
    return final
