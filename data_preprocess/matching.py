"""Pixel correspondences between two posed frames: ``depth`` (reprojection), ``flow`` (dense, pose-checked optical
flow), ``sift`` (OpenCV), ``loftr`` (kornia, local weights).

Every matcher returns :class:`Correspondences`: flat pixel indices ``src`` in one frame and ``dst`` in the other, for
both directions (i -> j and j -> i). Dense matchers sample every pixel (or a stride) of the source frame; sparse
matchers give the same matches in both directions. Matches that break the epipolar constraint of the known poses are
dropped, which removes most wrong SIFT/LoFTR matches between repeated textures and identical objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
from jaxtyping import Float, Int

from data_preprocess.pairs import View, backproject, pixel_rays, project
from instance_nerfacto.core.camera import Lens, midpoint_triangulation
from instance_nerfacto.core.errors import fail
from instance_nerfacto.core.masks import same_picture

MATCHERS = ("depth", "stereo", "flow", "sift", "loftr")


@dataclass
class Correspondences:
    fwd_src: Int[np.ndarray, "M"]
    """Flat pixel indices in frame i ..."""
    fwd_dst: Int[np.ndarray, "M"]
    """... and where they land in frame j."""
    bwd_src: Int[np.ndarray, "N"]
    bwd_dst: Int[np.ndarray, "N"]


def _flat(u: np.ndarray, v: np.ndarray, width: int) -> np.ndarray:
    return (np.round(v).astype(np.int64) * width + np.round(u).astype(np.int64))


# ------------------------------------------------------------------------------------------------------ depth


def _samples(src: View, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels (u, v) of every ``stride``-th pixel with depth and their world points (back-projected once per frame,
    not once per pair)."""
    key = ("reproject", stride)
    if key not in src.memo:
        vv, uu = np.mgrid[0:src.height:stride, 0:src.width:stride]
        u, v = uu.ravel(), vv.ravel()
        z = src.depth[v, u].astype(np.float64)
        keep = z > 0
        u, v, z = u[keep], v[keep], z[keep]
        src.memo[key] = (u, v, backproject(src, u.astype(np.float64), v.astype(np.float64), z))
    return src.memo[key]


def reproject_to(dst: View, srcs: List[View], stride: int = 2, depth_tol: float = 0.05,
                 unknown_visible: bool = False) -> List[tuple[np.ndarray, np.ndarray]]:
    """:func:`reproject` of several source frames into one destination, in one projection: a frame of a long
    capture is matched with tens of others, and one small projection per pair cost more in numpy calls (and in the
    interpreter lock the matching threads share) than in arithmetic."""
    parts = [_samples(s, stride) for s in srcs]
    bounds = np.cumsum([0] + [len(p[0]) for p in parts])
    pu, pv, pz = project(dst, np.concatenate([p[2] for p in parts]) if parts else np.zeros((0, 3)))
    ok = (pz > 1e-3) & (pu > -0.5) & (pu < dst.width - 0.5) & (pv > -0.5) & (pv < dst.height - 0.5)
    iu, iv = np.round(pu[ok]).astype(np.int64), np.round(pv[ok]).astype(np.int64)
    dz = dst.depth[iv, iu]
    # occlusion test: the point must be the surface the other camera sees there
    vis = (dz > 0) & (np.abs(dz - pz[ok]) < depth_tol * dz)
    if unknown_visible:
        vis |= dz <= 0
    seen = np.flatnonzero(ok)[vis]  # indices into the concatenated samples, in order
    dst_flat = (iv * dst.width + iu)[vis]
    cut = np.searchsorted(seen, bounds)
    out = []
    for k, (src, (u, v, _)) in enumerate(zip(srcs, parts)):
        idx = seen[cut[k]:cut[k + 1]] - bounds[k]
        out.append(((v[idx] * src.width + u[idx]).astype(np.int64), dst_flat[cut[k]:cut[k + 1]]))
    return out


