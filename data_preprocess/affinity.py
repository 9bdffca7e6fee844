"""The evidence test of fragment merging, applied inside the cannot-link split (without depth maps).

The split joins the parts of a community edge by edge (Kruskal). Two parts that share no frame were joined by a
single edge, however many frame pairs saw both and disagreed: along a long capture that loops back, a few wrong
stereo correspondences between two neighbouring objects seen in different stretches (an object in frames 4-73, its
neighbour in 234-499, 4 edges out of 53 matched frame pairs) fused them for good, since they never share a frame for
the cannot-link rule to see. :class:`AffinityGate` asks a union for what fragment merging asks a merge: that enough of
the matched frame pairs seeing both parts hold a correspondence between them.
"""

from __future__ import annotations

from typing import Dict, List, Set, Tuple

import numpy as np
from jaxtyping import Float, Int


class AffinityGate:
    """Affinity of two parts = distinct frame pairs with a correspondence (score >= ``min_score``) between a mask of
    one and a mask of the other, over the matched frame pairs (``pairs``) with one part in each frame; a union passes
    when it reaches ``min_affinity`` (fragment merging's test, :func:`communities.merge_fragments`)."""

    def __init__(self, frame_of: Int[np.ndarray, "N"], node_a: Int[np.ndarray, "R"], node_b: Int[np.ndarray, "R"],
                 score: Float[np.ndarray, "R"], pairs: Int[np.ndarray, "P 2"], min_score: float,
                 min_affinity: float) -> None:
        # both directions of each record and of each pair, as sorted arrays (CSR): the dicts of lists this replaced
        # held hundreds of MB at 10,000 frames
        ok = score >= min_score
        self.records, self.record_ptr = _adjacency(node_a[ok], node_b[ok], len(frame_of))
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        self.partners, self.partner_ptr = _adjacency(pairs[:, 0], pairs[:, 1], int(frame_of.max()) + 1)
        self.frame_of = frame_of
        self.min_affinity = min_affinity

    def allows(self, frames_a: Dict[int, List[int]], frames_b: Dict[int, List[int]], find, root_b: int) -> bool:
        """Whether parts with these {frame: masks} may join (``find(node)``: a node's part, ``root_b``: b's part);
        fastest with the smaller part first."""
        support: Set[Tuple[int, int]] = set()
        for f, nodes in frames_a.items():
            for n in nodes:
                for m in self.records[self.record_ptr[n]:self.record_ptr[n + 1]].tolist():
                    if find(m) == root_b:
                        g = int(self.frame_of[m])
                        support.add((min(f, g), max(f, g)))
        covisible = {(min(f, g), max(f, g)) for f in frames_a
                     for g in self.partners[self.partner_ptr[f]:self.partner_ptr[f + 1]].tolist() if g in frames_b}
        return len(support) >= self.min_affinity * max(len(covisible), 1)


def _adjacency(a: Int[np.ndarray, "E"], b: Int[np.ndarray, "E"], n: int) -> Tuple[np.ndarray, np.ndarray]:
    """Neighbours of each of ``n`` ids over the undirected links (a, b): ``nbr[ptr[i]:ptr[i + 1]]`` are i's."""
    src = np.concatenate([a, b]).astype(np.int64)
    dst = np.concatenate([b, a]).astype(np.int64)
    order = np.argsort(src, kind="stable")
    return dst[order], np.searchsorted(src[order], np.arange(n + 1))
