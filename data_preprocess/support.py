"""3D support of communities: how often the frontend found an object in the views that see it.

A frame-count filter ("seen in at least 3 frames") means less the denser the capture: along a 1,000-frame loop a
frontend error that persists for a second of video (a piece split off an object, two objects merged, a shadow)
forms a community of ten frames and survives, and scene-level PQ counts every such label as a false positive. The
measure here does not grow with the capture: a community's 3D points are projected into a sample of the capture's
frames, the frames where most of them are in view and not occluded (depth test) are the frames that *see* it, and its
detection rate is the fraction of those frames in which it holds a mask. A real object is found in most of the views
that see it (the frontend misses it now and then); a persistent frontend error is absent from most of them, because
in those views the same pixels belong to another community. On a 1,000-frame demo room every label below a rate of
0.35 was a false positive, and the true objects were found in 0.45-1.0 of their views; ten times the frames give the
same rate, with more evidence behind it.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Sequence

import numpy as np
from jaxtyping import Float, Int

from data_preprocess.pairs import project


def support_points(points: Dict[int, Float[np.ndarray, "P 3"]], membership: Int[np.ndarray, "N"],
                   previous: Int[np.ndarray, "N"], max_points: int = 256) -> Dict[int, Float[np.ndarray, "Q 3"]]:
    """Points of each community of ``membership`` from the points of the communities of ``previous`` it absorbed
    (a node's old and new community give the mapping), at most ``max_points`` (every k-th), in old-id order."""
    parts: Dict[int, List[np.ndarray]] = {}
    seen = set()
    for old, new in zip(previous.tolist(), membership.tolist()):
        if old in seen or new < 0:
            continue
        seen.add(old)
        if old in points:
            parts.setdefault(new, []).append(points[old])
    out = {}
    for c, ps in parts.items():
        p = np.concatenate(ps) if len(ps) > 1 else ps[0]
        out[c] = p[:: max(1, -(-len(p) // max_points))]
    return out


def detection_rates(points: Dict[int, Float[np.ndarray, "P 3"]], membership: Int[np.ndarray, "N"],
                    offsets: Int[np.ndarray, "F1"], check_frames: Sequence[int], view_of: Callable[[int], object],
                    in_view: float = 0.5, visible: float = 0.5, depth_tol: float = 0.05
                    ) -> Dict[int, tuple[int, int]]:
    """(frames that see the community, frames of those where it holds a mask) per community of ``points``.

    A check frame sees a community when at least ``in_view`` of its points project inside the image in front of
    the camera and, of those that land on a known depth (0 = unknown, as stereo leaves holes), at least ``visible``
    agree with it within ``depth_tol`` (relative, plus 2 cm): the rest are hidden behind something else. On depth
    estimated by stereo pass the stereo matcher's tolerance (``matching.depth_tolerance``): with a sensor's 5%, views
    were rejected for stereo's own error (a 1,000-frame room: one object's community seen by 12 of the 400 check
    frames, 113 at 10%), so rates rested on a handful of frames and spurious labels passed.
    ``view_of(f)`` gives frame f's :class:`View` with its depth map (dataset or stereo).
    """
    keys = sorted(points)
    if not keys:
        return {}
    owner = np.concatenate([np.full(len(points[c]), i) for i, c in enumerate(keys)])
    world = np.concatenate([points[c] for c in keys])
    n_points = np.bincount(owner, minlength=len(keys)).astype(np.float64)
    seen = np.zeros(len(keys), dtype=np.int64)
    found = np.zeros(len(keys), dtype=np.int64)
    index = {c: i for i, c in enumerate(keys)}
    for f in check_frames:
        view = view_of(f)
        if view.depth is None:
            continue
        u, v, z = project(view, world)
        ui, vi = np.round(u).astype(np.int64), np.round(v).astype(np.int64)
        inside = (z > 1e-3) & (ui >= 0) & (vi >= 0) & (ui < view.width) & (vi < view.height)
        if view.valid is not None:  # a pinhole grid bigger than the photo: its rim is outside the image
            inside[inside] = view.valid[vi[inside], ui[inside]]
        d = np.zeros(len(world), dtype=np.float64)
        d[inside] = view.depth[vi[inside], ui[inside]]
        known = inside & (d > 0)
        agree = known & (np.abs(d - z) <= depth_tol * z + 0.02)
        n_in = np.bincount(owner[inside], minlength=len(keys))
        n_known = np.bincount(owner[known], minlength=len(keys))
        n_agree = np.bincount(owner[agree], minlength=len(keys))
        sees = (n_in >= in_view * n_points) & (n_known > 0) & (n_agree >= visible * np.maximum(n_known, 1))
        seen += sees
        present = [index[c] for c in set(membership[offsets[f]:offsets[f + 1]].tolist()) if c in index]
        found[present] += sees[present]
    return {c: (int(seen[i]), int(found[i])) for i, c in enumerate(keys)}


def check_frames(n_frames: int, limit: int = 400) -> List[int]:
    """Evenly spaced frames of the capture, all of them up to ``limit``: the rate is a fraction, so a sample holds it
    while the cost stays bounded on long captures."""
    return np.unique(np.linspace(0, n_frames - 1, min(n_frames, limit)).round().astype(np.int64)).tolist()


def drop_unsupported(membership: Int[np.ndarray, "N"], rates: Dict[int, tuple[int, int]], min_rate: float,
                     min_seen: int = 5) -> Int[np.ndarray, "N"]:
    """Communities found in fewer than ``min_rate`` of the (at least ``min_seen``) check frames that see them
    replaced by -1; communities without enough views to judge are kept."""
    drop = [c for c, (seen, found) in rates.items() if seen >= min_seen and found < min_rate * seen]
    out = membership.copy()
    out[np.isin(membership, drop)] = -1
    return out
