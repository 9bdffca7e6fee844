"""Depth maps from posed RGB frames without a depth sensor: multi-view stereo by triangulated optical flow.

For every frame, a few neighbours with a usable baseline are chosen from the known poses (``stereo_neighbours``). Dense
optical flow (OpenCV DIS, on exposure-normalised grey images) to each neighbour is computed against the neighbour
warped by the homography of a proxy plane (``guided_flow``: the known rotation and the bulk of the parallax taken out),
kept where it passes a forward-backward check and the epipolar constraint of the poses, and every kept pixel is
triangulated (``triangulate_flow``). The per-neighbour depths are fused
per pixel (``fuse_depths``): the median, kept where enough neighbours agree with it. On a dense capture only
keyframes (``keyframes``: no two within a fraction of a degree of each other) get stereo; every other frame's depth is
splatted from its nearest keyframes (``splatted_depth``), which see nearly what it sees. The result is a depth map with
holes (0 = unknown) that the exact ``depth`` matcher of ``matching.py`` can use as if it came from a sensor: it turns
a wide-baseline pair, where flow fails, into reprojection.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from jaxtyping import Float, Int

from data_preprocess.pairs import PoseIndex, View, backproject, pixel_rays, project, proxy_depth, visible_counts
from instance_nerfacto.core.camera import midpoint_triangulation
from instance_nerfacto.core.zbuffer import zbuffer_depth

KEYFRAME_SPACING_DEG = 0.2
"""Frames nearer than this to a keyframe (the angle their pose difference subtends at the point they look at) take
its depth instead of their own stereo: a 1,000-frame loop of a room, about 0.25-0.5 degrees from frame to frame, keeps
every frame; a 10,000-frame one of the same loop every 8th-10th, so its stereo sees the baselines and the neighbours
the 1,000-frame capture sees (without this, the 64 candidates of smallest usable angle were the frames just above
2 degrees: two neighbours per frame at 2.0-2.5 degrees against four at 2-5), at a tenth of the flows."""


def stereo_neighbours(views: List[View], k: int = 4, min_angle_deg: float = 2.0, max_angle_deg: float = 20.0,
                      min_overlap: float = 0.5, max_candidates: int = 64) -> List[List[int]]:
    """Per frame, up to ``k`` other frames that overlap it most among those seen at a usable triangulation angle and
    at least ``min_angle_deg`` from each other.

    The angle is the one the two camera centres subtend at the point a frame looks at (its proxy depth along the
    optical axis): too small and depth is noise, too large and the flow breaks. The spacing between the chosen
    neighbours keeps the baselines the same however densely the room was captured: without it a 1,000-frame capture
    took four frames just above ``min_angle_deg`` (along a loop at 100 frames, +-1 and +-2 frames: about 2.7 and 5.5
    degrees), so its depth had half the baseline of the same loop at 100 frames.

    Overlaps (as :func:`overlap_matrix`, on proxy depths) are scored only for the ``max_candidates`` frames of
    smallest usable angle, both ways: the whole matrix grew with the square of the capture (80 s at 1,000 frames).
    """
    n = len(views)
    if n < 2:
        return [[] for _ in views]
    depth = proxy_depth(views)
    centres = np.stack([v.c2w_cv[:3, 3] for v in views])
    focus = centres + depth[:, None] * np.stack([v.c2w_cv[:3, 2] for v in views])
    K = np.stack([v.K for v in views])
    w2c = np.linalg.inv(np.stack([v.c2w_cv for v in views]))
    size = np.array([(v.height, v.width) for v in views], dtype=np.int64)
    samples: Dict[int, np.ndarray] = {}
    fraction: Dict[Tuple[int, int], float] = {}

    def overlap(i: int, js: np.ndarray) -> np.ndarray:
        """Fraction of frame i's samples (every 8th pixel at its proxy depth) in view of each frame of ``js``."""
        if i not in samples:
            vi = views[i]
            vv, uu = np.mgrid[4:vi.height:8, 4:vi.width:8]
            samples[i] = backproject(vi, uu.ravel().astype(np.float64), vv.ravel().astype(np.float64),
                                     np.full(uu.size, depth[i]))
        todo = np.array([j for j in js.tolist() if (i, j) not in fraction], dtype=np.int64)
        if len(todo):
            counts = visible_counts(samples[i], todo, K, w2c, size, None, 0.1, 2048)
            fraction.update(zip(((i, j) for j in todo.tolist()), (counts / len(samples[i])).tolist()))
        return np.array([fraction[(i, j)] for j in js.tolist()])

    rays, cands = [], []
    for i in range(n):  # first every frame's overlaps into its candidates, one batch per frame
        ra = centres[i] - focus[i]
        rb = centres - focus[i]
        cos = (rb @ ra) / np.maximum(np.linalg.norm(rb, axis=1) * np.linalg.norm(ra), 1e-12)
        angle = np.degrees(np.arccos(np.clip(cos, -1, 1)))
        usable = np.flatnonzero((angle >= min_angle_deg) & (angle <= max_angle_deg) & (np.arange(n) != i))
        cands.append(np.sort(usable[np.argsort(angle[usable], kind="stable")[:max_candidates]]))
        rays.append(rb[cands[i]])  # the candidates' rays only: n x n of them would not fit at 10,000 frames
        overlap(i, cands[i])
    out = []
    for i in range(n):  # then the symmetric score: the other direction is mostly computed already
        rb, cand = rays[i], cands[i]
        sym = np.minimum(overlap(i, cand), [overlap(int(j), np.array([i]))[0] for j in cand.tolist()]) \
            if len(cand) else np.zeros(0)
        chosen: List[int] = []  # positions in cand
        for p in np.flatnonzero(sym >= min_overlap)[np.argsort(-sym[sym >= min_overlap], kind="stable")].tolist():
            if len(chosen) == k:
                break
            rc = rb[chosen] / np.linalg.norm(rb[chosen], axis=1, keepdims=True)
            spread = np.degrees(np.arccos(np.clip(rc @ (rb[p] / np.linalg.norm(rb[p])), -1, 1)))
            if not chosen or spread.min() >= min_angle_deg:
                chosen.append(p)
        out.append(cand[chosen].tolist())
    return out


