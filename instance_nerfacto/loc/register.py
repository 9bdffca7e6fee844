"""Registration of photos without a pose against a trained map: SIFT matching to lifted keypoints, PnP, guided matching.

hloc's recipe with weight-free parts only. Every training image of the map is described once (:func:`map_features`):
OpenCV SIFT keypoints with RootSIFT descriptors, and the 3D point of each keypoint in the training data's
transforms.json frame, lifted by a depth of that image (its depth map when the map has them,
otherwise the surface of the trained density, see :mod:`instance_nerfacto.loc.register_map`). A new photo is then
registered (:func:`register_photo`; the matching is in :mod:`instance_nerfacto.loc.register_match`):

1. **matching against the whole map**: each photo descriptor's nearest map descriptors (FLANN), kept by a ratio test
   against the nearest one on *another* 3D point (a point's copies in the training images that saw it are no rivals);
   when these give fewer than ``min_seed_inliers`` inliers, the ``top_k`` training images holding the most nearest
   neighbours are matched one by one instead (ratio test, one fundamental matrix per image);
2. **pose**: ``cv2.solvePnPRansac`` on the 2D-3D correspondences, then SQPnP and Levenberg-Marquardt refinement on
   the inliers (``cv2.solvePnPRefineLM``);
3. **guided matching**: at that pose every photo keypoint is matched again among the map points projected within
   ``guided_px`` of it, and the pose solved again on these matches (LM from the pose, or RANSAC when that explains
   more of them), kept when that explains more keypoints; coarse to fine (32, 8, 2 px), so a first pose several
   degrees off is still corrected (:func:`guided_refinement`). A close-up from another height shares only a handful of
   unambiguous descriptors with the whole map (6-12 inliers on the demo room's 0.9 m views), but most of its
   keypoints find their point among the few projected near them;
4. **acceptance**: a pose is accepted only with at least ``min_inliers`` inliers that are at least ``min_inlier_ratio``
   of the correspondences, a small median reprojection error, its camera within the training cameras' reach, and
   (checked by the caller, who holds the trained field) the map's colour rendered at the pose looking like the photo
   (:func:`appearance_agreement`). A photo of another room still yields chance correspondences, and RANSAC always
   finds *some* pose: these gates are what keeps such a pose from being used. Guided matching at such a pose finds
   chance matches by the dozen wherever the rooms share textures (the demo rooms do: up to 235 inliers), so for
   them the inlier gates are no longer what refuses it; the rendered colour is.

With a learned pair matcher (``matcher`` 'loftr', :mod:`instance_nerfacto.loc.register_pairs`), steps 1-3 are
replaced: the photo is matched with each of the ``pair_images`` training images retrieved by SIFT votes, the matches
are lifted by the map's depth and pooled, and the pose is PnP and refinement on them; the acceptance gates are the same.

Poses are OpenGL camera-to-world matrices (nerfstudio's convention, as in transforms.json); OpenCV's PnP works in
OpenCV's (x right, y down, z forward), converted with :data:`OPENGL_TO_OPENCV` at the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np
from jaxtyping import Float, Int, UInt8

from instance_nerfacto.core.camera import GL_TO_CV, CameraModel
from instance_nerfacto.core.dataset import OPENGL_TO_OPENCV
from instance_nerfacto.loc.register_features import ImageFeatures, MapFeatures, RegisterParams


@dataclass
class Registration:
    """The outcome of registering one photo."""

    registered: bool
    c2w: Optional[Float[np.ndarray, "4 4"]]
    """OpenGL camera-to-world in the transforms.json frame (None when not registered)."""
    inliers: int
    correspondences: int
    error_px: float
    """Median reprojection error of the inliers after refinement (pixels; inf when no pose)."""
    retrieved: List[int]
    """Indices of the training images that hold the most inliers (at most ``top_k``, most first)."""
    reason: str = ""
    """Why the photo was refused (empty when registered)."""
    seed_inliers: int = 0
    """Inliers of the first pose, from the pose-free matches against the whole map (before guided matching)."""


def to_gray(rgb: UInt8[np.ndarray, "H W 3"]) -> UInt8[np.ndarray, "H W"]:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def sift_features(gray: UInt8[np.ndarray, "H W"], params: "RegisterParams") -> ImageFeatures:
    """OpenCV SIFT keypoints with RootSIFT descriptors (L1-normalised, square-rooted: unit length, and compared by
    Hellinger distance, which matches more reliably than SIFT's L2)."""
    import cv2

    sift = cv2.SIFT_create(nfeatures=params.max_features, contrastThreshold=params.contrast_threshold)
    keypoints, descriptors = sift.detectAndCompute(gray, None)
    if descriptors is None or not keypoints:
        return ImageFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
    xy = np.array([kp.pt for kp in keypoints], dtype=np.float32)
    root = np.sqrt(descriptors / np.maximum(descriptors.sum(axis=1, keepdims=True), 1e-6))
    return ImageFeatures(xy, root.astype(np.float32))


OCCLUSION_EDGE_SPREAD = 0.05
"""A keypoint whose 3x3 neighbourhood spans more than this fraction in depth sits on an occlusion edge."""


def lift_keypoints(keypoints: Float[np.ndarray, "N 2"], depth: Float[np.ndarray, "H W"], camera: CameraModel,
                   c2w_gl: Float[np.ndarray, "4 4"]) -> Float[np.ndarray, "N 3"]:
    """World points of keypoints at a z-depth map (0 = no reading -> NaN). The depth of the pixel under each keypoint
    is used; a keypoint whose 3x3 neighbourhood spans more than 5% in depth sits on an occlusion edge, where a pixel's
    error lifts it onto the wrong surface, so it is dropped (NaN) too. The camera in nerfstudio's convention (pixel
    (row, col) looks through (col + 0.5, row + 0.5), bent by its lens); keypoints in OpenCV's (centres at integers)."""
    height, width = depth.shape
    cols = np.clip(np.round(keypoints[:, 0]).astype(np.int64), 0, width - 1)
    rows = np.clip(np.round(keypoints[:, 1]).astype(np.int64), 0, height - 1)
    padded = np.pad(depth, 1, mode="edge")
    window = np.stack([padded[rows + dy, cols + dx] for dy in range(3) for dx in range(3)], axis=1)
    z = depth[rows, cols].astype(np.float64)
    valid = (window.min(axis=1) > 0) & (window.max(axis=1) <= (1.0 + OCCLUSION_EDGE_SPREAD) * window.min(axis=1))
    cam = camera.backproject(keypoints[:, 0] + 0.5, keypoints[:, 1] + 0.5, z) * GL_TO_CV
    c2w = np.asarray(c2w_gl, dtype=np.float64)
    world = cam @ c2w[:3, :3].T + c2w[:3, 3]
    world[~valid] = np.nan
    return world.astype(np.float32)


def camera_matrix(fx: float, fy: float, cx: float, cy: float) -> Float[np.ndarray, "3 3"]:
    """OpenCV camera matrix for nerfstudio intrinsics: OpenCV puts pixel centres at integers, nerfstudio at +0.5."""
    return np.array([[fx, 0.0, cx - 0.5], [0.0, fy, cy - 0.5], [0.0, 0.0, 1.0]])


def pose_to_c2w(rvec: np.ndarray, tvec: np.ndarray) -> Float[np.ndarray, "4 4"]:
    """OpenCV world-to-camera (rvec, tvec) -> OpenGL camera-to-world."""
    import cv2

    w2c = np.eye(4)
    w2c[:3, :3] = cv2.Rodrigues(np.asarray(rvec, np.float64))[0]
    w2c[:3, 3] = np.asarray(tvec, np.float64).reshape(3)
    return np.linalg.inv(w2c) @ OPENGL_TO_OPENCV


def solve_pose(points: Float[np.ndarray, "P 3"], pixels: Float[np.ndarray, "P 2"], K: Float[np.ndarray, "3 3"],
               params: RegisterParams, seed: int = 0
               ) -> Tuple[Optional[Float[np.ndarray, "4 4"]], Int[np.ndarray, "I"], float]:
    """PnP with RANSAC then LM refinement on the inliers: (OpenGL camera-to-world or None, inlier indices, median
    reprojection error of the inliers in pixels)."""
    import cv2

    if len(points) < 6:
        return None, np.zeros(0, np.int64), float("inf")
    cv2.setRNGSeed(seed)  # RANSAC draws from OpenCV's global generator: the same photo gives the same pose
    objects = np.ascontiguousarray(points, np.float64)
    images = np.ascontiguousarray(pixels, np.float64)
    ok, rvec, tvec, inliers = cv2.solvePnPRansac(objects, images, K, None, iterationsCount=params.ransac_iterations,
                                                 reprojectionError=params.ransac_px, confidence=0.9999,
                                                 flags=cv2.SOLVEPNP_EPNP)
    if not ok or inliers is None or len(inliers) < 6:
        return None, np.zeros(0, np.int64), float("inf")
    inliers = inliers.reshape(-1)
    # RANSAC's inlier test ignores which side of the camera a point is on, so its pose can be a mirror image that
    # puts the scene behind the camera (seen on the demo room: 441 inliers, every point behind, LM then diverged):
    # solve again on the inliers with SQPnP, which finds the global minimum of the reprojection error
    try:
        ok, rvec_sq, tvec_sq = cv2.solvePnP(objects[inliers], images[inliers], K, None, flags=cv2.SOLVEPNP_SQPNP)
    except cv2.error:  # SQPnP refuses inliers that (nearly) coincide in 3D: no pose can rest on them
        return None, np.zeros(0, np.int64), float("inf")
    if ok:
        rvec, tvec = rvec_sq, tvec_sq
    return refine_pose(objects, images, K, rvec, tvec, inliers, params)


def refine_pose(objects: Float[np.ndarray, "P 3"], images: Float[np.ndarray, "P 2"], K: Float[np.ndarray, "3 3"],
                rvec: np.ndarray, tvec: np.ndarray, inliers: Int[np.ndarray, "I"], params: RegisterParams
                ) -> Tuple[Optional[Float[np.ndarray, "4 4"]], Int[np.ndarray, "I"], float]:
    """LM refinement of an OpenCV pose (``rvec``, ``tvec``) on the ``inliers``, as :func:`solve_pose` returns it."""
    import cv2

    # refine on RANSAC's inliers, then once more on the correspondences the refined pose explains to within
    # ``refine_px``: RANSAC's loose threshold admits near-misses that pull the pose by a degree on these rooms
    for threshold in (params.ransac_px, params.refine_px):
        rvec, tvec = cv2.solvePnPRefineLM(objects[inliers], images[inliers], K, None, rvec, tvec)
        projected, _ = cv2.projectPoints(objects, rvec, tvec, K, None)
        errors = np.linalg.norm(projected.reshape(-1, 2) - images, axis=1)
        cam_z = (objects @ cv2.Rodrigues(rvec)[0].T + tvec.reshape(1, 3))[:, 2]
        inliers = np.nonzero((errors < threshold) & (cam_z > 0))[0]
        if len(inliers) < 6:
            return None, inliers, float("inf")
    return pose_to_c2w(rvec, tvec), inliers, float(np.median(errors[inliers]))


def refine_guided(points: Float[np.ndarray, "P 3"], pixels: Float[np.ndarray, "P 2"], K: Float[np.ndarray, "3 3"],
                  c2w: Float[np.ndarray, "4 4"], params: RegisterParams
                  ) -> Tuple[Optional[Float[np.ndarray, "4 4"]], Int[np.ndarray, "I"], float]:
    """:func:`refine_pose` from the pose that guided the matches (no RANSAC: every guided match lies near its point
    at that pose already), on the matches it explains to within ``ransac_px``."""
    import cv2

    if len(points) < 6:
        return None, np.zeros(0, np.int64), float("inf")
    w2c = np.linalg.inv(np.asarray(c2w, np.float64) @ OPENGL_TO_OPENCV)
    rvec, tvec = cv2.Rodrigues(w2c[:3, :3])[0], w2c[:3, 3].reshape(3, 1).copy()
    objects = np.ascontiguousarray(points, np.float64)
    images = np.ascontiguousarray(pixels, np.float64)
    projected, _ = cv2.projectPoints(objects, rvec, tvec, K, None)
    inliers = np.nonzero(np.linalg.norm(projected.reshape(-1, 2) - images, axis=1) < params.ransac_px)[0]
    if len(inliers) < 6:
        return None, inliers, float("inf")
    return refine_pose(objects, images, K, rvec, tvec, inliers, params)


def undistorted_keypoints(keypoints: Float[np.ndarray, "N 2"], camera: CameraModel) -> Float[np.ndarray, "N 2"]:
    """Keypoints (OpenCV pixel coordinates) where an ideal pinhole with the camera's intrinsics would see them: PnP
    then needs no lens model (OpenCV's PnP has none for fisheyes)."""
    if not camera.distorted:
        return keypoints
    x, y = camera.normalized(keypoints[:, 0] + 0.5, keypoints[:, 1] + 0.5)
    return np.stack([camera.fx * x + camera.cx - 0.5, camera.fy * y + camera.cy - 0.5], axis=1)


def most_common(values: Int[np.ndarray, "V"], size: int, count: int) -> Int[np.ndarray, "C"]:
    """The at most ``count`` most frequent of ``values`` (in 0..size-1), most frequent first, ties by value."""
    votes = np.bincount(values, minlength=size)
    order = np.lexsort((np.arange(size), -votes))[:count]
    return order[votes[order] > 0]


def guided_refinement(pixels: Float[np.ndarray, "N 2"], descriptors: Float[np.ndarray, "N 128"], world: MapFeatures,
                      K: Float[np.ndarray, "3 3"], size: Tuple[int, int], c2w: Float[np.ndarray, "4 4"],
                      inliers: Int[np.ndarray, "I"], error: float, query: Int[np.ndarray, "P"],
                      train: Int[np.ndarray, "P"], params: RegisterParams
                      ) -> Tuple[Float[np.ndarray, "4 4"], Int[np.ndarray, "I"], float, Int[np.ndarray, "Q"],
                                 Int[np.ndarray, "Q"]]:
    """Rounds of guided matching from a first pose (``inliers`` of the correspondences ``query`` -> ``train``), one
    per radius of ``params.guided_px``: each round's pose is kept when it explains more keypoints than the pose so
    far. Returns (pose, inliers, error, query, train) of the pose kept.

    A round only finds the keypoints that the current pose projects within its radius of their point, so the first
    radius bounds how far off a first pose may be and still be corrected: a first pose from 8-11 inliers was up to 6.6
    degrees off on the demo rooms' close-ups (32 px at their focal length of 277 px), and rounds starting at 8 px
    refined such a pose in place. A wide round that explains no more keypoints (its ratio test sees many more rivals)
    does not end the refinement: the narrower ones after it still run from the pose so far."""
    from instance_nerfacto.loc.register_match import guided_matches

    points = world.points()
    for radius in params.guided_px:
        # covisibility, as hloc clusters retrieved images: the training images that hold the inliers so far
        covisible = most_common(world.owner[train[inliers]], len(world.images), params.guided_images)
        q, t = guided_matches(pixels, descriptors, world, K, c2w, size, radius, covisible, params)
        # LM from the current pose can stay in its basin (a close-up of the demo room: 1.1 degrees off with 134
        # inliers where the true pose explains 165); RANSAC on the same matches may leave it: the one with more
        c2w_g, inliers_g, error_g = refine_guided(points[t], pixels[q], K, c2w, params)
        c2w_r, inliers_r, error_r = solve_pose(points[t], pixels[q], K, params)
        if c2w_r is not None and len(inliers_r) > len(inliers_g):
            c2w_g, inliers_g, error_g = c2w_r, inliers_r, error_r
        if c2w_g is not None and len(inliers_g) > len(inliers):
            c2w, inliers, error, query, train = c2w_g, inliers_g, error_g, q, t
    return c2w, inliers, error, query, train


PairMatcher = Callable[[UInt8[np.ndarray, "H W"], Int[np.ndarray, "K"]],
                       Tuple[Float[np.ndarray, "P 2"], Float[np.ndarray, "P 3"], Int[np.ndarray, "P"]]]
"""A learned pair matcher (:class:`instance_nerfacto.loc.register_pairs.LoFTRPairs`): (photo's gray image, training
images to match it with) -> (photo pixels, their world points, the training image of each)."""


def register_photo(rgb: UInt8[np.ndarray, "H W 3"], camera: CameraModel, world: MapFeatures,
                   params: RegisterParams, pairs: Optional[PairMatcher] = None) -> Registration:
    """Register one photo (its camera model in nerfstudio's convention) against the map's training images: a first
    pose from matches against the whole map, then rounds of guided matching at that pose, each kept when it explains
    more keypoints. With a learned pair matcher ``pairs``, the pose comes from its matches with the retrieved training
    images instead (PnP and refinement on them, hloc's recipe; no SIFT matching but the retrieval's). Either pose
    passes the same acceptance gates."""
    from instance_nerfacto.loc.register_match import retrieve

    gray = to_gray(rgb)
    photo = sift_features(gray, params)
    K = camera_matrix(camera.fx, camera.fy, camera.cx, camera.cy)
    if pairs is not None:
        photo_px, points, owners = pairs(gray, retrieve(photo.descriptors, world, params.pair_images))
        c2w, inliers, error = solve_pose(points, undistorted_keypoints(photo_px, camera), K, params)
        seed_inliers = len(inliers)
    else:
        c2w, inliers, error, owners, seed_inliers = sift_pose(photo, camera, world, K, (rgb.shape[1], rgb.shape[0]),
                                                              params)
    seen_by = [int(i) for i in most_common(owners[inliers], len(world.images), params.top_k)]
    reason = acceptance_failure(c2w, len(inliers), len(owners), error, world.camera_centres, params)
    return Registration(not reason, c2w if not reason else None, len(inliers), len(owners), error, seen_by, reason,
                        seed_inliers)


def sift_pose(photo: ImageFeatures, camera: CameraModel, world: MapFeatures, K: Float[np.ndarray, "3 3"],
              size: Tuple[int, int], params: RegisterParams
              ) -> Tuple[Optional[Float[np.ndarray, "4 4"]], Int[np.ndarray, "I"], float, Int[np.ndarray, "P"], int]:
    """Steps 1-3 of the module docstring: (pose or None, inlier indices, error, the training image of each
    correspondence, inliers of the first pose)."""
    from instance_nerfacto.loc.register_match import map_matches, retrieval_matches

    pixels = undistorted_keypoints(photo.keypoints, camera)
    points = world.points()
    query, train = map_matches(photo.descriptors, world, params)
    c2w, inliers, error = solve_pose(points[train], pixels[query], K, params)
    if len(inliers) < params.min_seed_inliers:  # too few: the retrieved training images' matches may do better
        q, t = retrieval_matches(photo, world, params)
        c2w_r, inliers_r, error_r = solve_pose(points[t], pixels[q], K, params)
        if len(inliers_r) > len(inliers):
            c2w, inliers, error, query, train = c2w_r, inliers_r, error_r, q, t
    seed_inliers = len(inliers)
    if c2w is not None and len(inliers) >= params.min_seed_inliers:
        c2w, inliers, error, query, train = guided_refinement(pixels, photo.descriptors, world, K, size, c2w,
                                                              inliers, error, query, train, params)
    return c2w, inliers, error, world.owner[train], seed_inliers


def acceptance_failure(c2w: Optional[np.ndarray], inliers: int, correspondences: int, error_px: float,
                       camera_centres: Float[np.ndarray, "M 3"], params: RegisterParams) -> str:
    """Why a pose is refused, or '' when it is accepted (the gates of the module docstring, in order)."""
    if c2w is None:
        return f"no pose found ({correspondences} correspondences)"
    if inliers < params.min_inliers:
        return f"too few inliers ({inliers} of {correspondences}, need {params.min_inliers})"
    if inliers < params.min_inlier_ratio * correspondences:
        return (f"too few inliers for the correspondences ({inliers} of {correspondences}, need "
                f"{params.min_inlier_ratio:.0%})")
    if error_px > params.max_error_px:
        return f"reprojection error too large ({error_px:.2f} px, at most {params.max_error_px})"
    low, high = camera_centres.min(axis=0), camera_centres.max(axis=0)
    reach = params.max_distance * max(float(np.linalg.norm(high - low)), 1e-6)
    outside = np.maximum(np.maximum(low - c2w[:3, 3], c2w[:3, 3] - high), 0.0)
    if float(np.linalg.norm(outside)) > reach:
        return "camera far outside the mapped cameras' area"
    return ""


def map_features(rgbs: Callable[[int], UInt8[np.ndarray, "H W 3"]], depths: Callable[[int, np.ndarray], np.ndarray],
                 c2ws: List[np.ndarray], params: RegisterParams) -> MapFeatures:
    """Features of every training image: ``rgbs(i)`` its colour, ``depths(i, keypoints)`` the world points of its
    keypoints (NaN = unknown) and ``c2ws[i]`` its pose."""
    images = []
    for i in range(len(c2ws)):
        features = sift_features(to_gray(rgbs(i)), params)
        features.points = depths(i, features.keypoints)
        images.append(features)
    centres = np.array([np.asarray(c)[:3, 3] for c in c2ws], dtype=np.float64).reshape(-1, 3)
    descriptors = np.concatenate([f.descriptors for f in images]) if images else np.zeros((0, 128), np.float32)
    owner = np.concatenate([np.full(len(f.descriptors), i, np.int64) for i, f in enumerate(images)]) if images \
        else np.zeros(0, np.int64)
    return MapFeatures(images, descriptors, owner, centres, read_rgb=rgbs, lift=depths)


def rotation_error_deg(c2w_a: np.ndarray, c2w_b: np.ndarray) -> float:
    """Angle of the relative rotation between two camera-to-world poses (degrees)."""
    relative = np.asarray(c2w_a)[:3, :3].T @ np.asarray(c2w_b)[:3, :3]
    return float(np.degrees(np.arccos(np.clip((np.trace(relative) - 1.0) / 2.0, -1.0, 1.0))))


def appearance_agreement(photo_rgb: UInt8[np.ndarray, "H W 3"], rendered: Float[np.ndarray, "h w 3"]) -> float:
    """Normalised cross-correlation (-1..1) of a photo shrunk to the rendered view's size and the map's colour
    rendered at the photo's registered pose: each colour channel zero-mean, so exposure and white balance do not
    count. A pose in the right place sees the same layout of light and dark; a photo of another room does not."""
    import cv2

    height, width = rendered.shape[:2]
    small = cv2.resize(np.ascontiguousarray(photo_rgb), (width, height), interpolation=cv2.INTER_AREA)
    a = small.astype(np.float64) / 255.0
    b = np.asarray(rendered, dtype=np.float64)
    a = a - a.mean(axis=(0, 1), keepdims=True)
    b = b - b.mean(axis=(0, 1), keepdims=True)
    return float((a * b).sum() / max(np.sqrt((a * a).sum() * (b * b).sum()), 1e-12))
