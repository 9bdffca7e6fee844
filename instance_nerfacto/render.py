"""instance-render: label images of a trained instance-nerfacto run, fast on CPU.

Writes ``OUTPUT/<image stem>.png`` (uint16 ids at the image's full size, the run's merge table applied, 0 = nothing)
and ``OUTPUT/color/<image stem>.png``. By default geometry comes from a density grid baked once per checkpoint and
the label field is queried at the surface only (see :mod:`instance_nerfacto.bake`); ``--full-render`` runs nerfstudio's
full volume render instead (exact, ~10x slower).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple

import numpy as np
import torch
import tyro
from jaxtyping import UInt16

from instance_nerfacto.errors import fail, run_cli
from instance_nerfacto.fast_path import DEFAULT_GRID_RESOLUTION, DEFAULT_NUM_SAMPLES


@dataclass
class RenderConfig:
    """Render instance label images of a trained instance-nerfacto run."""

    load_config: Path
    """config.yml of the training run (outputs/<data>/instance-nerfacto*/<timestamp>/config.yml)."""
    output: Path
    """Folder for <stem>.png (uint16 ids) and color/<stem>.png."""
    split: Literal["train", "val", "all"] = "train"
    """Which frames of the dataset to render."""
    every: int = 1
    """Render every K-th frame of the split."""
    downscale: int = 1
    """Render at 1/N resolution and upsample (nearest) to the image's full size."""
    full_render: bool = False
    """Exact nerfstudio volume render (proposal sampling + full field) instead of the baked-density fast path."""
    grid_resolution: int = DEFAULT_GRID_RESOLUTION
    """Resolution of the baked density grid (fast path); cached beside the checkpoint."""
    num_samples: int = DEFAULT_NUM_SAMPLES
    """Samples per ray through the baked grid (fast path); the label field is read at the 4 heaviest."""
    no_merge: bool = False
    """Write raw labels even when the run has a merge table."""
    threads: Optional[int] = None
    """torch threads (default: torch's choice)."""
    load_step: Optional[int] = None
    """Checkpoint step to render (default: the latest)."""


def load_pipeline(config_path: Path, load_step: Optional[int] = None):
    """nerfstudio's eval_setup in inference mode (no images loaded); InputError when the run cannot be found."""
    from nerfstudio.utils.eval_utils import eval_setup

    from instance_nerfacto import compat

    compat.apply()
    config_path = Path(config_path)
    if not config_path.is_file():
        fail("training config not found", config_path, "pass the config.yml that ns-train printed at the end")
    models_dir = config_path.parent / "nerfstudio_models"
    if not models_dir.is_dir() or not any(models_dir.glob("step-*.ckpt")):
        fail("training run has no checkpoint", models_dir, "train longer than one save interval, or check the path")
    if load_step is not None and not (models_dir / f"step-{load_step:09d}.ckpt").is_file():
        fail(f"no checkpoint for step {load_step}", models_dir, "pick a step-*.ckpt that exists, or omit --load-step")

    def pick_step(config):
        config.load_step = load_step
        return config

    _, pipeline, checkpoint, step = eval_setup(config_path, test_mode="inference", update_config_callback=pick_step)
    pipeline.eval()
    from instance_nerfacto.model import InstanceNerfactoModel

    if not isinstance(pipeline.model, InstanceNerfactoModel):
        fail(f"run is a {type(pipeline.model).__name__}, not instance-nerfacto", config_path,
             "train with ns-train instance-nerfacto or instance-nerfacto-small")
    return pipeline, Path(checkpoint), int(step)


def split_cameras(pipeline, split: str) -> List[Tuple[str, object, int]]:
    """(image stem, Cameras, index) for every frame of the split, in dataset order."""
    datamanager = pipeline.datamanager
    sources = {"train": [datamanager.train_dataset], "val": [datamanager.eval_dataset]}
    sources["all"] = sources["train"] + sources["val"]
    frames = []
    for dataset in sources[split]:
        outputs = dataset._dataparser_outputs
        for index, filename in enumerate(outputs.image_filenames):
            frames.append((Path(filename).stem, outputs.cameras, index))
    return frames