def keyframes(views: List[View], spacing_deg: float = KEYFRAME_SPACING_DEG) -> Int[np.ndarray, "K"]:
    """Indices of the frames that get their own stereo depth, in frame order: a frame is a keyframe unless an earlier
    keyframe lies within ``spacing_deg`` of it (distance of :class:`PoseIndex`'s features, camera centre and the point
    the optical axis reaches, over the frame's proxy depth); every frame is within ``spacing_deg`` of a keyframe."""
    if len(views) < 2:
        return np.arange(len(views), dtype=np.int64)
    depth = proxy_depth(views)
    index = PoseIndex.build(np.stack([v.c2w_cv for v in views]), depth)
    radius = depth * np.tan(np.radians(spacing_deg))
    near = index.tree.query_ball_point(index.features, radius)
    covered = np.zeros(len(views), dtype=bool)
    keep = []
    for i, others in enumerate(near):
        if not covered[i]:
            keep.append(i)
            covered[others] = True
    return np.array(keep, dtype=np.int64)


def splatted_depth(view: View, sources: List[Tuple[View, np.ndarray]], stride: int = 2) -> Float[np.ndarray, "H W"]:
    """Depth of ``view`` from its nearest keyframes' depth maps (``sources``, nearest first): every ``stride``-th
    pixel of each source back-projected and z-buffered into the view (:func:`zbuffer_depth`, with the 3x3 footprint
    that closes a stride of 2); a pixel takes the first source that reaches it, so the nearest keyframe decides and
    the next only fills what it does not see."""
    out = np.zeros((view.height, view.width), np.float32)
    for src, depth in sources:
        rows, cols = np.nonzero(depth[::stride, ::stride] > 0)
        rows, cols = rows * stride, cols * stride
        if not len(rows):
            continue
        world = backproject(src, cols.astype(np.float64), rows.astype(np.float64), depth[rows, cols].astype(np.float64))
        u, v, z = project(view, world)
        front = z > 1e-6
        splat = zbuffer_depth(u[front], v[front], z[front], view.height, view.width, footprint=3 if stride > 1 else 2)
        out = np.where(out > 0, out, splat)
    if view.valid is not None:
        out[~view.valid] = 0.0
    return out


