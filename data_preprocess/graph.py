"""Mask association graph: nodes are all masks of all frames, edges link masks of two frames that see the same thing.

For every frame pair, the correspondences of the matcher are counted into a (mask in i) x (mask in j) table, in both
directions. ``overlap_records`` keeps every mask pair that shares a correspondence with its counts (the cached stage
output); ``mutual_best_edges`` keeps, as the paper does, each mask's best-matching mask in the other frame when the
choice is mutual and the score (correspondence IoU) passes a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import numpy as np
from jaxtyping import Float, Int

from data_preprocess.matching import Correspondences
from data_preprocess.pairs import View


@dataclass
class OverlapRecords:
    """Mask pairs sharing correspondences, over all frame pairs (global node ids)."""

    node_a: Int[np.ndarray, "R"]
    node_b: Int[np.ndarray, "R"]
    shared: Float[np.ndarray, "R"]
    """Correspondences linking a and b (mean of the two directions)."""
    total_a: Float[np.ndarray, "R"]
    """Correspondences leaving a that land anywhere in the other frame (the part of a the other frame sees)."""
    total_b: Float[np.ndarray, "R"]

    @property
    def score(self) -> Float[np.ndarray, "R"]:
        """IoU of the two masks measured through the correspondences."""
        return self.shared / np.maximum(self.total_a + self.total_b - self.shared, 1e-9)

    def to_arrays(self) -> Dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in ("node_a", "node_b", "shared", "total_a", "total_b")}

    @staticmethod
    def concat(parts: List["OverlapRecords"]) -> "OverlapRecords":
        if not parts:
            z = np.zeros(0)
            return OverlapRecords(z.astype(np.int64), z.astype(np.int64), z, z, z)
        return OverlapRecords(*(np.concatenate([getattr(p, k) for p in parts]) for k in
                                ("node_a", "node_b", "shared", "total_a", "total_b")))


def _table(src_owner: np.ndarray, dst_owner: np.ndarray, n_src: int, n_dst: int) -> np.ndarray:
    """counts[a, b + 1] of correspondences from mask a to mask b (column 0: landed on no mask)."""
    keep = src_owner >= 0
    flat = src_owner[keep].astype(np.int64) * (n_dst + 1) + (dst_owner[keep].astype(np.int64) + 1)
    return np.bincount(flat, minlength=n_src * (n_dst + 1)).reshape(n_src, n_dst + 1).astype(np.float64)


def pair_overlaps(a: View, b: View, n_a: int, n_b: int, corr: Correspondences, offset_a: int,
                  offset_b: int) -> OverlapRecords:
    """Counts for one frame pair: every (mask of a, mask of b) that shares at least one correspondence."""
    oa, ob = a.owner.ravel(), b.owner.ravel()
    fwd = _table(oa[corr.fwd_src], ob[corr.fwd_dst], n_a, n_b)  # a -> b
    bwd = _table(ob[corr.bwd_src], oa[corr.bwd_dst], n_b, n_a)  # b -> a
    shared = 0.5 * (fwd[:, 1:] + bwd[:, 1:].T)
    ia, ib = np.nonzero(shared > 0)
    return OverlapRecords(
        node_a=ia.astype(np.int64) + offset_a,
        node_b=ib.astype(np.int64) + offset_b,
        shared=shared[ia, ib],
        total_a=fwd.sum(1)[ia],
        total_b=bwd.sum(1)[ib],
    )


def mutual_best_edges(rec: OverlapRecords, frame_of: Int[np.ndarray, "N"], min_score: float = 0.3,
                      min_shared: float = 3.0) -> tuple[Int[np.ndarray, "E 2"], Float[np.ndarray, "E"]]:
    """Edges between masks that are each other's best match in the other frame, with score >= ``min_score``."""
    score = rec.score
    ok = (score >= min_score) & (rec.shared >= min_shared)
    a, b, s = rec.node_a[ok], rec.node_b[ok], score[ok]
    if len(a) == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    # best partner of each node per other frame: sort by score, take the first per (node, other frame)
    keep = np.ones(len(a), dtype=bool)
    for x, y in ((a, b), (b, a)):
        key = x * (int(frame_of.max()) + 1) + frame_of[y]
        order = np.lexsort((-s, key))
        first = np.ones(len(order), dtype=bool)
        first[1:] = key[order][1:] != key[order][:-1]
        best = np.zeros(len(a), dtype=bool)
        best[order[first]] = True
        keep &= best
    return np.stack([a[keep], b[keep]], axis=1), s[keep]
