"""2D-3D correspondences from a learned pair matcher: LoFTR between a photo and its retrieved training images.

hloc's recipe for hard photos, opt-in because it needs weights (``--register.matcher loftr --register.weights
FILE``; never downloaded). The photo is matched with each of the ``pair_images`` training images retrieved by SIFT
votes (:func:`instance_nerfacto.loc.register_match.retrieve`, weight-free); each match's training pixel is lifted to
3D the way the map's keypoints are (its depth map, or the trained density's surface:
:attr:`~instance_nerfacto.loc.register_features.MapFeatures.lift`), and the matches of all the images are pooled for
PnP (:func:`instance_nerfacto.loc.register.register_photo`). SIFT describes a close-up seen from half a metre lower
than any training image too differently to match it (the demo room seed 12's two refused held-out views: 3-10% of
their SIFT matches right, docs/benchmarks.md); a detector-free matcher trained for wide baselines is what such photos
need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, List, Tuple

import numpy as np
from jaxtyping import Float, Int, UInt8

from instance_nerfacto.loc.register_features import MapFeatures, RegisterParams

if TYPE_CHECKING:
    from instance_nerfacto.core.loftr import LoFTRModel

PixelMatches = Tuple[Float[np.ndarray, "M 2"], Float[np.ndarray, "M 2"]]
"""(photo pixels, training-image pixels) of one image pair, OpenCV pixel coordinates of the images as stored."""


def lifted_pair_matches(matches: List[Tuple[int, PixelMatches]],
                        lift: Callable[[int, Float[np.ndarray, "M 2"]], Float[np.ndarray, "M 3"]]
                        ) -> Tuple[Float[np.ndarray, "P 2"], Float[np.ndarray, "P 3"], Int[np.ndarray, "P"]]:
    """Pool pair matches into 2D-3D correspondences: per (training image index, (photo pixels, its pixels)), the
    training pixels lifted by ``lift(index, pixels)``; matches without a 3D point (NaN) are dropped. Returns the photo
    pixels, the world points and the training image of each correspondence."""
    pixels, points, owners = [np.zeros((0, 2))], [np.zeros((0, 3))], [np.zeros(0, np.int64)]
    for index, (photo_px, train_px) in matches:
        if len(photo_px) == 0:
            continue
        world = np.asarray(lift(index, np.asarray(train_px, np.float64)), np.float64).reshape(-1, 3)
        known = np.all(np.isfinite(world), axis=1)
        pixels.append(np.asarray(photo_px, np.float64)[known])
        points.append(world[known])
        owners.append(np.full(int(known.sum()), index, np.int64))
    return np.concatenate(pixels), np.concatenate(points), np.concatenate(owners)


GRAY_CACHE = 64
"""Training images kept in memory between photos, gray and shrunk to the matching size (the oldest read is dropped
first)."""


class LoFTRPairs:
    """LoFTR matches of a photo with training images, lifted to 3D (:func:`lifted_pair_matches`)."""

    def __init__(self, model: "LoFTRModel", world: MapFeatures, params: RegisterParams) -> None:
        if world.read_rgb is None or world.lift is None:
            raise ValueError("the map's features were built without their images' reader and lifter")
        self.model = model
        self.world = world
        self.params = params
        self._grays: dict = {}

    def _gray(self, index: int) -> Tuple[UInt8[np.ndarray, "h w"], Float[np.ndarray, "2"]]:
        """Training image ``index`` in gray, shrunk to the matching size (what LoFTR would match anyway; a few
        multi-megapixel images in memory would not be), and its (x, y) scale back to the image's own pixels."""
        from instance_nerfacto.core.loftr import shrunk
        from instance_nerfacto.loc.register import to_gray

        if index not in self._grays:  # a command's photos retrieve the same training images again and again
            if len(self._grays) >= GRAY_CACHE:
                self._grays.pop(next(iter(self._grays)))
            self._grays[index] = shrunk(to_gray(self.world.read_rgb(index)), self.params.pair_size)
        return self._grays[index]

    def __call__(self, gray: UInt8[np.ndarray, "H W"], retrieved: Int[np.ndarray, "K"]
                 ) -> Tuple[Float[np.ndarray, "P 2"], Float[np.ndarray, "P 3"], Int[np.ndarray, "P"]]:
        """2D-3D correspondences of the photo ``gray`` with the training images ``retrieved``: photo pixels (as
        stored, lens not undone), world points, and the training image of each."""
        from instance_nerfacto.core.loftr import resized_to_image

        matches = []
        for index in (int(i) for i in retrieved):
            train_gray, scale = self._gray(index)
            photo_px, train_px, _ = self.model.match(gray, train_gray, self.params.pair_confidence)
            matches.append((index, (photo_px, resized_to_image(train_px, scale))))
        return lifted_pair_matches(matches, self.world.lift)
