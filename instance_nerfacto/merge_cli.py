"""`instance-merge` and the end-of-training merge callback: render views, segment them, merge labels.

Renders ``--views`` random views near the training trajectory (training poses with a small random perturbation) at
half resolution, segments each rendered RGB image (weight-free felzenszwalb, or FastSAM from a local weights file),
and runs :func:`instance_nerfacto.merging.compute_merge_table` with the cannot-link set of the pseudolabels. The
table is written atomically to ``<run dir>/merge_table.json`` (the folder of config.yml).

The model registers the callback in one line::

    from instance_nerfacto.merge_cli import merge_callback
    callbacks.append(merge_callback(training_callback_attributes))
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple

import numpy as np
import torch
import tyro
from jaxtyping import Int, UInt8

from instance_nerfacto.errors import InputError, fail, run_cli
from instance_nerfacto.merge_table import MERGE_TABLE_NAME, load_merge_table, save_merge_table
from instance_nerfacto.merging import MergeParams, compute_merge_table, load_cannot_link


@dataclass
class MergeConfig:
    """Merge labels of a trained instance-nerfacto run that are one object (writes <run dir>/merge_table.json)."""

    load_config: Path
    """config.yml of the training run."""
    views: int = 8
    """Number of random views near the training trajectory to render and segment."""
    segmenter: Literal["felzenszwalb", "fastsam"] = "felzenszwalb"
    """2D segmenter of the rendered views (fastsam needs --weights)."""
    weights: Optional[Path] = None
    """Local FastSAM weights file."""
    edits: Optional[Path] = None
    """Hand-edit file ('A B' per line: label A becomes label B); checked now, applied by every consumer."""
    pseudolabels: Optional[Path] = None
    """Pseudolabel folder for the cannot-link set (default: <dataset>/pseudolabels)."""
    downscale: float = 2.0
    """Render at 1/downscale of the training resolution."""
    seed: int = 0
    """Seed of the view choice and perturbation."""
    params: MergeParams = field(default_factory=MergeParams)
    """Merge thresholds."""


# ---------------------------------------------------------------------------------------------------------------
# segmenters for rendered images (and instance-loc's query images)


def segment_image(
    rgb: UInt8[np.ndarray, "H W 3"], segmenter: str, weights: Optional[Path] = None
) -> Int[np.ndarray, "H W"]:
    """Region map (0 = no region) of an RGB image."""
    if segmenter == "fastsam":
        return _fastsam_regions(rgb, weights)
    from skimage.segmentation import felzenszwalb

    h, w = rgb.shape[:2]
    # scale and min_size grow with the image so a 160x120 render and a 640x480 photo get object-sized regions
    regions = felzenszwalb(rgb, scale=max(100.0, 0.005 * h * w), sigma=0.8, min_size=max(20, h * w // 400))
    return regions.astype(np.int32) + 1


def _fastsam_regions(rgb: np.ndarray, weights: Optional[Path]) -> np.ndarray:
    import os

    if weights is None or not Path(weights).is_file():
        fail("FastSAM weights file does not exist", weights, "pass --weights a local FastSAM .pt file")
    os.environ.setdefault("YOLO_OFFLINE", "1")  # ultralytics does DNS look-ups at import otherwise
    from ultralytics import FastSAM

    from instance_nerfacto.loc_cli import masks_to_regions

    model = _FASTSAM_CACHE.get(str(weights))
    if model is None:
        model = _FASTSAM_CACHE.setdefault(str(weights), FastSAM(str(weights)))
    result = model(rgb[..., ::-1].copy(), retina_masks=True, imgsz=max(rgb.shape[:2]), conf=0.4, iou=0.9,
                   verbose=False)[0]
    if result.masks is None:
        return np.zeros(rgb.shape[:2], dtype=np.int32)
    masks = result.masks.data.cpu().numpy() > 0.5
    if masks.shape[1:] != rgb.shape[:2]:
        import cv2

        masks = np.stack([cv2.resize(m.astype(np.uint8), rgb.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
                          for m in masks])
    return masks_to_regions(masks)


_FASTSAM_CACHE: Dict[str, object] = {}


# ---------------------------------------------------------------------------------------------------------------
# views near the training trajectory


def perturbed_views(cameras, n: int, downscale: float, rng: np.random.Generator, angle_deg: float = 4.0):
    """``n`` training cameras (random, without repetition when possible), each rotated by up to ``angle_deg`` and
    moved by up to 5 % of the trajectory's extent, at 1/downscale resolution."""
    import torch

    idx = rng.choice(len(cameras), size=n, replace=n > len(cameras))
    views = cameras[torch.from_numpy(idx)]
    c2w = views.camera_to_worlds.clone()
    extent = float((cameras.camera_to_worlds[:, :3, 3].max(0).values - cameras.camera_to_worlds[:, :3, 3].min(0)
                    .values).norm())
    for i in range(n):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        angle = np.deg2rad(angle_deg) * rng.uniform(-1, 1)
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
        rot_t = torch.from_numpy(rot).to(c2w)
        c2w[i, :3, :3] = rot_t @ c2w[i, :3, :3]
        c2w[i, :3, 3] += torch.from_numpy(rng.uniform(-1, 1, 3) * 0.05 * extent).to(c2w)
    views.camera_to_worlds = c2w
    views.rescale_output_resolution(1.0 / downscale)
    return views


