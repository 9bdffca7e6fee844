"""Perturb a rendered scene so that RGB-only InstanceMap is not tuned to one generator's look.

Writes a new dataset folder from an ``instance-synth`` scene with variation the generator does not have:
- ``--flatten F``: the walls, the floor and a fraction F of the things lose their texture (each region replaced by a
  smooth, region-masked blur of itself: plain paint, flat plastic; boundaries and shading stay);
- ``--exposure S``: per-frame auto-exposure drift and jumps (gain, gamma and white balance, log-normal with spread S);
- ``--noise S`` / ``--jpeg Q``: sensor noise (grey levels) and JPEG compression;
- ``--stride N``: keep every N-th train frame (faster motion, larger baseline, fewer frames);
- ``--no-depth``: transforms.json without ``depth_file_path`` (the no-depth setting; depth/ is not copied).
Masks, gt and instances.json are carried over for the frames kept; val frames are kept unchanged in count.

    python benchmarks/perturb_scene.py SRC DEST --flatten 0.6 --exposure 0.25 --noise 3 --jpeg 80 --stride 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np


def flatten_regions(image: np.ndarray, gt: np.ndarray, ids: np.ndarray, sigma: float) -> np.ndarray:
    """Each gt region in ``ids`` replaced by a blur of itself normalised over the region (no bleeding across edges)."""
    import cv2

    out = image.astype(np.float32)
    for gid in np.intersect1d(np.unique(gt), ids):
        m = (gt == gid).astype(np.float32)
        num = cv2.GaussianBlur(out * m[..., None], (0, 0), sigma)
        den = cv2.GaussianBlur(m, (0, 0), sigma)[..., None]
        sel = m > 0
        out[sel] = (num / np.maximum(den, 1e-6))[sel]
    return out


def exposure_params(n: int, spread: float, rng: np.random.Generator) -> np.ndarray:
    """Per-frame (gain, gamma, r, g, b): a smooth random drift plus a few jumps, log-normal with ``spread``."""
    steps = rng.standard_normal((n, 5)) * spread * 0.3
    drift = np.cumsum(steps, axis=0)
    drift -= drift.mean(0)
    drift = np.clip(drift, -2 * spread, 2 * spread)
    jumps = (rng.random((n, 1)) < 0.1) * rng.standard_normal((n, 5)) * spread
    logp = drift + jumps
    logp[:, 1] *= 0.5  # gamma varies less than gain
    logp[:, 2:] *= 0.3  # white balance less still
    return np.exp(logp)


def perturb_image(rgb: np.ndarray, gt: np.ndarray, flat_ids: np.ndarray, exposure: np.ndarray, noise: float,
                  sigma: float, rng: np.random.Generator) -> np.ndarray:
    img = flatten_regions(rgb, gt, flat_ids, sigma) if len(flat_ids) else rgb.astype(np.float32)
    gain, gamma, r, g, b = exposure
    img = 255.0 * np.clip(img / 255.0 * gain * np.array([b, g, r], np.float32), 0, 1) ** gamma  # BGR as cv2 reads
    if noise > 0:
        img = img + rng.normal(0, noise, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def perturb_scene(src: Path, dest: Path, flatten: float = 0.0, exposure: float = 0.0, noise: float = 0.0,
                  jpeg: int = 0, stride: int = 1, no_depth: bool = False, seed: int = 0,
                  sigma: float = 6.0) -> Path:
    import cv2

    rng = np.random.default_rng(seed)
    meta = json.loads((src / "transforms.json").read_text())
    instances = json.loads((src / "instances.json").read_text())
    things = np.array(sorted(int(k) for k, v in instances.items() if v["is_thing"]))
    stuff = np.array(sorted(int(k) for k, v in instances.items() if not v["is_thing"]))
    flat_ids = np.concatenate([stuff, rng.permutation(things)[:int(round(flatten * len(things)))]]) \
        if flatten > 0 else np.zeros(0, dtype=np.int64)
    train = [f for f in meta["frames"] if Path(f["file_path"]).stem.startswith("frame_")]
    keep = {f["file_path"] for f in train[::stride]} | {f["file_path"] for f in meta["frames"] if f not in train}
    frames = [f for f in meta["frames"] if f["file_path"] in keep]
    params = exposure_params(len(frames), exposure, rng) if exposure > 0 else np.ones((len(frames), 5))
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("images", "masks", "gt") + (() if no_depth else ("depth",)):
        (tmp / sub).mkdir(parents=True)
    for k, fr in enumerate(frames):
        stem = Path(fr["file_path"]).stem
        gt = cv2.imread(str(src / "gt" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        rgb = cv2.imread(str(src / fr["file_path"]), cv2.IMREAD_COLOR)
        img = perturb_image(rgb, gt, flat_ids, params[k], noise, sigma, rng)
        if jpeg:
            img = cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, jpeg])[1], cv2.IMREAD_COLOR)
        cv2.imwrite(str(tmp / "images" / f"{stem}.png"), img)
        for sub in ("masks", "gt") + (() if no_depth else ("depth",)):
            shutil.copy(src / sub / f"{stem}.png", tmp / sub / f"{stem}.png")
        if no_depth:
            fr.pop("depth_file_path", None)
    meta["frames"] = frames
    for key in ("train_filenames", "val_filenames"):
        if key in meta:
            meta[key] = [p for p in meta[key] if p in keep]
    (tmp / "transforms.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.copy(src / "instances.json", tmp / "instances.json")
    (tmp / "perturb.json").write_text(json.dumps({
        "source": str(src), "flatten": flatten, "exposure": exposure, "noise": noise, "jpeg": jpeg,
        "stride": stride, "no_depth": no_depth, "seed": seed, "flat_ids": [int(i) for i in flat_ids]}, indent=2))
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(tmp, dest)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--flatten", type=float, default=0.0)
    parser.add_argument("--exposure", type=float, default=0.0)
    parser.add_argument("--noise", type=float, default=0.0)
    parser.add_argument("--jpeg", type=int, default=0)
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--no-depth", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    perturb_scene(args.src, args.dest, args.flatten, args.exposure, args.noise, args.jpeg, args.stride,
                  args.no_depth, args.seed)
    print(f"wrote {args.dest}")


if __name__ == "__main__":
    main()