def triangulate_flow(a: View, b: View, flow_ab: Float[np.ndarray, "H W 2"], flow_ba: Float[np.ndarray, "H W 2"],
                     fb_tol: float = 1.0, epi_tol: float = 1.5, min_angle_deg: float = 1.0) -> np.ndarray:
    """Depth of every pixel of ``a`` (0 where rejected) from its flow into ``b`` and the two known poses.

    A pixel is kept when its flow returns within ``fb_tol`` px (forward-backward), lands within ``epi_tol`` px of its
    epipolar line, and the two rays meet in front of both cameras at an angle of at least ``min_angle_deg``.
    """
    from data_preprocess.matching import epipolar_distance, fundamental

    h, w = flow_ab.shape[:2]
    vv, uu = np.mgrid[0:h, 0:w]
    u, v = uu.ravel().astype(np.float64), vv.ravel().astype(np.float64)
    du, dv = flow_ab.reshape(-1, 2).T.astype(np.float64)
    tu, tv = u + du, v + dv
    ok = (tu > -0.5) & (tu < w - 0.5) & (tv > -0.5) & (tv < h - 0.5)
    iu, iv = np.round(tu).astype(np.int64).clip(0, w - 1), np.round(tv).astype(np.int64).clip(0, h - 1)
    back = flow_ba[iv, iu].astype(np.float64)
    ok &= np.hypot(du + back[:, 0], dv + back[:, 1]) < fb_tol
    ok &= epipolar_distance(fundamental(a, b), np.stack([u, v], 1), np.stack([tu, tv], 1)) < epi_tol
    z = np.zeros(h * w)
    sel = np.flatnonzero(ok)
    if len(sel):
        z[sel] = _two_ray_depth(a, b, u[sel], v[sel], tu[sel], tv[sel], min_angle_deg)
    return z.reshape(h, w)


def _two_ray_depth(a: View, b: View, ua, va, ub, vb, min_angle_deg: float) -> np.ndarray:
    """Optical-axis depth in ``a`` of the midpoint triangulation of pixel rays (0 where the rays do not meet well)."""
    s, t, _, cos = midpoint_triangulation(a.c2w_cv[:3, 3], pixel_rays(a, ua, va), b.c2w_cv[:3, 3],
                                          pixel_rays(b, ub, vb))
    good = (s > 0) & (t > 0) & (cos < np.cos(np.radians(min_angle_deg)))
    return np.where(good, s, 0.0)


