"""Masks of one frame that touch: which pairs touch, and which touching pairs the other views show as one object.

Two touching masks of one frame may be one over-segmented object; :mod:`data_preprocess.communities` exempts them from
the cannot-link rule (all of them with depth maps; without depth maps only those :func:`oversegmented_pairs` keeps).
"""

from __future__ import annotations

from typing import Set, Tuple

import numpy as np
from jaxtyping import Float, Int, Int16


def touching_pairs(owner: Int16[np.ndarray, "H W"], offset: int) -> Set[Tuple[int, int]]:
    """(node, node) pairs of masks of one frame that share a boundary (4-neighbourhood, 1 px gap allowed)."""
    pairs: Set[Tuple[int, int]] = set()
    for a, b in ((owner[:, :-1], owner[:, 1:]), (owner[:-1], owner[1:]),
                 (owner[:, :-2], owner[:, 2:]), (owner[:-2], owner[2:])):
        m = (a != b) & (a >= 0) & (b >= 0)
        if m.any():
            lo, hi = np.minimum(a[m], b[m]), np.maximum(a[m], b[m])
            for x, y in set(zip(lo.tolist(), hi.tolist())):
                pairs.add((x + offset, y + offset))
    return pairs


def oversegmented_pairs(touching: Set[Tuple[int, int]], frame_of: Int[np.ndarray, "N"], node_a: Int[np.ndarray, "R"],
                        node_b: Int[np.ndarray, "R"], shared: Float[np.ndarray, "R"], total_a: Float[np.ndarray, "R"],
                        total_b: Float[np.ndarray, "R"], min_containment: float = 0.5,
                        max_entries: int = 1 << 20) -> Set[Tuple[int, int]]:
    """The touching pairs that the other views do not show as two objects: those that may share a community.

    Touching masks of one frame are exempt from the cannot-link rule because a frontend over-segments an object now
    and then. Two objects that touch (a book on a teddy) touch in every frame, and one wrong edge between them then
    fuses them for good: with estimated depth, small objects' correspondences land on their neighbour often enough.
    The other views tell the two cases apart: in a frame g where most of a's correspondences land in one mask and
    most of b's in one mask, it is the same mask of g for the parts of one over-segmented object (g sees it whole)
    and two masks for two objects. A pair loses the exemption when the frames showing two masks outnumber those
    showing one (ties, and pairs no frame decides, keep it). Array code: a long capture has millions of records.
    """
    if not touching:
        return set()
    pairs = np.array(sorted(touching), dtype=np.int64).reshape(-1, 2)
    n_frames = int(frame_of.max()) + 1
    in_pair = np.zeros(len(frame_of), dtype=bool)
    in_pair[pairs.ravel()] = True
    src, dst, frac = [], [], []
    for x, y, total in ((node_a, node_b, total_a), (node_b, node_a, total_b)):  # both directions of each record
        share = shared.astype(np.float64) / np.maximum(total, 1e-9)  # share of x's correspondences into y's frame
        # only a share of at least min_containment can be "most": filtered before sorting (a 10,000-frame capture
        # has millions of records; sorting all of them held over a GB)
        keep = in_pair[x] & (share >= min_containment)
        src.append(x[keep])
        dst.append(y[keep])
        frac.append(share[keep])
        del share, keep
    src, dst, frac = np.concatenate(src).astype(np.int64), np.concatenate(dst).astype(np.int64), np.concatenate(frac)
    # per (mask, other frame): the mask of that frame receiving most of its correspondences, if most land in it
    key = src * n_frames + frame_of[dst]
    order = np.lexsort((dst, -frac, key))
    first = order[np.r_[True, key[order][1:] != key[order][:-1]]] if len(order) else order
    key, dst = key[first], dst[first]  # sorted by key: by mask, then by frame
    # for both masks of each pair, their (other frame -> destination) entries, matched on the other frame
    starts = np.searchsorted(key, pairs * n_frames)
    ends = np.searchsorted(key, pairs * n_frames + n_frames)
    count_a = ends[:, 0] - starts[:, 0]
    one, two = np.zeros(len(pairs)), np.zeros(len(pairs))
    # in blocks of pairs holding at most max_entries entries of their first masks: the arrays below grow with them
    # (hundreds of MB in one go at 10,000 frames)
    cum = np.cumsum(count_a)
    cuts = np.r_[0, np.searchsorted(cum, np.arange(max_entries, cum[-1] if len(cum) else 0, max_entries)) + 1,
                 len(pairs)]
    for p0, p1 in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
        if p1 <= p0:
            continue
        count = count_a[p0:p1]
        rows = np.repeat(np.arange(p0, p1), count)
        entry_a = np.repeat(starts[p0:p1, 0] - np.r_[0, np.cumsum(count)[:-1]], count) + np.arange(count.sum())
        probe = pairs[rows, 1] * n_frames + key[entry_a] % n_frames
        entry_b = np.searchsorted(key, probe).clip(0, max(len(key) - 1, 0))
        both = (key[entry_b] == probe) if len(key) else np.zeros(0, dtype=bool)
        same = np.bincount(rows[both] - p0, weights=(dst[entry_a] == dst[entry_b])[both], minlength=p1 - p0)
        one[p0:p1] = same
        two[p0:p1] = np.bincount(rows[both] - p0, minlength=p1 - p0) - same
    return {(int(a), int(b)) for (a, b), k in zip(pairs.tolist(), (two <= one).tolist()) if k}


def split_exemptions(touching: Set[Tuple[int, int]], frame_of: Int[np.ndarray, "N"], records, dense_depth: bool
                     ) -> Set[Tuple[int, int]]:
    """The touching pairs the cannot-link split exempts. With depth maps: all of them. Without (stereo or sparse
    depth), a small object's correspondences land on the object it touches often enough for single wrong edges, so
    the split keeps the exemption only where the other views support it (:func:`oversegmented_pairs`; merging and
    absorbing sum evidence over many frames and keep every touching pair). With depth maps this changed nothing for
    the better."""
    if dense_depth:
        return touching
    return oversegmented_pairs(touching, frame_of, records.node_a, records.node_b, records.shared, records.total_a,
                               records.total_b)
