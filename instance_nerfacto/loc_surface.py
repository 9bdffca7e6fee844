"""Fast label query for InstanceLoc through the baked density grid of :mod:`instance_nerfacto.bake`.

Volume rendering a ray through nerfacto costs two proposal networks (96 samples) and the main field (24 samples), all
hash-grid look-ups. InstanceLoc only needs the label where each sampled ray meets the surface, so it shares
instance-render's fast path exactly: the trained density baked once into a grid (cached beside the checkpoint, the
same cache file instance-render uses), rays marched through it with trilinear look-ups, and the label field queried at
the heaviest few samples per ray, their class probabilities composited. A sampled pixel therefore gets the same id
that ``instance-render`` gives it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch
from torch import Tensor

from instance_nerfacto.fast_path import DEFAULT_GRID_RESOLUTION, DEFAULT_NUM_SAMPLES


class SurfaceQuery:
    """Callable ``(ray_bundle) -> outputs`` with ``instance_id``, ``instance_confidence`` and ``accumulation``."""

    def __init__(self, model, checkpoint: Path, step: int, resolution: int = DEFAULT_GRID_RESOLUTION,
                 num_samples: int = DEFAULT_NUM_SAMPLES) -> None:
        from instance_nerfacto.bake import cached_density_grid

        self.model = model
        self.num_samples = num_samples
        device = next(model.parameters()).device
        self.grid = cached_density_grid(model.field, Path(checkpoint), int(step), resolution).to(device)

    @torch.no_grad()
    def __call__(self, bundle) -> Dict[str, Tensor]:
        from instance_nerfacto.bake import logits_to_ids, render_label_logits

        origins = bundle.origins.reshape(-1, 3)
        directions = bundle.directions.reshape(-1, 3)
        config = self.model.config
        logits, _, accumulation = render_label_logits(self.grid, self.model.field, origins, directions,
                                                      num_samples=self.num_samples, near=config.near_plane,
                                                      far=config.far_plane)
        ids, confidence = logits_to_ids(logits)
        return {"instance_id": ids[:, None], "instance_confidence": confidence[:, None],
                "accumulation": accumulation[:, None]}
