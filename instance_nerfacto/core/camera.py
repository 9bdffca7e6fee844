"""The camera model: nerfstudio's camera types with their distortion, and every projection through them.

One owner for how a pixel and a 3D point relate. transforms.json's ``camera_model`` picks nerfstudio's camera type
(``OPENCV`` and the pinhole/radial COLMAP models: PERSPECTIVE; ``OPENCV_FISHEYE``: FISHEYE); the distortion is kept
in nerfstudio's order ``k1 k2 k3 k4 p1 p2``. The distortion itself is OpenCV's (``cv2.projectPoints``,
``cv2.undistortPointsIter``, ``cv2.fisheye.*``), which is the model nerfstudio's ray generation inverts:
PERSPECTIVE is OpenCV's radial-tangential model, FISHEYE is OpenCV's equidistant fisheye model. A PERSPECTIVE ``k4``
(nerfstudio's r^8 term, which OpenCV does not have) and every other camera type are refused with one line.

Pixel convention (nerfstudio's, COLMAP's): pixel (row, col) is the square whose centre is at (col + 0.5, row + 0.5);
``cx, cy`` are in those coordinates. Camera frame: OpenCV's (x right, y down, z forward).

Dense work that needs a pinhole image (optical flow, stereo, mask overlaps) runs on a :class:`Lens`: the photo's
pixel grid resampled once into a pinhole grid that covers all of it (``cv2.remap``), with the map back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Optional, Tuple

import numpy as np
from jaxtyping import Float

from instance_nerfacto.core.errors import fail

PERSPECTIVE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
"""transforms.json ``camera_model`` values nerfstudio maps to CameraType.PERSPECTIVE (radial-tangential)."""
FISHEYE_MODELS = ("OPENCV_FISHEYE",)
"""... and to CameraType.FISHEYE (equidistant with k1..k4)."""
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
"""nerfstudio's distortion_params order."""
GL_TO_CV = np.array([1.0, -1.0, -1.0])
"""Camera axes OpenGL (nerfstudio's poses: y up, looking along -z) <-> OpenCV (the camera model's: y down, z ahead)."""
OFF_IMAGE = -1e9
"""Pixel coordinate given to points that cannot be projected (behind the camera, beyond the lens): off every image."""
FISHEYE_CENTRE_NUDGE = 1e-3
"""Pixels by which a fisheye principal point on a pixel centre is moved: nerfstudio's fisheye rays are
``(x, y) * sin(theta) / theta``, NaN at theta = 0, and one NaN ray in a training batch turns the whole field NaN
(measured: a fisheye room with cx, cy on pixel centres trained to NaN parameters and rendered one label)."""
MAX_GROWTH = 2.0
"""A pinhole grid covering a photo grows by at most this factor per axis (very wide fisheye lenses lose the rim)."""


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics, size, type and distortion of one camera; hashable (a key of the cached resampling maps)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    fisheye: bool = False
    """nerfstudio's CameraType.FISHEYE (OpenCV's fisheye model); else PERSPECTIVE."""
    distortion: Tuple[float, ...] = (0.0,) * 6
    """k1 k2 k3 k4 p1 p2 (nerfstudio's order); PERSPECTIVE uses k1 k2 k3 p1 p2, FISHEYE k1..k4."""

    @classmethod
    def from_transforms(cls, frame: dict, meta: dict, where, intrinsic) -> "CameraModel":
        """From one frame of transforms.json and the file's shared entries, as nerfstudio's dataparser reads them
        (``intrinsic(key)`` returns a required intrinsic). InputError for a camera model the project cannot
        handle."""
        model = frame.get("camera_model", meta.get("camera_model", "OPENCV"))
        if model not in PERSPECTIVE_MODELS + FISHEYE_MODELS:
            fail(f"camera_model '{model}' is not supported (only pinhole, OPENCV and OPENCV_FISHEYE cameras)", where,
                 "re-run ns-process-data with --camera-type perspective or fisheye")
        params = frame.get("distortion_params", meta.get("distortion_params"))
        if params is None:
            params = [float(frame.get(k, meta.get(k, 0.0))) for k in DISTORTION_KEYS]
        params = tuple(float(p) for p in params)
        if len(params) != 6 or not np.all(np.isfinite(params)):
            fail(f"distortion of frame '{frame.get('file_path')}' is not 6 finite numbers", where,
                 "give k1 k2 k3 k4 p1 p2 as nerfstudio writes them")
        fisheye = model in FISHEYE_MODELS
        if fisheye and (params[4] or params[5]):
            fail("OPENCV_FISHEYE has no tangential terms, but p1/p2 are set", where, "remove p1 and p2")
        if not fisheye and params[3]:
            fail("k4 of a perspective camera (nerfstudio's r^8 term) has no OpenCV counterpart", where,
                 "calibrate with COLMAP's OPENCV model (k1 k2 p1 p2), or use OPENCV_FISHEYE")
        return cls(float(intrinsic("fl_x")), float(intrinsic("fl_y")), float(intrinsic("cx")), float(intrinsic("cy")),
                   int(intrinsic("w")), int(intrinsic("h")), fisheye, params)

    @property
    def K(self) -> Float[np.ndarray, "3 3"]:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])

    @property
    def distorted(self) -> bool:
        return self.fisheye or any(self.distortion)

    def _cv_coeffs(self) -> np.ndarray:
        k1, k2, k3, k4, p1, p2 = self.distortion
        return np.array([k1, k2, k3, k4] if self.fisheye else [k1, k2, p1, p2, k3], dtype=np.float64)

    def scaled(self, width: int, height: int) -> "CameraModel":
        """The same camera at another resolution (nerfstudio's ``rescale_output_resolution``)."""
        sx, sy = width / self.width, height / self.height
        return replace(self, fx=self.fx * sx, fy=self.fy * sy, cx=self.cx * sx, cy=self.cy * sy, width=width,
                       height=height)

    # ------------------------------------------------------------------------------------- points and pixels

    def normalized(self, u: np.ndarray, v: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Undistorted image-plane coordinates (x, y at z = 1) of pixel coordinates (u, v)."""
        u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
        if not self.distorted:
            return (u - self.cx) / self.fx, (v - self.cy) / self.fy
        import cv2

        pts = np.stack([u.ravel(), v.ravel()], -1)[:, None, :]
        if self.fisheye:
            criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 1e-9)
            out = cv2.fisheye.undistortPoints(pts, self.K, self._cv_coeffs(), criteria=criteria)
        else:
            criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 1e-9)
            out = cv2.undistortPointsIter(pts, self.K, self._cv_coeffs(), None, None, criteria)
        return out[:, 0, 0].reshape(u.shape), out[:, 0, 1].reshape(u.shape)

    def project(self, cam: Float[np.ndarray, "N 3"]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixel coordinates (u, v) and z-depth of camera-frame points; points behind the camera, and points outside
        the range where the distortion is one-to-one, get u = v = :data:`OFF_IMAGE`."""
        cam = np.asarray(cam, np.float64).reshape(-1, 3)
        if not self.distorted:
            return pinhole_project(self.K, cam)
        z = cam[:, 2]
        front = z > 1e-6
        safe = np.where(front, z, 1.0)
        x, y = cam[:, 0] / safe, cam[:, 1] / safe
        u = np.full(len(cam), OFF_IMAGE)
        v = np.full(len(cam), OFF_IMAGE)
        ok = front & (np.hypot(x, y) <= self.max_radius())
        if ok.any():
            import cv2

            pts = np.stack([x[ok], y[ok], np.ones(int(ok.sum()))], -1)
            zero = np.zeros(3)
            if self.fisheye:
                out, _ = cv2.fisheye.projectPoints(pts[:, None, :], zero, zero, self.K, self._cv_coeffs())
            else:
                out, _ = cv2.projectPoints(pts, zero, zero, self.K, self._cv_coeffs())
            u[ok], v[ok] = out[:, 0, 0], out[:, 0, 1]
        return u, v, z

    def backproject(self, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> Float[np.ndarray, "N 3"]:
        """Camera-frame points of pixel coordinates (u, v) at z-depth z."""
        x, y = self.normalized(u, v)
        z = np.asarray(z, np.float64)
        return np.stack([x * z, y * z, z], -1)

    def ray_stretch(self) -> Float[np.ndarray, "H W"]:
        """Length of each pixel-centre ray per unit of z-depth (distance along the ray = z-depth x stretch)."""
        x, y = self.pixel_grid_normalized()
        return np.sqrt(1.0 + x ** 2 + y ** 2)

    def pixel_grid_normalized(self) -> Tuple[np.ndarray, np.ndarray]:
        """:meth:`normalized` of every pixel centre, (H, W) each; cached per camera."""
        return _grid_normalized(self)

    def max_radius(self) -> float:
        """Largest undistorted radius the photo reaches, with a margin: beyond it the distortion polynomial may fold
        points back into the image."""
        return _max_radius(self)

    # ------------------------------------------------------------------------------------------- nerfstudio

    def nerfstudio(self) -> dict:
        """Keyword arguments of nerfstudio's ``Cameras`` for this camera (type and distortion included)."""
        import torch
        from nerfstudio.cameras.cameras import CameraType

        cx, cy = finite_fisheye_centre(self.cx, self.cy, self.fisheye)
        kwargs = dict(fx=float(self.fx), fy=float(self.fy), cx=cx, cy=cy,
                      width=int(self.width), height=int(self.height),
                      camera_type=CameraType.FISHEYE if self.fisheye else CameraType.PERSPECTIVE)
        if self.distorted:
            kwargs["distortion_params"] = torch.tensor(self.distortion, dtype=torch.float32)[None]
        return kwargs

    @classmethod
    def from_cameras(cls, cameras, index: int) -> "CameraModel":
        """The camera ``index`` of a nerfstudio ``Cameras`` (refused for types other than PERSPECTIVE/FISHEYE)."""
        from nerfstudio.cameras.cameras import CameraType

        kind = int(cameras.camera_type[index])
        if kind not in (CameraType.PERSPECTIVE.value, CameraType.FISHEYE.value):
            fail(f"camera type {CameraType(kind).name} is not supported", None,
                 "use perspective or fisheye cameras (ns-process-data --camera-type perspective|fisheye)")
        params = (0.0,) * 6 if cameras.distortion_params is None else \
            tuple(float(p) for p in cameras.distortion_params[index].tolist())
        return cls(float(cameras.fx[index]), float(cameras.fy[index]), float(cameras.cx[index]),
                   float(cameras.cy[index]), int(cameras.width[index]), int(cameras.height[index]),
                   kind == CameraType.FISHEYE.value, params)


def finite_fisheye_centre(cx: float, cy: float, fisheye: bool) -> Tuple[float, float]:
    """The principal point moved off pixel centres (by :data:`FISHEYE_CENTRE_NUDGE`) for a fisheye camera, so that no
    pixel's ray through nerfstudio's fisheye model is NaN."""
    def off_centre(c: float) -> float:
        return c + FISHEYE_CENTRE_NUDGE if abs((c - 0.5) - round(c - 0.5)) < 1e-6 else c

    return (off_centre(float(cx)), off_centre(float(cy))) if fisheye else (float(cx), float(cy))


def make_fisheye_rays_finite(cameras) -> int:
    """:func:`finite_fisheye_centre` in place on a nerfstudio ``Cameras`` (the dataparser's, before any ray is
    generated from it); returns how many cameras moved."""
    from nerfstudio.cameras.cameras import CameraType

    moved = 0
    for i in range(len(cameras)):
        if int(cameras.camera_type[i]) != CameraType.FISHEYE.value:
            continue
        cx, cy = float(cameras.cx[i]), float(cameras.cy[i])
        new = finite_fisheye_centre(cx, cy, True)
        if new != (cx, cy):
            cameras.cx[i], cameras.cy[i] = new
            moved += 1
    return moved


def pinhole_project(K: Float[np.ndarray, "*C 3 3"], cam: Float[np.ndarray, "*C P 3"]
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel coordinates (u, v) and z of camera-frame points through undistorted intrinsics, batched over cameras
    (``K[..., 3, 3]`` against ``cam[..., P, 3]``); points behind the camera get :data:`OFF_IMAGE`. The pinhole core
    of :meth:`CameraModel.project`, and what pinhole grids (:class:`Lens`) project with."""
    K = np.asarray(K, np.float64)
    z = cam[..., 2]
    front = z > 1e-6
    safe = np.where(front, z, 1.0)
    u = np.where(front, K[..., 0, 0, None] * cam[..., 0] / safe + K[..., 0, 2, None], OFF_IMAGE)
    v = np.where(front, K[..., 1, 1, None] * cam[..., 1] / safe + K[..., 1, 2, None], OFF_IMAGE)
    return u, v, z


def pinhole_backproject(K: Float[np.ndarray, "3 3"], u: np.ndarray, v: np.ndarray, z: np.ndarray
                        ) -> Float[np.ndarray, "N 3"]:
    """Camera-frame points of pixel coordinates (u, v) at z-depth z through undistorted intrinsics."""
    return np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=-1)


def midpoint_triangulation(centre_a: Float[np.ndarray, "3"], rays_a: Float[np.ndarray, "N 3"],
                           centre_b: Float[np.ndarray, "3"], rays_b: Float[np.ndarray, "N 3"]
                           ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Closest points of two rays ``centre + s * ray`` per row: (s, t, gap between the two points, cosine of the
    angle between the rays). With rays of unit camera-z (``world ray = R @ (x, y, 1)``), s and t are the z-depths
    in each camera. s = t = 0 where the rays are parallel."""
    w = np.asarray(centre_b, np.float64) - np.asarray(centre_a, np.float64)
    aa, ab, bb = (rays_a * rays_a).sum(1), (rays_a * rays_b).sum(1), (rays_b * rays_b).sum(1)
    det = aa * bb - ab * ab
    ok = det > 1e-12
    det = np.where(ok, det, 1.0)
    wa, wb = rays_a @ w, rays_b @ w
    s = np.where(ok, (wa * bb - ab * wb) / det, 0.0)
    t = np.where(ok, (ab * wa - aa * wb) / det, 0.0)
    gap = np.linalg.norm((centre_a + s[:, None] * rays_a) - (centre_b + t[:, None] * rays_b), axis=1)
    return s, t, gap, ab / np.sqrt(np.maximum(aa * bb, 1e-300))


def _border(width: int, height: int, step: int = 4) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates along the edge of the image (where undistorted coordinates reach their extremes)."""
    xs = np.r_[np.arange(0, width, step), width]
    ys = np.r_[np.arange(0, height, step), height]
    u = np.r_[xs, xs, np.zeros(len(ys)), np.full(len(ys), width)].astype(np.float64)
    v = np.r_[np.zeros(len(xs)), np.full(len(xs), height), ys, ys].astype(np.float64)
    return u, v


@lru_cache(maxsize=64)
def _max_radius(camera: CameraModel) -> float:
    x, y = camera.normalized(*_border(camera.width, camera.height))
    return float(np.hypot(x, y).max() * 1.25)


@lru_cache(maxsize=16)
def _grid_normalized(camera: CameraModel) -> Tuple[np.ndarray, np.ndarray]:
    vv, uu = np.mgrid[0:camera.height, 0:camera.width].astype(np.float64)
    return camera.normalized(uu + 0.5, vv + 0.5)


# ------------------------------------------------------------------------------------------------------ lens


@dataclass(frozen=True)
class Lens:
    """A photo's pixel grid and the pinhole grid that covers it, for dense work that needs a pinhole image.

    The pinhole keeps the photo's focal length (scaled to ``scale``) and grows to hold every photo pixel, up to
    :data:`MAX_GROWTH` per axis. Resampling runs through ``cv2.remap`` on maps cached per lens.
    """

    photo: CameraModel
    pinhole: CameraModel

    @classmethod
    def covering(cls, photo: CameraModel, scale: float = 1.0) -> "Lens":
        x, y = photo.normalized(*_border(photo.width, photo.height, 1))
        fx, fy = photo.fx * scale, photo.fy * scale
        half_w, half_h = 0.5 * photo.width * scale * MAX_GROWTH, 0.5 * photo.height * scale * MAX_GROWTH
        centre_x, centre_y = photo.cx * scale, photo.cy * scale
        left, right = max(-x.min() * fx, 0.0), max(x.max() * fx, 0.0)
        top, bottom = max(-y.min() * fy, 0.0), max(y.max() * fy, 0.0)
        # growth capped around the principal point: the rim of a very wide lens is left out, not the centre
        left, right = min(left, centre_x + half_w), min(right, photo.width * scale - centre_x + half_w)
        top, bottom = min(top, centre_y + half_h), min(bottom, photo.height * scale - centre_y + half_h)
        width, height = int(np.ceil(left + right)), int(np.ceil(top + bottom))
        return cls(photo, CameraModel(fx, fy, left, top, width, height))

    def for_size(self, width: int, height: int) -> "Lens":
        """The same pinhole grid, fed from a copy of the photo at another resolution (full-size files of a
        downscaled photo, a reduced decode)."""
        if (width, height) == (self.photo.width, self.photo.height):
            return self
        return Lens(self.photo.scaled(width, height), self.pinhole)

    @property
    def K(self) -> Float[np.ndarray, "3 3"]:
        """Intrinsics of the pinhole grid for integer pixel indices (OpenCV's convention: centre at the index)."""
        k = self.pinhole.K
        k[0, 2] -= 0.5
        k[1, 2] -= 0.5
        return k

    def to_pinhole(self, image: np.ndarray, nearest: bool, fill: float = 0) -> np.ndarray:
        """A photo-grid array resampled onto the pinhole grid (``fill`` outside the photo); ``nearest`` for labels
        and depth (z-depth is the same for a point in both grids), linear for images."""
        import cv2

        if image.shape[:2] != (self.photo.height, self.photo.width):
            raise ValueError(f"array of shape {image.shape} is not on the {self.photo.width}x{self.photo.height} "
                             "photo grid")
        shrink = self.pinhole.fx / self.photo.fx
        if not nearest and shrink < 0.6:  # area-average first: sampling a big photo's pixels would alias
            width, height = max(1, round(self.photo.width * shrink)), max(1, round(self.photo.height * shrink))
            small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            return self.for_size(width, height).to_pinhole(small, nearest, fill)
        map_x, map_y = _pinhole_maps(self)
        dtype = image.dtype
        # cv2.remap takes 8/16-bit and float arrays: bool via uint8, wider integers via float64 (exact below 2^53)
        src = image.astype(np.uint8) if dtype.kind == "b" else \
            image.astype(np.float64) if dtype.kind in "iu" and dtype.itemsize >= 4 else image
        out = cv2.remap(src, map_x, map_y, cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
        return out.astype(dtype)

    def valid(self) -> np.ndarray:
        """Pinhole pixels that see the photo (bool, H x W)."""
        map_x, map_y = _pinhole_maps(self)
        return (map_x >= -0.5) & (map_x < self.photo.width - 0.5) & (map_y >= -0.5) & (map_y < self.photo.height - 0.5)


@lru_cache(maxsize=8)
def _pinhole_maps(lens: Lens) -> Tuple[np.ndarray, np.ndarray]:
    """For every pinhole pixel, the photo pixel index it samples (float32 maps for ``cv2.remap``)."""
    x, y = _grid_normalized(lens.pinhole)
    u, v, _ = lens.photo.project(np.stack([x.ravel(), y.ravel(), np.ones(x.size)], -1))
    u = np.where(u > OFF_IMAGE, u - 0.5, -1e6).reshape(x.shape).astype(np.float32)
    v = np.where(v > OFF_IMAGE, v - 0.5, -1e6).reshape(x.shape).astype(np.float32)
    return u, v


def working_lens(photo: CameraModel, max_size: int) -> Optional[Lens]:
    """The pinhole grid dense work runs on for a photo: None for a pinhole photo whose longest side is at most
    ``max_size`` (its own grid); otherwise a pinhole covering it, scaled so that the photo's longest side maps to at
    most ``max_size`` pixels."""
    scale = min(1.0, max_size / max(photo.width, photo.height))
    if not photo.distorted and scale == 1.0:
        return None
    return Lens.covering(photo, scale)
