"""``instance-segment``: per-frame 2D instance masks for InstanceMap, with FastSAM (local weights) or a weight-free
classical segmenter.

    instance-segment --data data/room --segmenter felzenszwalb           # runs anywhere, no weights
    instance-segment --data data/room --segmenter fastsam --weights FastSAM-x.pt

Writes ``<out>/<stem>.png`` (uint16 label image, 0 = no mask) for felzenszwalb, whose segments do not overlap, and
``<out>/<stem>.npz`` (``masks: bool[N,H,W]``, ``scores: float[N]``) for FastSAM, whose masks may overlap. Every file
is written atomically; existing files of other frames are left alone.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple

import numpy as np
import tyro
from jaxtyping import Bool, Float, Int, UInt8, UInt16

from instance_nerfacto.core.dataset import load_dataset
from instance_nerfacto.core.errors import fail, run_cli
from instance_nerfacto.core.files import atomic_save_npz, atomic_write_png
from instance_nerfacto.core.masks import masks_to_labels


@dataclass
class SegmentConfig:
    """Segment every frame of a dataset into 2D instance masks (input of instance-map)."""

    data: Path
    """Nerfstudio dataset folder (transforms.json, images/)."""
    segmenter: Literal["felzenszwalb", "fastsam"] = "felzenszwalb"
    """felzenszwalb: classical graph segmentation, no weights; fastsam: FastSAM through ultralytics, local weights."""
    weights: Optional[Path] = None
    """Local FastSAM checkpoint (.pt) for --segmenter fastsam; never downloaded."""
    out: Optional[Path] = None
    """Output folder; default DATA/masks."""
    split: Literal["train", "val", "all"] = "all"
    """Frames of transforms.json to segment."""
    scale: float = 300.0
    """felzenszwalb: larger gives larger segments."""
    sigma: float = 0.8
    """felzenszwalb: Gaussian smoothing before segmentation."""
    min_area: float = 0.002
    """Segments (felzenszwalb) or masks (fastsam) smaller than this fraction of the image are dropped."""
    conf: float = 0.4
    """fastsam: minimum mask confidence."""
    imgsz: int = 640
    """fastsam: inference size (long side)."""
    device: str = "cpu"
    """fastsam: torch device."""
    quiet: bool = False
    """No progress bar and no summary."""


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


def main(cfg: SegmentConfig) -> Dict:
    import cv2
    from tqdm import tqdm

    start = time.perf_counter()
    ds = load_dataset(cfg.data)
    frames = ds.split(cfg.split)
    if not frames:
        fail(f"transforms.json has no '{cfg.split}' frames", cfg.data / "transforms.json", "use --split all")
    out = cfg.out or cfg.data / "masks"
    if out.exists() and out.resolve() in (cfg.data.resolve(), (cfg.data / "images").resolve()):
        fail("output folder is an input folder", out, "pass --out a separate folder (default DATA/masks)")
    model = load_fastsam(cfg.weights, cfg.device, cfg.imgsz, cfg.conf) if cfg.segmenter == "fastsam" else None
    n_masks: List[int] = []
    for fr in tqdm(frames, desc=f"segment ({cfg.segmenter})", disable=True if cfg.quiet else None, leave=False):
        image = cv2.imread(str(fr.image_path), cv2.IMREAD_COLOR)
        if image is None:
            fail("cannot decode image (corrupt or not an image)", fr.image_path, "replace the file")
        if image.shape[:2] != (fr.height, fr.width):
            fail(f"image is {image.shape[1]}x{image.shape[0]}, transforms.json says {fr.width}x{fr.height}",
                 fr.image_path, "fix w/h in transforms.json or the image")
        if model is None:
            labels = felzenszwalb_labels(image[..., ::-1], cfg.scale, cfg.sigma, cfg.min_area)
            atomic_write_png(out / f"{fr.stem}.png", labels)
            n_masks.append(int(labels.max()))
        else:
            masks, scores = model(fr.image_path, fr.height, fr.width, cfg.min_area)
            atomic_save_npz(out / f"{fr.stem}.npz", masks=masks, scores=scores)
            n_masks.append(len(masks))
    seconds = time.perf_counter() - start
    summary = {"frames": len(frames), "masks": int(sum(n_masks)), "segmenter": cfg.segmenter, "out": str(out),
               "seconds": round(seconds, 2)}
    if not cfg.quiet:
        print(f"instance-segment: {len(frames)} frames, {sum(n_masks)} masks "
              f"({np.mean(n_masks):.1f} per frame) with {cfg.segmenter} in {seconds:.1f} s -> {out}", file=sys.stderr)
    return summary


def entrypoint() -> None:
    run_cli(lambda: main(tyro.cli(SegmentConfig)))


if __name__ == "__main__":
    entrypoint()
