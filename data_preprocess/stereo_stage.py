"""The stereo stage of InstanceMap: depth of every frame estimated from the images and poses (``stereo.py``),
cached on disk once per input and parameter set, and handed to the frames as if it were a depth map."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import List

from data_preprocess.cache import cache_key
from data_preprocess.frames import FrameSpec, pose_view
from data_preprocess.stereo import stereo_depths
from instance_nerfacto.core.files import atomic_save_npy

STEREO_CACHE_VERSION = 3
"""2: neighbours spaced by angle; 3: depth on the working grid (lenses, large photos)."""


def stereo_stage(specs: List[FrameSpec], inputs: list, output: Path, neighbours: int, min_agree: int, split: str,
                 workers: int) -> List[FrameSpec]:
    """Depth of every frame saved under ``<output>/.cache/stereo-<key>/<stem>.npy`` (metres on the frame's working
    grid, 0 = unknown); the frames then point at it, so the pair tasks and the revisit stage read it like a depth
    map, in any process. The key holds the parameters, the inputs and each frame's working grid."""
    params = {"k": neighbours, "min_agree": min_agree, "split": split, "spread": STEREO_CACHE_VERSION}
    grids = [[s.K, s.height, s.width] for s in specs]
    key = cache_key("stereo", {**params, "stems": [s.stem for s in specs], "grids": grids}, inputs)
    folder = output / ".cache" / f"stereo-{key}"
    paths = [folder / f"{s.stem}.npy" for s in specs]
    if not all(p.is_file() for p in paths):
        views = [pose_view(s) for s in specs]  # images and poses only, also when the dataset has depth maps
        stereo_depths(views, neighbours, min_agree=min_agree, workers=workers,
                      on_depth=lambda i, depth: atomic_save_npy(paths[i], depth))  # streamed, not held
    return [replace(s, depth_path=p, depth_on_photo=False, stamp=s.stamp + ((p.stat().st_size, p.stat().st_mtime_ns),))
            for s, p in zip(specs, paths)]
