"""Raw label ids (and the 3D points they were read at) -> the ids every command shows: the one owner of the merge
table and of the label map built on it from hand edits.

A :class:`MergeTable` (label -> merged label) is what automatic merging finds; hand edits' merges (``A B``: label A's
whole merged group joins B's group) apply on top of it, in file order (:func:`apply_edits`). Labels not listed keep
their id.

A :class:`LabelMap` is the run's merge table followed by the hand edits that cannot be a table: after the first split,
edits are kept as an ordered program of stages, a merge stage (a table over the ids of that stage) or a split stage
(points of one id take the id of their nearest seed). Without splits the program is empty and the map is exactly the
merge table, as before.

Where it lives: in the trained model. The merge table is the ``merge_lut`` buffer; the program and the names are the
extra state of :class:`LabelEditState` (``label_edits`` in the checkpoint). ``ns-render`` and the viewer (the model's
own outputs), ``instance-render``, ``instance-loc`` and ``instance-export`` all call ``model.label_map().apply(ids,
points)`` with the surface point of each ray, so a split shows the same everywhere. :mod:`instance_nerfacto.edit.store`
writes both into the checkpoint.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from jaxtyping import Integer

from instance_nerfacto.core.errors import fail
from instance_nerfacto.edit.edits import Edit, Merge, Name, Split

STATE_VERSION = 1


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
            cur = min(seen[seen.index(cur) :])
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
        merge table does not depend on where an id was read; it is accepted so that a table and a
        :class:`LabelMap` are called alike)."""
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


def _merge_stage(table: Mapping[int, int]) -> Dict:
    return {"merge": {int(k): int(v) for k, v in table.items()}}


