"""LoFTR (kornia) from a local weights file: pixel matches between two grayscale images.

The one owner of loading LoFTR and of mapping its matches back to the images' pixels, for InstanceMap's ``--matcher
loftr`` (:mod:`data_preprocess.matching`) and for registering photos (``instance-loc --images --register.matcher
loftr``, :mod:`instance_nerfacto.loc.register_pairs`). Weights are never downloaded: a missing or misfit file is one
line saying so, before anything else is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np
from jaxtyping import Float, UInt8

from instance_nerfacto.core.errors import fail


class LoFTRModel:
    """kornia LoFTR with weights from a local file (a kornia LoFTR state dict, or a checkpoint holding one under
    ``state_dict``)."""

    def __init__(self, weights: Optional[Path], device: str = "cpu", size: int = 320,
                 flag: str = "--weights") -> None:
        if weights is None:
            fail("LoFTR needs a local weights file", None, f"pass {flag} a LoFTR checkpoint (.ckpt/.pth)")
        weights = Path(weights)
        if not weights.is_file():  # before the heavy imports, so the error is immediate
            fail("LoFTR weights file does not exist", weights, f"pass {flag} a local LoFTR checkpoint (.ckpt/.pth)")
        import torch
        from kornia.feature import LoFTR

        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as err:
            fail(f"cannot load LoFTR weights ({type(err).__name__})", weights, "pass a kornia LoFTR state dict")
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        self.model = LoFTR(pretrained=None)
        try:
            self.model.load_state_dict(state)
        except Exception as err:
            fail(f"LoFTR weights do not fit the model ({str(err).splitlines()[0]})", weights,
                 "pass the outdoor/indoor LoFTR checkpoint kornia uses")
        self.model.eval().to(device)
        self.device = device
        self.size = size
        """Longer side (pixels) a larger image is shrunk to before matching; each side is then rounded to a multiple
        of 8 (LoFTR's coarse level is 1/8 of the input)."""

    def _tensor(self, gray: UInt8[np.ndarray, "H W"]):
        import torch

        small, scale = shrunk(gray, self.size)
        return torch.from_numpy(small).float().div(255)[None, None].to(self.device), scale

    def match(self, gray_a: UInt8[np.ndarray, "Ha Wa"], gray_b: UInt8[np.ndarray, "Hb Wb"],
              min_confidence: float = 0.2
              ) -> Tuple[Float[np.ndarray, "M 2"], Float[np.ndarray, "M 2"], Float[np.ndarray, "M"]]:
        """Matches between two images: (x, y) in image a, (x, y) in image b (OpenCV pixel coordinates of the
        images as given, pixel centres at integers) and LoFTR's confidence, those above ``min_confidence`` (LoFTR's
        coarse level keeps only those)."""
        import torch

        ta, sa = self._tensor(gray_a)
        tb, sb = self._tensor(gray_b)
        # LoFTR's confidence is its coarse level's, and that level drops matches at its own threshold (0.2 in kornia's
        # config) whatever is asked: the threshold is set to the one asked for, and nothing is filtered after
        self.model.coarse_matching.thr = min_confidence
        with torch.inference_mode():
            out = self.model({"image0": ta, "image1": tb})
        pa = resized_to_image(out["keypoints0"].cpu().numpy(), sa)
        pb = resized_to_image(out["keypoints1"].cpu().numpy(), sb)
        return pa, pb, out["confidence"].cpu().numpy().astype(np.float64)


def shrunk(gray: UInt8[np.ndarray, "H W"], size: int) -> Tuple[UInt8[np.ndarray, "h w"], Float[np.ndarray, "2"]]:
    """The image as LoFTR matches it: shrunk so that its longer side is at most ``size`` (never enlarged: more pixels
    would add no detail), each side rounded to a multiple of 8 (LoFTR's coarse level is 1/8 of the input); and the
    (x, y) scale back to the image's own pixels (:func:`resized_to_image`). An image already so is returned as is."""
    import cv2

    scale = min(1.0, size / max(gray.shape))
    h8 = max(8, int(round(gray.shape[0] * scale / 8)) * 8)
    w8 = max(8, int(round(gray.shape[1] * scale / 8)) * 8)
    small = gray if (h8, w8) == gray.shape else cv2.resize(np.ascontiguousarray(gray), (w8, h8),
                                                            interpolation=cv2.INTER_AREA)
    return small, np.array([gray.shape[1] / w8, gray.shape[0] / h8])


def resized_to_image(xy: Float[np.ndarray, "M 2"], scale: Float[np.ndarray, "2"]) -> Float[np.ndarray, "M 2"]:
    """OpenCV pixel coordinates in a resized image -> in the image itself, ``scale`` = (image width / resized width,
    image height / resized height): pixel centres sit at integers in both, so x = (x' + 0.5) * scale - 0.5."""
    return (np.asarray(xy, np.float64) + 0.5) * np.asarray(scale, np.float64) - 0.5
