"""The map side of registration: a trained run's training images as :class:`MapFeatures` (keypoints lifted to 3D).

Each training image's SIFT keypoints are lifted to the training data's transforms.json frame by a depth of that image:
its depth map when the map has them (an RGB-D capture), otherwise the surface of the trained density, marched through
the baked density grid that instance-render and instance-loc share (cached beside the checkpoint): nine rays per
keypoint (its 3x3 neighbourhood, which shows occlusion edges), a few thousand per image, so the whole map costs
seconds, once per command.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Literal

import numpy as np
import torch
from jaxtyping import Float

from instance_nerfacto.core.camera import GL_TO_CV
from instance_nerfacto.core.dataset import Frame, load_dataset
from instance_nerfacto.core.errors import fail
from instance_nerfacto.core.files import depth_unit_scale, read_depth
from instance_nerfacto.loc.register import OCCLUSION_EDGE_SPREAD, lift_keypoints, map_features
from instance_nerfacto.loc.register_features import MapFeatures, RegisterParams
from instance_nerfacto.render.cameras import DatasetToModel

MIN_OPACITY = 0.5
"""A keypoint's ray through the baked density must be at least this opaque for its surface to lift it."""
NEIGHBOURHOOD = np.array([(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1)], np.float32)
"""Pixel offsets (x, y) of a keypoint's 3x3 neighbourhood, the keypoint itself first."""


def training_frames(transforms: Path) -> List[Frame]:
    """The frames of the dataset a run was trained on (its train split when transforms.json lists one)."""
    dataset = load_dataset(transforms, check_files=False)
    frames = dataset.split("train") or dataset.frames
    for frame in frames:
        if not frame.image_path.is_file():
            fail(f"training image '{frame.stem}' of the map is missing", frame.image_path,
                 "registration matches photos against the training images: restore the dataset the run was trained on")
    return frames


