"""A rendered room as a phone user has it: photos without poses or depth, posed by COLMAP through nerfstudio's
``ns-process-data images --no-gpu --matching-method exhaustive`` (Debian ``colmap``) with its default camera type
(perspective: COLMAP's OPENCV model, so the poses come with estimated k1 k2 p1 p2) or another ``--camera-type``.

The room's masks and ground truth are copied under the names ns-process-data gives the photos, and the room's
held-out views are listed in ``val_filenames``, so every later stage and the scorer run on the COLMAP dataset as on
the room itself. Used by the photos-only benchmark and the slow COLMAP test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict

from instance_nerfacto.core.files import atomic_write_json


def colmap_dataset(scene: Path, dest: Path, camera_type: str = "perspective") -> Dict[str, str]:
    """Pose the scene's photos with COLMAP through ns-process-data; copy masks and gt under the new names; list the
    held-out photos (the scene's val frames) in val_filenames. Returns {new stem: original stem}."""
    photos = dest.parent / f"{dest.name}_photos"
    if photos.exists():
        shutil.rmtree(photos)
    photos.mkdir(parents=True)
    originals = sorted(p.name for p in (scene / "images").glob("*.png"))
    for name in originals:
        shutil.copy(scene / "images" / name, photos / name)
    cmd = [str(Path(sys.executable).parent / "ns-process-data"), "images", "--data", str(photos), "--output-dir",
           str(dest), "--no-gpu", "--camera-type", camera_type, "--matching-method", "exhaustive", "--num-downscales",
           "0"]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0 or not (dest / "transforms.json").is_file():
        raise RuntimeError(f"ns-process-data failed ({proc.returncode}): {proc.stderr[-2000:]}")
    # ns-process-data copies the photos in sorted order as frame_00001.png, frame_00002.png, ...
    new_of = {Path(name).stem: f"frame_{i + 1:05d}" for i, name in enumerate(originals)}
    original_of = {v: k for k, v in new_of.items()}
    meta = json.loads((dest / "transforms.json").read_text())
    registered = [Path(f["file_path"]).stem for f in meta["frames"]]
    val_originals = {Path(f).stem for f in json.loads((scene / "transforms.json").read_text()).get("val_filenames", [])}
    meta["val_filenames"] = [f"images/{s}.png" for s in registered if original_of[s] in val_originals]
    meta["train_filenames"] = [f"images/{s}.png" for s in registered if original_of[s] not in val_originals]
    atomic_write_json(dest / "transforms.json", meta)
    for folder in ("masks", "gt"):
        (dest / folder).mkdir(exist_ok=True)
        for stem in registered:
            shutil.copy(scene / folder / f"{original_of[stem]}.png", dest / folder / f"{stem}.png")
    shutil.copy(scene / "instances.json", dest / "instances.json")
    return {s: original_of[s] for s in registered}
