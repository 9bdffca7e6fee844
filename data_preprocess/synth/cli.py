"""``instance-synth``: render a seeded synthetic room as a nerfstudio dataset with ground truth and frontend masks.

Output folder (written to a temporary sibling folder, renamed into place when complete)::

    transforms.json      OPENCV intrinsics, c2w (OpenGL) per frame, depth paths, train/val file lists
    images/<stem>.png    RGB               (train stems frame_00000.., val stems val_00000..)
    depth/<stem>.png     uint16 millimetres of z-depth (along the optical axis), 0 = nothing rendered
    gt/<stem>.png        uint16 instance id, the same for one object in every frame (0 = void)
    masks/<stem>.png     uint16 simulated SAM-like frontend masks, fresh random ids per frame
    instances.json       {"<gt id>": {"name": ..., "is_thing": ...}}
    synth.json           preset, seed, counts, versions, timings
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Literal, Optional, Tuple

import numpy as np
import tyro

from data_preprocess.synth.cameras import Intrinsics, trajectories
from data_preprocess.synth.frontend import FrontendNoise, draw_traits, simulate_masks
from data_preprocess.synth.lens import photo_camera, render_canvas, warp_maps, warp_view
from data_preprocess.synth.scene import RoomScene
from instance_nerfacto.core.console import say
from instance_nerfacto.core.errors import fail, run_cli
from instance_nerfacto.core.files import atomic_write_json, atomic_write_png, write_depth_png, write_label_png
from instance_nerfacto.core.third_party import native_stderr_silenced

SYNTH_VERSION = 2  # 2: fixed share of hard objects, graded small-object misses, smaller boundary warp


@dataclass(frozen=True)
class Preset:
    width: int
    height: int
    n_train: int
    n_val: int
    object_range: Tuple[int, int]


PRESETS: Dict[str, Preset] = {
    "tiny": Preset(160, 120, 30, 8, (15, 20)),
    "demo": Preset(320, 240, 100, 20, (20, 28)),
    # the paper's scale for InstanceLift on a GPU (benchmarks/cuda_lift.py): a 200-frame room
    "room200": Preset(320, 240, 200, 20, (20, 28)),
    # scale test of instance-map: many frames and a crowded room (~30 masks per frame, ~30k masks in all)
    "bench1000": Preset(160, 120, 1000, 50, (85, 95)),
    # the same room at ten times the frames (the bounded-memory target of instance-map: <= 4 GB on the driver)
    "bench10000": Preset(160, 120, 10000, 50, (85, 95)),
}


@dataclass
class SynthConfig:
    """Render a synthetic furnished room as a nerfstudio dataset with gt instances and noisy frontend masks."""

    out: Path
    """Folder to create (must not exist unless --overwrite)."""
    preset: Literal["tiny", "demo", "room200", "bench1000", "bench10000"] = "tiny"
    """tiny: 160x120, 30 train + 8 val frames (seconds); demo: 320x240, 100 train + 20 val frames; room200: the demo
    room with 200 train frames (GPU benchmark); bench1000: 160x120, 1000 train + 50 val frames of a crowded room (~30
    masks per frame), for scale tests; bench10000: the same with 10000 train frames (~40 minutes on 2 cores)."""
    seed: int = 0
    """Seed of the room layout, objects, textures, trajectory and frontend noise."""
    frames: Optional[int] = None
    """Train frames along the preset's camera loop (default: the preset's). The loop and the room stay the same, so
    ``--preset demo --frames 1000`` is the demo room captured ten times as densely: its every 10th frame has the pose
    of the 100-frame capture's frame (mask noise is drawn per frame)."""
    lens: Literal["pinhole", "radial", "fisheye"] = "pinhole"
    """Camera lens: an ideal pinhole (OPENCV with zero distortion), radial distortion (OPENCV k1 -0.15, k2 0.03) or
    a fisheye (OPENCV_FISHEYE k1 0.05, k2 0.01). Same intrinsics, poses, room and mask noise for every lens, so the
    pinhole room is the distorted rooms' twin."""
    overwrite: bool = False
    """Replace an existing output folder."""


