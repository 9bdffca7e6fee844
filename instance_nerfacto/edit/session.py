"""An editing session on a trained run's labels: selection, merge, split, names, undo and save, without a viewer.

The viewer panel (:mod:`instance_nerfacto.edit.viewer`) turns clicks and buttons into calls of :class:`EditSession`;
the tests drive it directly. A session holds the automatic merge table and the ordered hand edits; its
:attr:`EditSession.label_map` is what the model applies at once (every render after an edit shows it) and what
:meth:`EditSession.save` stores for every command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from instance_nerfacto.core.palette import colorize
from instance_nerfacto.edit.edits import Edit, Merge, Name, Point, Split
from instance_nerfacto.edit.label_map import LabelMap

DIM = 0.25
"""Brightness of the instances that are not selected while something is selected."""


@dataclass(frozen=True)
class Selected:
    """A selected instance: its id (as the renders show it now) and the surface point it was clicked at."""

    label: int
    point: Point


class EditSession:
    """Selection and hand edits of one run; every edit goes through :attr:`label_map`."""

    def __init__(self, num_labels: int, automatic: Optional[Mapping[int, int]] = None,
                 edits: Sequence[Edit] = (), label_stats: Optional[Mapping[int, Dict]] = None) -> None:
        self.num_labels = int(num_labels)
        self.automatic = {int(k): int(v) for k, v in (automatic or {}).items()}
        self.edits: List[Edit] = list(edits)
        self.label_stats = {int(k): v for k, v in (label_stats or {}).items()}
        self.selection: List[Selected] = []
        self.split_armed = False
        self.saved_edits: List[Edit] = list(edits)
        self._label_map = LabelMap.compile(self.automatic, self.edits)

    # -- state -------------------------------------------------------------------------------------------------------

    @property
    def label_map(self) -> LabelMap:
        return self._label_map

    @property
    def selected_ids(self) -> List[int]:
        return [s.label for s in self.selection]

    @property
    def unsaved(self) -> bool:
        return self.edits != self.saved_edits

    def _push(self, edit: Edit) -> Edit:
        self.edits.append(edit)
        self._label_map = self._label_map.with_edits([edit])
        return edit

    def next_free_id(self) -> int:
        return max(self.num_labels, self._label_map.max_id()) + 1

    # -- selection ---------------------------------------------------------------------------------------------------

    def click(self, label: int, point: Point, add: bool = False) -> Optional[Edit]:
        """A click on instance ``label`` at surface ``point``: selects it (adds it with ``add``), or, when a split is
        armed, splits the selected instance with this point as the new part's seed. Returns the edit made, if any."""
        if self.split_armed:
            return self.split_at(point)
        if label <= 0:
            if not add:
                self.selection = []
            return None
        if add:
            if label in self.selected_ids:
                self.selection = [s for s in self.selection if s.label != label]
            else:
                self.selection.append(Selected(label, tuple(map(float, point))))
        else:
            self.selection = [Selected(label, tuple(map(float, point)))]
        return None

    def clear(self) -> None:
        self.selection = []
        self.split_armed = False

    # -- edits -------------------------------------------------------------------------------------------------------

    def merge_selected(self) -> List[Edit]:
        """Merge every selected instance into the first one selected (one ``A B`` edit each)."""
        if len(self.selection) < 2:
            raise ValueError("select two or more instances to merge")
        target = self.selection[0]
        made = [self._push(Merge(s.label, target.label)) for s in self.selection[1:] if s.label != target.label]
        self.selection = [target]
        return made

    def arm_split(self) -> None:
        """The next click seeds the new part of the one selected instance."""
        if len(self.selection) != 1:
            raise ValueError("select exactly one instance to split")
        self.split_armed = True

    def split_at(self, point: Point) -> Split:
        """Split the selected instance: its points nearest the point it was selected at keep its id, those nearest
        ``point`` get a new id (selected afterwards)."""
        if len(self.selection) != 1:
            self.split_armed = False
            raise ValueError("select exactly one instance to split")
        keep = self.selection[0]
        point = tuple(map(float, point))
        if np.allclose(keep.point, point):
            raise ValueError("click a different point of the instance for the new part")
        new_id = self.next_free_id()
        edit = self._push(Split(keep.label, ((keep.label, keep.point), (new_id, point))))
        self.split_armed = False
        self.selection = [Selected(new_id, point)]
        return edit

    def name_selected(self, name: str) -> Name:
        if len(self.selection) != 1:
            raise ValueError("select exactly one instance to name")
        name = " ".join(name.split())
        if not name:
            raise ValueError("type a name first")
        return self._push(Name(self.selection[0].label, name))

    def undo(self) -> Optional[Edit]:
        """Take back the last edit (the selection is cleared: its ids may not exist any more)."""
        if not self.edits:
            return None
        edit = self.edits.pop()
        self._label_map = LabelMap.compile(self.automatic, self.edits)
        self.clear()
        return edit

    def save(self, run_dir: Path | str) -> LabelMap:
        """Store the edits beside the run and into its checkpoint (see :func:`instance_nerfacto.edit.store`)."""
        from instance_nerfacto.edit.store import store_label_edits

        label_map = store_label_edits(run_dir, self.edits, self.automatic)
        self.saved_edits = list(self.edits)
        return label_map

    # -- what the viewer shows ---------------------------------------------------------------------------------------

    def members(self, label: int) -> List[int]:
        """The trained labels (1..K) that end up as ``label`` through the merges."""
        lut = self._label_map.merge.lut(self.num_labels)
        raw = [r for r in range(1, self.num_labels + 1) if self._label_map.resolve(int(lut[r])) == label]
        return raw

    def describe(self, label: int, pixels: Optional[int] = None) -> str:
        """One line about an instance: id, name, pixels in the current view, training frames that saw it."""
        name = self._label_map.names.get(label)
        parts = [f"id {label}" + (f" '{name}'" if name else "")]
        if pixels is not None:
            parts.append(f"{pixels} px in view")
        members = self.members(label)
        frames = [(r, int(self.label_stats[r]["frames"])) for r in members if r in self.label_stats]
        if frames:
            parts.append("training frames " + " + ".join(f"{n} (label {r})" if len(frames) > 1 else str(n)
                                                         for r, n in frames))
        elif not members:
            parts.append("a split part")
        return ", ".join(parts)

    def colours(self, ids: np.ndarray) -> np.ndarray:
        """uint8 RGB of an id image; with a selection, the other instances are dimmed."""
        colour = colorize(ids)
        if not self.selection:
            return colour
        keep = np.isin(ids, self.selected_ids)
        return np.where(keep[..., None], colour, (colour * DIM).astype(np.uint8))


def selection_pixels(ids: np.ndarray, selection: Sequence[int]) -> Dict[int, int]:
    """Pixels of each selected id in an id image."""
    values, counts = np.unique(np.asarray(ids), return_counts=True)
    count_of: Dict[int, int] = dict(zip(values.tolist(), counts.tolist()))
    return {int(i): int(count_of.get(i, 0)) for i in selection}

