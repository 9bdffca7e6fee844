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
from typing import Annotated, Optional

import numpy as np
import tyro

from instance_nerfacto.core.console import say
from instance_nerfacto.core.errors import fail, run_cli
from instance_nerfacto.core.runs import RunOptions
from instance_nerfacto.core.settings import DEFAULT_GRID_RESOLUTION, DEFAULT_NUM_SAMPLES


@dataclass
class ExportConfig:
    """Export a labelled point cloud (.ply) from a trained instance-nerfacto model."""

    run: Annotated[RunOptions, tyro.conf.OmitArgPrefixes]
    """The training run (--load-config, required), its checkpoint, merge table and torch threads."""
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
    seed: int = 0
    """Seed of the random point subset."""


def main(cfg: ExportConfig) -> None:
    load_config = cfg.run.require_config()
    if cfg.output.suffix.lower() != ".ply":
        fail("output must be a .ply file", cfg.output, "pass --output scene.ply")
    from instance_nerfacto.export.points import subsample, surface_points, write_ply
    from instance_nerfacto.render.run import load_run

    cfg.run.set_threads()
    run = load_run(load_config, cfg.run.load_step)
    xyz, rgb, ids = surface_points(run, cfg.every, cfg.downscale, cfg.min_opacity, cfg.grid_resolution,
                                   cfg.num_samples, cfg.run.merge)
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
    say(f"instance-export: wrote {len(xyz)} points, {n_inst} instances -> {cfg.output}"
        + (f" (+{len(written) - 1} per-instance files)" if cfg.per_instance else ""))


def entrypoint(argv: Optional[list] = None) -> None:
    run_cli(lambda: main(tyro.cli(ExportConfig, args=argv)))


if __name__ == "__main__":
    entrypoint()
