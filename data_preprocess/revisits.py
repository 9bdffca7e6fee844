"""Revisit merging: join communities that are one object seen again from views never matched to the first ones.

Pixel correspondences cannot link the two sides of an object; its 3D points can (they fall inside its silhouette in
every view). Runs after the mask-graph communities (``communities``) and before the final size and frame filter.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
from jaxtyping import Float, Int
from scipy.cluster.hierarchy import DisjointSet

from instance_nerfacto.core.camera import pinhole_project


class ThinnedPoints:
    """Every ``step``-th point of a stream, ``step`` the smallest power of two that keeps at most ``limit`` (doubled
    while the stream grows): bounded memory, the same points whatever the chunking, all of them below the limit."""

    def __init__(self, limit: int) -> None:
        self.limit, self.step, self.seen, self.kept = limit, 1, 0, 0
        self.parts: List[np.ndarray] = []

    def add(self, points: Float[np.ndarray, "P 3"]) -> None:
        take = points[(-self.seen) % self.step::self.step]  # the stream indices divisible by step
        self.seen += len(points)
        if len(take):
            self.parts.append(take if self.step == 1 else take.copy())
            self.kept += len(take)
        while self.limit > 0 and self.kept > self.limit:  # kept point k has stream index k * step: keep even k
            kept = np.concatenate(self.parts)[::2].copy()
            self.parts, self.kept, self.step = [kept], len(kept), self.step * 2

    def points(self) -> Float[np.ndarray, "K 3"]:
        return np.concatenate(self.parts) if len(self.parts) != 1 else self.parts[0]


def collect_points(membership: Int[np.ndarray, "N"], frame_of: Int[np.ndarray, "N"], offsets: Int[np.ndarray, "F1"],
                   mask_points: Callable[[List[int]], Iterable[List[Optional[np.ndarray]]]], min_masks: int = 3,
                   max_points: int = 2048) -> Tuple[Dict[int, np.ndarray], Dict[int, List[int]]]:
    """(3D points, sorted frames) of every community of at least ``min_masks`` masks that has points: the masks'
    back-projected samples streamed in frame order (``mask_points(frames)``), thinned to ``max_points``."""
    ids, counts = np.unique(membership[membership >= 0], return_counts=True)
    ids = ids[counts >= min_masks].tolist()  # tiny communities are left to absorb_fragments
    order = np.argsort(membership, kind="stable")  # nodes of each community in increasing id order
    bounds = np.searchsorted(membership[order], np.asarray(ids, dtype=membership.dtype))
    parts: Dict[int, ThinnedPoints] = {}
    frames: Dict[int, List[int]] = {}
    for c, start, count in zip(ids, bounds.tolist(), counts[counts >= min_masks].tolist()):
        frames[c] = sorted(set(frame_of[order[start:start + count]].tolist()))
    node_frames = frame_of[order]
    needed = np.unique(node_frames[membership[order] >= 0]).tolist()
    for f, pts_f in zip(needed, mask_points(needed)):
        for n in range(int(offsets[f]), int(offsets[f + 1])):
            c = int(membership[n])
            if c in frames and pts_f[n - offsets[f]] is not None:
                parts.setdefault(c, ThinnedPoints(max_points)).add(pts_f[n - offsets[f]])
    points = {c: p.points() for c, p in parts.items()}
    return points, {c: frames[c] for c in points}


def silhouette_votes(labels: Int[np.ndarray, "P"], surface: Optional[Float[np.ndarray, "P"]],
                     z: Float[np.ndarray, "P"], target: int, occlusion_tol: Optional[float]) -> Tuple[int, int]:
    """(points inside ``target``'s masks, points that count) for points at depth ``z`` that land on pixels of
    these community ``labels`` whose depth maps read ``surface`` (0 = unknown).

    Every point counts when ``occlusion_tol`` is None or there is no depth map. Else a point that lands outside
    ``target`` and lies behind the surface there (beyond ``occlusion_tol``, relative, plus 2 cm) does not count:
    something in front hides it, so that view says nothing about the target's silhouette at that point. A small
    object seen partly behind another one from one stretch of a capture otherwise failed the agreement with its own
    other stretches (bench1000: 20% of its points inside, 50% needed), and stayed two labels. Points behind the
    target's own surface (its far side) still count as inside."""
    inside = labels == target
    if occlusion_tol is None or surface is None:
        return int(inside.sum()), len(labels)
    surface = np.asarray(surface, dtype=np.float64)
    hidden = ~inside & (surface > 0) & (z > surface * (1 + occlusion_tol) + 0.02)
    return int(inside.sum()), len(labels) - int(hidden.sum())


def merge_revisits(membership: Int[np.ndarray, "N"], frame_of: Int[np.ndarray, "N"], offsets: Int[np.ndarray, "F1"],
                   mask_points: Callable[[List[int]], Iterable[List[Optional[np.ndarray]]]],
                   view_of: Callable[[int], object],
                   min_agreement: float = 0.5, frames_per_check: int = 8, min_masks: int = 3,
                   label_cache_mb: float = 512.0, max_points: int = 2048,
                   collected: Optional[Tuple[Dict[int, np.ndarray], Dict[int, List[int]]]] = None,
                   occlusion_tol: Optional[float] = None) -> Int[np.ndarray, "N"]:
    """Join communities that are one object seen from views that were never matched (a room revisited from the
    other side): pixel correspondences cannot link opposite sides of an object, but its 3D points must fall inside
    its silhouette in every view.

    Two communities that never share a frame are joined when most of the back-projected points of each project
    inside the other's masks in the other's frames (occlusion ignored: seen from the other side, the points are
    hidden behind the object's own surface). Both directions must agree, so a small object hidden behind a large
    one is not swallowed by it; identical duplicates stay apart because their points are elsewhere. Needs depth:
    ``mask_points(frames)`` yields each listed frame's sampled 3D points per mask (``frames.mask_points``), in
    order, and is consumed as a stream; ``view_of(f)`` gives frame f's :class:`View` (owner map and pose), read once
    for its pose and again only when its community-label image has left a cache of ``label_cache_mb``.
    Only communities of at least ``min_masks`` masks take part (those the final filter could keep on their
    own): joining smaller fragments on 3D agreement alone made spurious labels (bench1000 rooms, seeds 0 and 5:
    PQ 0.396 / 0.281 with every community, 0.431 / 0.292 from 3 masks) and, at 10,000 frames, most of the checks.
    A community keeps at most ``max_points`` of its points (:class:`ThinnedPoints`, in frame order): the agreement
    is a fraction, and 2,048 points hold it to about 1%, whereas an object seen in thousands of frames would
    otherwise hold and project millions of points. ``collected``: the result of :func:`collect_points` for these
    arguments, when the caller needs the points too (read once). ``occlusion_tol``: the relative depth tolerance of
    the views' depth maps (``matching.depth_tolerance``), to leave out points hidden in the other's views
    (:func:`silhouette_votes`); None: occlusion ignored.
    """
    if collected is None:
        collected = collect_points(membership, frame_of, offsets, mask_points, min_masks, max_points)
    points, frames = collected
    boxes = {c: (np.percentile(p, 5, axis=0), np.percentile(p, 95, axis=0)) for c, p in points.items()}
    label_images: "OrderedDict[int, np.ndarray]" = OrderedDict()

    poses: Dict[int, tuple] = {}  # frame -> (K, world-to-camera, width, height): small, kept for every frame
    cached_bytes = [0]

    def labels_of(f: int, view=None) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        if f in label_images:
            label_images.move_to_end(f)
        else:
            view = view or view_of(f)
            lut = np.concatenate([[-1], membership[offsets[f]:offsets[f + 1]]]).astype(np.int32)
            # float16 (steps of 0.05% against a tolerance of 5%): the bounded cache holds more frames
            depth = None if occlusion_tol is None or view.depth is None else view.depth.astype(np.float16)
            label_images[f] = (lut[view.owner.astype(np.int64) + 1], depth)
            cached_bytes[0] += sum(x.nbytes for x in label_images[f] if x is not None)
            while cached_bytes[0] > label_cache_mb * 2**20 and len(label_images) > 1:
                cached_bytes[0] -= sum(x.nbytes for x in label_images.popitem(last=False)[1] if x is not None)
        return label_images[f]

    def pose_of(f: int) -> tuple:
        if f not in poses:
            view = view_of(f)
            poses[f] = (view.K, np.linalg.inv(view.c2w_cv), view.width, view.height)
            labels_of(f, view)  # read once for both
        return poses[f]

    def agreement(a: int, b: int) -> float:
        """Fraction of a's points inside b's masks, over those landing in the image of b's frames."""
        fb = frames[b]
        pick = fb[:: max(1, len(fb) // frames_per_check)]
        inside = total = 0
        for f in pick:
            K, w2c, width, height = pose_of(f)
            u, v, z = pinhole_project(K, points[a] @ w2c[:3, :3].T + w2c[:3, 3])  # as pairs.project, cached pose
            ok = (z > 1e-3) & (u > -0.5) & (u < width - 0.5) & (v > -0.5) & (v < height - 0.5)
            if not ok.any():
                continue
            labels, depth = labels_of(f)
            vi, ui = np.round(v[ok]).astype(int), np.round(u[ok]).astype(int)
            hit, counted = silhouette_votes(labels[vi, ui], None if depth is None else depth[vi, ui], z[ok], b,
                                            occlusion_tol)
            inside += hit
            total += counted
        return inside / total if total else 0.0

    cands = []
    keys = sorted(points)
    frame_sets = {c: set(frames[c]) for c in keys}
    lo = np.array([boxes[c][0] for c in keys]).reshape(-1, 3)
    hi = np.array([boxes[c][1] for c in keys]).reshape(-1, 3)
    for i, a in enumerate(keys):
        near = ~(np.any(hi[i] < lo[i + 1:] - 0.05, axis=1) | np.any(hi[i + 1:] < lo[i] - 0.05, axis=1))
        for k in np.flatnonzero(near).tolist():
            b = keys[i + 1 + k]
            if frame_sets[a] & frame_sets[b]:
                continue  # seen together: the pixel correspondences already had their say
            s = agreement(a, b)
            if s >= min_agreement:  # else the pair fails whatever the other direction says
                s = min(s, agreement(b, a))
            if s >= min_agreement:
                cands.append((-s, a, b))
    out = membership.copy()
    if not cands:
        return out
    groups = DisjointSet(keys)
    members_frames = {c: set(frames[c]) for c in keys}
    for _, a, b in sorted(cands):
        ra, rb = groups[a], groups[b]
        if ra != rb and not (members_frames[ra] & members_frames[rb]):
            groups.merge(ra, rb)
            root = groups[ra]
            other = rb if root == ra else ra
            members_frames[root] |= members_frames.pop(other)
    root = {c: groups[c] for c in keys}
    hit = (membership >= 0) & np.isin(membership, keys)
    out[hit] = [root[c] for c in membership[hit].tolist()]
    return out
