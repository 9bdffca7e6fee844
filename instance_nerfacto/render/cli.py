"""instance-render: label images of a trained instance-nerfacto run, fast on CPU.

Writes ``OUTPUT/<image stem>.png`` (uint16 ids at the image's full size, the run's merge table applied, 0 = nothing)
and ``OUTPUT/color/<image stem>.png``. By default geometry comes from a density grid baked once per checkpoint and
the label field is queried at the surface only (see :mod:`instance_nerfacto.render.bake`); ``--full-render`` runs
nerfstudio's full volume render instead (exact, ~10x slower).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Dict, Literal, Optional

import tyro

from instance_nerfacto.core.console import say
from instance_nerfacto.core.errors import fail, run_cli
from instance_nerfacto.core.runs import RunOptions
from instance_nerfacto.core.settings import DEFAULT_GRID_RESOLUTION, DEFAULT_NUM_SAMPLES


@dataclass
class RenderConfig:
    """Render instance label images of a trained instance-nerfacto run."""

    run: Annotated[RunOptions, tyro.conf.OmitArgPrefixes]
    """The training run (--load-config, required), its checkpoint, merge table and torch threads."""
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
    """Samples per ray through the baked grid (fast path); the label field is read at the heaviest (--label-top-k)."""
    label_top_k: Optional[int] = None
    """Fast path: samples per ray at which the label field is read (default: RENDER_LABEL_TOP_K = 4, at most the
    model's training label_top_k; instance-loc reads the same). 8 reads as many as training, at ~2x the label cost."""


def main(cfg: RenderConfig) -> Dict:
    """Render the split; returns {"frames", "seconds", "seconds_per_frame", "output"}."""
    from instance_nerfacto.core.files import atomic_write_png, write_label_png
    from instance_nerfacto.core.palette import colorize
    from instance_nerfacto.render.labels import LabelRenderer
    from instance_nerfacto.render.run import load_run, split_cameras

    started = time.perf_counter()
    if cfg.every < 1 or cfg.downscale < 1:
        fail("--every and --downscale must be >= 1", None, "e.g. --every 4 --downscale 2")
    if cfg.label_top_k is not None and cfg.label_top_k < 1:
        fail("--label-top-k must be >= 1", None, "e.g. --label-top-k 8, or leave it out for the default")
    load_config = cfg.run.require_config()
    cfg.run.set_threads()
    run = load_run(load_config, cfg.run.load_step)
    label_map = run.label_map() if cfg.run.merge else None  # merge table + hand edits (splits need 3D points)
    frames = split_cameras(run.pipeline, cfg.split)[:: cfg.every]
    if not frames:
        fail(f"split '{cfg.split}' has no frames", load_config, "pick --split train|val|all")
    renderer = LabelRenderer(run.pipeline, run.checkpoint, run.step, cfg.full_render, cfg.grid_resolution,
                             cfg.num_samples, cfg.label_top_k)
    output = Path(cfg.output)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("instance-render"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:
        for stem, cameras, index in progress.track(frames):
            ids = renderer.render_labels(cameras, index, cfg.downscale, label_map)
            write_label_png(output / f"{stem}.png", ids)
            atomic_write_png(output / "color" / f"{stem}.png", colorize(ids))
    seconds = time.perf_counter() - started
    return {"frames": len(frames), "seconds": seconds, "seconds_per_frame": seconds / len(frames),
            "output": str(output)}


def entrypoint() -> None:
    run_cli(lambda: say(str(main(tyro.cli(RenderConfig)))))