def generate(out: Path, preset_name: str, seed: int, n_train: Optional[int] = None, lens: str = "pinhole") -> Dict:
    """Render the scene into ``out`` (an empty or new folder); returns the synth.json metadata."""
    import cv2

    with native_stderr_silenced():  # pybullet prints its build time when imported
        import pybullet

    preset = PRESETS[preset_name]
    if n_train is not None:
        preset = replace(preset, n_train=n_train)
    timings: Dict[str, float] = {}
    start = time.perf_counter()
    scene = RoomScene(seed, preset.object_range)
    try:
        timings["build_s"] = time.perf_counter() - start
        intr = Intrinsics(preset.width, preset.height)
        photo = photo_camera(lens, intr.fx, intr.fy, intr.cx, intr.cy, intr.width, intr.height)
        canvas = render_canvas(photo) if photo.distorted else None
        maps = warp_maps(canvas, photo) if canvas is not None else None
        train_poses, val_poses = trajectories(scene.rng, scene.width, scene.depth, preset.n_train, preset.n_val)
        noise = FrontendNoise()
        traits = draw_traits(np.random.default_rng([seed, 2]), {i.gt_id: i.is_thing for i in scene.instances}, noise)
        for sub in ("images", "depth", "gt", "masks"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        frames, train_files, val_files = [], [], []
        render_s = frontend_s = 0.0
        masks_per_frame = []
        views = [(f"frame_{i:05d}", p) for i, p in enumerate(train_poses)]
        views += [(f"val_{i:05d}", p) for i, p in enumerate(val_poses)]
        for index, (stem, (eye, target)) in enumerate(views):
            t0 = time.perf_counter()
            if canvas is None:
                rgb, depth, gt, c2w = scene.render(eye, target, intr.width, intr.height, intr.fov_y_deg)
            else:  # wider through the pinhole, then bent onto the photo's pixels
                fov_y = math.degrees(2 * math.atan(canvas.height / 2 / canvas.fy))
                rgb, depth, gt, c2w = scene.render(eye, target, canvas.width, canvas.height, fov_y)
                rgb, depth, gt = warp_view(maps, rgb, depth, gt)
            t1 = time.perf_counter()
            masks = simulate_masks(gt, traits, np.random.default_rng([seed, 1, index]), noise)
            t2 = time.perf_counter()
            masks_per_frame.append(len(np.unique(masks)) - int((masks == 0).any()))
            render_s += t1 - t0
            frontend_s += t2 - t1
            atomic_write_png(out / "images" / f"{stem}.png", rgb)
            write_depth_png(out / "depth" / f"{stem}.png", depth)  # millimetres, synth.json's depth_unit
            write_label_png(out / "gt" / f"{stem}.png", gt)
            write_label_png(out / "masks" / f"{stem}.png", masks)
            image_path = f"images/{stem}.png"
            frames.append({
                "file_path": image_path,
                "depth_file_path": f"depth/{stem}.png",
                "transform_matrix": np.round(c2w, 8).tolist(),
            })
            (val_files if stem.startswith("val_") else train_files).append(image_path)
        k1, k2, k3, k4, p1, p2 = photo.distortion
        transforms = {
            "camera_model": "OPENCV_FISHEYE" if photo.fisheye else "OPENCV",
            "fl_x": intr.fx, "fl_y": intr.fy, "cx": intr.cx, "cy": intr.cy, "w": intr.width, "h": intr.height,
            **({"k1": k1, "k2": k2, "k3": k3, "k4": k4} if photo.fisheye else {"k1": k1, "k2": k2, "p1": p1, "p2": p2}),
            "frames": frames,
            "train_filenames": train_files,
            "val_filenames": val_files,
        }
        atomic_write_json(out / "transforms.json", transforms)
        instances = scene.instances_json()
        atomic_write_json(out / "instances.json", instances)
        names = [v["name"] for v in instances.values() if v["is_thing"]]
        timings.update(render_s=render_s, frontend_s=frontend_s, total_s=time.perf_counter() - start)
        meta = {
            "generator": "instance-synth",
            "version": SYNTH_VERSION,
            "preset": preset_name,
            "seed": seed,
            "width": preset.width,
            "height": preset.height,
            "fov_x_deg": intr.fov_x_deg,
            "lens": lens,
            "lens_render_size": [canvas.width, canvas.height] if canvas is not None else None,
            "n_train": len(train_files),
            "n_val": len(val_files),
            "n_instances": len(instances),
            "n_things": len(names),
            "n_stuff": len(instances) - len(names),
            "masks_per_frame_mean": round(float(np.mean(masks_per_frame)), 2),
            "duplicated_names": sorted({n for n in names if names.count(n) > 1}),
            "hard_objects": sorted(g for g, t in traits.items() if t.hard),
            "room_size_m": [round(scene.width, 4), round(scene.depth, 4)],
            "depth_unit": "uint16 millimetres, z-depth along the optical axis, 0 = invalid",
            "frontend_noise": {k: v for k, v in vars(noise).items()},
            "versions": {"python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__,
                         "pybullet": importlib.metadata.version("pybullet"), "pybullet_api": pybullet.getAPIVersion()},
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }
        atomic_write_json(out / "synth.json", meta)
        return meta
    finally:
        scene.close()


def main(cfg: SynthConfig) -> Dict:
    out = Path(cfg.out)
    if cfg.preset not in PRESETS:
        fail(f"unknown preset '{cfg.preset}'", None, f"use one of {', '.join(PRESETS)}")
    if cfg.frames is not None and cfg.frames < 2:
        fail(f"--frames {cfg.frames} is too few", None, "pass at least 2 train frames")
    if out.exists() and not cfg.overwrite:
        fail("output folder already exists", out, "pass another --out or add --overwrite")
    if out.exists() and not out.is_dir():
        fail("output path is a file", out, "pass a folder path to --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        meta = generate(tmp, cfg.preset, cfg.seed, cfg.frames, cfg.lens)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    t = meta["timings"]
    say(f"instance-synth: wrote {out} ({meta['n_train']} train + {meta['n_val']} val frames, "
        f"{meta['n_things']} things + {meta['n_stuff']} stuff, {t['total_s']:.1f} s)")
    return meta


def entrypoint() -> None:
    run_cli(lambda: main(tyro.cli(SynthConfig)))


if __name__ == "__main__":
    entrypoint()