def fuse_depths(stack: Float[np.ndarray, "K H W"], min_agree: int = 2, rel_tol: float = 0.05) -> np.ndarray:
    """Per pixel, the median of the valid (> 0) depths, kept where at least ``min_agree`` lie within ``rel_tol``."""
    valid = stack > 0
    n = valid.sum(0)
    ordered = np.sort(np.where(valid, stack, np.inf), axis=0)  # valid depths first, in order
    lo = np.take_along_axis(ordered, np.maximum(n - 1, 0)[None] // 2, 0)[0]
    hi = np.take_along_axis(ordered, (n // 2)[None].clip(0, len(stack) - 1), 0)[0]
    med = np.where(n > 0, 0.5 * (lo + hi), 0.0)
    agree = (valid & (np.abs(stack - med[None]) <= rel_tol * med[None])).sum(0)
    return np.where((agree >= min_agree) & (n > 0), med, 0.0).astype(np.float32)


def plane_homography(a: View, b: View, depth: float) -> Float[np.ndarray, "3 3"]:
    """Pixel homography a -> b induced by the plane at optical-axis depth ``depth`` in front of camera a."""
    rel = np.linalg.inv(b.c2w_cv) @ a.c2w_cv  # camera a -> camera b
    r, t = rel[:3, :3], rel[:3, 3]
    h = b.K @ (r + np.outer(t, [0.0, 0.0, 1.0 / depth])) @ np.linalg.inv(a.K)
    return h / h[2, 2]


def guided_flow(ga: np.ndarray, gb: np.ndarray, h_ab: np.ndarray, dis) -> Float[np.ndarray, "H W 2"]:
    """Flow a -> b in a's pixels, computed against b warped into a by ``h_ab`` (the known motion at a proxy plane).

    The homography takes out the camera rotation and the parallax of the proxy plane, so the flow only has to find
    the residual parallax: wider baselines stay within DIS's reach.
    """
    import cv2

    h, w = ga.shape
    warped = cv2.warpPerspective(gb, h_ab, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_REPLICATE)
    residual = dis.calc(ga, warped, None)
    vv, uu = np.mgrid[0:h, 0:w].astype(np.float32)
    x, y = uu + residual[..., 0], vv + residual[..., 1]
    den = h_ab[2, 0] * x + h_ab[2, 1] * y + h_ab[2, 2]
    den = np.where(np.abs(den) > 1e-9, den, 1e-9)
    tx = (h_ab[0, 0] * x + h_ab[0, 1] * y + h_ab[0, 2]) / den
    ty = (h_ab[1, 0] * x + h_ab[1, 1] * y + h_ab[1, 2]) / den
    return np.stack([tx - uu, ty - vv], -1).astype(np.float32)


def _dis(preset: str):
    """OpenCV's DIS flow at ``preset``, its patch search carried down to the full resolution (OpenCV's presets stop
    at half and upsample): at half resolution a 20-50 px object beside a depth edge took the depth of the surface in
    front of it (a brick seen past a table's edge: 0.6 of its true depth from every neighbour), so its points missed
    its own silhouette from the other side of a long capture, which then kept it as two labels."""
    import cv2

    dis = cv2.DISOpticalFlow_create({"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
                                     "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                                     "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}[preset])
    dis.setFinestScale(0)
    return dis


def normalized_gray(view: View) -> np.ndarray:
    """Grey image with zero-mean unit-variance levels (mapped to 128 +- 48): exposure changes between frames stay
    out of the brightness-constancy term of the flow."""
    from data_preprocess.matching import view_gray

    f = view_gray(view).astype(np.float32)
    return np.clip((f - f.mean()) / max(float(f.std()), 1e-3) * 48 + 128, 0, 255).astype(np.uint8)


def stereo_depths(views: List[View], k: int = 4, preset: str = "medium", min_agree: int = 2,
                  rel_tol: float = 0.05, neighbours: Optional[List[List[int]]] = None, workers: int = 2,
                  on_depth: Optional[Callable[[int, np.ndarray], None]] = None
                  ) -> Tuple[List[np.ndarray], Dict[str, float]]:
    """Fused depth map per view (0 = unknown) from flow to its stereo neighbours; and stats (density, pairs).

    With ``on_depth(i, depth)`` each view's depth is handed over as soon as its last pair is done, in pair order,
    and not kept (the returned list is empty): memory then holds the views whose neighbours are in flight, not four
    depth maps of every view (1.9 GB at 1,000 frames of 320x240, growing with the capture).
    """
    from concurrent.futures import ThreadPoolExecutor

    nbrs = neighbours if neighbours is not None else stereo_neighbours(views, k)
    proxies = proxy_depth(views)
    pairs = sorted({(min(i, j), max(i, j)) for i, js in enumerate(nbrs) for j in js})
    want = {(i, j) for i, js in enumerate(nbrs) for j in js}
    pending = np.zeros(len(views), dtype=np.int64)  # pairs still to come per view
    for i, j in pairs:
        pending[i] += 1
        pending[j] += 1

    def run(ij: Tuple[int, int]):
        i, j = ij
        dis = _dis(preset)
        gi, gj = normalized_gray(views[i]), normalized_gray(views[j])
        h_ij = plane_homography(views[i], views[j], float(proxies[i]))
        fij, fji = guided_flow(gi, gj, h_ij, dis), guided_flow(gj, gi, np.linalg.inv(h_ij), dis)
        out = {}
        if (i, j) in want:
            out[(i, j)] = triangulate_flow(views[i], views[j], fij, fji).astype(np.float32)
        if (j, i) in want:
            out[(j, i)] = triangulate_flow(views[j], views[i], fji, fij).astype(np.float32)
        return out

    per_view: Dict[int, List[np.ndarray]] = {i: [] for i in range(len(views))}
    depths: Dict[int, np.ndarray] = {}
    valid = [0.0]

    def finish(i: int) -> None:
        v, stack = views[i], per_view.pop(i)
        depth = np.zeros((v.height, v.width), np.float32) if len(stack) < min_agree else \
            fuse_depths(np.stack(stack), min_agree, rel_tol)
        if v.valid is not None:  # the flow matched the black rim of a pinhole grid bigger than the photo
            depth[~v.valid] = 0.0
        valid[0] += float((depth > 0).mean())
        if on_depth is None:
            depths[i] = depth
        else:
            on_depth(i, depth)

    for i in np.flatnonzero(pending == 0).tolist():
        finish(i)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for (a, b), res in zip(pairs, pool.map(run, pairs)):
            for (i, _), z in res.items():
                per_view[i].append(z)
            for i in (a, b):
                pending[i] -= 1
                if pending[i] == 0:
                    finish(i)
    density = valid[0] / len(views) if len(views) else 0.0
    return [depths[i] for i in sorted(depths)], {"stereo_pairs": len(pairs), "depth_density": round(density, 3)}


def neighbour_pairs(nbrs: List[List[int]]) -> Int[np.ndarray, "P 2"]:
    return np.array(sorted({(min(i, j), max(i, j)) for i, js in enumerate(nbrs) for j in js}),
                    dtype=np.int64).reshape(-1, 2)

