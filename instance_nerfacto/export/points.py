"""A labelled point cloud of a trained run: surface points of the training views with the label field's ids, in the
dataset's own frame (the frame of transforms.json's poses), and the PLY they are written to.

Points come from the baked density grid over every k-th training view (at a reduced resolution): each pixel whose
accumulated opacity is high enough becomes a point at ``origin + direction * depth``, coloured by the training image
and labelled with the (merged, edited) instance id the fast renderer shows at that pixel: the viewer, instance-render
and the cloud agree on every id, hand splits included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np
import torch
from jaxtyping import Float, UInt8, UInt16

from instance_nerfacto.core.errors import fail
from instance_nerfacto.core.settings import DEFAULT_GRID_RESOLUTION, DEFAULT_NUM_SAMPLES
from instance_nerfacto.render.bake import cached_density_grid, logits_to_ids, render_label_logits


def write_ply(
    path: Path,
    xyz: Float[np.ndarray, "N 3"],
    rgb: UInt8[np.ndarray, "N 3"],
    instance: UInt16[np.ndarray, "N"],
) -> None:
    """Binary little-endian PLY with an ``instance`` vertex property, written atomically. The property is int32:
    Open3D's tensor reader (``open3d.t.io.read_point_cloud``) skips ushort properties but keeps int."""
    from plyfile import PlyData, PlyElement

    vertex = np.empty(len(xyz), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"),
                                       ("blue", "u1"), ("instance", "i4")])
    vertex["x"], vertex["y"], vertex["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    vertex["red"], vertex["green"], vertex["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    vertex["instance"] = instance
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    PlyData([PlyElement.describe(vertex, "vertex")], text=False).write(str(tmp))
    tmp.replace(path)


def subsample(n_total: int, n_keep: int, seed: int) -> np.ndarray:
    if n_total <= n_keep:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n_keep, replace=False))


def surface_points(run, every: int = 2, downscale: int = 2, min_opacity: float = 0.9,
                   grid_resolution: int = DEFAULT_GRID_RESOLUTION, num_samples: int = DEFAULT_NUM_SAMPLES,
                   merge: bool = True) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Surface points of the training views: depth and ids of the fast label renderer (the baked density grid's
    heaviest sample, the label field composited at the heaviest few), colour from the training image itself (exact,
    and no colour render needed)."""
    from PIL import Image
    from rich.progress import track

    pipeline, model = run.pipeline, run.model
    label_map = run.label_map() if merge else None  # merge table + hand edits, applied at each surface point
    grid = cached_density_grid(model.field, run.checkpoint, run.step, grid_resolution).to(model.device)
    outputs = pipeline.datamanager.train_dataparser_outputs
    cameras = outputs.cameras
    xyz_all, rgb_all, ids_all = [], [], []
    for index in track(range(0, len(cameras), max(every, 1)), description="instance-export: surface points"):
        camera = cameras[index : index + 1].to(model.device)
        camera.rescale_output_resolution(1.0 / downscale)
        rays = camera.generate_rays(camera_indices=0, keep_shape=True)
        height, width = rays.origins.shape[:2]
        origins, directions = rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3)
        with torch.no_grad():
            # the surface and ids of the fast renderer (viewer, ns-render, instance-render): a hand split's seeds,
            # clicked in the viewer, divide these points as they divide the pixels on screen
            logits, depth, opacity = render_label_logits(grid, model.field, origins, directions, num_samples,
                                                         near=model.config.near_plane, far=model.config.far_plane)
            keep = opacity >= min_opacity
            points = origins[keep] + directions[keep] * depth[keep, None]
            ids, _ = logits_to_ids(logits[keep])
            if label_map is not None:
                ids = label_map.apply(ids, points)
        image = Image.open(outputs.image_filenames[index]).convert("RGB").resize((width, height), Image.BILINEAR)
        xyz_all.append(points.cpu().numpy())
        rgb_all.append(np.asarray(image).reshape(-1, 3)[keep.cpu().numpy()])
        ids_all.append(ids.cpu().numpy().astype(np.int64))
    if sum(len(x) for x in xyz_all) == 0:
        fail("the model renders no opaque surface in the training views", run.config_path,
                         "train longer or lower --min-opacity")
    xyz = np.concatenate(xyz_all)
    rgb = np.concatenate(rgb_all)
    ids = np.concatenate(ids_all)
    xyz = run.to_model.points_to_dataset(xyz)
    return xyz.astype(np.float32), rgb, ids.astype(np.uint16)
