"""InstanceLoc of one frame through a loaded model: the mode and depth source each frame takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Literal, Optional, Tuple

import numpy as np

from instance_nerfacto.core.dataset import Frame
from instance_nerfacto.edit.label_map import MergeTable
from instance_nerfacto.loc.dense import localize_dense
from instance_nerfacto.loc.map_depth import fill_small_holes, splat_depth
from instance_nerfacto.loc.surface import DepthQuery, ray_distance_map
from instance_nerfacto.loc.voting import VoteParams, localize_regions
from instance_nerfacto.render.cameras import DatasetToModel, frame_camera


@dataclass
class ModelQuery:
    """InstanceLoc of one frame through a loaded model: mask voting, or a dense read at a measured, splatted or rendered
    depth."""

    model: object
    to_model: DatasetToModel
    """Dataset poses -> the model's frame."""
    device: object
    renderer: Optional[object]
    """Ray renderer of frames without a depth map (``SurfaceQuery``), or None for full volume rendering."""
    depth_by_stem: Dict[str, np.ndarray]
    """Measured depth (metres) of the frames read at their depth."""
    mode: Literal["auto", "regions", "dense"]
    """See instance-loc's --mode."""
    dense_stride: int
    """'dense' mode: one ray per stride x stride block away from label boundaries."""
    min_confidence: float
    """'dense' mode: pixels whose field label is less confident take their mask's majority label."""
    map_points: Optional[np.ndarray] = None
    """Points of the training depth maps (model units), splatted into frames without a depth map."""
    dense_at_surface: bool = True
    """auto mode: read frames at the rendered surface densely (a map trained without depth maps) rather than by mask
    voting (a depth-supervised map, whose rendered surface reads better by voting: see instance-loc's --mode)."""
    surface_strides: Tuple[int, ...] = (8, 4, 2)
    """Dense reads through the rendered surface: ray spacing in pixels, coarse first, then the finer spacings boundary
    blocks are split into. Each ray there marches the baked grid instead of reading the field once at a known depth,
    so it samples more sparsely than ``dense_stride``."""

    def depth_source(self, frame: Frame) -> str:
        """'measured' (the frame's depth map), 'map' (the training depth maps splatted) or 'rendered'."""
        if frame.stem in self.depth_by_stem:
            return "measured"
        return "map" if self.map_points is not None else "rendered"

    def __call__(self, frame: Frame, region_map: np.ndarray, params: VoteParams, rng: np.random.Generator,
                 merge_table: Optional[MergeTable]) -> Dict:
        model = self.model
        camera = frame_camera(frame, self.to_model, self.device)
        source = self.depth_source(frame)

        def volume(bundle, coords):
            return model(bundle)

        renderer = self.renderer
        if source == "measured":
            distance = ray_distance_map(self.depth_by_stem[frame.stem], frame.camera, self.to_model.scale)
        elif source == "map":
            c2w = camera.camera_to_worlds[0].cpu().numpy()
            depth = fill_small_holes(splat_depth(self.map_points, c2w, frame.camera))
            distance = ray_distance_map(depth, frame.camera, 1.0)  # already model units
        if source != "rendered":
            renderer = DepthQuery(model.field, distance, renderer or volume)
        # auto: dense at a known depth; at the rendered surface only for maps without depth maps, through the baked grid
        at_surface = renderer is not None and self.dense_at_surface
        if self.mode == "dense" or (self.mode == "auto" and (source != "rendered" or at_surface)):
            strides = (self.dense_stride, 1) if source != "rendered" else tuple(self.surface_strides)
            return localize_dense(model, camera, region_map, renderer or volume, strides[0], self.min_confidence,
                                  merge_table, strides=strides)
        return localize_regions(model, camera, region_map, params, rng, merge_table, renderer)
