"""Rays through chosen pixels of a posed one-camera ``Cameras``, from a table of camera-frame rays kept per lens.

nerfstudio's ``Cameras.generate_rays`` undistorts every requested ray with Newton iterations (radial / tangential
lenses, as COLMAP's OPENCV model gives) on every call. InstanceLoc asks for rays once per refinement level of every
query image, always through the same lens: on the COLMAP path that undistortion was about a third of the query time.
A ray's direction in the camera frame depends only on the lens (intrinsics, type, distortion), so nerfstudio
generates every pixel's ray once per lens at the identity pose, and each query rotates and places only the rows it
needs: the same bundle as ``generate_rays`` (origins, directions, pixel area, ``directions_norm``) up to float
rounding.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from jaxtyping import Int

from instance_nerfacto.core.camera import CameraModel

TABLE_MAX_PIXELS = 1 << 21
"""Lenses up to this many pixels (2 MP) get a table; a larger photo's rays are generated per query as before: its
table would hold ~40 bytes a pixel (0.5 GB at 12 MP) and cost more than the few rays a query of one photo reads."""


@lru_cache(maxsize=8)
def camera_frame_rays(lens: CameraModel, device: str):
    """Every pixel's ray of ``lens`` at the identity pose, an (H, W) nerfstudio ``RayBundle`` (cached per lens)."""
    from nerfstudio.cameras.cameras import Cameras

    identity = torch.eye(4, dtype=torch.float32)[None, :3, :4]
    cameras = Cameras(camera_to_worlds=identity, **lens.nerfstudio()).to(device)
    with torch.no_grad():
        return cameras.generate_rays(camera_indices=0, keep_shape=True)


def pixel_rays(camera, coords: Int[np.ndarray, "N 2"]):
    """The rays through pixel centres ``coords`` (row, col) of the one-camera ``Cameras`` ``camera``: a flat
    ``RayBundle`` of N rays, as ``camera.generate_rays(camera_indices=0, coords=coords + 0.5)`` gives them."""
    lens = CameraModel.from_cameras(camera, 0)
    coords = np.asarray(coords).reshape(-1, 2)
    if len(coords) and (coords.min() < 0 or coords[:, 0].max() >= lens.height or coords[:, 1].max() >= lens.width):
        raise ValueError(f"pixel coordinates outside the {lens.width}x{lens.height} image")
    if lens.width * lens.height > TABLE_MAX_PIXELS:
        pixels = torch.from_numpy(coords.astype(np.float32) + 0.5).to(camera.device)
        return camera.generate_rays(camera_indices=torch.zeros((len(coords), 1), dtype=torch.long,
                                                               device=camera.device), coords=pixels)
    table = camera_frame_rays(lens, str(camera.device))
    rows = torch.from_numpy(coords[:, 0].astype(np.int64)).to(camera.device)
    cols = torch.from_numpy(coords[:, 1].astype(np.int64)).to(camera.device)
    bundle = table[rows, cols]
    c2w = camera.camera_to_worlds[0].to(bundle.directions)
    bundle.directions = bundle.directions @ c2w[:3, :3].T
    bundle.origins = c2w[:3, 3].expand_as(bundle.directions).contiguous()
    return bundle
