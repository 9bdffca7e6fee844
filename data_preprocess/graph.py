"""Mask association graph: nodes are all masks of all frames, edges link masks of two frames that see the same thing.

For every frame pair, the correspondences of the matcher are counted into a (mask in i) x (mask in j) table, in both
directions. ``overlap_records`` keeps every mask pair that shares a correspondence with its counts (the cached stage
output); ``mutual_best_edges`` keeps, as the paper does, each mask's best-matching mask in the other frame when the
choice is mutual and the score (correspondence IoU) passes a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional

import numpy as np
from jaxtyping import Float, Int

from data_preprocess.matching import Correspondences
from data_preprocess.pairs import View

if TYPE_CHECKING:
    from data_preprocess.frames import FrameSpec


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

    def __post_init__(self) -> None:
        # Held compact, 20 instead of 40 bytes a record (21 million records at 10,000 frames without depth maps): node
        # ids as int32, counts (half-integers below 2^23) as float32, both exact. Widen before multiplying ids into
        # keys or dividing counts (``score`` does).
        for name in ("node_a", "node_b"):
            ids = np.asarray(getattr(self, name))
            if len(ids) and int(ids.max()) >= 2**31:
                raise ValueError(f"{int(ids.max())} masks do not fit int32 node ids")
            setattr(self, name, ids.astype(np.int32, copy=False))
        for name in ("shared", "total_a", "total_b"):
            setattr(self, name, np.asarray(getattr(self, name)).astype(np.float32, copy=False))

    @property
    def score(self) -> Float[np.ndarray, "R"]:
        """IoU of the two masks measured through the correspondences (float64)."""
        shared = self.shared.astype(np.float64)
        return shared / np.maximum(self.total_a.astype(np.float64) + self.total_b - shared, 1e-9)

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
        key = x.astype(np.int64) * (int(frame_of.max()) + 1) + frame_of[y]
        order = np.lexsort((-s, key))
        first = np.ones(len(order), dtype=bool)
        first[1:] = key[order][1:] != key[order][:-1]
        best = np.zeros(len(a), dtype=bool)
        best[order[first]] = True
        keep &= best
    return np.stack([a[keep], b[keep]], axis=1), s[keep]


# ---------------------------------------------------------------------------------------------- per-pair task

MATCHER_RESOURCES = {"depth": {"num_cpus": 1}, "flow": {"num_cpus": 1}, "sift": {"num_cpus": 1},
                     "loftr": {"num_gpus": 1}}
"""What one pair task asks a Ray cluster for (LoFTR falls back to a CPU when the cluster has no GPU)."""


@lru_cache(maxsize=2)
def _matcher(name: str, weights: Optional[str]):
    from data_preprocess.matching import LoFTRMatcher, make_matcher

    if name == "loftr" and weights is not None:
        import torch

        return LoFTRMatcher(Path(weights), device="cuda" if torch.cuda.is_available() else "cpu")
    return make_matcher(name, Path(weights) if weights is not None else None)


BATCH_PAIRS = 128
"""Pairs whose depth reprojections are batched by destination frame (:func:`depth_correspondences_many`): along a
sorted capture 128 pairs hold a few frames with all their partners, and their correspondences (~20 MB at 160x120)."""

_last_run: List[str] = []


def _fresh_caches(run: str) -> None:
    """Clear this process's image and view caches when a new run starts (a Ray worker outlives runs; the files
    behind a cached path may have changed)."""
    if _last_run != [run]:
        from data_preprocess import frames, matching

        for cached in (frames.cached_view, frames._resampled_owner, frames._resampled_depth,
                       getattr(matching, "read_gray", None), getattr(matching, "_sift_features", None)):
            if hasattr(cached, "cache_clear"):
                cached.cache_clear()
        _last_run[:] = [run]


def match_pairs(specs: Dict[int, "FrameSpec"], pairs: Int[np.ndarray, "P 2"], matcher: str,
                weights: Optional[str] = None, want_tri: bool = False, run: str = "") -> Dict[str, np.ndarray]:
    """Per-pair task: correspondences and mask overlap counts of a run of frame pairs (global frame indices into
    ``specs``, which holds the frames they use). Returns the concatenated :class:`OverlapRecords` arrays and, for
    matchers without depth (``want_tri``), the matches triangulated with the known poses (frame, flat pixel, depth)."""
    from data_preprocess.frames import cached_view
    from data_preprocess.matching import DEPTH_MATCHERS, depth_correspondences_many, triangulate

    _fresh_caches(run)
    pair_list = [tuple(p) for p in pairs.tolist()]
    if matcher in DEPTH_MATCHERS:  # the reprojections into one frame at once, BATCH_PAIRS pairs at a time
        views = {f: cached_view(s) for f, s in specs.items()}
        corrs = (c for start in range(0, len(pair_list), BATCH_PAIRS)
                 for c in depth_correspondences_many(views, pair_list[start:start + BATCH_PAIRS], matcher))
    else:
        match = _matcher(matcher, weights)
        corrs = (match(cached_view(specs[i]), cached_view(specs[j])) for i, j in pair_list)
    recs, tri = [], []
    for i, j in pair_list:
        a, b = specs[i], specs[j]
        va, vb = cached_view(a), cached_view(b)
        corr = next(corrs)
        recs.append(pair_overlaps(va, vb, a.n_masks, b.n_masks, corr, a.offset, b.offset))
        if want_tri:
            pa, za, pb, zb = triangulate(va, vb, corr)
            tri.append((np.r_[np.full(len(pa), i), np.full(len(pb), j)], np.r_[pa, pb], np.r_[za, zb]))
    out = OverlapRecords.concat(recs).to_arrays()
    if want_tri:
        for k, name in enumerate(TRI_KEYS):
            out[name] = np.concatenate([t[k] for t in tri]) if tri else np.zeros(0)
    return out


TRI_KEYS = ("tri_frame", "tri_pixel", "tri_depth")


def pairs_per_task(block: int, workers: int, smallest: int = 32, largest: int = 512) -> int:
    """Consecutive pairs per task: a block shared out as two tasks per worker (two in flight each), within
    [smallest, largest]. Each process reads a frame once into its view cache for all the pairs of a task that use
    it, and sorted pairs of a capture reuse the same frames, so short tasks dealt round-robin make every worker read
    nearly every frame (with 32-pair tasks, 2 Ray workers each decoded most of the 1,000 frames' masks)."""
    return int(min(largest, max(smallest, block // (2 * max(1, workers)))))


def match_stage(specs: List["FrameSpec"], pairs: Int[np.ndarray, "P 2"], matcher: str, weights: Optional[Path],
                cache, key: str, engine, progress=None, chunk: Optional[int] = None,
                block: int = 4096) -> tuple[OverlapRecords, tuple]:
    """Correspondences and mask overlaps of every pair, on ``engine``, folded in pair order.

    Pairs go out in tasks of ``chunk`` consecutive pairs (default :func:`pairs_per_task`); every ``block`` pairs the
    results so far are cached (``matchblock-<key>-<b>``), so a run killed mid-stage resumes at the block it was in;
    the complete stage is cached as one file (``matches-<key>``) and the blocks are removed.
    """
    chunk = chunk or pairs_per_task(block, getattr(engine, "workers", 1))
    cached = cache.load("matches", key)
    if cached is not None:
        return OverlapRecords(**{k: v for k, v in cached.items() if k not in TRI_KEYS}), \
            tuple(cached[k] for k in TRI_KEYS)
    want_tri = matcher not in ("depth", "stereo")  # these read dense depth maps: nothing to triangulate
    n_blocks = (len(pairs) + block - 1) // block
    block_key = [f"{key}-{b:05d}" for b in range(n_blocks)]
    done = {b for b in range(n_blocks) if cache.load("matchblock", block_key[b]) is not None} \
        if cache.dir is not None and cache.dir.is_dir() else set()
    weights_arg = str(weights) if weights is not None else None

    def tasks():
        for b in range(n_blocks):
            if b in done:
                continue
            for start in range(b * block, min((b + 1) * block, len(pairs)), chunk):
                sub = pairs[start:min(start + chunk, (b + 1) * block, len(pairs))]
                used = {f: specs[f] for f in np.unique(sub).tolist()}
                yield used, sub, matcher, weights_arg, want_tri, key

    n_tasks = sum((min((b + 1) * block, len(pairs)) - b * block + chunk - 1) // chunk
                  for b in range(n_blocks) if b not in done)
    # processes: per-pair work is numpy on small arrays, which holds the GIL (two threads matched no faster than
    # one); LoFTR runs its model on one worker (see instance_map)
    results = engine.map(match_pairs, tasks(), resources=MATCHER_RESOURCES.get(matcher), processes=True)
    if progress is not None:
        results = progress(results, n_tasks)
    results = iter(results)
    parts = []
    for b in range(n_blocks):
        if b in done:
            parts.append(cache.load("matchblock", block_key[b]))
            continue
        size = min((b + 1) * block, len(pairs)) - b * block
        got = [next(results) for _ in range((size + chunk - 1) // chunk)]
        part = {k: np.concatenate([g[k] for g in got]) for k in got[0]}
        cache.save("matchblock", block_key[b], **part)
        parts.append(part)
    names = list(parts[0]) if parts else list(OverlapRecords.concat([]).to_arrays())
    merged = {k: np.concatenate([p[k] for p in parts]) for k in names} if parts else OverlapRecords.concat(
        []).to_arrays()
    del parts
    if not want_tri:
        merged.update({k: np.zeros(0) for k in TRI_KEYS})
    cache.save("matches", key, **merged)
    for b in range(n_blocks):
        path = cache.path("matchblock", block_key[b])
        if path is not None:
            path.unlink(missing_ok=True)
    return OverlapRecords(**{k: merged[k] for k in merged if k not in TRI_KEYS}), tuple(merged[k] for k in TRI_KEYS)


def split_by_frame(tri: tuple, n_frames: int) -> List[tuple[np.ndarray, np.ndarray]]:
    """Triangulated matches (frame, flat pixel, depth) grouped per frame, in their original order."""
    frame = tri[0].astype(np.int64)
    order = np.argsort(frame, kind="stable")
    bounds = np.searchsorted(frame[order], np.arange(n_frames + 1))
    pix, dep = tri[1].astype(np.int64)[order], tri[2][order]
    return [(pix[bounds[k]:bounds[k + 1]], dep[bounds[k]:bounds[k + 1]]) for k in range(n_frames)]
