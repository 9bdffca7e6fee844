"""The project's 2D segmenters, in one place: weight-free felzenszwalb (scikit-image) and FastSAM (ultralytics, from a
local weights file; never downloaded). Used by ``instance-segment`` (masks for InstanceMap), label merging (rendered
views) and ``instance-loc`` (query photos). It lives in ``core`` because both packages use it and imports point one
way only: ``data_preprocess`` may import ``instance_nerfacto``, never the reverse."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
from jaxtyping import Bool, Float, Int, UInt8, UInt16

from instance_nerfacto.core.errors import fail
from instance_nerfacto.core.masks import masks_to_labels


def felzenszwalb_labels(image: UInt8[np.ndarray, "H W 3"], scale: float = 300.0, sigma: float = 0.8,
                        min_area: float = 0.002) -> UInt16[np.ndarray, "H W"]:
    """Non-overlapping segments as a label image (1..N, 0 = dropped small segments), ids by first pixel (raster)."""
    from skimage.segmentation import felzenszwalb

    h, w = image.shape[:2]
    min_px = max(1, int(round(min_area * h * w)))
    seg = felzenszwalb(image, scale=scale, sigma=sigma, min_size=min_px)
    ids, first, counts = np.unique(seg, return_index=True, return_counts=True)
    keep = counts >= min_px
    lut = np.zeros(int(seg.max()) + 1, dtype=np.uint16)
    order = np.argsort(first[keep], kind="stable")  # deterministic ids: raster order of each segment's first pixel
    lut[ids[keep][order]] = np.arange(1, keep.sum() + 1, dtype=np.uint16)
    return lut[seg]


class FastSAMSegmenter:
    """FastSAM through ultralytics from a local checkpoint."""

    def __init__(self, weights: Optional[Path], device: str = "cpu", imgsz: int = 640, conf: float = 0.4) -> None:
        if weights is None:
            fail("--segmenter fastsam needs --weights", None,
                 "pass a local FastSAM checkpoint (e.g. FastSAM-s.pt), or use --segmenter felzenszwalb")
        weights = Path(weights)
        # ultralytics downloads a checkpoint whose name it knows when the path does not exist: check first
        if not weights.is_file():
            fail("FastSAM weights file does not exist", weights,
                 "download FastSAM-s.pt / FastSAM-x.pt elsewhere and pass its local path, or use --segmenter "
                 "felzenszwalb")
        os.environ.setdefault("YOLO_OFFLINE", "1")  # no DNS look-ups or update checks at import
        from ultralytics import FastSAM

        try:
            self.model = FastSAM(str(weights))
        except Exception as err:
            fail(f"cannot load FastSAM weights ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})",
                 weights, "pass an ultralytics FastSAM/YOLO-seg .pt checkpoint")
        self.device, self.imgsz, self.conf = device, imgsz, conf

    def __call__(self, image: Path | UInt8[np.ndarray, "H W 3"], height: int, width: int,
                 min_area: float) -> Tuple[Bool[np.ndarray, "N H W"], Float[np.ndarray, "N"]]:
        """Masks and scores of an image file, or of an RGB array (a rendered view)."""
        import cv2

        source = str(image) if isinstance(image, (str, Path)) else np.ascontiguousarray(image[..., ::-1])  # BGR
        results = self.model(source, device=self.device, retina_masks=True, imgsz=self.imgsz,
                             conf=self.conf, iou=0.9, verbose=False)
        res = results[0]
        if res.masks is None or len(res.masks.data) == 0:
            return np.zeros((0, height, width), dtype=bool), np.zeros(0, dtype=np.float32)
        data = res.masks.data.cpu().numpy()
        if data.shape[1:] != (height, width):
            data = np.stack([cv2.resize(m.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
                             for m in data])
        masks = data > 0.5
        scores = res.boxes.conf.cpu().numpy().astype(np.float32) if res.boxes is not None else np.ones(len(masks))
        keep = masks.reshape(len(masks), -1).sum(1) >= max(1, min_area * height * width)
        return masks[keep], scores[keep].astype(np.float32)


_LOADED: Dict[Tuple[str, str, int, float], FastSAMSegmenter] = {}


def load_fastsam(weights: Optional[Path], device: str = "cpu", imgsz: int = 640, conf: float = 0.4) -> FastSAMSegmenter:
    """A FastSAM segmenter, loaded once per process for each weights file and setting."""
    key = (str(weights), device, imgsz, conf)
    if key not in _LOADED:
        _LOADED[key] = FastSAMSegmenter(weights, device, imgsz, conf)
    return _LOADED[key]


def segment_regions(rgb: UInt8[np.ndarray, "H W 3"], segmenter: str = "felzenszwalb", weights: Optional[Path] = None,
                    device: str = "cpu", scale: float = 300.0, sigma: float = 0.8,
                    min_area: float = 0.002, imgsz: int = 640) -> Int[np.ndarray, "H W"]:
    """Region map (0 = no region) of an RGB image, by the segmenters of instance-segment: the one entry point that
    instance-loc (query photos) and label merging (rendered views) use. FastSAM's overlapping masks are flattened
    with the larger drawn first, so small objects stay on top."""
    if segmenter == "fastsam":
        h, w = rgb.shape[:2]
        masks, _ = load_fastsam(weights, device, imgsz)(rgb, h, w, min_area)
        return masks_to_labels(masks, order="largest_first").astype(np.int32)
    if segmenter != "felzenszwalb":
        fail(f"unknown segmenter '{segmenter}'", None, "use felzenszwalb or fastsam")
    return felzenszwalb_labels(rgb, scale, sigma, min_area).astype(np.int32)
