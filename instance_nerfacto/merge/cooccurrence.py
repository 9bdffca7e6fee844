"""Label merging (pure core): join labels of the lifted field that are one object.

InstanceMap sometimes splits one object into several labels (frames it could not link). After training, label maps
rendered from new viewpoints are segmented by a 2D segmenter; a region of the segmentation that is one object in the
image but is covered by two labels is evidence that the two labels are one object. We count, for every region, the
labels that each cover more than ``min_cover`` of it, and merge two labels when they co-occur in a large enough share
of the regions each of them appears in. Two labels that the pseudolabels show side by side in one frame are distinct
objects by construction (InstanceMap never puts two masks of one frame in one instance), so they are never merged,
not even through a chain of merges (checked on whole groups during the union-find closure).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, FrozenSet, Iterable, List, Mapping, Set, Tuple

import numpy as np
from jaxtyping import Integer
from scipy.cluster.hierarchy import DisjointSet

Pair = Tuple[int, int]


@dataclass
class MergeParams:
    min_cover: float = 0.2
    """A label counts in a segmented region when it covers more than this fraction of the region's pixels."""
    threshold: float = 0.5
    """Merge a and b when co-occurrences / appearances >= this for both labels (the rarer and the more frequent)."""
    min_count: int = 2
    """Minimum number of regions in which the two labels co-occur before they can merge."""
    min_region_pixels: int = 30
    """Regions smaller than this are ignored (segmenter crumbs carry no evidence)."""
    min_link_pixels: int = 20
    """Two pseudolabels count as side by side in a frame when each has at least this many pixels in it."""


def _pair(a: int, b: int) -> Pair:
    return (a, b) if a < b else (b, a)


def labels_present(labels: Integer[np.ndarray, "H W"], min_pixels: int) -> np.ndarray:
    ids, counts = np.unique(np.asarray(labels), return_counts=True)
    keep = (ids != 0) & (counts >= min_pixels)
    return ids[keep].astype(np.int64)


def cannot_link_pairs(frames: Iterable[Integer[np.ndarray, "H W"]], min_pixels: int = 20) -> Set[Pair]:
    """Pairs of labels that appear together (each with >= ``min_pixels`` pixels) in at least one frame."""
    pairs: Set[Pair] = set()
    for labels in frames:
        present = labels_present(labels, min_pixels)
        for i in range(len(present)):
            for j in range(i + 1, len(present)):
                pairs.add((int(present[i]), int(present[j])))
    return pairs


def load_cannot_link(pseudolabel_dir: Path | str, min_pixels: int = 20) -> Set[Pair]:
    """Cannot-link set from ``pseudolabels/*.png`` (labels that share a frame are different objects)."""
    from instance_nerfacto.core.files import read_label_png

    paths = sorted(Path(pseudolabel_dir).glob("*.png"))
    return cannot_link_pairs((read_label_png(p) for p in paths), min_pixels)


def count_cooccurrence(
    label_maps: Iterable[Integer[np.ndarray, "H W"]],
    region_maps: Iterable[Integer[np.ndarray, "H W"]],
    min_cover: float = 0.2,
    min_region_pixels: int = 30,
) -> Tuple[Dict[int, int], Dict[Pair, int]]:
    """For every segmented region of every render, the labels covering more than ``min_cover`` of it.

    Returns ``appear[label]`` = regions the label covers, ``cooc[(a, b)]`` = regions both cover (a < b).
    Region id 0 (not segmented) and label 0 (unlabelled) are ignored.
    """
    appear: Dict[int, int] = {}
    cooc: Dict[Pair, int] = {}
    for labels, regions in zip(label_maps, region_maps):
        labels = np.asarray(labels).astype(np.int64).ravel()
        regions = np.asarray(regions).astype(np.int64).ravel()
        if labels.shape != regions.shape:
            raise ValueError(f"label map and region map differ in size: {labels.shape} vs {regions.shape}")
        region_ids, region_sizes = np.unique(regions, return_counts=True)
        size_of = dict(zip(region_ids.tolist(), region_sizes.tolist()))
        span = np.int64(labels.max() + 1) if labels.size else np.int64(1)
        keys, counts = np.unique(regions * span + labels, return_counts=True)
        covering: Dict[int, List[int]] = {}
        for key, count in zip(keys.tolist(), counts.tolist()):
            region, label = divmod(key, int(span))
            size = size_of[region]
            if region == 0 or label == 0 or size < min_region_pixels:
                continue
            if count > min_cover * size:
                covering.setdefault(region, []).append(label)
        for members in covering.values():
            for i, a in enumerate(members):
                appear[a] = appear.get(a, 0) + 1
                for b in members[i + 1:]:
                    p = _pair(a, b)
                    cooc[p] = cooc.get(p, 0) + 1
    return appear, cooc


