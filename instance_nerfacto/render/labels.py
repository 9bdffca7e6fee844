"""Label images of a trained model: the fast path (baked density grid, label field at the heaviest samples) or
nerfstudio's full volume render."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from jaxtyping import UInt16

from instance_nerfacto.core.settings import DEFAULT_GRID_RESOLUTION, DEFAULT_NUM_SAMPLES
from instance_nerfacto.render.bake import cached_density_grid, logits_to_ids, render_label_logits


def upsample_nearest(ids: np.ndarray, height: int, width: int) -> np.ndarray:
    if ids.shape == (height, width):
        return ids
    rows = np.minimum((np.arange(height) * ids.shape[0]) // height, ids.shape[0] - 1)
    cols = np.minimum((np.arange(width) * ids.shape[1]) // width, ids.shape[1] - 1)
    return ids[rows[:, None], cols[None, :]]


class LabelRenderer:
    """Renders uint16 label images of one trained model, fast (baked density) or full (volume render)."""

    def __init__(self, pipeline, checkpoint: Path, step: int, full_render: bool = False,
                 grid_resolution: int = DEFAULT_GRID_RESOLUTION,
                 num_samples: int = DEFAULT_NUM_SAMPLES, top_k: Optional[int] = None) -> None:
        self.model = pipeline.model
        self.full_render = full_render
        self.num_samples = num_samples
        self.top_k = top_k  # fast path: label samples read per ray (None: bake.py's default)
        self.grid = None
        if not full_render:
            self.grid = cached_density_grid(self.model.field, checkpoint, step, grid_resolution).to(self.model.device)

    def render_ids(self, cameras, index: int, downscale: int = 1) -> UInt16[np.ndarray, "H W"]:
        """Raw label ids (before merging) at the camera's full resolution."""
        return self.render_labels(cameras, index, downscale, None)

    @torch.no_grad()
    def render_labels(self, cameras, index: int, downscale: int = 1, label_map=None) -> UInt16[np.ndarray, "H W"]:
        """Label ids at the camera's full resolution: raw, or through ``label_map`` (the run's merges and hand edits,
        applied at each pixel's surface point) when given."""
        full_height, full_width = int(cameras.height[index]), int(cameras.width[index])
        camera = cameras[index : index + 1].to(self.model.device)
        if downscale > 1:
            camera.rescale_output_resolution(1.0 / downscale)
        if self.full_render:
            outputs = self.model.full_outputs_for_camera(camera)
            ids = outputs["instance_logits"].argmax(dim=-1) + 1
            depth = outputs["depth"][..., 0]
        else:
            rays = camera.generate_rays(camera_indices=0, keep_shape=True)
            height, width = rays.origins.shape[:2]
            logits, depth, _ = render_label_logits(
                self.grid, self.model.field, rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3),
                num_samples=self.num_samples, near=self.model.config.near_plane, far=self.model.config.far_plane,
                top_k=self.top_k,
            )
            ids = logits_to_ids(logits)[0].reshape(height, width)
            depth = depth.reshape(height, width)
        if label_map is not None:
            rays = camera.generate_rays(camera_indices=0, keep_shape=True)
            points = rays.origins + rays.directions * depth[..., None].to(rays.origins.device)
            ids = label_map.apply(ids.reshape(points.shape[:2]), points)
        ids = ids.reshape(ids.shape[0], ids.shape[1]).cpu().numpy().astype(np.uint16)
        return upsample_nearest(ids, full_height, full_width)
