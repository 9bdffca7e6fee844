"""Label merging on a loaded model: render views near the training trajectory, segment them, merge labels.

Renders ``views`` random views (training poses with a small random perturbation) at 1/``downscale`` resolution, with
the fast renderer (colour and labels at the heaviest samples of each ray through the baked density grid,
``render/bake.py``) or nerfstudio's full volume render; segments each rendered RGB image with the project's
segmenters (:mod:`instance_nerfacto.core.segmenters`: weight-free felzenszwalb, or FastSAM from a local weights
file), and runs :func:`instance_nerfacto.merge.cooccurrence.compute_merge_table` with the cannot-link set of the
pseudolabels. Used by the end-of-training callback (:func:`merge_callback`) and by ``instance-merge``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Literal, Optional, Tuple

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from instance_nerfacto.core.console import say
from instance_nerfacto.core.errors import InputError, fail
from instance_nerfacto.core.runs import checkpoint_name
from instance_nerfacto.edit.label_map import MergeTable
from instance_nerfacto.edit.store import write_record
from instance_nerfacto.merge.cooccurrence import MergeParams, compute_merge_table, load_cannot_link


@dataclass
class MergeViews:
    """How label merging looks at a trained model."""

    views: int = 8
    """Number of random views near the training trajectory to render and segment."""
    renderer: Literal["fast", "volume"] = "fast"
    """fast: colour and labels from the baked density grid, read at the heaviest samples of each ray; volume:
    nerfstudio's full volume render (~5x slower on CPU)."""
    segmenter: Literal["felzenszwalb", "fastsam"] = "felzenszwalb"
    """2D segmenter of the rendered views (fastsam needs --weights)."""
    weights: Optional[Path] = None
    """Local FastSAM weights file."""
    device: str = "cpu"
    """torch device of the segmenter (FastSAM)."""
    downscale: float = 2.0
    """Render at 1/downscale of the training resolution."""
    seed: int = 0
    """Seed of the view choice and perturbation."""
    params: MergeParams = field(default_factory=MergeParams)
    """Merge thresholds."""


def perturbed_views(cameras, n: int, downscale: float, rng: np.random.Generator, angle_deg: float = 4.0):
    """``n`` training cameras (random, without repetition when possible), each rotated by up to ``angle_deg`` about a
    random axis and moved by up to 5 % of the trajectory's extent, at 1/downscale resolution."""
    idx = rng.choice(len(cameras), size=n, replace=n > len(cameras))
    views = cameras[torch.from_numpy(idx)]
    c2w = views.camera_to_worlds.clone()
    positions = cameras.camera_to_worlds[:, :3, 3]
    extent = float((positions.max(0).values - positions.min(0).values).norm())
    for i in range(n):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        angle = np.deg2rad(angle_deg) * rng.uniform(-1, 1)
        rot_t = torch.from_numpy(Rotation.from_rotvec(axis * angle).as_matrix()).to(c2w)
        c2w[i, :3, :3] = rot_t @ c2w[i, :3, :3]
        c2w[i, :3, 3] += torch.from_numpy(rng.uniform(-1, 1, 3) * 0.05 * extent).to(c2w)
    views.camera_to_worlds = c2w
    views.rescale_output_resolution(1.0 / downscale)
    return views


