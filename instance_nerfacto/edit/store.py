"""Storing a run's merge table and hand edits: the checkpoint every command reads, the record and the edit file
beside it, together.

The merge table lives in the trained model, as the ``merge_lut`` buffer of the checkpoint. ``ns-render``, the viewer,
``instance-render``, ``instance-loc`` and ``instance-export`` all read that buffer, so they cannot disagree. Label
merging (the end-of-training callback, ``instance-merge``, ``instance-merge --edits``) writes it with
:func:`store_merge_table`, which updates the latest checkpoint atomically and writes a readable record beside
config.yml::

    <run dir>/merge_table.json   {"merge": {"3": 1}, "edits": [[12, 4]], "final": {"3": 1, "12": 4}, ...}

``merge`` is what automatic merging found, ``edits`` the hand edits applied on top, ``final`` what the model holds.

``store_label_edits(run_dir, edits)`` writes ``<run dir>/label_edits.txt`` (the user's copy, the format of
:mod:`instance_nerfacto.edit.edits`), then the latest checkpoint (the merge table with the merges before the first
split in ``merge_lut``, the rest of the program and the names in ``label_edits``) and ``merge_table.json`` through
:func:`store_merge_table`; each file is written to a temporary name and renamed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from instance_nerfacto.core.errors import fail
from instance_nerfacto.core.files import atomic_write_bytes, atomic_write_json
from instance_nerfacto.core.runs import latest_checkpoint
from instance_nerfacto.edit.edits import EDITS_FILE_NAME, Edit, Merge, Split, read_label_edits, write_label_edits
from instance_nerfacto.edit.label_map import LabelMap, MergeTable, resolve

MERGE_TABLE_NAME = "merge_table.json"

STATE_KEY = "label_edits._extra_state"
"""Name of the edit program in the model's state (``_model.label_edits._extra_state`` in the checkpoint)."""


def edits_path(run_dir: Path | str) -> Path:
    return Path(run_dir) / EDITS_FILE_NAME


def leading_merges(edits: Sequence[Edit]) -> List[Tuple[int, int]]:
    """The merges before the first split: they go into the merge table (``merge_lut``)."""
    pairs = []
    for edit in edits:
        if isinstance(edit, Split):
            break
        if isinstance(edit, Merge):
            pairs.append((edit.source, edit.target))
    return pairs


def automatic_merges(run_dir: Path | str) -> Mapping[int, int]:
    """What automatic merging found for the run (``merge_table.json``), empty when it never ran."""
    return read_record(run_dir).get("merge", {})


def read_run_edits(run_dir: Path | str) -> List[Edit]:
    """The run's saved edits (``label_edits.txt``), empty when there is none."""
    path = edits_path(run_dir)
    return read_label_edits(path) if path.is_file() else []


def read_record(run_dir: Path | str) -> Dict:
    """``merge_table.json`` of a run as a dict (empty when there is none); InputError when it is corrupt."""
    path = Path(run_dir) / MERGE_TABLE_NAME
    if not path.is_file():
        return {}
    try:
        obj = json.loads(path.read_text())
        auto = {int(k): int(v) for k, v in obj.get("merge", {}).items()}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError, ValueError) as err:
        fail(
            f"merge table is not a valid record ({err.__class__.__name__})",
            path,
            "delete it and run instance-merge --load-config CFG",
        )
    return {**obj, "merge": auto}


def write_record(
    run_dir: Path | str,
    automatic: Mapping[int, int],
    edits: List[Tuple[int, int]],
    final: MergeTable,
    checkpoint_name: str,
    **extra,
) -> None:
    """``merge_table.json``: what automatic merging found, the hand edits, and what the checkpoint holds."""
    record = {
        "merge": {str(k): int(v) for k, v in sorted(resolve(automatic).items())},
        "edits": [[int(a), int(b)] for a, b in edits],
        "final": {str(k): int(v) for k, v in sorted(final.table.items())},
        "checkpoint": checkpoint_name,
        **extra,
    }
    atomic_write_json(Path(run_dir) / MERGE_TABLE_NAME, record)


def store_merge_table(
    run_dir: Path | str,
    automatic: Mapping[int, int],
    edits: List[Tuple[int, int]],
    model_state: Optional[Mapping[str, object]] = None,
    **extra,
) -> MergeTable:
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
        fail(
            "checkpoint has no merge table buffer (trained by an older version)",
            checkpoint,
            "re-train the run with this version of instance-nerfacto",
        )
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


def store_label_edits(
    run_dir: Path | str, edits: Sequence[Edit], automatic: Optional[Mapping[int, int]] = None, **extra
) -> LabelMap:
    """Write the edit file, then the checkpoint and the record; returns the map every command will now apply."""
    run_dir = Path(run_dir)
    automatic = automatic_merges(run_dir) if automatic is None else automatic
    label_map = LabelMap.compile(automatic, edits)
    write_label_edits(edits_path(run_dir), edits)
    store_merge_table(
        run_dir,
        automatic,
        leading_merges(edits),
        model_state={STATE_KEY: label_map.state()},
        edits_file=EDITS_FILE_NAME,
        splits=sum(isinstance(e, Split) for e in edits),
        names={str(k): v for k, v in label_map.names.items()},
        **extra,
    )
    return label_map
