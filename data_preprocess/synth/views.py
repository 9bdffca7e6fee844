"""Extra views of a room that ``instance-synth`` rendered: the same room rebuilt from its seed, rendered at new poses.

Used to test and measure registration of photos without a pose: :func:`views_between_training_poses` places views
between consecutive training cameras (someone walking the mapped path again, a little higher or lower, turned a
little), and :func:`render_views` writes them as a posed dataset (images/, depth/, gt/, masks/, transforms.json with
every view in ``val_filenames``) in the room's own frame, so their true poses are known.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

Pose = Tuple[np.ndarray, np.ndarray]


def views_between_training_poses(scene: Path, count: int, seed: int = 0, height_jitter: float = 0.1,
                                 yaw_jitter_deg: float = 4.0) -> List[Pose]:
    """(eye, target) of ``count`` views, each halfway between two consecutive training cameras of the room (spread
    evenly over the loop), moved up or down by up to ``height_jitter`` metres and turned by up to
    ``yaw_jitter_deg``."""
    meta = json.loads((scene / "transforms.json").read_text())
    train = set(meta.get("train_filenames", []))
    c2ws = [np.asarray(f["transform_matrix"], np.float64) for f in meta["frames"] if f["file_path"] in train]
    rng = np.random.default_rng(seed)
    views = []
    for index in np.linspace(0, len(c2ws) - 2, count).round().astype(int):
        a, b = c2ws[index], c2ws[index + 1]
        eye = 0.5 * (a[:3, 3] + b[:3, 3]) + [0.0, 0.0, rng.uniform(-height_jitter, height_jitter)]
        forward = -(a[:3, 2] + b[:3, 2])
        yaw = np.radians(rng.uniform(-yaw_jitter_deg, yaw_jitter_deg))
        turn = np.array([[np.cos(yaw), -np.sin(yaw), 0.0], [np.sin(yaw), np.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
        forward = turn @ (forward / np.linalg.norm(forward))
        views.append((eye, eye + 1.5 * forward))
    return views


def render_views(scene: Path, poses: List[Pose], out: Path, prefix: str = "view",
                 size: Optional[Tuple[int, int]] = None) -> Path:
    """Render ``poses`` of the room ``scene`` (its synth.json gives preset and seed) into ``out`` as a posed dataset
    at the room's resolution (or ``size`` = (width, height), same field of view). Returns ``out``."""

    from data_preprocess.synth.cameras import Intrinsics
    from data_preprocess.synth.cli import PRESETS
    from data_preprocess.synth.frontend import FrontendNoise, draw_traits, simulate_masks
    from data_preprocess.synth.scene import RoomScene
    from instance_nerfacto.core.files import (
        atomic_write_bytes,
        atomic_write_json,
        atomic_write_png,
        write_depth_png,
        write_label_png,
    )

    synth = json.loads((scene / "synth.json").read_text())
    preset = PRESETS[synth["preset"]]
    seed = int(synth["seed"])
    width, height = size or (preset.width, preset.height)
    intr = Intrinsics(width, height)
    room = RoomScene(seed, preset.object_range)
    try:
        noise = FrontendNoise()
        traits = draw_traits(np.random.default_rng([seed, 2]), {i.gt_id: i.is_thing for i in room.instances}, noise)
        frames, names = [], []
        for index, (eye, target) in enumerate(poses):
            stem = f"{prefix}_{index:05d}"
            rgb, depth, gt, c2w = room.render(eye, target, width, height, intr.fov_y_deg)
            masks = simulate_masks(gt, traits, np.random.default_rng([seed, 7, index]), noise)
            atomic_write_png(out / "images" / f"{stem}.png", rgb)
            write_depth_png(out / "depth" / f"{stem}.png", depth)  # millimetres, as instance-synth writes them
            write_label_png(out / "gt" / f"{stem}.png", gt)
            write_label_png(out / "masks" / f"{stem}.png", masks)
            frames.append({"file_path": f"images/{stem}.png", "depth_file_path": f"depth/{stem}.png",
                           "transform_matrix": np.round(c2w, 8).tolist()})
            names.append(f"images/{stem}.png")
    finally:
        room.close()
    transforms = {"camera_model": "OPENCV", "fl_x": intr.fx, "fl_y": intr.fy, "cx": intr.cx, "cy": intr.cy,
                  "w": width, "h": height, "frames": frames, "train_filenames": [], "val_filenames": names}
    atomic_write_json(out / "transforms.json", transforms)
    if (scene / "instances.json").is_file():
        atomic_write_bytes(out / "instances.json", (scene / "instances.json").read_bytes())
    return out
