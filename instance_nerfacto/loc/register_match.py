"""Matching a photo's SIFT keypoints to the map's lifted keypoints (2D-3D correspondences) for registration.

Three sources of correspondences (:func:`instance_nerfacto.loc.register.register_photo` uses them in this order):

- :func:`map_matches`: against the whole map at once, pose-free, with a ratio test that lets a 3D point's copies in
  several training images stop competing with each other; the first pose comes from these;
- :func:`retrieval_matches`: against the ``top_k`` training images that hold the most nearest neighbours of the
  photo's descriptors, one fundamental matrix per image (the first pose when the whole map yields too few);
- :func:`guided_matches`: at a pose, each keypoint against the map points projected near it: a close-up, whose
  descriptors changed with scale and viewpoint, finds many more of its points this way than among the whole map's.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
from jaxtyping import Float, Int

from instance_nerfacto.core.dataset import OPENGL_TO_OPENCV
from instance_nerfacto.loc.register_features import ImageFeatures, MapFeatures, RegisterParams


def retrieve(photo: Float[np.ndarray, "N 128"], world: "MapFeatures", top_k: int) -> Int[np.ndarray, "K"]:
    """The ``top_k`` training images that hold the most nearest neighbours of the photo's descriptors (each photo
    descriptor votes for the image of its nearest training descriptor), most votes first; ties by index. Pose-free
    and weight-free; on the demo room's held-out views it found about twice the correct matches of a small-image
    descriptor, whose coarse colours confuse a close-up with a wide view of the same furniture. The neighbours come
    from a FLANN k-d tree over the map's descriptors (built once per map): 5x faster than exact search over 40k
    descriptors, and 8 of the exact top 10 images."""
    if len(photo) == 0 or len(world.descriptors) == 0:
        return np.zeros(0, np.int64)
    nearest, _ = world.descriptor_index().knnSearch(np.ascontiguousarray(photo, np.float32), 1, params=dict(checks=64))
    votes = np.bincount(world.owner[nearest[:, 0]], minlength=len(world.images))
    return np.lexsort((np.arange(len(votes)), -votes))[:top_k]


def ratio_matches(
    query: Float[np.ndarray, "N 128"], train: Float[np.ndarray, "M 128"], ratio: float
) -> Tuple[Int[np.ndarray, "P"], Int[np.ndarray, "P"]]:
    """(query index, train index) of the matches that pass Lowe's ratio test."""
    import cv2

    if len(query) == 0 or len(train) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(query, train, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < ratio * p[1].distance]
    return (np.array([m.queryIdx for m in good], np.int64), np.array([m.trainIdx for m in good], np.int64))


def epipolar_inliers(
    a: Float[np.ndarray, "P 2"], b: Float[np.ndarray, "P 2"], threshold_px: float
) -> Int[np.ndarray, "I"]:
    """Indices of the matches between two images that one fundamental matrix explains (RANSAC): most wrong matches
    of repetitive texture, and nearly all matches with a photo of another room, share no such geometry."""
    import cv2

    if len(a) < 15:
        return np.zeros(0, np.int64)
    cv2.setRNGSeed(0)
    _, mask = cv2.findFundamentalMat(
        np.asarray(a, np.float64), np.asarray(b, np.float64), cv2.FM_RANSAC, threshold_px, 0.999
    )
    if mask is None:
        return np.zeros(0, np.int64)
    return np.nonzero(mask.reshape(-1))[0]


def retrieval_matches(
    photo: ImageFeatures, world: MapFeatures, params: RegisterParams
) -> Tuple[Int[np.ndarray, "P"], Int[np.ndarray, "P"]]:
    """(photo keypoint, map descriptor) matches with the ``top_k`` retrieved training images (:func:`retrieve`):
    Lowe's ratio test per image, kept where one fundamental matrix explains them, pooled."""
    offsets = np.concatenate([[0], np.cumsum([len(f.descriptors) for f in world.images])])
    query, train = [], []
    for index in retrieve(photo.descriptors, world, params.top_k):
        image = world.images[int(index)]
        q, t = ratio_matches(photo.descriptors, image.descriptors, params.ratio)
        keep = epipolar_inliers(photo.keypoints[q], image.keypoints[t], params.epipolar_px)
        known = np.all(np.isfinite(image.points[t[keep]]), axis=1)
        query.append(q[keep][known])
        train.append(t[keep][known] + offsets[int(index)])
    if not query:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(query).astype(np.int64), np.concatenate(train).astype(np.int64)


def best_on_distinct_points(
    groups: Int[np.ndarray, "C"],
    candidates: Int[np.ndarray, "C"],
    distances: Float[np.ndarray, "C"],
    points: Float[np.ndarray, "D 3"],
    distinct: float,
) -> Tuple[Int[np.ndarray, "G"], Int[np.ndarray, "G"], Float[np.ndarray, "G"], Float[np.ndarray, "G"]]:
    """Per group of candidate map descriptors (one group per photo descriptor): (group, best candidate, its
    distance, the distance of the best candidate on another 3D point, inf if none). A keypoint of the room is seen,
    and described, in several training images, so its copies are no rivals for Lowe's ratio test; a map point
    farther than ``distinct`` from the best one is."""
    order = np.lexsort((distances, groups))
    group, candidate, distance = groups[order], candidates[order], distances[order]
    first = np.concatenate([[True], group[1:] != group[:-1]]) if len(group) else np.zeros(0, bool)
    starts = np.nonzero(first)[0]
    owner = np.cumsum(first) - 1
    best = candidate[starts]
    apart = np.linalg.norm(points[candidate] - points[best[owner]], axis=1) > distinct
    rival = np.full(len(starts), np.inf)
    np.minimum.at(rival, owner[apart], distance[apart])
    return group[starts], best, distance[starts], rival


