"""Hand edits of a trained run's labels: merges, splits and names, and their text file.

The file extends instance-merge's hand-edit format (``A B`` per line: label A becomes label B), so one file serves
``instance-merge --edits``, ``instance-loc --edits`` and the viewer, which writes it beside the run as
``<run dir>/label_edits.txt``::

    # label 12 is the same chair as label 4
    12 4
    # label 7 holds two objects: its points nearest the first seed keep 7, those nearest the second become 31
    split 7  7 0.120 -0.310 0.050  31 0.402 -0.288 0.061
    name 4 red chair

``split L  ID x y z  ID x y z ...``: every point whose label is L at that line (after the merges and splits above it)
takes the id of its nearest seed; seeds are in the model's frame (the normalised frame ns-train trains in, the frame
of the viewer's clicks), at least two of them. ``name ID text`` gives an id a name (the last name of an id wins).
Edits apply in file order; a merge names ids as they are at its line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

from instance_nerfacto.core.errors import fail
from instance_nerfacto.core.files import atomic_write_bytes
from instance_nerfacto.core.pseudolabels import MAX_LABELS as MAX_LABEL

EDITS_FILE_NAME = "label_edits.txt"
FORMAT_HINT = "write 'A B' (label A becomes B), 'split L ID x y z ID x y z ...' or 'name ID text' per line"

Point = Tuple[float, float, float]


@dataclass(frozen=True)
class Merge:
    """Label ``source`` (its whole current group) becomes label ``target`` (0 = unlabelled)."""

    source: int
    target: int


@dataclass(frozen=True)
class Split:
    """Points labelled ``label`` take the id of their nearest seed; ``seeds`` are (id, (x, y, z)) in the model's
    frame."""

    label: int
    seeds: Tuple[Tuple[int, Point], ...]

    @property
    def new_ids(self) -> List[int]:
        return [i for i, _ in self.seeds if i != self.label]


@dataclass(frozen=True)
class Name:
    """A name for label ``label``."""

    label: int
    name: str


Edit = Union[Merge, Split, Name]


def edit_lines(text: str, path: Optional[Path] = None) -> Iterator[Tuple[int, str, str, List[str]]]:
    """(line number, raw line, where to point an error, fields) of every non-empty line of an edit file, ``#``
    comments and commas dropped."""
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if line:
            where = f"{path}:{lineno}" if path is not None else f"line {lineno}"
            yield lineno, raw, where, line.replace(",", " ").split()


def _label(token: str, where: str, raw: str, allow_zero: bool = False) -> int:
    try:
        value = int(token)
    except ValueError:
        fail(f"'{token}' is not an integer label id ('{raw.strip()}')", where, FORMAT_HINT)
    if not ((0 if allow_zero else 1) <= value <= MAX_LABEL):
        fail(f"label id {value} is outside {0 if allow_zero else 1}..{MAX_LABEL} ('{raw.strip()}')", where,
             FORMAT_HINT)
    return value


def _parse_split(fields: List[str], where: str, raw: str) -> Split:
    label = _label(fields[1], where, raw)
    rest = fields[2:]
    if len(rest) < 8 or len(rest) % 4:
        fail(f"a split needs its label and at least two 'ID x y z' seeds ('{raw.strip()}')", where, FORMAT_HINT)
    seeds = []
    for i in range(0, len(rest), 4):
        seed_id = _label(rest[i], where, raw)
        try:
            point = tuple(float(v) for v in rest[i + 1 : i + 4])
        except ValueError:
            fail(f"seed coordinates are not numbers ('{raw.strip()}')", where, FORMAT_HINT)
        if not all(abs(v) < float("inf") for v in point):
            fail(f"seed coordinates are not finite ('{raw.strip()}')", where, FORMAT_HINT)
        seeds.append((seed_id, point))
    return Split(label, tuple(seeds))


def parse_label_edits(text: str, path: Optional[Path] = None) -> List[Edit]:
    """Parse an edit file (merges, splits, names; ``#`` comments). InputError with the line on a bad line."""
    edits: List[Edit] = []
    for lineno, raw, where, fields in edit_lines(text, path):
        keyword = fields[0].lower()
        if keyword == "split":
            edits.append(_parse_split(fields, where, raw))
        elif keyword == "name":
            if len(fields) < 3:
                fail(f"a name line needs an id and a name ('{raw.strip()}')", where, FORMAT_HINT)
            edits.append(Name(_label(fields[1], where, raw), " ".join(raw.split("#", 1)[0].split()[2:])))
        elif len(fields) == 2:
            edits.append(Merge(_label(fields[0], where, raw), _label(fields[1], where, raw, allow_zero=True)))
        else:
            fail(f"edit line {lineno} is not a merge, split or name ('{raw.strip()}')", where, FORMAT_HINT)
    return edits


def format_label_edits(edits: Sequence[Edit]) -> str:
    """The text of an edit file (what :func:`parse_label_edits` reads back to the same edits)."""
    lines = ["# label edits: 'A B' = label A becomes B; 'split L ID x y z ...' = nearest seed wins (model frame);",
             "# 'name ID text'. Applied in order by instance-merge --edits, the viewer and every command after it."]
    for edit in edits:
        if isinstance(edit, Merge):
            lines.append(f"{edit.source} {edit.target}")
        elif isinstance(edit, Split):
            seeds = "  ".join(f"{i} {p[0]:.6f} {p[1]:.6f} {p[2]:.6f}" for i, p in edit.seeds)
            lines.append(f"split {edit.label}  {seeds}")
        else:
            lines.append(f"name {edit.label} {' '.join(edit.name.split())}")
    return "\n".join(lines) + "\n"


def read_label_edits(path: Path | str) -> List[Edit]:
    path = Path(path)
    if not path.is_file():
        fail("edit file does not exist", path, FORMAT_HINT)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        fail("edit file is not text", path, FORMAT_HINT)
    return parse_label_edits(text, path)


def write_label_edits(path: Path | str, edits: Sequence[Edit]) -> None:
    """Write an edit file atomically (temporary name, then rename)."""
    atomic_write_bytes(Path(path), format_label_edits(edits).encode())


def merge_pairs(edits: Sequence[Edit]) -> List[Tuple[int, int]]:
    """The merges of an edit list as instance-merge's ``(A, B)`` pairs."""
    return [(e.source, e.target) for e in edits if isinstance(e, Merge)]