def reproject(src: View, dst: View, stride: int = 2, depth_tol: float = 0.05,
              unknown_visible: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of ``src`` pixels (every ``stride``-th) visible in ``dst`` and where they land there.

    ``unknown_visible``: a point landing where ``dst`` has no depth (a hole of estimated depth) counts as visible.
    """
    return reproject_to(dst, [src], stride, depth_tol, unknown_visible)[0]


def depth_correspondences(a: View, b: View, stride: int = 2, depth_tol: float = 0.05,
                          unknown_visible: bool = False) -> Correspondences:
    if a.depth is None or b.depth is None:
        fail("the depth matcher needs depth maps for every frame", a.image_path.parent.parent / "depth",
             "add depth_file_path to transforms.json, or use --matcher stereo|flow|sift")
    fs, fd = reproject(a, b, stride, depth_tol, unknown_visible)
    bs, bd = reproject(b, a, stride, depth_tol, unknown_visible)
    return Correspondences(fs, fd, bs, bd)


STEREO_DEPTH_TOL = 0.1
"""Occlusion tolerance of the reprojection on depth estimated by ``stereo.py`` (noisier than a sensor's)."""
STEREO_UNKNOWN_VISIBLE = True


def stereo_correspondences(a: View, b: View) -> Correspondences:
    """Reprojection on the depth maps that ``stereo.stereo_depths`` estimated from the images and poses."""
    return depth_correspondences(a, b, 2, STEREO_DEPTH_TOL, STEREO_UNKNOWN_VISIBLE)


DEPTH_MATCHERS = {"depth": (2, 0.05, False), "stereo": (2, STEREO_DEPTH_TOL, STEREO_UNKNOWN_VISIBLE)}
"""Matchers that reproject through depth maps: (stride, depth tolerance, unknown visible), as their per-pair forms."""


def depth_tolerance(matcher: str) -> float:
    """Relative tolerance of a depth test on the depth maps a matcher reads: the stereo matcher's for depth
    estimated by stereo (noisier than a sensor's), the sensor's otherwise (the sparse matchers' triangulated depth
    never reaches a dense test)."""
    return DEPTH_MATCHERS.get(matcher, DEPTH_MATCHERS["depth"])[1]


def depth_correspondences_many(views: Dict[int, View], pairs: List[tuple[int, int]],
                               matcher: str = "depth") -> List[Correspondences]:
    """``depth_correspondences`` (or ``stereo_correspondences``) of many frame pairs, the same result as pair by pair:
    every reprojection into one frame is done in one projection (:func:`reproject_to`)."""
    stride, tol, unknown = DEPTH_MATCHERS[matcher]
    if any(views[f].depth is None for pair in pairs for f in pair):
        a, b = next((views[i], views[j]) for i, j in pairs if views[i].depth is None or views[j].depth is None)
        depth_correspondences(a, b)  # the one error
    into: Dict[int, List[tuple[int, int]]] = {}  # destination frame -> (pair index, source frame)
    for p, (i, j) in enumerate(pairs):
        into.setdefault(j, []).append((p, i))
        into.setdefault(i, []).append((p, j))
    got: Dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}  # (pair index, destination) -> (src, dst)
    for dst, reqs in into.items():
        for (p, src), res in zip(reqs, reproject_to(views[dst], [views[s] for _, s in reqs], stride, tol, unknown)):
            got[p, dst] = res
    return [Correspondences(*got[p, j], *got[p, i]) for p, (i, j) in enumerate(pairs)]


# ------------------------------------------------------------------------------------------------ epipolar


def fundamental(a: View, b: View) -> Float[np.ndarray, "3 3"]:
    """F with x_b^T F x_a = 0 for pixels of a and b (from the known poses)."""
    rel = np.linalg.inv(b.c2w_cv) @ a.c2w_cv  # cam a -> cam b
    r, t = rel[:3, :3], rel[:3, 3]
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    return np.linalg.inv(b.K).T @ tx @ r @ np.linalg.inv(a.K)


def epipolar_distance(f: np.ndarray, pa: Float[np.ndarray, "N 2"], pb: Float[np.ndarray, "N 2"]) -> np.ndarray:
    """Distance in pixels of pb from the epipolar line of pa (OpenCV's lines ``F x_a``, scaled to a^2 + b^2 = 1)."""
    import cv2

    if len(pa) == 0:
        return np.zeros(0)
    pa = np.ascontiguousarray(pa, dtype=np.float64).reshape(-1, 1, 2)
    lines = cv2.computeCorrespondEpilines(pa, 1, np.asarray(f, dtype=np.float64)).reshape(-1, 3)
    pb = np.asarray(pb, dtype=np.float64)
    distance = np.abs(lines[:, 0] * pb[:, 0] + lines[:, 1] * pb[:, 1] + lines[:, 2])
    # OpenCV leaves a line at infinity (a = b = 0: no direction to scale) as it is; no pixel lies on it
    at_infinity = (lines[:, 0] == 0) & (lines[:, 1] == 0) & (lines[:, 2] != 0)
    return np.where(at_infinity, np.inf, distance)


# ---------------------------------------------------------------------------------------------------- images


REDUCED_DECODE = ((8, "IMREAD_REDUCED_GRAYSCALE_8"), (4, "IMREAD_REDUCED_GRAYSCALE_4"),
                  (2, "IMREAD_REDUCED_GRAYSCALE_2"))


@lru_cache(maxsize=256)
def read_gray(path: Path, lens: Optional[Lens] = None) -> np.ndarray:
    """Grey image of a frame, on its working grid when it has a ``lens``. A photo much larger than that grid is
    decoded at 1/2, 1/4 or 1/8 size (JPEG decodes that directly: a fraction of a 12 MP decode's time)."""
    import cv2

    flag = cv2.IMREAD_GRAYSCALE
    if lens is not None:
        shrink = lens.pinhole.fx / lens.photo.fx
        flag = next((getattr(cv2, name) for k, name in REDUCED_DECODE if 1.0 / k >= shrink), flag)
    img = cv2.imread(str(path), flag)
    if img is None:
        fail("cannot decode image (corrupt or not an image)", path, "replace the file")
    if lens is not None:
        if not same_picture(img.shape, (lens.photo.height, lens.photo.width)):
            fail(f"image is {img.shape[1]}x{img.shape[0]} (as decoded), transforms.json says {lens.photo.width}x"
                 f"{lens.photo.height}", path, "fix w/h in transforms.json or the image")
        img = lens.for_size(img.shape[1], img.shape[0]).to_pinhole(img, nearest=False)
    return img


def view_gray(view: View) -> np.ndarray:
    return read_gray(view.image_path, view.lens)


# ------------------------------------------------------------------------------------------------------ flow


def _flow(g0: np.ndarray, g1: np.ndarray) -> np.ndarray:
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(g0, g1, None)


def _checked_flow(fwd: np.ndarray, bwd: np.ndarray, f: np.ndarray, stride: int, fb_tol: float,
                  epi_tol: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = fwd.shape[:2]
    vv, uu = np.mgrid[0:h:stride, 0:w:stride]
    u, v = uu.ravel().astype(np.float64), vv.ravel().astype(np.float64)
    du, dv = fwd[vv.ravel(), uu.ravel()].T
    tu, tv = u + du, v + dv
    ok = (tu > -0.5) & (tu < w - 0.5) & (tv > -0.5) & (tv < h - 0.5)
    iu, iv = np.round(tu).astype(np.int64).clip(0, w - 1), np.round(tv).astype(np.int64).clip(0, h - 1)
    back = bwd[iv, iu]
    # forward-backward consistency rejects occluded and textureless guesses; epipolar rejects pose-inconsistent ones
    ok &= np.hypot(du + back[:, 0], dv + back[:, 1]) < fb_tol
    ok &= epipolar_distance(f, np.stack([u, v], 1), np.stack([tu, tv], 1)) < epi_tol
    return (_flat(u[ok], v[ok], w)), (iv[ok] * w + iu[ok])


def flow_correspondences(a: View, b: View, stride: int = 2, fb_tol: float = 1.5,
                         epi_tol: float = 2.0) -> Correspondences:
    ga, gb = view_gray(a), view_gray(b)
    fab, fba = _flow(ga, gb), _flow(gb, ga)
    fs, fd = _checked_flow(fab, fba, fundamental(a, b), stride, fb_tol, epi_tol)
    bs, bd = _checked_flow(fba, fab, fundamental(b, a), stride, fb_tol, epi_tol)
    return Correspondences(fs, fd, bs, bd)


# ------------------------------------------------------------------------------------------------ sparse


def _sparse(a: View, b: View, pa: np.ndarray, pb: np.ndarray, epi_tol: float) -> Correspondences:
    if len(pa):
        keep = epipolar_distance(fundamental(a, b), pa, pb) < epi_tol
        pa, pb = pa[keep], pb[keep]
    pa = np.clip(pa, 0, [a.width - 1, a.height - 1])
    pb = np.clip(pb, 0, [b.width - 1, b.height - 1])
    fa, fb = _flat(pa[:, 0], pa[:, 1], a.width), _flat(pb[:, 0], pb[:, 1], b.width)
    return Correspondences(fa, fb, fb.copy(), fa.copy())


@lru_cache(maxsize=256)
def _sift_features(path: Path, n_features: int, lens: Optional[Lens] = None):
    import cv2

    sift = cv2.SIFT_create(nfeatures=n_features, contrastThreshold=0.01)
    kps, desc = sift.detectAndCompute(read_gray(path, lens), None)
    pts = np.array([k.pt for k in kps], dtype=np.float64).reshape(-1, 2)
    return pts, desc


def sift_correspondences(a: View, b: View, n_features: int = 4000, ratio: float = 0.85,
                         epi_tol: float = 2.0) -> Correspondences:
    import cv2

    pa, da = _sift_features(a.image_path, n_features, a.lens)
    pb, db = _sift_features(b.image_path, n_features, b.lens)
    if da is None or db is None or len(da) < 2 or len(db) < 2:
        empty = np.zeros(0, dtype=np.int64)
        return Correspondences(empty, empty, empty, empty)
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(da, db, k=2)
    good = [m[0] for m in knn if len(m) == 2 and m[0].distance < ratio * m[1].distance]
    ia = np.array([m.queryIdx for m in good], dtype=np.int64)
    ib = np.array([m.trainIdx for m in good], dtype=np.int64)
    return _sparse(a, b, pa[ia], pb[ib], epi_tol)


class LoFTRMatcher:
    """kornia LoFTR (:class:`instance_nerfacto.core.loftr.LoFTRModel`, weights from a local file) between two posed
    frames' undistorted images, kept where the poses' epipolar geometry agrees."""

    def __init__(self, weights: Path, device: str = "cpu", size: int = 320) -> None:
        from instance_nerfacto.core.loftr import LoFTRModel

        self.model = LoFTRModel(weights, device=device, size=size)

    def __call__(self, a: View, b: View, epi_tol: float = 2.0, min_confidence: float = 0.2) -> Correspondences:
        pa, pb, _ = self.model.match(view_gray(a), view_gray(b), min_confidence)
        return _sparse(a, b, pa, pb, epi_tol)


def make_matcher(name: str, weights: Optional[Path] = None) -> Callable[[View, View], Correspondences]:
    if name == "depth":
        return depth_correspondences
    if name == "stereo":
        return stereo_correspondences
    if name == "flow":
        return flow_correspondences
    if name == "sift":
        return sift_correspondences
    if name == "loftr":
        if weights is None:
            fail("--matcher loftr needs --weights", None, "pass a local LoFTR checkpoint, or use --matcher sift|flow")
        return LoFTRMatcher(weights)
    fail(f"unknown matcher '{name}'", None, f"use one of {', '.join(MATCHERS)}")


def triangulate(a: View, b: View, corr: Correspondences, max_gap: float = 0.02,
                min_angle_deg: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Depths of the i -> j correspondences by midpoint triangulation with the known poses (no depth maps needed).

    Returns (flat pixel in a, depth in a, flat pixel in b, depth in b) of the matches whose two rays meet (gap below
    ``max_gap`` of the depth) in front of both cameras at a usable angle: sparse depth for the 3D stages.
    """
    empty = np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0)
    if len(corr.fwd_src) == 0:
        return empty
    ua, va = corr.fwd_src % a.width, corr.fwd_src // a.width
    ub, vb = corr.fwd_dst % b.width, corr.fwd_dst // b.width

    s, t, gap, cos = midpoint_triangulation(a.c2w_cv[:3, 3], pixel_rays(a, ua, va), b.c2w_cv[:3, 3],
                                            pixel_rays(b, ub, vb))
    ok = (s > 0) & (t > 0) & (gap < max_gap * s) & (cos < np.cos(np.radians(min_angle_deg)))
    return corr.fwd_src[ok], s[ok], corr.fwd_dst[ok], t[ok]


def sparse_depth(height: int, width: int, pixels: np.ndarray, depths: np.ndarray) -> np.ndarray:
    """Depth image (0 = unknown) from triangulated samples, the median where a pixel has several."""
    out = np.zeros(height * width, dtype=np.float32)
    if len(pixels):
        order = np.lexsort((depths, pixels))
        pixels, depths = pixels[order], depths[order]
        starts = np.flatnonzero(np.r_[True, pixels[1:] != pixels[:-1]])
        ends = np.r_[starts[1:], len(pixels)]
        out[pixels[starts]] = depths[(starts + ends - 1) // 2]
    return out.reshape(height, width)
