"""Which frames to match: pose overlap (default), exhaustive, sequential window, or NetVLAD similarity (the paper's).

``pose`` projects a sparse grid of each frame's pixels into every other frame, with the depth map when the dataset has
one (occlusion-checked) and otherwise with a proxy depth (distance to the point the cameras look at), and keeps the
pairs whose mutual overlap passes a threshold, the ``top_k`` best per frame. All functions return sorted ``(i, j)``
index pairs with ``i < j`` into the list of views.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import List, Optional

import numpy as np
from jaxtyping import Bool, Float, Int, Int16

from instance_nerfacto.core.camera import Lens, pinhole_backproject, pinhole_project

PACKED_DEPTH_UNIT = 1e-3
"""Metres per unit of ``depth_mm``, the uint16 stack of depth maps the pair tasks share (4x smaller than float64):
millimetres, whatever unit the dataset stores its depth in (the maps are read in metres, then packed)."""

PAIR_PRESETS = ("pose", "exhaustive", "sequential", "netvlad")


@dataclass
class View:
    """What the association stages need of one frame; images are read lazily by the matchers that use them."""

    stem: str
    K: Float[np.ndarray, "3 3"]
    c2w_cv: Float[np.ndarray, "4 4"]
    """Camera-to-world, OpenCV convention."""
    owner: Int16[np.ndarray, "H W"]
    """Index of the mask that owns each pixel (smallest mask on top), -1 where no mask."""
    image_path: Path
    depth: Optional[Float[np.ndarray, "H W"]] = None
    """Metres along the optical axis, 0 = invalid; None when the dataset has no depth."""
    memo: dict = field(default_factory=dict, repr=False, compare=False)
    """Per-view results reused across pairs (back-projected points, inverse pose)."""
    lens: Optional[Lens] = None
    """A distorted photo: ``owner``, ``depth`` and ``K`` are on its pinhole grid, and the image is resampled onto it
    when read (:func:`data_preprocess.matching.view_gray`); None: the photo is a pinhole."""

    @property
    def valid(self) -> Optional[Bool[np.ndarray, "H W"]]:
        """Pixels that see the photo (None: all of them)."""
        return None if self.lens is None else self.lens.valid()

    @property
    def height(self) -> int:
        return self.owner.shape[0]

    @property
    def width(self) -> int:
        return self.owner.shape[1]


def backproject(view: View, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> Float[np.ndarray, "N 3"]:
    """World points of pixels (u, v) at optical-axis depth z (a view's grid is always a pinhole: a distorted photo's
    masks and depth were resampled onto one, :class:`instance_nerfacto.core.camera.Lens`)."""
    cam = pinhole_backproject(view.K, u, v, z)
    return cam @ view.c2w_cv[:3, :3].T + view.c2w_cv[:3, 3]


def pixel_rays(view: View, u: np.ndarray, v: np.ndarray) -> Float[np.ndarray, "N 3"]:
    """World directions of pixels (u, v) of a view, scaled to unit camera-z (so a ray's parameter is z-depth)."""
    return pinhole_backproject(view.K, u, v, np.ones(len(u))) @ view.c2w_cv[:3, :3].T


def project(view: View, world: Float[np.ndarray, "N 3"]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel coordinates (u, v) and depth z of world points in ``view``."""
    w2c = view.memo.get("w2c")
    if w2c is None:
        w2c = view.memo["w2c"] = np.linalg.inv(view.c2w_cv)
    return pinhole_project(view.K, world @ w2c[:3, :3].T + w2c[:3, 3])


def proxy_depth(views: List[View]) -> Float[np.ndarray, "F"]:
    """Per-view distance to the point closest (least squares) to all optical axes: the scene's centre as seen."""
    centres = np.stack([v.c2w_cv[:3, 3] for v in views])
    axes = np.stack([v.c2w_cv[:3, 2] for v in views])
    proj = np.eye(3)[None] - axes[:, :, None] * axes[:, None, :]
    a = proj.sum(0)
    b = np.einsum("nij,nj->i", proj, centres)
    try:
        focus = np.linalg.solve(a + 1e-6 * np.eye(3), b)
    except np.linalg.LinAlgError:
        focus = centres.mean(0)
    depth = ((focus[None] - centres) * axes).sum(1)
    median = float(np.median(depth[depth > 0])) if np.any(depth > 0) else 1.0
    return np.clip(np.where(depth > 0, depth, median), 0.1 * median, 10 * median)


def overlap_matrix(views: List[View], stride: int = 8, depth_tol: float = 0.1) -> Float[np.ndarray, "F F"]:
    """Fraction of frame i's sampled pixels that land visible (and, with depth, unoccluded) in frame j."""
    n = len(views)
    out = np.zeros((n, n), dtype=np.float32)
    proxies = proxy_depth(views) if any(v.depth is None for v in views) else None
    for i, vi in enumerate(views):
        vv, uu = np.mgrid[stride // 2:vi.height:stride, stride // 2:vi.width:stride]
        u, v = uu.ravel().astype(np.float64), vv.ravel().astype(np.float64)
        if vi.depth is not None:
            z = vi.depth[vv.ravel(), uu.ravel()].astype(np.float64)
        else:
            z = np.full(u.shape, proxies[i])
        valid = z > 0
        if not valid.any():
            continue
        world = backproject(vi, u[valid], v[valid], z[valid])
        for j, vj in enumerate(views):
            if i == j:
                continue
            pu, pv, pz = project(vj, world)
            ok = (pz > 1e-3) & (pu >= 0) & (pu <= vj.width - 1) & (pv >= 0) & (pv <= vj.height - 1)
            if vj.depth is not None and ok.any():
                dj = vj.depth[np.round(pv[ok]).astype(int), np.round(pu[ok]).astype(int)]
                ok[ok] = (dj > 0) & (np.abs(dj - pz[ok]) < depth_tol * dj)
            out[i, j] = ok.sum() / len(u)
    return out


def select_pairs(score: Float[np.ndarray, "F F"], min_score: float, top_k: int) -> Int[np.ndarray, "P 2"]:
    """Pairs (i < j) whose symmetric score passes ``min_score``, the ``top_k`` best per frame (union over frames)."""
    sym = np.minimum(score, score.T)
    np.fill_diagonal(sym, -np.inf)
    keep = set()
    for i in range(len(sym)):
        order = np.argsort(-sym[i], kind="stable")[:top_k]
        for j in order:
            if sym[i, j] >= min_score:
                keep.add((min(i, int(j)), max(i, int(j))))
    return np.array(sorted(keep), dtype=np.int64).reshape(-1, 2)


def pose_pairs(views: List[View], min_overlap: float = 0.3, top_k: int = 10) -> Int[np.ndarray, "P 2"]:
    return select_pairs(overlap_matrix(views), min_overlap, top_k)


def exhaustive_pairs(n: int) -> Int[np.ndarray, "P 2"]:
    i, j = np.triu_indices(n, k=1)
    return np.stack([i, j], axis=1).astype(np.int64)


def sequential_pairs(n: int, window: int = 5) -> Int[np.ndarray, "P 2"]:
    pairs = [(i, j) for i in range(n) for j in range(i + 1, min(n, i + window + 1))]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def similarity_pairs(descriptors: Float[np.ndarray, "F D"], min_similarity: float = 0.5,
                     top_k: int = 10) -> Int[np.ndarray, "P 2"]:
    """Pairs by cosine similarity of global descriptors (the paper: NetVLAD, threshold and top-k)."""
    d = descriptors / np.maximum(np.linalg.norm(descriptors, axis=1, keepdims=True), 1e-12)
    return select_pairs(d @ d.T, min_similarity, top_k)


# ------------------------------------------------------------------------------- pose pairs at scale (sparse)

COARSE_ABOVE = 4
"""A frame with more than ``COARSE_ABOVE x max_partners`` candidate partners ranks them on a subsample first."""
COARSE_STEP = 4
"""That subsample: every 4th sample along each image axis (20 of 300 at 160x120, 300 of 4,800 at 640x480)."""


NEAREST_PER_PARTNER = 8
"""In a capture of more than ``NEAREST_PER_PARTNER x max_partners`` frames, a frame looks for its partners only among
that many frames nearest to it in pose (:class:`PoseIndex`). Without it each frame bounds and ranks every frame of
the capture that might see its samples (thousands in a 10,000-frame capture of one room), which made the pair stage
quadratic. Measured (``instance-synth --preset bench10000 --seed 0``, 10,000 frames): the same 178,833 pairs at 8 and
16, 75 s and 108 s of CPU against 316 s for all frames. Captures under 961 frames (at the default top_k 30) keep
exactly the selection they had; at 1,000 frames the same pairs on two rooms with depth, 10 more of 11,978 on one
without."""


@dataclass
class PoseIndex:
    """Frames near in pose: a k-d tree (scipy) over each frame's camera centre and the point its optical axis reaches
    at the frame's median depth, so frames near each other that look at the same place are near in the tree, and so
    are the frames of a revisit of the same place along the capture."""

    tree: object
    """scipy.spatial.cKDTree over :attr:`features`."""
    features: Float[np.ndarray, "F 6"]

    @staticmethod
    def build(c2w: Float[np.ndarray, "F 4 4"], depth: Float[np.ndarray, "F"]) -> "PoseIndex":
        from scipy.spatial import cKDTree

        features = np.concatenate([c2w[:, :3, 3], c2w[:, :3, 3] + c2w[:, :3, 2] * depth[:, None]], axis=1)
        return PoseIndex(cKDTree(features), features)

    def nearest(self, i: int, k: int) -> Int[np.ndarray, "K"]:
        """The ``k`` frames nearest to frame ``i`` (itself included), sorted by index."""
        _, idx = self.tree.query(self.features[i], k=min(k, len(self.features)))
        return np.sort(np.atleast_1d(idx).astype(np.int64))


def median_depths(depth_mm: Optional[np.ndarray], proxies: Optional[np.ndarray]) -> Float[np.ndarray, "F"]:
    """Each frame's median valid depth in metres (from the packed depth maps), else its proxy depth."""
    if depth_mm is None:
        return np.asarray(proxies, dtype=np.float64)
    out = np.empty(len(depth_mm))
    for k, d in enumerate(depth_mm):
        valid = d[d > 0]
        out[k] = float(np.median(valid)) * PACKED_DEPTH_UNIT if len(valid) else 1.0
    return out


def _cam_arrays(specs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    K = np.array([s.K for s in specs], dtype=np.float64)
    c2w = np.array([s.c2w_cv for s in specs], dtype=np.float64)
    size = np.array([(s.height, s.width) for s in specs], dtype=np.int64)
    return K, c2w, size


def overlap_rows(rows: Int[np.ndarray, "R"], K: Float[np.ndarray, "F 3 3"], c2w: Float[np.ndarray, "F 4 4"],
                 size: Int[np.ndarray, "F 2"], depth_mm: Optional[np.ndarray], proxies: Optional[np.ndarray],
                 min_score: float, stride: int = 8, depth_tol: float = 0.1, chunk: int = 2048,
                 max_partners: int = 0, w2c: Optional[Float[np.ndarray, "F 4 4"]] = None,
                 near: Optional[PoseIndex] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame task of the pose-pair stage: the entries ``(i, j, score)`` of :func:`overlap_matrix` for the frames
    ``rows`` that reach ``min_score`` (the others cannot become pairs), against all frames at once.

    ``depth_mm`` is the stack of raw depth maps (uint16 millimetres, padded to the largest frame; None without
    depth, then ``proxies`` gives each frame's depth). Frames whose view cone cannot hold ``min_score`` of a row's
    samples are skipped by a conservative bound (a bounding sphere per block of samples against the four side planes
    and the near plane of the other camera), so the cost grows with the frames that do overlap, not with all pairs.

    ``max_partners`` > 0 keeps only each row's best ``max_partners`` entries (score, then frame index): the entries of
    a frame that sees most of a long capture of one room grow with the capture (10,000 frames of one room: thousands
    per frame, tens of millions in all), while the pair selection keeps ``top_k`` per frame. Scoring all of them
    would still cost each frame time in proportion to the capture's length (quadratic in all); so a frame with more
    than ``COARSE_ABOVE x max_partners`` candidates ranks them on every ``COARSE_STEP``-th sample in each direction
    (then by camera distance) and scores only the best ``max_partners`` of that ranking on all samples. Kept
    entries always carry the exact score; a capture where no frame has that many candidates gets exactly the entries
    it got without the ranking.
    """
    w2c = np.linalg.inv(c2w)
    n = len(K)
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    h_all, w_all = size[:, 0], size[:, 1]
    # inward normals of the side planes through each camera centre: u >= 0, u <= W-1, v >= 0, v <= H-1
    normals = np.stack([np.stack([fx, 0 * fx, cx], 1), np.stack([-fx, 0 * fx, w_all - 1 - cx], 1),
                        np.stack([0 * fy, fy, cy], 1), np.stack([0 * fy, -fy, h_all - 1 - cy], 1)], 1)
    normals /= np.linalg.norm(normals, axis=2, keepdims=True)
    out_i, out_j, out_s = [], [], []
    for i in rows.tolist():
        h, w = int(h_all[i]), int(w_all[i])
        vv, uu = np.mgrid[stride // 2:h:stride, stride // 2:w:stride]
        block = (vv // max(1, h // 4)).clip(0, 3) * 4 + (uu // max(1, w // 4)).clip(0, 3)
        u, v, block = uu.ravel().astype(np.float64), vv.ravel().astype(np.float64), block.ravel()
        if depth_mm is not None:
            z = (depth_mm[i][vv.ravel(), uu.ravel()].astype(np.float32) * PACKED_DEPTH_UNIT).astype(np.float64)
        else:
            z = np.full(u.shape, proxies[i])
        valid = z > 0
        if not valid.any():
            continue
        world = pinhole_backproject(K[i], u[valid], v[valid], z[valid]) @ c2w[i, :3, :3].T + c2w[i, :3, 3]
        blocks = block[valid]
        pool = None  # the frames considered for this row (None: all)
        if near is not None and 0 < max_partners and n > NEAREST_PER_PARTNER * max_partners:
            pool = near.nearest(i, NEAREST_PER_PARTNER * max_partners)
        w2c_p, normals_p = (w2c, normals) if pool is None else (w2c[pool], normals[pool])
        # conservative bound: samples of a block whose bounding sphere misses camera j's view cone are invisible
        # (all blocks at once: one call per row, not one per block)
        _, of_block, counts = np.unique(blocks, return_inverse=True, return_counts=True)
        centres = np.stack([np.bincount(of_block, weights=world[:, k]) for k in range(3)], 1) / counts[:, None]
        radius = np.zeros(len(counts))
        np.maximum.at(radius, of_block, ((world - centres[of_block]) ** 2).sum(1))
        radius = np.sqrt(radius)[:, None] + 1e-6
        c_cam = np.einsum("fij,bj->bfi", w2c_p[:, :3, :3], centres) + w2c_p[None, :, :3, 3]
        inside = (c_cam[..., 2] > 1e-3 - radius) & (np.einsum("fpk,bfk->bfp", normals_p, c_cam) >= -radius[..., None]
                                                     ).all(2)
        bound = counts.astype(np.float64) @ inside
        cand = np.flatnonzero(bound >= min_score * len(u) - 1e-9)
        cand = cand if pool is None else pool[cand]
        cand = cand[cand != i]
        visible = partial(visible_counts, K=K, w2c=w2c, size=size, depth_mm=depth_mm, depth_tol=depth_tol,
                          chunk=chunk)
        if 0 < max_partners and len(cand) > COARSE_ABOVE * max_partners:
            # a frame inside a long capture of one room: rank the candidates on a sparser grid of samples (ties,
            # common on so few samples, to the nearer camera), score the best max_partners on all samples: the
            # cost per frame stops growing with the capture's length
            sparse = ((vv // stride - COARSE_STEP // 2) % COARSE_STEP == 0) & ((uu // stride - COARSE_STEP // 2)
                                                                              % COARSE_STEP == 0)
            sparse = sparse.ravel()[valid]
            coarse = visible(world[sparse] if sparse.any() else world, cand)
            distance = np.linalg.norm(c2w[cand, :3, 3] - c2w[i, :3, 3], axis=1)
            cand = np.sort(cand[np.lexsort((cand, distance, -coarse))[:max_partners]])
        scores = (visible(world, cand) / len(u)).astype(np.float32)
        keep = scores >= min_score
        js, scores = cand[keep], scores[keep]
        if 0 < max_partners < len(js):
            best = np.lexsort((js, -scores))[:max_partners]
            js, scores = js[np.sort(best)], scores[np.sort(best)]
        out_i.append(np.full(len(js), i))
        out_j.append(js)
        out_s.append(scores)
    return _cat(out_i, np.int64), _cat(out_j, np.int64), _cat(out_s, np.float32)


def visible_counts(world: Float[np.ndarray, "P 3"], js: Int[np.ndarray, "C"], K: np.ndarray, w2c: np.ndarray,
                    size: np.ndarray, depth_mm: Optional[np.ndarray], depth_tol: float,
                    chunk: int) -> Int[np.ndarray, "C"]:
    """How many of the points ``world`` land in the image of each camera ``js`` (in front, and with depth within
    ``depth_tol`` of that camera's depth map)."""
    out = [np.zeros(0, np.int64)]
    for start in range(0, len(js), chunk):
        jc = js[start:start + chunk]
        # one GEMM for all candidate cameras: (P, 3) @ (3, 3C) -> camera coordinates per candidate
        pc = (world @ w2c[jc, :3, :3].reshape(-1, 3).T).reshape(len(world), len(jc), 3).transpose(1, 0, 2)
        pu, pv, pz = pinhole_project(K[jc], pc + w2c[jc, None, :3, 3])
        ok = (pz > 1e-3) & (pu >= 0) & (pu <= size[jc, 1, None] - 1) & (pv >= 0) & (pv <= size[jc, 0, None] - 1)
        if depth_mm is not None and ok.any():
            f, p = np.nonzero(ok)
            dj = depth_mm[jc[f], np.round(pv[f, p]).astype(int), np.round(pu[f, p]).astype(int)]
            dj = dj.astype(np.float32) * PACKED_DEPTH_UNIT
            ok[f, p] = (dj > 0) & (np.abs(dj - pz[f, p]) < depth_tol * dj)
        out.append(ok.sum(1))
    return np.concatenate(out)


def _cat(parts: list, dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


def select_sparse_pairs(i: np.ndarray, j: np.ndarray, score: np.ndarray, n: int, min_score: float,
                        top_k: int) -> Int[np.ndarray, "P 2"]:
    """:func:`select_pairs` over the sparse directed entries of :func:`overlap_rows` (entries below ``min_score``
    cannot be kept, so leaving them out changes nothing): symmetric score = min of both directions."""
    key = i * n + j
    rev = j * n + i
    order = np.argsort(key)
    pos = np.searchsorted(key[order], rev).clip(0, max(len(key) - 1, 0))
    both = len(key) > 0
    has_rev = key[order][pos] == rev if both else np.zeros(0, dtype=bool)
    sym = np.minimum(score[has_rev], score[order][pos][has_rev])
    a, b = i[has_rev], j[has_rev]
    ok = sym >= min_score
    a, b, sym = a[ok], b[ok], sym[ok]
    rank = np.lexsort((b, -sym, a))  # per frame: best first, ties by frame index (the dense argsort's order)
    a, b = a[rank], b[rank]
    first = np.r_[0, np.flatnonzero(np.diff(a)) + 1] if len(a) else np.zeros(0, dtype=np.int64)
    within = np.arange(len(a)) - np.repeat(first, np.diff(np.r_[first, len(a)])) if len(a) else first
    keep = within < top_k
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    return np.unique(np.stack([lo, hi], 1), axis=0).astype(np.int64).reshape(-1, 2)
