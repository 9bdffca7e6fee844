"""Affinity, the evidence test of fragment merging: the frame pairs holding a correspondence between two communities
(:func:`pair_support`) over the matched frame pairs that see both (:func:`covisible_pairs`); and that test applied
inside the cannot-link split (without depth maps).

The split joins the parts of a community edge by edge (Kruskal). Two parts that share no frame were joined by a
single edge, however many frame pairs saw both and disagreed: along a long capture that loops back, a few wrong
stereo correspondences between two neighbouring objects seen in different stretches (an object in frames 4-73, its
neighbour in 234-499, 4 edges out of 53 matched frame pairs) fused them for good, since they never share a frame for
the cannot-link rule to see. :class:`AffinityGate` asks a union for what fragment merging asks a merge: that enough of
the matched frame pairs seeing both parts hold a correspondence between them.
"""

from __future__ import annotations

from itertools import chain
from typing import Dict, List, Tuple

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

    def allows(self, frames_a: Dict[int, List[int]], frames_b: Dict[int, List[int]], part_of: Int[np.ndarray, "N"],
               root_b: int) -> bool:
        """Whether parts with these {frame: masks} may join (``part_of``: each node's part, ``root_b``: b's part).
        Work in proportion to the first part: give the smaller one first. Array code: at 10,000 frames the split asks
        this 240,000 times."""
        partner, node = _gather(self.records, self.record_ptr,
                                np.fromiter(chain.from_iterable(frames_a.values()), dtype=np.int64))
        hit = part_of[partner] == root_b
        n_support = _distinct_frame_pairs(self.frame_of[node[hit]], self.frame_of[partner[hit]])
        g, f = _gather(self.partners, self.partner_ptr, np.fromiter(frames_a, dtype=np.int64))
        frames, inverse = np.unique(g, return_inverse=True)  # the first part's frames have many partners in common
        seen = np.fromiter((x in frames_b for x in frames.tolist()), dtype=bool, count=len(frames))[inverse]
        n_covisible = _distinct_frame_pairs(f[seen], g[seen])
        return n_support >= self.min_affinity * max(n_covisible, 1)


def pair_support(ca: Int[np.ndarray, "R"], cb: Int[np.ndarray, "R"], fa: Int[np.ndarray, "R"],
                  fb: Int[np.ndarray, "R"], n_frames: int) -> Tuple[Int[np.ndarray, "K 2"], Int[np.ndarray, "K"]]:
    """The community pairs (lo, hi) of records between communities ``ca`` and ``cb`` seen in frames ``fa``, ``fb``,
    sorted, and for each the number of distinct frame pairs holding such a record. Rows of (lo, hi, frame pair) are
    packed into one int64 where they fit (``np.unique(axis=0)`` over a stacked copy set the 10,000-frame run's peak)."""
    lo, hi = np.minimum(ca, cb).astype(np.int64), np.maximum(ca, cb).astype(np.int64)
    fpair = np.minimum(fa, fb).astype(np.int64) * n_frames + np.maximum(fa, fb)
    n_comm = int(hi.max()) + 1 if len(hi) else 1
    if float(n_comm) * n_comm * n_frames * n_frames >= 2.0 ** 62:  # would overflow: rows as before
        good = np.unique(np.stack([lo, hi, fpair], 1), axis=0)
        return np.unique(good[:, :2], axis=0, return_counts=True)
    key = np.unique((lo * n_comm + hi) * (n_frames * n_frames) + fpair)  # sorted as the rows (lo, hi, fpair)
    del lo, hi, fpair
    pair_key, support = np.unique(key // (n_frames * n_frames), return_counts=True)
    return np.stack([pair_key // n_comm, pair_key % n_comm], 1), support


def covisible_pairs(community: Int[np.ndarray, "M"], frame: Int[np.ndarray, "M"], pairs: Int[np.ndarray, "P 2"],
                    cand: Int[np.ndarray, "K 2"], n_frames: int) -> Int[np.ndarray, "K"]:
    """For each candidate (x, y): the number of distinct frame pairs (i, j) of ``pairs`` with x in frame i and y in
    frame j or the other way round. Sparse products (frames x communities incidence ``M``, pair matrix ``P``): the
    count is M_x.P.M_y + M_y.P.M_x minus the pairs that hold both ways, so 10,000 frames stay linear in the pairs."""
    from scipy import sparse

    if len(cand) == 0:
        return np.zeros(0, dtype=np.int64)
    n_comm = int(max(community.max(), cand.max())) + 1
    inc = sparse.csc_matrix((np.ones(len(community)), (frame, community)), shape=(n_frames, n_comm))
    inc.data[:] = 1.0  # a community with several masks in one frame is in it once
    uniq = np.unique(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), axis=0)
    pm = sparse.csr_matrix((np.ones(len(uniq)), (uniq[:, 0], uniq[:, 1])), shape=(n_frames, n_frames))
    x, y = cand[:, 0], cand[:, 1]
    mx, my = inc[:, x], inc[:, y]
    forward = np.asarray(mx.multiply(pm @ my).sum(axis=0)).ravel()
    backward = np.asarray(my.multiply(pm @ mx).sum(axis=0)).ravel()
    both = mx.multiply(my).tocsc()
    twice = np.asarray(both.multiply(pm @ both).sum(axis=0)).ravel()
    return np.rint(forward + backward - twice).astype(np.int64)


def _gather(nbr: Int[np.ndarray, "L"], ptr: Int[np.ndarray, "n+1"], ids: Int[np.ndarray, "K"]
            ) -> Tuple[Int[np.ndarray, "M"], Int[np.ndarray, "M"]]:
    """The neighbours of ``ids`` (CSR ``nbr``, ``ptr``), concatenated, and the id each one belongs to."""
    start, count = ptr[ids], ptr[ids + 1] - ptr[ids]
    idx = np.repeat(start - np.cumsum(count) + count, count) + np.arange(int(count.sum()))
    return nbr[idx], np.repeat(ids, count)


def _distinct_frame_pairs(f: Int[np.ndarray, "M"], g: Int[np.ndarray, "M"]) -> int:
    lo, hi = np.minimum(f, g).astype(np.int64), np.maximum(f, g).astype(np.int64)
    return len(np.unique(lo * (int(hi.max(initial=0)) + 1) + hi))


def _adjacency(a: Int[np.ndarray, "E"], b: Int[np.ndarray, "E"], n: int) -> Tuple[np.ndarray, np.ndarray]:
    """Neighbours of each of ``n`` ids over the undirected links (a, b): ``nbr[ptr[i]:ptr[i + 1]]`` are i's."""
    src = np.concatenate([a, b]).astype(np.int64)
    dst = np.concatenate([b, a]).astype(np.int64)
    order = np.argsort(src, kind="stable")
    return dst[order], np.searchsorted(src[order], np.arange(n + 1))
