"""What photo registration works on: its parameters, the SIFT features of a photo, and the map's features.

The data of :mod:`instance_nerfacto.loc.register` (the stage) and :mod:`instance_nerfacto.loc.register_match` (its
matching), which both import them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Literal, Optional, Tuple

import numpy as np
from jaxtyping import Float, Int


@dataclass
class RegisterParams:
    """Parameters of registration (see the module docstring)."""

    top_k: int = 10
    """Training images retrieved per photo when the matches against the whole map give too few inliers (their
    correspondences are pooled); also how many of the training images holding the inliers loc.json lists."""
    ratio: float = 0.9
    """Lowe's ratio test of the retrieved images' matches: a match is kept when its distance is below this fraction
    of the second best's."""
    max_features: int = 2000
    """SIFT keypoints per image at most (the strongest)."""
    contrast_threshold: float = 0.01
    """SIFT's contrast threshold: a quarter of OpenCV's default, for the few hundred keypoints a low-texture 320x240
    room view needs (the default leaves ~100, too few on the novel views of the rendered rooms)."""
    epipolar_px: float = 2.0
    """Per retrieved image, matches farther than this from their epipolar line (fundamental-matrix RANSAC) are
    dropped before PnP."""
    ransac_px: float = 4.0
    """RANSAC inlier threshold (reprojection error, pixels)."""
    refine_px: float = 2.0
    """Inlier threshold of the final refinement and of the inlier count the acceptance gates read (pixels)."""
    ransac_iterations: int = 2000
    """RANSAC iterations at most."""
    min_inliers: int = 20
    """A pose needs at least this many inlier correspondences."""
    min_inlier_ratio: float = 0.1
    """... that are at least this fraction of all correspondences (a photo of another room matches few, at random)."""
    max_error_px: float = 2.0
    """... with a median reprojection error (after refinement) of at most this many pixels."""
    max_distance: float = 1.0
    """... and a camera centre at most this many times the training cameras' extent away from their bounding box."""
    map_ratio: float = 0.8
    """Matching against the whole map: a photo descriptor's nearest map descriptor is kept when it is closer than this
    fraction of the nearest one on another 3D point (:func:`map_matches`)."""
    map_neighbours: int = 8
    """Nearest map descriptors looked at per photo descriptor (the same 3D point recurs in neighbouring training
    images: the second best on *another* point is searched among these)."""
    distinct_point: float = 0.02
    """Two map points closer than this fraction of the training cameras' extent count as the same 3D point."""
    min_seed_inliers: int = 6
    """A first pose (from the matches against the whole map) with fewer inliers than this is not refined further."""
    guided_px: Tuple[float, ...] = (32.0, 8.0, 2.0)
    """Guided matching radii (pixels), one round each, coarse to fine: every photo keypoint is matched again, by
    descriptor, among the map points that the current pose projects within this radius of it (:func:`guided_matches`).
    The first bounds how far off a first pose can be corrected (32 px: 6.6 degrees at the demo rooms' 277 px focal
    length; with 8, 4, 2 px, close-ups of an untuned room kept poses 2-7 degrees off)."""
    guided_images: int = 20
    """Guided matching reads the points of at most this many training images: those that hold the most inliers of
    the current pose."""
    guided_ratio: float = 0.9
    """Guided matching's ratio test: the best map descriptor in the radius must be closer than this fraction of the
    best one on another 3D point in the radius."""
    guided_max_distance: float = 0.7
    """... and closer than this (RootSIFT descriptors are unit vectors: distances 0..sqrt(2))."""
    matcher: Literal["sift", "loftr"] = "sift"
    """What the first pose comes from: 'sift' (weight-free: the photo's SIFT keypoints against the whole map, then
    the retrieved images, then guided matching coarse to fine), or 'loftr' (kornia LoFTR between the photo and each of
    the ``pair_images`` retrieved training images, pooled for PnP; needs ``weights``)."""
    weights: Optional[Path] = None
    """Local LoFTR weights file for ``matcher`` 'loftr' (a kornia LoFTR state dict; never downloaded)."""
    pair_images: int = 5
    """'loftr': training images retrieved (by SIFT votes) and matched with each photo (one LoFTR run each)."""
    pair_size: int = 640
    """'loftr': longer side (pixels) a larger photo or training image is shrunk to before matching (LoFTR was trained
    at 640x480). One pair takes 1.7 s at 320x240 on one CPU thread (the default), 8.8 s at 640x480."""
    pair_confidence: float = 0.2
    """'loftr': matches below this confidence are dropped."""
    min_agreement: float = 0.6
    """Last gate: the map's colour rendered at the pose (a coarse 40x30 view) must correlate with the photo by at
    least this much (:func:`appearance_agreement`). Measured on the demo rooms (seeds 5 and 7, maps with and without
    depth): 0.68-0.97 for their held-out views at their found poses, at most 0.44 for 160 photos of another room at
    the poses RANSAC and guided matching found for them (69 of them passed the inlier gates, with up to 235 inliers:
    the inlier count alone does not keep such a pose out)."""


@dataclass
class ImageFeatures:
    """SIFT features of one image; for a training image also the 3D point of each keypoint."""

    keypoints: Float[np.ndarray, "N 2"]
    """(x, y) pixel coordinates, OpenCV's convention (pixel centres at integers)."""
    descriptors: Float[np.ndarray, "N 128"]
    points: Optional[Float[np.ndarray, "N 3"]] = None
    """World point of each keypoint (transforms.json frame), NaN where the depth has no reading."""


@dataclass
class MapFeatures:
    """What registration needs of the map's training images (built once per map)."""

    images: List[ImageFeatures]
    descriptors: Float[np.ndarray, "D 128"]
    """Every training image's descriptors, stacked (retrieval)."""
    owner: Int[np.ndarray, "D"]
    """Index of the training image of each stacked descriptor."""
    camera_centres: Float[np.ndarray, "M 3"]
    """Training camera centres (transforms.json frame): bounds where a registered camera may be."""
    read_rgb: Optional[Callable[[int], np.ndarray]] = None
    """The colour (uint8 [H, W, 3]) of training image i, read again on demand (a pair matcher needs its pixels)."""
    lift: Optional[Callable[[int, np.ndarray], np.ndarray]] = None
    """World points of pixels (OpenCV coordinates, [N, 2]) of training image i, NaN where unknown: the lifting of its
    keypoints, for any pixel."""
    _index: Optional[object] = None
    _points: Optional[np.ndarray] = None

    def points(self) -> Float[np.ndarray, "D 3"]:
        """The 3D point of every stacked descriptor (NaN where its keypoint has no depth reading)."""
        if self._points is None:
            self._points = np.concatenate([f.points for f in self.images]) if self.images else np.zeros((0, 3))
        return self._points

    def extent(self) -> float:
        """Diagonal of the training cameras' bounding box (the map's length scale)."""
        return max(float(np.linalg.norm(self.camera_centres.max(axis=0) - self.camera_centres.min(axis=0))), 1e-6)

    def descriptor_index(self):
        """FLANN k-d tree over :attr:`descriptors`, built on first use (FLANN's k-d tree draws from C's rand(): the
        index is built once per map, so every photo of a command sees the same one)."""
        if self._index is None:
            import cv2

            self._index = cv2.flann_Index(np.ascontiguousarray(self.descriptors, np.float32),
                                          dict(algorithm=1, trees=4))
        return self._index