def upsample_nearest(ids: np.ndarray, height: int, width: int) -> np.ndarray:
    if ids.shape == (height, width):
        return ids
    rows = np.minimum((np.arange(height) * ids.shape[0]) // height, ids.shape[0] - 1)
    cols = np.minimum((np.arange(width) * ids.shape[1]) // width, ids.shape[1] - 1)
    return ids[rows[:, None], cols[None, :]]


class LabelRenderer:
    """Renders uint16 label images of one trained model, fast (baked density) or full (volume render)."""

    def __init__(self, pipeline, checkpoint: Path, step: int, full_render: bool = False,
                 grid_resolution: int = DEFAULT_GRID_RESOLUTION,
                 num_samples: int = DEFAULT_NUM_SAMPLES) -> None:
        self.model = pipeline.model
        self.full_render = full_render
        self.num_samples = num_samples
        self.grid = None
        if not full_render:
            from instance_nerfacto.bake import cached_density_grid

            self.grid = cached_density_grid(self.model.field, checkpoint, step, grid_resolution).to(self.model.device)

    @torch.no_grad()
    def render_ids(self, cameras, index: int, downscale: int = 1) -> UInt16[np.ndarray, "H W"]:
        """Raw label ids (before merging) at the camera's full resolution."""
        full_height, full_width = int(cameras.height[index]), int(cameras.width[index])
        camera = cameras[index : index + 1].to(self.model.device)
        if downscale > 1:
            camera.rescale_output_resolution(1.0 / downscale)
        if self.full_render:
            outputs = self.model.get_outputs_for_camera(camera)
            ids = outputs["instance_logits"].argmax(dim=-1) + 1
        else:
            from instance_nerfacto.bake import logits_to_ids, render_label_logits

            rays = camera.generate_rays(camera_indices=0, keep_shape=True)
            height, width = rays.origins.shape[:2]
            logits, _, _ = render_label_logits(
                self.grid, self.model.field, rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3),
                num_samples=self.num_samples, near=self.model.config.near_plane, far=self.model.config.far_plane,
            )
            ids = logits_to_ids(logits)[0].reshape(height, width)
        ids = ids.reshape(ids.shape[0], ids.shape[1]).cpu().numpy().astype(np.uint16)
        return upsample_nearest(ids, full_height, full_width)


def main(cfg: RenderConfig) -> Dict:
    """Render the split; returns {"frames", "seconds", "seconds_per_frame", "output"}."""
    from instance_nerfacto.dataset_io import atomic_write_png
    from instance_nerfacto.merge_table import apply_merge, load_run_merge_table
    from instance_nerfacto.palette import colorize

    started = time.perf_counter()
    if cfg.every < 1 or cfg.downscale < 1:
        fail("--every and --downscale must be >= 1", None, "e.g. --every 4 --downscale 2")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    merge = {} if cfg.no_merge else load_run_merge_table(cfg.load_config)
    pipeline, checkpoint, step = load_pipeline(cfg.load_config, cfg.load_step)
    frames = split_cameras(pipeline, cfg.split)[:: cfg.every]
    if not frames:
        fail(f"split '{cfg.split}' has no frames", cfg.load_config, "pick --split train|val|all")
    renderer = LabelRenderer(pipeline, checkpoint, step, cfg.full_render, cfg.grid_resolution, cfg.num_samples)
    output = Path(cfg.output)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("instance-render"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:
        for stem, cameras, index in progress.track(frames):
            ids = apply_merge(renderer.render_ids(cameras, index, cfg.downscale), merge)
            atomic_write_png(output / f"{stem}.png", ids.astype(np.uint16))
            atomic_write_png(output / "color" / f"{stem}.png", colorize(ids))
    seconds = time.perf_counter() - started
    return {"frames": len(frames), "seconds": seconds, "seconds_per_frame": seconds / len(frames),
            "output": str(output)}


def entrypoint() -> None:
    run_cli(lambda: print(main(tyro.cli(RenderConfig))))
