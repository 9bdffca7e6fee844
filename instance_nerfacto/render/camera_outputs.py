"""The model's camera outputs from the baked density grid: what the viewer and ``ns-render`` show for a trained run.

nerfstudio's viewer and ``ns-render`` call ``model.get_outputs_for_camera``, which volume renders every pixel
(proposal networks + main field at every sample): ~20 s for a 320x240 frame on 2 CPU cores. Once a run has a
checkpoint, its density is fixed, so the same outputs can come from the density grid baked for the fast label path
(``render/bake.py``): every ray is marched through the grid, and the label field and the colour head are read at the
heaviest samples only (``render_label_logits(..., with_rgb=True)``, the renderer of the end-of-training merge; the
colour at the heaviest one, ``DEFAULT_RGB_TOP_K``).

:class:`FastCameraOutputs` is handed to the model by the pipeline (``InstancePipeline``) and attached to a checkpoint
when one is loaded (nerfstudio's ``eval_load_checkpoint``, see ``core/compat.py``) or baked at the end of training.
Before that (training, training-time eval) the model renders in full, so nerfstudio's metrics see the volume render.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Optional

import torch
from torch import Tensor

from instance_nerfacto.core.console import say
from instance_nerfacto.core.settings import DEFAULT_GRID_RESOLUTION, DEFAULT_NUM_SAMPLES, DEFAULT_RGB_TOP_K
from instance_nerfacto.render.bake import cache_path, cached_density_grid, render_label_logits


class FastCameraOutputs:
    """Camera outputs of one checkpoint from its baked density grid (loaded, or baked once, on first use)."""

    def __init__(self, resolution: int = DEFAULT_GRID_RESOLUTION, num_samples: int = DEFAULT_NUM_SAMPLES,
                 top_k: Optional[int] = None, rgb_top_k: int = DEFAULT_RGB_TOP_K, chunk: int = 1 << 11) -> None:
        self.resolution = resolution
        self.num_samples = num_samples
        self.top_k = top_k  # label samples per ray (None: bake.py's default)
        self.rgb_top_k = rgb_top_k
        self.chunk = chunk
        self.checkpoint: Optional[Path] = None
        self.step: Optional[int] = None
        self._grid: Optional[Tensor] = None

    @property
    def attached(self) -> bool:
        """Whether a checkpoint (and so a fixed density) is known: only then is the fast path used."""
        return self.checkpoint is not None or self._grid is not None

    def attach(self, checkpoint: Path, step: int, grid: Optional[Tensor] = None) -> None:
        """Use the grid of this checkpoint (``grid`` when already baked; else loaded or baked on first render)."""
        self.checkpoint, self.step, self._grid = Path(checkpoint), int(step), grid

    def grid(self, field) -> Tensor:
        """The baked grid on the field's device; a run without one (trained before the bake existed, or its
        label_render_cache deleted) bakes it here, once, and says so."""
        if self._grid is None:
            path = cache_path(self.checkpoint, self.step, self.resolution)
            started = time.perf_counter()
            if not path.is_file():
                say(f"instance-nerfacto: no baked density grid for step {self.step}: baking it once "
                    f"({self.resolution}^3, ~10-60 s on a CPU) -> {path}")
            self._grid = cached_density_grid(field, self.checkpoint, self.step, self.resolution)
            if not path.is_file() or time.perf_counter() - started > 5:
                say(f"instance-nerfacto: density grid ready in {time.perf_counter() - started:.1f} s")
        device = next(field.parameters()).device
        if self._grid.device != device:
            self._grid = self._grid.to(device)
        return self._grid

    @torch.no_grad()
    def ray_outputs(self, model, origins: Tensor, directions: Tensor) -> Dict[str, Tensor]:
        """instance_logits, depth, accumulation and instance_confidence of a few rays ([N, ...]), from the same
        function as :meth:`render`: a click in the viewer reads the id the picture shows."""
        logits, depth, opacity = render_label_logits(
            self.grid(model.field), model.field, origins, directions, num_samples=self.num_samples,
            chunk=self.chunk, near=model.config.near_plane, far=model.config.far_plane, top_k=self.top_k)
        confidence = torch.softmax(logits.float(), dim=-1).max(dim=-1, keepdim=True).values
        return {"instance_logits": logits, "depth": depth[:, None], "accumulation": opacity[:, None],
                "instance_confidence": confidence}

    @torch.no_grad()
    def render(self, model, camera) -> Dict[str, Tensor]:
        """The outputs the full render gives (same names, [H, W, C] each): rgb, depth, expected_depth, accumulation,
        prop_depth_* (= depth: there are no proposal samples), directions_norm, instance_logits and the model's
        instance, instance_id (merged and edited, or raw) and instance_confidence."""
        grid = self.grid(model.field)
        rays = camera.generate_rays(camera_indices=0, keep_shape=True)
        height, width = rays.origins.shape[:2]
        logits, depth, opacity, rgb = render_label_logits(
            grid, model.field, rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3),
            num_samples=self.num_samples, chunk=self.chunk, near=model.config.near_plane,
            far=model.config.far_plane, top_k=self.top_k, with_rgb=True, rgb_top_k=self.rgb_top_k)
        depth = depth.reshape(height, width, 1)
        outputs = {
            "rgb": rgb.clamp(0.0, 1.0).reshape(height, width, 3),
            "accumulation": opacity.reshape(height, width, 1),
            "depth": depth,
            "expected_depth": depth,
            "instance_logits": logits.reshape(height, width, -1),
        }
        for i in range(model.config.num_proposal_iterations):
            outputs[f"prop_depth_{i}"] = depth
        if rays.metadata is not None and "directions_norm" in rays.metadata:  # as the full render passes it on
            outputs["directions_norm"] = rays.metadata["directions_norm"]
        points = rays.origins + rays.directions * depth  # surface point of each pixel (label edits: splits)
        outputs.update(model.logits_to_outputs(outputs["instance_logits"], points))
        return outputs
