"""`instance-export`: a coloured point cloud with a per-point instance id from a trained instance-nerfacto model.

Points come from rendered depth over the training views (every k-th view, at a reduced resolution): each pixel whose
accumulated opacity is high enough becomes a point at ``origin + direction * depth``, coloured by the training image
and labelled with the (merged) instance id the label field gives at that surface point. Points are returned to the
dataset's original world frame (nerfstudio normalises poses while training), so the cloud lines up with the user's
poses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import tyro
from jaxtyping import Float, UInt8, UInt16

from instance_nerfacto.errors import fail, run_cli
from instance_nerfacto.fast_path import DEFAULT_GRID_RESOLUTION, DEFAULT_NUM_SAMPLES


@dataclass
class ExportConfig:
    """Export a labelled point cloud (.ply) from a trained instance-nerfacto model."""

    load_config: Path
    """config.yml of the training run (outputs/<experiment>/instance-nerfacto*/<timestamp>/config.yml)."""
    output: Path = Path("scene.ply")
    """Where to write the point cloud (binary PLY with x y z, red green blue, instance)."""
    points: int = 200_000
    """Maximum number of points written (uniform random subset of all surface points)."""
    every: int = 2
    """Use every k-th training view."""
    downscale: int = 2
    """Render the views at 1/downscale of their resolution (fewer rays, faster on CPU)."""
    min_opacity: float = 0.9
    """Pixels whose accumulated opacity is below this are skipped (background, floaters)."""
    grid_resolution: int = DEFAULT_GRID_RESOLUTION
    """Resolution of the baked density grid (shared with instance-render's cache)."""
    num_samples: int = DEFAULT_NUM_SAMPLES
    """Samples per ray through the baked grid."""
    per_instance: bool = False
    """Also write one PLY per instance id beside --output (<stem>_instance_<id>.ply)."""
    merge: bool = True
    """Apply the run's merge table (merge_table.json beside config.yml) to the ids."""
    seed: int = 0
    """Seed of the random point subset."""


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


def to_original_world(points: Float[np.ndarray, "N 3"], transform: np.ndarray, scale: float) -> np.ndarray:
    """Undo nerfstudio's dataparser normalisation: p_train = scale * (R p + t)  =>  p = R^T (p_train / scale - t)."""
    rot, trans = transform[:3, :3], transform[:3, 3]
    return (points / scale - trans) @ rot


def collect_points(cfg: ExportConfig):
    """Surface points of the training views: depth from the baked density grid (the fast label renderer's), ids from
    the label field at the surface, colour from the training image itself (exact, and no colour render needed)."""
    import torch
    from PIL import Image
    from rich.progress import track

    from instance_nerfacto.bake import cached_density_grid, logits_to_ids, march_surface
    from instance_nerfacto.errors import InputError
    from instance_nerfacto.merge_table import load_merge_for_run
    from instance_nerfacto.render import load_pipeline

    config_path = cfg.load_config
    pipeline, checkpoint, step = load_pipeline(config_path)
    model = pipeline.model
    merge = load_merge_for_run(config_path.parent) if cfg.merge else None
    grid = cached_density_grid(model.field, checkpoint, step, cfg.grid_resolution).to(model.device)
    outputs = pipeline.datamanager.train_dataparser_outputs
    cameras = outputs.cameras
    xyz_all, rgb_all, ids_all = [], [], []
    for index in track(range(0, len(cameras), max(cfg.every, 1)), description="instance-export: surface points"):
        camera = cameras[index : index + 1].to(model.device)
        camera.rescale_output_resolution(1.0 / cfg.downscale)
        rays = camera.generate_rays(camera_indices=0, keep_shape=True)
        height, width = rays.origins.shape[:2]
        origins, directions = rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3)
        with torch.no_grad():
            depth, opacity = march_surface(grid, model.field, origins, directions, cfg.num_samples,
                                           model.config.near_plane, model.config.far_plane)
            keep = opacity >= cfg.min_opacity
            points = origins[keep] + directions[keep] * depth[keep, None]
            ids, _ = logits_to_ids(model.field.label_logits_at(points))
        image = Image.open(outputs.image_filenames[index]).convert("RGB").resize((width, height), Image.BILINEAR)
        xyz_all.append(points.cpu().numpy())
        rgb_all.append(np.asarray(image).reshape(-1, 3)[keep.cpu().numpy()])
        ids_all.append(ids.cpu().numpy().astype(np.int64))
    if sum(len(x) for x in xyz_all) == 0:
        raise InputError("the model renders no opaque surface in the training views", config_path,
                         "train longer or lower --min-opacity")
    xyz = np.concatenate(xyz_all)
    rgb = np.concatenate(rgb_all)
    ids = np.concatenate(ids_all)
    if merge:
        ids = merge.apply(ids)
    xyz = to_original_world(xyz, outputs.dataparser_transform.numpy(), float(outputs.dataparser_scale))
    return xyz.astype(np.float32), rgb, ids.astype(np.uint16)


def main(cfg: ExportConfig) -> None:
    if not cfg.load_config.is_file():
        fail("training config not found", cfg.load_config, "pass the config.yml written by ns-train")
    if cfg.output.suffix.lower() != ".ply":
        fail("output must be a .ply file", cfg.output, "pass --output scene.ply")
    xyz, rgb, ids = collect_points(cfg)
    keep = subsample(len(xyz), cfg.points, cfg.seed)
    xyz, rgb, ids = xyz[keep], rgb[keep], ids[keep]
    write_ply(cfg.output, xyz, rgb, ids)
    written = [cfg.output]
    if cfg.per_instance:
        for inst in np.unique(ids):
            if inst == 0:
                continue
            sel = ids == inst
            path = cfg.output.with_name(f"{cfg.output.stem}_instance_{int(inst)}.ply")
            write_ply(path, xyz[sel], rgb[sel], ids[sel])
            written.append(path)
    n_inst = len(set(np.unique(ids).tolist()) - {0})
    print(f"instance-export: wrote {len(xyz)} points, {n_inst} instances -> {cfg.output}"
          + (f" (+{len(written) - 1} per-instance files)" if cfg.per_instance else ""))


def entrypoint(argv: Optional[list] = None) -> None:
    run_cli(lambda: main(tyro.cli(ExportConfig, args=argv)))


if __name__ == "__main__":
    entrypoint()