def render_view(model, camera) -> Tuple[np.ndarray, np.ndarray]:
    """(rgb uint8 HxWx3, raw instance ids HxW) of one camera (volume render: the RGB is needed for segmenting)."""
    with torch.no_grad():
        out = model.full_outputs_for_camera(camera)
    rgb = (out["rgb"].clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    ids = out["instance_logits"].argmax(dim=-1) + 1
    return rgb, ids.reshape(rgb.shape[:2]).cpu().numpy().astype(np.int64)


def fast_views(pipeline, cameras, n: int, downscale: float, rng: np.random.Generator, checkpoint: Path, step: int
               ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """(rgb uint8 HxWx3, raw instance ids HxW) at ``n`` perturbed training poses from the baked density grid: labels
    and colour read at the heaviest samples of each ray (``render/bake.py``; the grid is baked once per checkpoint
    and cached)."""
    from instance_nerfacto.core.settings import DEFAULT_GRID_RESOLUTION
    from instance_nerfacto.render.bake import cached_density_grid, logits_to_ids, render_label_logits

    model = pipeline.model
    grid = cached_density_grid(model.field, checkpoint, step, DEFAULT_GRID_RESOLUTION).to(model.device)
    views = perturbed_views(cameras, n, downscale, rng)
    for i in range(len(views)):
        rays = views[i : i + 1].generate_rays(camera_indices=0, keep_shape=True)
        height, width = rays.origins.shape[:2]
        with torch.no_grad():
            logits, _, _, rgb = render_label_logits(grid, model.field, rays.origins.reshape(-1, 3),
                                                    rays.directions.reshape(-1, 3), near=model.config.near_plane,
                                                    far=model.config.far_plane, with_rgb=True)
        ids = logits_to_ids(logits)[0].reshape(height, width).cpu().numpy().astype(np.int64)
        rgb = (rgb.clamp(0, 1).reshape(height, width, 3).cpu().numpy() * 255).round().astype(np.uint8)
        yield rgb, ids


def volume_views(model, cameras, n: int, downscale: float, rng: np.random.Generator
                 ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """(rgb, raw instance ids) volume-rendered by nerfstudio at ``n`` perturbed training poses."""
    views = perturbed_views(cameras, n, downscale, rng)
    for i in range(len(views)):
        yield render_view(model, views[i : i + 1])


def merge_labels(pipeline, how: MergeViews, checkpoint: Path, step: int, pseudolabels: Optional[Path] = None
                 ) -> Tuple[Dict[int, int], Dict]:
    """Render, segment, merge: the automatic merge table of a loaded pipeline and its statistics. ``checkpoint`` and
    ``step`` are those the pipeline holds (the fast renderer caches its density grid per checkpoint)."""
    from instance_nerfacto.core.segmenters import segment_regions

    start = time.perf_counter()
    pseudo_dir = Path(pseudolabels) if pseudolabels is not None else pipeline.datamanager.pseudolabels_dir
    if not pseudo_dir.is_dir() or not any(pseudo_dir.glob("*.png")):
        fail("pseudolabel folder is missing or empty", pseudo_dir,
             "run instance-map first, or pass --pseudolabels the folder the run was trained on")
    cannot_link = load_cannot_link(pseudo_dir, how.params.min_link_pixels)
    rng = np.random.default_rng(how.seed)
    model = pipeline.model
    was_training = model.training
    model.eval()
    label_maps: List[np.ndarray] = []
    region_maps: List[np.ndarray] = []
    try:
        cameras = pipeline.datamanager.train_dataparser_outputs.cameras.to(model.device)
        if how.renderer == "fast":
            views = fast_views(pipeline, cameras, how.views, how.downscale, rng, checkpoint, step)
        else:
            views = volume_views(model, cameras, how.views, how.downscale, rng)
        for rgb, ids in views:
            label_maps.append(ids)
            h, w = rgb.shape[:2]
            # felzenszwalb's scale and minimum size grow with the view so a half-resolution render gets object-sized
            # regions (the thresholds of MergeParams were measured with these)
            min_area = max(20, h * w // 400) / (h * w)
            region_maps.append(segment_regions(rgb, how.segmenter, how.weights, how.device,
                                               scale=max(100.0, 0.005 * h * w), min_area=min_area, imgsz=max(h, w)))
    finally:
        model.train(was_training)
    table, stats = compute_merge_table(label_maps, region_maps, cannot_link, how.params)
    stats.update(views=how.views, renderer=how.renderer, segmenter=how.segmenter, cannot_link_pairs=len(cannot_link),
                 seconds=round(time.perf_counter() - start, 2))
    return table, stats


def merge_callback(attributes, how: MergeViews):
    """A nerfstudio ``TrainingCallback`` that runs label merging once, after training: the table goes into the model
    (and so into the final checkpoint, which it saves again) and its record beside config.yml."""
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

    def run(step: int) -> None:
        trainer, pipeline = attributes.trainer, attributes.pipeline
        if trainer is None or pipeline is None:
            return
        run_dir = Path(trainer.base_dir)
        checkpoint = Path(trainer.checkpoint_dir) / checkpoint_name(step)  # saved by the trainer before this runs
        try:
            automatic, stats = merge_labels(pipeline, how, checkpoint, step)
        except InputError as err:  # the checkpoint is saved already: report, and let ns-train finish normally
            say(f"instance-merge: skipped: {err.line()} (run instance-merge --load-config later)")
            return
        final = MergeTable(automatic)
        pipeline.model.set_merge_table(final)
        trainer.save_checkpoint(step)
        write_record(run_dir, automatic, [], final, checkpoint.name, **stats)
        say(f"instance-merge: {len(final)} labels merged at step {step} -> {run_dir}")

    return TrainingCallback(where_to_run=[TrainingCallbackLocation.AFTER_TRAIN], func=run)
