"""``instance-segment``: per-frame 2D instance masks for InstanceMap, with FastSAM (local weights) or a weight-free
classical segmenter.

    instance-segment --data data/room --segmenter felzenszwalb           # runs anywhere, no weights
    instance-segment --data data/room --segmenter fastsam --weights FastSAM-x.pt

Writes ``<out>/<stem>.png`` (uint16 label image, 0 = no mask) for felzenszwalb, whose segments do not overlap, and
``<out>/<stem>.npz`` (``masks: bool[N,H,W]``, ``scores: float[N]``) for FastSAM, whose masks may overlap. Every file
is written atomically; existing files of other frames are left alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional

import numpy as np
import tyro

from instance_nerfacto.core.console import say, track
from instance_nerfacto.core.dataset import downscaled, load_dataset, training_downscale
from instance_nerfacto.core.errors import fail, run_cli
from instance_nerfacto.core.files import atomic_save_npz, write_label_png
from instance_nerfacto.core.segmenters import felzenszwalb_labels, load_fastsam


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
    downscale: Optional[int] = None
    """Segment the photos nerfstudio trains on: images_N/ at this factor (as ns-train's --downscale-factor); default
    nerfstudio's own choice (images_N/ of photos larger than 1,600 px, when ns-process-data wrote them)."""
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


def main(cfg: SegmentConfig) -> Dict:
    import cv2

    start = time.perf_counter()
    ds = load_dataset(cfg.data)
    ds = downscaled(ds, training_downscale(ds, cfg.downscale))
    frames = ds.split(cfg.split)
    if not frames:
        fail(f"transforms.json has no '{cfg.split}' frames", cfg.data / "transforms.json", "use --split all")
    out = cfg.out or cfg.data / "masks"
    if out.exists() and out.resolve() in (cfg.data.resolve(), (cfg.data / "images").resolve()):
        fail("output folder is an input folder", out, "pass --out a separate folder (default DATA/masks)")
    model = load_fastsam(cfg.weights, cfg.device, cfg.imgsz, cfg.conf) if cfg.segmenter == "fastsam" else None
    n_masks: List[int] = []
    for fr in track(frames, f"segment ({cfg.segmenter})", quiet=cfg.quiet):
        image = cv2.imread(str(fr.image_path), cv2.IMREAD_COLOR)
        if image is None:
            fail("cannot decode image (corrupt or not an image)", fr.image_path, "replace the file")
        if image.shape[:2] != (fr.height, fr.width):
            fail(f"image is {image.shape[1]}x{image.shape[0]}, transforms.json says {fr.width}x{fr.height}",
                 fr.image_path, "fix w/h in transforms.json or the image")
        if model is None:
            labels = felzenszwalb_labels(image[..., ::-1], cfg.scale, cfg.sigma, cfg.min_area)
            write_label_png(out / f"{fr.stem}.png", labels)
            n_masks.append(int(labels.max()))
        else:
            masks, scores = model(fr.image_path, fr.height, fr.width, cfg.min_area)
            atomic_save_npz(out / f"{fr.stem}.npz", masks=masks, scores=scores)
            n_masks.append(len(masks))
    seconds = time.perf_counter() - start
    summary = {"frames": len(frames), "masks": int(sum(n_masks)), "segmenter": cfg.segmenter, "out": str(out),
               "seconds": round(seconds, 2)}
    if not cfg.quiet:
        say(f"instance-segment: {len(frames)} frames, {sum(n_masks)} masks "
            f"({np.mean(n_masks):.1f} per frame) with {cfg.segmenter} in {seconds:.1f} s -> {out}", err=True)
    return summary


def entrypoint() -> None:
    run_cli(lambda: main(tyro.cli(SegmentConfig)))


if __name__ == "__main__":
    entrypoint()