def map_matches(
    descriptors: Float[np.ndarray, "N 128"], world: MapFeatures, params: RegisterParams
) -> Tuple[Int[np.ndarray, "P"], Int[np.ndarray, "P"]]:
    """(photo keypoint, map descriptor) matches against the whole map at once, pose-free: each photo descriptor's
    ``map_neighbours`` nearest map descriptors with a 3D point (FLANN), the best kept when it passes the ratio test
    against the best on another 3D point (:func:`best_on_distinct_points`). Per training image, a close-up shares
    too few matches for a fundamental matrix to sort them; against the whole map, a keypoint's copies in the
    training images that saw it stop competing with each other."""
    points = world.points()
    if len(descriptors) == 0 or len(points) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    k = min(params.map_neighbours, len(points))
    nearest, squared = world.descriptor_index().knnSearch(
        np.ascontiguousarray(descriptors, np.float32), k, params=dict(checks=64)
    )
    nearest = nearest.reshape(len(descriptors), k).astype(np.int64)
    distance = np.sqrt(np.maximum(squared.reshape(len(descriptors), k), 0.0))
    known = np.all(np.isfinite(points[nearest]), axis=2)
    groups = np.broadcast_to(np.arange(len(descriptors))[:, None], known.shape)[known]
    query, train, best, rival = best_on_distinct_points(
        groups, nearest[known], distance[known], points, params.distinct_point * world.extent()
    )
    keep = best < params.map_ratio * rival
    return query[keep], train[keep]


def project(
    points: Float[np.ndarray, "P 3"], c2w: Float[np.ndarray, "4 4"], K: Float[np.ndarray, "3 3"]
) -> Tuple[Float[np.ndarray, "P 2"], Float[np.ndarray, "P"]]:
    """OpenCV pixel coordinates of world points seen from an OpenGL camera-to-world pose, and their depth."""
    w2c = np.linalg.inv(np.asarray(c2w, np.float64) @ OPENGL_TO_OPENCV)
    cam = np.asarray(points, np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (cam @ K.T)[:, :2] / z[:, None]
    return uv, z


def guided_matches(
    pixels: Float[np.ndarray, "N 2"],
    descriptors: Float[np.ndarray, "N 128"],
    world: MapFeatures,
    K: Float[np.ndarray, "3 3"],
    c2w: Float[np.ndarray, "4 4"],
    size: Tuple[int, int],
    radius: float,
    covisible: Int[np.ndarray, "C"],
    params: RegisterParams,
) -> Tuple[Int[np.ndarray, "P"], Int[np.ndarray, "P"]]:
    """(photo keypoint, map descriptor) matches guided by a pose: each keypoint (pinhole pixels) against the points
    of the ``covisible`` training images that ``c2w`` projects within ``radius`` of it, kept when the best of them
    passes the ratio test against the best on another 3D point there and is closer than ``guided_max_distance``. Far
    fewer rivals than in the whole map, so a close-up's keypoints whose descriptors changed with scale and viewpoint
    still find their point; the matches are then solved again, and only their inliers count."""
    from scipy.spatial import cKDTree

    points = world.points()
    width, height = size
    uv, z = project(np.nan_to_num(points, nan=0.0), c2w, K)
    seen = np.all(np.isfinite(points), axis=1) & (z > 1e-6)
    seen &= np.all(np.isfinite(uv), axis=1) & (uv[:, 0] > -radius) & (uv[:, 0] < width + radius)
    seen &= (uv[:, 1] > -radius) & (uv[:, 1] < height + radius)
    index = np.nonzero(seen & np.isin(world.owner, covisible))[0]
    if len(index) == 0 or len(pixels) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    near = cKDTree(uv[index]).query_ball_point(np.asarray(pixels, np.float64), radius)
    counts = np.array([len(found) for found in near])
    if counts.sum() == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    groups = np.repeat(np.arange(len(pixels)), counts)
    local = np.concatenate([np.asarray(found, np.int64) for found in near])
    candidates = index[local]
    # RootSIFT descriptors are unit vectors: |a - b|^2 = 2 - 2 a.b, one matrix product instead of a gather per pair
    similarity = np.asarray(descriptors, np.float32) @ world.descriptors[index].T.astype(np.float32)
    distances = np.sqrt(np.maximum(2.0 - 2.0 * similarity[groups, local], 0.0))
    query, train, best, rival = best_on_distinct_points(
        groups, candidates, distances, points, params.distinct_point * world.extent()
    )
    keep = (best < params.guided_max_distance) & (best < params.guided_ratio * rival)
    return query[keep], train[keep]
