"""Leiden's local moving under the cannot-link rule, refining the greedy (Kruskal) split of a community
(:func:`communities.split_cannot_link`): each mask goes to the part holding most of its edge weight unless that part
already holds a mask of its frame that it does not touch."""

from __future__ import annotations

from typing import Dict, List, Set, Tuple

import numpy as np
from jaxtyping import Bool, Float, Int


def move_nodes(part: Dict[int, int], edges: Int[np.ndarray, "E 2"], weights: Float[np.ndarray, "E"],
               frame_of: Int[np.ndarray, "N"], touching: Set[Tuple[int, int]], sweeps: int = 3) -> None:
    """Refine a greedy split in place: move each mask to the part holding most of its edge weight when the
    cannot-link rule allows it (Leiden's local moving, with the constraint). Kruskal commits to the first strong
    edges; one wrong edge early on leaves masks of one object stranded in the part of its neighbour.

    Masks are visited in id order and each move is seen by the masks after it, as in a plain loop; but the loop only
    stops at a mask that another part pulls harder than its own at the start of the sweep, or whose neighbour moved
    since (array code finds them): at 10,000 frames the communities refined hold ~10^6 edges and few masks move."""
    nodes = np.array(sorted(part), dtype=np.int64)
    if len(nodes) == 0 or len(edges) == 0:
        return
    # both directions of each edge, interleaved so that each mask's neighbours stay in edge order
    src = np.searchsorted(nodes, np.stack([edges[:, 0], edges[:, 1]], 1).ravel())
    dst = np.searchsorted(nodes, np.stack([edges[:, 1], edges[:, 0]], 1).ravel())
    w = np.repeat(np.asarray(weights, dtype=np.float64), 2)
    order = np.argsort(src, kind="stable")
    src, dst, w = src[order], dst[order], w[order]
    ptr = np.searchsorted(src, np.arange(len(nodes) + 1))
    part_of = [part[n] for n in nodes.tolist()]
    frame = frame_of[nodes].tolist()
    members: Dict[Tuple[int, int], List[int]] = {}
    for i, p in enumerate(part_of):
        members.setdefault((p, frame[i]), []).append(i)
    for _ in range(sweeps):
        visit = _pulled_away(src, dst, w, np.asarray(part_of, dtype=np.int64), len(nodes)).tolist()
        moved = False
        for i in range(len(nodes)):
            if not visit[i]:
                continue
            pull: Dict[int, float] = {}
            for j, wj in zip(dst[ptr[i]:ptr[i + 1]].tolist(), w[ptr[i]:ptr[i + 1]].tolist()):
                pull[part_of[j]] = pull.get(part_of[j], 0.0) + wj
            best = min(pull, key=lambda p: (-pull[p], p))
            cur, n, f = part_of[i], int(nodes[i]), frame[i]
            if best == cur or pull[best] <= pull.get(cur, 0.0):
                continue
            if any((min(m, n), max(m, n)) not in touching for m in nodes[members.get((best, f), [])].tolist()):
                continue
            members[(cur, f)].remove(i)
            members.setdefault((best, f), []).append(i)
            part_of[i], moved = best, True
            for j in dst[ptr[i]:ptr[i + 1]].tolist():  # their pull changed: visit them if still ahead in this sweep
                visit[j] = True
        if not moved:
            break
    for n, p in zip(nodes.tolist(), part_of):
        part[n] = p


def _pulled_away(src: Int[np.ndarray, "L"], dst: Int[np.ndarray, "L"], w: Float[np.ndarray, "L"],
                 part_of: Int[np.ndarray, "M"], n: int) -> Bool[np.ndarray, "M"]:
    """For each of ``n`` masks (links ``src`` -> ``dst`` of weight ``w``): whether some other part pulls it harder than
    its own part does."""
    width = int(part_of.max()) + 1  # (mask, part) packed into one int64 key
    groups, inverse = np.unique(src * width + part_of[dst], return_inverse=True)
    total = np.bincount(inverse, weights=w)
    mask, grp_part = groups // width, groups % width
    own = grp_part == part_of[mask]
    own_pull = np.zeros(n)
    own_pull[mask[own]] = total[own]
    other_pull = np.full(n, -np.inf)
    np.maximum.at(other_pull, mask[~own], total[~own])
    return other_pull > own_pull
