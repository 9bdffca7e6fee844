"""Which frames to match: pose overlap (default), exhaustive, sequential window, or NetVLAD similarity (the paper's).

``pose`` projects a sparse grid of each frame's pixels into every other frame, with the depth map when the dataset has
one (occlusion-checked) and otherwise with a proxy depth (distance to the point the cameras look at), and keeps the
pairs whose mutual overlap passes a threshold, the ``top_k`` best per frame. All functions return sorted ``(i, j)``
index pairs with ``i < j`` into the list of views.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np
from jaxtyping import Float, Int, Int16

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

    @property
    def height(self) -> int:
        return self.owner.shape[0]

    @property
    def width(self) -> int:
        return self.owner.shape[1]


def backproject(view: View, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> Float[np.ndarray, "N 3"]:
    """World points of pixels (u, v) at optical-axis depth z."""
    x = (u - view.K[0, 2]) / view.K[0, 0] * z
    y = (v - view.K[1, 2]) / view.K[1, 1] * z
    cam = np.stack([x, y, z, np.ones_like(z)], axis=1)
    return (cam @ view.c2w_cv.T)[:, :3]


def project(view: View, world: Float[np.ndarray, "N 3"]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel coordinates (u, v) and depth z of world points in ``view``."""
    w2c = view.memo.get("w2c")
    if w2c is None:
        w2c = view.memo["w2c"] = np.linalg.inv(view.c2w_cv)
    cam = world @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    safe = np.where(z > 1e-6, z, 1e-6)
    u = view.K[0, 0] * cam[:, 0] / safe + view.K[0, 2]
    v = view.K[1, 1] * cam[:, 1] / safe + view.K[1, 2]
    return u, v, z


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