class LabelMap:
    """The merge table, then the program of edits after the first split, and the names of ids."""

    def __init__(
        self,
        merge: Optional[MergeTable] = None,
        program: Sequence[Dict] = (),
        names: Optional[Mapping[int, str]] = None,
    ) -> None:
        self.merge = merge if merge is not None else MergeTable()
        self.program: List[Dict] = [dict(stage) for stage in program]
        self.names: Dict[int, str] = {int(k): str(v) for k, v in (names or {}).items()}

    def __repr__(self) -> str:
        return f"LabelMap(merge={self.merge.table}, program={self.program}, names={self.names})"

    @classmethod
    def compile(cls, automatic: Mapping[int, int], edits: Sequence[Edit]) -> "LabelMap":
        """The map of an automatic merge table with hand edits applied on top, in order."""
        return cls(MergeTable(automatic)).with_edits(edits)

    @property
    def has_splits(self) -> bool:
        return any("split" in stage for stage in self.program)

    def resolve(self, label: int) -> int:
        """The id ``label`` has now, through the merges (a split leaves an id as it is)."""
        label = self.merge.table.get(int(label), int(label))
        for stage in self.program:
            if "merge" in stage:
                label = stage["merge"].get(label, label)
        return label

    def with_edits(self, edits: Sequence[Edit]) -> "LabelMap":
        """A new map with ``edits`` applied after this map's own."""
        out = LabelMap(self.merge, self.program, self.names)
        for edit in edits:
            if isinstance(edit, Merge):
                if not out.program:  # before any split, merges go into the table (instance-merge's semantics)
                    out.merge = MergeTable(apply_edits(out.merge.table, [(edit.source, edit.target)]))
                    continue
                a, b = out.resolve(edit.source), out.resolve(edit.target)
                if a == b:
                    continue
                if "merge" in out.program[-1]:
                    out.program[-1] = _merge_stage(apply_edits(out.program[-1]["merge"], [(a, b)]))
                else:
                    out.program.append(_merge_stage({a: b}))
            elif isinstance(edit, Split):
                out.program.append(
                    {"split": out.resolve(edit.label), "seeds": [[int(i), *map(float, p)] for i, p in edit.seeds]}
                )
            elif isinstance(edit, Name):
                out.names[int(edit.label)] = edit.name
        return out

    def max_id(self) -> int:
        ids = [0, *self.merge.table.values()]
        for stage in self.program:
            ids += list(stage["merge"].values()) if "merge" in stage else [int(s[0]) for s in stage["seeds"]]
        return max(ids)

    def apply(self, ids, points=None):
        """Final ids, same type, shape and dtype as ``ids`` (numpy array or torch tensor). ``points`` (``ids.shape +
        (3,)``, model frame) is where each id was read; it is needed when the map holds a split."""
        ids = self.merge.apply(ids)
        if not self.program:
            return ids
        if points is None:
            if self.has_splits:
                fail(
                    "the run's label edits hold a split, which needs the 3D point of every pixel",
                    None,
                    "use a command that reads the model (instance-render, instance-loc, instance-export)",
                )
        is_numpy = not isinstance(ids, torch.Tensor)
        flat = torch.as_tensor(np.asarray(ids) if is_numpy else ids).reshape(-1).long().clone()
        pts = None if points is None else torch.as_tensor(points).reshape(-1, 3).to(flat.device).float()
        for stage in self.program:
            if "merge" in stage:
                flat = MergeTable(stage["merge"]).apply(flat)
                continue
            chosen = torch.nonzero(flat == int(stage["split"])).reshape(-1)
            if len(chosen):
                seeds = torch.tensor(stage["seeds"], dtype=torch.float32, device=flat.device)
                nearest = torch.cdist(pts[chosen], seeds[:, 1:]).argmin(dim=1)
                flat[chosen] = seeds[nearest, 0].long()
        if is_numpy:
            return flat.cpu().numpy().astype(np.asarray(ids).dtype).reshape(np.shape(ids))
        return flat.to(ids.dtype).reshape(ids.shape)

    # -- checkpoint form ---------------------------------------------------------------------------------------------

    def state(self) -> Dict:
        """The program and the names as plain lists and strings (the checkpoint's ``label_edits`` extra state)."""
        program = [
            {"merge": [[k, v] for k, v in sorted(s["merge"].items())]}
            if "merge" in s
            else {"split": int(s["split"]), "seeds": [list(map(float, seed)) for seed in s["seeds"]]}
            for s in self.program
        ]
        return {
            "version": STATE_VERSION,
            "program": program,
            "names": [[int(k), v] for k, v in sorted(self.names.items())],
        }

    @classmethod
    def from_parts(cls, merge_lut, state: Optional[Mapping]) -> "LabelMap":
        """From the model's ``merge_lut`` buffer and ``label_edits`` state."""
        lut = merge_lut.cpu().numpy() if isinstance(merge_lut, torch.Tensor) else np.asarray(merge_lut)
        state = state or {}
        program = [
            {"merge": {int(k): int(v) for k, v in s["merge"]}}
            if "merge" in s
            else {"split": int(s["split"]), "seeds": [list(seed) for seed in s["seeds"]]}
            for s in state.get("program", [])
        ]
        return cls(MergeTable.from_lut(lut), program, {int(k): v for k, v in state.get("names", [])})


class LabelEditState(torch.nn.Module):
    """The hand-edit program and names of a model, carried in its checkpoint as extra state (a checkpoint from
    before edits existed loads with none)."""

    def __init__(self) -> None:
        super().__init__()
        self.state_dict_value: Dict = LabelMap().state()

    def get_extra_state(self) -> Dict:
        return self.state_dict_value

    def set_extra_state(self, state: Dict) -> None:
        self.state_dict_value = dict(state) if state else LabelMap().state()


def seeds_of(label_map: LabelMap) -> List[Tuple[int, int, Tuple[float, float, float]]]:
    """(split label, seed id, point) of every seed of a map, for drawing."""
    return [
        (int(s["split"]), int(seed[0]), tuple(seed[1:]))
        for s in label_map.program
        if "split" in s
        for seed in s["seeds"]
    ]