def keypoint_rays(keypoints: Float[np.ndarray, "N 2"], frame: Frame, to_model: DatasetToModel
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Model-frame origins and unit directions of the rays through keypoints (OpenCV pixel coordinates)."""
    c2w = to_model.c2w(frame.c2w)
    cam = frame.camera.backproject(keypoints[:, 0] + 0.5, keypoints[:, 1] + 0.5, np.ones(len(keypoints))) * GL_TO_CV
    directions = cam @ c2w[:3, :3].T
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return np.broadcast_to(c2w[:3, 3], directions.shape).copy(), directions


def surface_points(run, grid: torch.Tensor, frame: Frame, keypoints: Float[np.ndarray, "N 2"], num_samples: int
                   ) -> Float[np.ndarray, "N 3"]:
    """Where each keypoint's ray meets the trained density's surface, in the dataset's frame (NaN where the ray
    stays mostly transparent).

    On an occlusion edge (the surface along the rays of its 3x3 neighbourhood spans more than
    :data:`OCCLUSION_EDGE_SPREAD`) the keypoint takes the nearest surface of its neighbourhood: a corner there is the
    outline of the nearer object, and a colour-only field's surface puts the keypoint's own ray on either side of it
    by chance. Lifted by their own ray, such keypoints (22% of a colour-only demo map's) had a median depth error of
    240%, and PnP on them put two held-out close-ups 1.3-1.5 degrees off (0.6-0.9 with the nearest surface)."""
    from instance_nerfacto.render.bake import march_surface

    if len(keypoints) == 0:
        return np.zeros((0, 3), np.float32)
    count = len(keypoints)
    shifted = (keypoints[None] + NEIGHBOURHOOD[:, None]).reshape(-1, 2)
    origins, directions = keypoint_rays(shifted, frame, run.to_model)
    model = run.model
    device = grid.device
    with torch.no_grad():
        depth, opacity = march_surface(grid, model.field, torch.from_numpy(origins).float().to(device),
                                       torch.from_numpy(directions).float().to(device), num_samples=num_samples,
                                       near=model.config.near_plane, far=model.config.far_plane)
    distance = keypoint_surface(depth.cpu().numpy().reshape(len(NEIGHBOURHOOD), count),
                                opacity.cpu().numpy().reshape(len(NEIGHBOURHOOD), count))
    lifted = np.isfinite(distance)
    points = np.full((count, 3), np.nan)
    points[lifted] = run.to_model.points_to_dataset(origins[:count][lifted]
                                                    + directions[:count][lifted] * distance[lifted, None])
    return points.astype(np.float32)


def keypoint_surface(depth: Float[np.ndarray, "9 N"], opacity: Float[np.ndarray, "9 N"]) -> Float[np.ndarray, "N"]:
    """The distance each keypoint is lifted by, from the surface distance and opacity along the rays of its 3x3
    neighbourhood (rows in :data:`NEIGHBOURHOOD`'s order, the keypoint's own first): its own ray's distance, or on an
    occlusion edge the nearest opaque one; NaN when its own ray is not opaque. Transparent neighbours do not count."""
    depth = np.asarray(depth, np.float64)
    opaque = np.asarray(opacity) >= MIN_OPACITY
    nearest = np.where(opaque, depth, np.inf).min(axis=0)
    farthest = np.where(opaque, depth, 0.0).max(axis=0)
    edge = farthest > (1.0 + OCCLUSION_EDGE_SPREAD) * nearest
    return np.where(opaque[0], np.where(edge, nearest, depth[0]), np.nan)


def run_map_features(run, frames: List[Frame], params: RegisterParams, lift: Literal["auto", "depth", "rendered"],
                     grid_resolution: int, num_samples: int) -> tuple[MapFeatures, str]:
    """The run's training images ``frames`` as :class:`MapFeatures` (in that order) and the lifting used ('depth
    maps' or 'rendered surface')."""
    import cv2
    has_depth = all(f.depth_path is not None and f.depth_path.is_file() for f in frames)
    if lift == "depth" and not has_depth:
        fail("the map's training frames have no depth maps to lift keypoints with", frames[0].image_path.parent,
             "pass --register.lift auto or rendered (the trained density's surface)")
    use_depth = has_depth and lift != "rendered"
    unit = depth_unit_scale(run.pipeline.datamanager.train_dataparser_outputs.metadata)
    grid = None
    if not use_depth:
        from instance_nerfacto.render.bake import cached_density_grid

        device = next(run.model.parameters()).device
        grid = cached_density_grid(run.model.field, run.checkpoint, run.step, grid_resolution).to(device)

    def rgb(i: int) -> np.ndarray:
        image = cv2.imread(str(frames[i].image_path), cv2.IMREAD_COLOR)
        if image is None:
            fail("cannot decode training image", frames[i].image_path, "restore the dataset the run was trained on")
        return np.ascontiguousarray(image[..., ::-1])

    def points(i: int, keypoints: np.ndarray) -> np.ndarray:
        frame = frames[i]
        if use_depth:
            return lift_keypoints(keypoints, read_depth(frame.depth_path, unit), frame.camera, frame.c2w)
        return surface_points(run, grid, frame, keypoints, num_samples)

    world = map_features(rgb, points, [f.c2w for f in frames], params)
    return world, "depth maps" if use_depth else "rendered surface"


CHECK_SIZE = (40, 30)
"""(width, height) of the view rendered to check a registered pose: a few hundred rays, tens of milliseconds."""


def rendered_view(run, grid: torch.Tensor, c2w: np.ndarray, frame: Frame, size=CHECK_SIZE) -> np.ndarray:
    """The trained colour (RGB in [0, 1], [h, w, 3]) of a coarse ``size`` view at a camera-to-world pose of the
    dataset's frame with ``frame``'s intrinsics: one ray through the centre of each coarse cell."""
    from instance_nerfacto.render.bake import render_label_logits

    width, height = size
    cols = (np.arange(width) + 0.5) * frame.width / width - 0.5  # OpenCV pixel coordinates of the cell centres
    rows = (np.arange(height) + 0.5) * frame.height / height - 0.5
    grid_xy = np.stack(np.meshgrid(cols, rows), axis=-1).reshape(-1, 2)
    origins, directions = keypoint_rays(grid_xy, dataclasses.replace(frame, c2w=c2w), run.to_model)
    model = run.model
    with torch.no_grad():
        _, _, _, colour = render_label_logits(grid, model.field, torch.from_numpy(origins).float().to(grid.device),
                                              torch.from_numpy(directions).float().to(grid.device),
                                              near=model.config.near_plane, far=model.config.far_plane,
                                              with_rgb=True)
    return colour.clamp(0, 1).cpu().numpy().reshape(height, width, 3)