def render_view(pipeline, camera) -> Tuple[np.ndarray, np.ndarray]:
    """(rgb uint8 HxWx3, instance ids HxW) of one camera (volume render: the RGB is needed for segmenting)."""
    import torch

    with torch.no_grad():
        out = pipeline.model.get_outputs_for_camera(camera)
    rgb = (out["rgb"].clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    if "instance_id" in out:
        ids = out["instance_id"].reshape(rgb.shape[:2]).cpu().numpy().astype(np.int64)
    else:
        from instance_nerfacto.localize import label_outputs

        ids = label_outputs({k: v.reshape(-1, v.shape[-1]) for k, v in out.items() if k.startswith("instance")})[0]
        ids = ids.reshape(rgb.shape[:2])
    return rgb, ids


def default_pseudolabel_dir(pipeline) -> Path:
    dm = pipeline.datamanager
    for attr in ("pseudolabel_dir", "pseudolabels_dir", "pseudolabels"):
        value = getattr(dm.config, attr, None)
        if isinstance(value, (str, Path)) and Path(value).is_dir():
            return Path(value)
    names = dm.train_dataparser_outputs.image_filenames
    root = Path(names[0]).parent.parent if names else Path(".")
    return root / "pseudolabels"


def run_merge(pipeline, run_dir: Path, cfg: MergeConfig) -> Dict[int, int]:
    """Render, segment, merge; write ``<run_dir>/merge_table.json``; return the table."""
    start = time.perf_counter()
    pseudo_dir = cfg.pseudolabels or default_pseudolabel_dir(pipeline)
    if not pseudo_dir.is_dir() or not any(pseudo_dir.glob("*.png")):
        fail("pseudolabel folder is missing or empty", pseudo_dir,
             "run instance-map first, or pass --pseudolabels the folder the run was trained on")
    cannot_link = load_cannot_link(pseudo_dir, cfg.params.min_link_pixels)
    rng = np.random.default_rng(cfg.seed)
    model = pipeline.model
    was_training = model.training
    lut_before = model.merge_lut.clone() if hasattr(model, "merge_lut") else None
    model.eval()
    if lut_before is not None:  # merging works on raw ids
        model.merge_lut.copy_(torch.arange(len(lut_before), device=lut_before.device))
    label_maps: List[np.ndarray] = []
    region_maps: List[np.ndarray] = []
    try:
        cameras = pipeline.datamanager.train_dataparser_outputs.cameras.to(next(model.parameters()).device)
        views = perturbed_views(cameras, cfg.views, cfg.downscale, rng)
        for i in range(len(views)):
            rgb, ids = render_view(pipeline, views[i:i + 1])
            label_maps.append(ids)
            region_maps.append(segment_image(rgb, cfg.segmenter, cfg.weights))
    finally:
        model.train(was_training)
        if lut_before is not None:
            model.merge_lut.copy_(lut_before)
    table, stats = compute_merge_table(label_maps, region_maps, cannot_link, cfg.params)
    save_merge_table(run_dir / MERGE_TABLE_NAME, table, views=cfg.views, segmenter=cfg.segmenter,
                     cannot_link_pairs=len(cannot_link), seconds=round(time.perf_counter() - start, 2), **stats)
    return table


def merge_callback(attributes, views: int = 8, segmenter: str = "felzenszwalb", weights: Optional[Path] = None):
    """A nerfstudio ``TrainingCallback`` that runs label merging once, after training, and writes the merge table
    beside config.yml. Register it from ``Model.get_training_callbacks(training_callback_attributes)``."""
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

    def run(step: int) -> None:
        trainer, pipeline = attributes.trainer, attributes.pipeline
        if trainer is None or pipeline is None:
            return
        cfg = MergeConfig(load_config=Path(trainer.base_dir) / "config.yml", views=views, segmenter=segmenter,
                          weights=weights)
        try:
            table = run_merge(pipeline, Path(trainer.base_dir), cfg)
        except InputError as err:  # the checkpoint is saved already: report, and let ns-train finish normally
            print(f"instance-merge: skipped: {err.line()} (run instance-merge --load-config later)")
            return
        if hasattr(pipeline.model, "set_merge_table"):  # keep the table with the checkpoint (ns-render, viewer)
            pipeline.model.set_merge_table(table)
            trainer.save_checkpoint(step)
        print(f"instance-merge: {len(table)} labels merged at step {step} -> {cfg.load_config.parent}")

    return TrainingCallback(where_to_run=[TrainingCallbackLocation.AFTER_TRAIN], func=run)


def main(cfg: MergeConfig) -> Dict[int, int]:
    if not cfg.load_config.is_file():
        fail("training config not found", cfg.load_config, "pass the config.yml written by ns-train")
    if cfg.views < 1:
        fail("--views must be at least 1", None, "pass e.g. --views 8")
    if cfg.segmenter == "fastsam" and (cfg.weights is None or not cfg.weights.is_file()):
        fail("FastSAM weights file does not exist", cfg.weights,
             "pass --weights a local FastSAM .pt file, or use --segmenter felzenszwalb")
    if cfg.pseudolabels is not None and not cfg.pseudolabels.is_dir():
        fail("pseudolabel folder does not exist", cfg.pseudolabels, "pass the folder the run was trained on")
    if cfg.edits is not None:
        load_merge_table(Path("/nonexistent") / MERGE_TABLE_NAME, cfg.edits)  # reject a bad edit file up front
    from instance_nerfacto.loc_cli import load_trained_pipeline

    pipeline = load_trained_pipeline(cfg.load_config)[0]
    run_dir = cfg.load_config.parent
    table = run_merge(pipeline, run_dir, cfg)
    if cfg.edits is not None:
        from instance_nerfacto.dataset_io import atomic_write_bytes
        from instance_nerfacto.merge_table import EDITS_NAME

        if cfg.edits.resolve() != (run_dir / EDITS_NAME).resolve():
            atomic_write_bytes(run_dir / EDITS_NAME, cfg.edits.read_bytes())  # consumers pick it up beside the table
    print(f"instance-merge: {len(table)} labels merged -> {run_dir / MERGE_TABLE_NAME}")
    return table


def entrypoint(argv: Optional[list] = None) -> None:
    run_cli(lambda: main(tyro.cli(MergeConfig, args=argv)))


if __name__ == "__main__":
    entrypoint()
