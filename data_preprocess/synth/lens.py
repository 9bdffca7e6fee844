"""Lenses of the synthetic room: a photo through radial (OPENCV) or fisheye (OPENCV_FISHEYE) distortion, made by
rendering a wider pinhole view and warping it onto the photo's pixel grid (``cv2.remap``).

The photo keeps the pinhole twin's intrinsics (``fl_x fl_y cx cy w h``) and adds the distortion, so a room rendered
with ``--lens radial`` and with ``--lens pinhole`` differ only in how the same poses bend onto the pixels.
"""

from __future__ import annotations

import math
from typing import Dict, Tuple

import numpy as np

from instance_nerfacto.core.camera import CameraModel

LENSES: Dict[str, Tuple[bool, Tuple[float, ...]]] = {
    "pinhole": (False, (0.0,) * 6),
    # a phone/action-camera-like barrel distortion (k1 k2 k3 k4 p1 p2, nerfstudio's order)
    "radial": (False, (-0.15, 0.03, 0.0, 0.0, 0.0, 0.0)),
    "fisheye": (True, (0.05, 0.01, 0.0, 0.0, 0.0, 0.0)),
}


def photo_camera(lens: str, fx: float, fy: float, cx: float, cy: float, width: int, height: int) -> CameraModel:
    fisheye, distortion = LENSES[lens]
    return CameraModel(fx, fy, cx, cy, width, height, fisheye, distortion)


def render_canvas(photo: CameraModel) -> CameraModel:
    """The pinhole the renderer draws before the warp: the photo's focal length, wide enough to hold every photo
    pixel, with the renderer's own principal point (``Intrinsics``: half a pixel off the centre)."""
    vv, uu = np.mgrid[0:photo.height + 1:2, 0:photo.width + 1:2].astype(np.float64)
    x, y = photo.normalized(uu.ravel(), vv.ravel())
    half_w = int(math.ceil(np.abs(x).max() * photo.fx)) + 2
    half_h = int(math.ceil(np.abs(y).max() * photo.fy)) + 2
    return CameraModel(photo.fx, photo.fy, half_w + 0.5, half_h - 0.5, 2 * half_w, 2 * half_h)


def warp_maps(canvas: CameraModel, photo: CameraModel) -> Tuple[np.ndarray, np.ndarray]:
    """For every photo pixel, the canvas pixel index it shows (``cv2.remap`` maps)."""
    vv, uu = np.mgrid[0:photo.height, 0:photo.width].astype(np.float64)
    x, y = photo.normalized(uu + 0.5, vv + 0.5)
    return ((x * canvas.fx + canvas.cx - 0.5).astype(np.float32), (y * canvas.fy + canvas.cy - 0.5).astype(np.float32))


def warp_view(maps: Tuple[np.ndarray, np.ndarray], rgb: np.ndarray, depth: np.ndarray, gt: np.ndarray):
    """A rendered canvas view on the photo grid: colour interpolated, z-depth and ids nearest (z-depth is the same
    for a point in both cameras)."""
    import cv2

    map_x, map_y = maps
    rgb = cv2.remap(rgb, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    depth = cv2.remap(depth.astype(np.float64), map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    gt = cv2.remap(gt, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    return rgb, depth, gt
