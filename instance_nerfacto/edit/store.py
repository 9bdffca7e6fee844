"""Storing a run's hand edits: the edit file beside the run and the checkpoint every command reads, together.

``store_label_edits(run_dir, edits)`` writes ``<run dir>/label_edits.txt`` (the user's copy, the format of
:mod:`instance_nerfacto.edit.edits`), then the latest checkpoint (the merge table with the merges before the first
split in ``merge_lut``, the rest of the program and the names in ``label_edits``) and ``merge_table.json`` through
:func:`instance_nerfacto.core.merge_table.store_merge_table`; each file is written to a temporary name and renamed.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple

from instance_nerfacto.core.merge_table import read_record, store_merge_table
from instance_nerfacto.edit.edits import EDITS_FILE_NAME, Edit, Merge, Split, read_label_edits, write_label_edits
from instance_nerfacto.edit.label_map import LabelMap

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


def store_label_edits(run_dir: Path | str, edits: Sequence[Edit], automatic: Optional[Mapping[int, int]] = None,
                      **extra) -> LabelMap:
    """Write the edit file, then the checkpoint and the record; returns the map every command will now apply."""
    run_dir = Path(run_dir)
    automatic = automatic_merges(run_dir) if automatic is None else automatic
    label_map = LabelMap.compile(automatic, edits)
    write_label_edits(edits_path(run_dir), edits)
    store_merge_table(run_dir, automatic, leading_merges(edits), model_state={STATE_KEY: label_map.state()},
                      edits_file=EDITS_FILE_NAME, splits=sum(isinstance(e, Split) for e in edits),
                      names={str(k): v for k, v in label_map.names.items()}, **extra)
    return label_map
