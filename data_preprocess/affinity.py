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
        ok = score >= min_score
        self.records: Dict[int, List[int]] = {}
        for a, b in zip(node_a[ok].tolist(), node_b[ok].tolist()):
            self.records.setdefault(a, []).append(b)
            self.records.setdefault(b, []).append(a)
        self.partners: Dict[int, Set[int]] = {}
        for i, j in np.asarray(pairs, dtype=np.int64).reshape(-1, 2).tolist():
            self.partners.setdefault(i, set()).add(j)
            self.partners.setdefault(j, set()).add(i)
        self.frame_of = frame_of
        self.min_affinity = min_affinity

    def allows(self, frames_a: Dict[int, List[int]], frames_b: Dict[int, List[int]], find, root_b: int) -> bool:
        """Whether parts with these {frame: masks} may join (``find(node)``: a node's part, ``root_b``: b's part);
        fastest with the smaller part first."""
        support: Set[Tuple[int, int]] = set()
        for f, nodes in frames_a.items():
            for n in nodes:
                for m in self.records.get(n, ()):
                    if find(m) == root_b:
                        g = int(self.frame_of[m])
                        support.add((min(f, g), max(f, g)))
        covisible = {(min(f, g), max(f, g)) for f in frames_a for g in self.partners.get(f, ()) if g in frames_b}
        return len(support) >= self.min_affinity * max(len(covisible), 1)