def score_pairs(appear: Mapping[int, int], cooc: Mapping[Pair, int], params: MergeParams) -> List[Tuple[float, Pair]]:
    """Candidate merges, best first: score = co-occurrences / appearances of the more frequent label."""
    out = []
    for (a, b), n in cooc.items():
        if n < params.min_count:
            continue
        score = n / max(appear.get(a, 0), appear.get(b, 0), 1)
        if score >= params.threshold:
            out.append((score, (a, b)))
    out.sort(key=lambda item: (-item[0], item[1]))
    return out


def union_find_merge(
    candidates: Iterable[Pair], cannot_link: Set[Pair], weight: Mapping[int, int] | None = None
) -> Dict[int, int]:
    """Greedy union-find over candidate pairs (in order); a union is refused when any member of one group is
    cannot-linked to any member of the other. Each group maps to its most frequent label (ties: smallest id)."""
    weight = weight or {}
    groups = DisjointSet()
    for a, b in candidates:
        for x in (a, b):
            if x not in groups:
                groups.add(x)
        if groups.connected(a, b):
            continue
        if any(_pair(x, y) in cannot_link for x in groups.subset(a) for y in groups.subset(b)):
            continue
        groups.merge(a, b)
    table: Dict[int, int] = {}
    for group in groups.subsets():
        if len(group) < 2:
            continue
        target = min(group, key=lambda x: (-weight.get(x, 0), x))
        for x in group:
            if x != target:
                table[int(x)] = int(target)
    return table


def merge_groups(table: Mapping[int, int]) -> List[FrozenSet[int]]:
    groups: Dict[int, Set[int]] = {}
    for k, v in table.items():
        groups.setdefault(v, {v}).add(k)
    return [frozenset(g) for g in groups.values()]


def compute_merge_table(
    label_maps: Iterable[Integer[np.ndarray, "H W"]],
    region_maps: Iterable[Integer[np.ndarray, "H W"]],
    cannot_link: Set[Pair],
    params: MergeParams | None = None,
) -> Tuple[Dict[int, int], Dict]:
    """Merge table (label -> merged label) from rendered label maps and their segmentations; plus statistics."""
    params = params or MergeParams()
    appear, cooc = count_cooccurrence(label_maps, region_maps, params.min_cover, params.min_region_pixels)
    candidates = score_pairs(appear, cooc, params)
    refused = [p for _, p in candidates if p in cannot_link]
    table = union_find_merge([p for _, p in candidates], cannot_link, appear)
    stats = {
        "labels_seen": len(appear),
        "candidate_pairs": [[a, b, round(s, 3)] for s, (a, b) in candidates],
        "refused_cannot_link": [list(p) for p in refused],
        "merged_labels": len(table),
    }
    return table, stats


def label_statistics(frames: Mapping[str, Integer[np.ndarray, "H W"]]) -> Dict[int, Dict]:
    """Per label: the frames (stems) it appears in and its pixel area per frame, for the viewer's "label under
    the cursor" report that users read to write the hand-edit file."""
    stats: Dict[int, Dict] = {}
    for stem, labels in frames.items():
        ids, counts = np.unique(np.asarray(labels), return_counts=True)
        for label, count in zip(ids.tolist(), counts.tolist()):
            if label == 0:
                continue
            entry = stats.setdefault(int(label), {"frames": [], "area": {}})
            entry["frames"].append(stem)
            entry["area"][stem] = int(count)
    for entry in stats.values():
        entry["mean_area"] = float(np.mean(list(entry["area"].values())))
    return stats


def load_label_statistics(pseudolabel_dir: Path | str) -> Dict[int, Dict]:
    """:func:`label_statistics` over ``pseudolabels/*.png``."""
    from instance_nerfacto.core.files import read_label_png

    paths = sorted(Path(pseudolabel_dir).glob("*.png"))
    return label_statistics({p.stem: read_label_png(p) for p in paths})
