"""The stereo stage of InstanceMap: depth of every frame estimated from the images and poses (``stereo.py``),
cached on disk once per input and parameter set, and handed to the frames as if it were a depth map."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import List

import numpy as np

from data_preprocess.cache import cache_key
from data_preprocess.frames import FrameSpec, pose_view
from data_preprocess.pairs import PoseIndex, proxy_depth
from data_preprocess.stereo import KEYFRAME_SPACING_DEG, keyframes, splatted_depth, stereo_depths
from instance_nerfacto.core.files import atomic_save_npy

STEREO_CACHE_VERSION = 5
"""2: neighbours spaced by angle; 3: depth on the working grid (lenses, large photos); 4: keyframes; 5: flow at full
resolution."""
SPLAT_SOURCES = 2
"""Keyframes whose depth is splatted into a frame between keyframes (the nearest first, the next fills its holes)."""


def stereo_stage(specs: List[FrameSpec], inputs: list, output: Path, neighbours: int, min_agree: int, split: str,
                 workers: int) -> List[FrameSpec]:
    """Depth of every frame saved under ``<output>/.cache/stereo-<key>/<stem>.npy`` (metres on the frame's working
    grid, 0 = unknown); the frames then point at it, so the pair tasks and the revisit stage read it like a depth
    map, in any process. The key holds the parameters, the inputs and each frame's working grid. Stereo runs on the
    keyframes (:func:`keyframes`); the other frames take their nearest keyframes' depth."""
    params = {"k": neighbours, "min_agree": min_agree, "split": split, "spread": STEREO_CACHE_VERSION,
              "keyframe_deg": KEYFRAME_SPACING_DEG}
    grids = [[s.K, s.height, s.width] for s in specs]
    key = cache_key("stereo", {**params, "stems": [s.stem for s in specs], "grids": grids}, inputs)
    folder = output / ".cache" / f"stereo-{key}"
    paths = [folder / f"{s.stem}.npy" for s in specs]
    if not all(p.is_file() for p in paths):
        views = [pose_view(s) for s in specs]  # images and poses only, also when the dataset has depth maps
        keys = keyframes(views)
        stereo_depths([views[i] for i in keys], neighbours, min_agree=min_agree, workers=workers,
                      on_depth=lambda k, depth: atomic_save_npy(paths[keys[k]], depth))  # streamed, not held
        splat_between_keyframes(views, keys, paths, workers)
    return [replace(s, depth_path=p, depth_on_photo=False, stamp=s.stamp + ((p.stat().st_size, p.stat().st_mtime_ns),))
            for s, p in zip(specs, paths)]


def splat_between_keyframes(views: list, keys: np.ndarray, paths: List[Path], workers: int) -> None:
    """Depth of every frame that is not a keyframe, splatted from its :data:`SPLAT_SOURCES` nearest keyframes'
    saved depth (nearest in :class:`PoseIndex`'s features)."""
    from concurrent.futures import ThreadPoolExecutor

    others = np.setdiff1d(np.arange(len(views)), keys)
    if not len(others):
        return
    index = PoseIndex.build(np.stack([views[i].c2w_cv for i in keys]), proxy_depth([views[i] for i in keys]))
    features = PoseIndex.build(np.stack([v.c2w_cv for v in views]), proxy_depth(views)).features
    _, nearest = index.tree.query(features[others], k=min(SPLAT_SOURCES, len(keys)))
    nearest = nearest.reshape(len(others), -1)

    def splat(row: int) -> None:
        sources = [(views[keys[k]], np.load(paths[keys[k]])) for k in nearest[row]]
        atomic_save_npy(paths[others[row]], splatted_depth(views[others[row]], sources))

    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(splat, range(len(others))))


def stereo_planes(stereo_specs: List[FrameSpec], specs: List[FrameSpec]) -> np.ndarray:
    """Each frame's median stereo depth (metres), the plane on which the pose-pair stage places its pixels.

    Without depth maps the pair stage used one distance per frame, to the point all optical axes aim at: right for a
    loop around the room's centre, but frames that look past it or at a near wall then overlap their neighbours
    only in a thin strip, and along a long capture such frames were paired with their 2-3 neighbours only, so an
    object seen on both sides of them ended up split in two. A frame without any stereo depth keeps that distance."""
    fallback = proxy_depth([pose_view(s) for s in specs])
    out = np.empty(len(stereo_specs))
    for k, s in enumerate(stereo_specs):
        depth = np.load(s.depth_path)
        valid = depth[depth > 0]
        out[k] = float(np.median(valid)) if len(valid) else fallback[k]
    return out
